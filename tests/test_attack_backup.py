"""Resumable attack curves (uqmix.attack_backup): an interrupted curve, resumed from its
backup, gives exactly the numbers of an uninterrupted run; a backup of another computation
is never resumed."""

import contextlib
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from uqmix import attack_backup, attack_eval, attacks, training_cache
from uqmix.models.sampled_networks import mc_dropout
from uqmix.studies import pn_experiment, pn_report

from .test_attack_eval import X_SPREAD, LinearDirichlet
from .test_cifar_rkl import _tiny

DIM, K = X_SPREAD.shape[1], 3


def _mlp(x):
    w = tf.constant(np.random.default_rng(1).normal(size=(DIM, K)) * 2.0, x.dtype)
    return tf.matmul(tf.tanh(x), w)


@pytest.mark.parametrize("method", ["pgd", "mim"])
def test_a_run_split_into_pieces_and_restored_elsewhere_equals_one_run(method):
    options = dict(eps=0.3, eps_iter=0.04, clip_min=0.0, clip_max=1.0, rand_init=True, seed=4)
    whole = attacks.iterative_attack_run(method, _mlp, X_SPREAD, **options).advance(9).numpy()
    run = attacks.iterative_attack_run(method, _mlp, X_SPREAD, **options)
    run.advance(2)
    run.advance(3)
    saved, done = run.state(), run.iterations
    assert done == 5 and len(saved) == (2 if method == "pgd" else 3)
    other = attacks.iterative_attack_run(method, _mlp, X_SPREAD, **options)
    other.restore(done, [np.array(a) for a in saved])
    np.testing.assert_array_equal(other.advance(4).numpy(), whole)
    assert other.iterations == 9
    # and a separate call with nb_iter = 9 (the existing guarantee the pieces build on)
    direct = (
        attacks.projected_gradient_descent(_mlp, X_SPREAD, nb_iter=9, norm=np.inf, **options)
        if method == "pgd"
        else attacks.momentum_iterative_method(
            _mlp,
            X_SPREAD,
            nb_iter=9,
            **{k: v for k, v in options.items() if k not in ("rand_init", "seed")},
        )
    )
    np.testing.assert_array_equal(direct.numpy(), whole)
    with pytest.raises(ValueError, match="no attack state"):
        other.restore(3, [])


def _dropout_model(seed=0):
    """MC dropout (S = 4 masks) of a tiny MLP: every gradient and evaluation draws noise."""
    keras.utils.set_random_seed(seed)
    network = keras.Sequential(
        [
            keras.Input((DIM,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dropout(0.5, seed=seed),
            keras.layers.Dense(K),
        ]
    )
    return mc_dropout(network, num_samples=4)


class Interrupted(Exception):
    pass


def _interrupt_after(calls):
    """A ``log`` that raises on its ``calls``-th line (a run stopped after that point)."""
    count = [0]

    def log(line):
        if line.startswith("pgd") or line.startswith("mim") or line.startswith("C&W"):
            count[0] += 1
            if count[0] == calls:
                raise Interrupted(line)

    return log


@contextlib.contextmanager
def _stopped_at_save(monkeypatch, number):
    """A run killed right after its ``number``-th backup save (the file written): inside,
    ``AttackBackup.save`` raises ``Interrupted`` then, and the block must raise it. Yields
    the positions saved."""
    saves, original = [], attack_backup.AttackBackup.save

    def save(self, position, arrays=None, attack_state=()):
        original(self, position, arrays, attack_state)
        saves.append(dict(position))
        if len(saves) == number:
            raise Interrupted()

    with monkeypatch.context() as patch:
        patch.setattr(attack_backup.AttackBackup, "save", save)
        with pytest.raises(Interrupted):
            yield saves


CURVE = dict(
    eps=0.3,
    eps_iter=0.03,
    method="mim",
    criterion="kl_pmf",
    measure="mutual_information",
    batch_size=25,
    seed=3,
)


def _curves(model, backup_dir=None, log=None, every=600.0, checkpoints=(1, 4, 9), **options):
    return attack_eval.adaptive_attack_curves(
        model,
        X_SPREAD,
        checkpoints,
        backup_dir=backup_dir,
        log=log,
        backup_every_seconds=every,
        **dict(CURVE, **options),
    )


def _assert_same(a, b):
    """The curves equal to the bit (``resumed_from``, a backup's record, aside)."""
    a, b = ({k: v for k, v in c.items() if k != "resumed_from"} for c in (a, b))
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def _rng_state(model):
    return [v.numpy().copy() for v in training_cache.random_state_variables(model)]


def _set_rng(model, values):
    for variable, value in zip(training_cache.random_state_variables(model), values):
        variable.assign(value)


@pytest.mark.parametrize("stop_after", [2, 4])  # inside batch 1 / inside batch 2 of 3
def test_a_curve_interrupted_between_points_resumes_to_the_uninterrupted_numbers(
    tmp_path, stop_after
):
    model = _dropout_model()
    entry = _rng_state(model)
    assert entry, "the dropout model has random generators (else this test proves nothing)"
    expected = _curves(model)
    _set_rng(model, entry)  # the uninterrupted run above moved the noise on
    assert 0 < expected["success_rate"][-1] < 1
    with pytest.raises(Interrupted):
        _curves(model, tmp_path / "backup", log=_interrupt_after(stop_after))
    # the interruption left the generators elsewhere: the backup puts them back
    lines = []
    resumed = _curves(model, tmp_path / "backup", log=lines.append)
    _assert_same(resumed, expected)
    batch, point = divmod(stop_after - 1, 3)  # the last point saved: batch, point of (1, 4, 9)
    assert resumed["resumed_from"] == {"batch": batch, "iterations": (1, 4, 9)[point]}
    assert any(line.startswith("resuming the attack from") for line in lines)
    evaluated = [line for line in lines if line.startswith("mim")]
    assert len(evaluated) == 3 * 3 - stop_after  # the points done before are not redone
    # a finished backup gives the numbers again without attacking
    lines.clear()
    _assert_same(_curves(model, tmp_path / "backup", log=lines.append), expected)
    assert not [line for line in lines if line.startswith("mim")]


def test_a_curve_interrupted_inside_a_segment_resumes_from_its_saved_iterate(tmp_path, monkeypatch):
    """Saves every iteration (backup_every_seconds=0) and stops at the 5th save: within the
    segment 1 → 9 of the first batch (save 1 is point 1's); the resumed run continues from
    iteration 5."""
    model = _dropout_model(1)
    entry = _rng_state(model)
    expected = _curves(model, checkpoints=(1, 9), method="pgd", rand_init=True)
    _set_rng(model, entry)
    with _stopped_at_save(monkeypatch, 5) as saves:
        _curves(model, tmp_path, every=0.0, checkpoints=(1, 9), method="pgd", rand_init=True)
    assert saves[-1] == {"batch": 0, "iterations": 5}  # mid-segment, not at a curve point
    lines = []
    resumed = _curves(
        model, tmp_path, log=lines.append, checkpoints=(1, 9), method="pgd", rand_init=True
    )
    _assert_same(resumed, expected)
    assert "at batch 0, iterations 5" in " ".join(lines)


def test_a_backup_of_another_computation_is_not_resumed(tmp_path):
    model = LinearDirichlet()
    with pytest.raises(Interrupted):
        _curves(model, tmp_path, log=_interrupt_after(1), criterion="kl_dir")
    lines = []
    other = _curves(model, tmp_path, log=lines.append, criterion="kl_dir", eps=0.2)
    assert any("is of another computation (differs in: options.eps" in x for x in lines)
    assert not any(line.startswith("resuming") for line in lines)
    _assert_same(other, _curves(model, criterion="kl_dir", eps=0.2))


@pytest.mark.parametrize(
    "content",
    [
        b"not a backup",  # unreadable: saves are atomic, so never a damaged backup of ours
        "npz",  # a readable NumPy archive without uqmix's format marker
    ],
)
def test_a_file_that_is_not_a_uqmix_backup_is_never_overwritten(tmp_path, content):
    """The user's own files in backup_dir stay as they were: another name is ignored, a file
    under the backup's name is an error that names it, before any attack."""
    model = LinearDirichlet()
    (tmp_path / "backup.npz").write_bytes(b"the user's own backup.npz")
    expected = _curves(model, tmp_path, criterion="kl_dir")
    assert (tmp_path / "backup.npz").read_bytes() == b"the user's own backup.npz"
    path = tmp_path / attack_backup.BACKUP_FILE
    if content == "npz":
        np.savez(path, weights=np.arange(3.0), __key__=np.asarray("{}"))
        content = path.read_bytes()
    else:
        path.write_bytes(content)
    lines = []
    with pytest.raises(FileExistsError, match="is not a uqmix attack backup.*another backup_dir"):
        _curves(model, tmp_path, log=lines.append, criterion="kl_dir")
    assert not [line for line in lines if line.startswith("mim")]  # refused before any attack
    assert path.read_bytes() == content
    path.unlink()
    _assert_same(_curves(model, tmp_path, criterion="kl_dir"), expected)


def test_a_backup_of_other_weights_is_not_resumed(tmp_path):
    model = _dropout_model(2)
    with pytest.raises(Interrupted):
        _curves(model, tmp_path, log=_interrupt_after(1))
    retrained = _dropout_model(3)
    lines = []
    _curves(retrained, tmp_path, log=lines.append)
    assert any("differs in: models.model" in line for line in lines)


def test_a_backup_needs_an_integer_seed(tmp_path):
    with pytest.raises(ValueError, match="integer seed"):
        _curves(_dropout_model(), tmp_path, seed=None)


def test_carlini_wagner_curves_resume_after_their_last_budget(tmp_path):
    model = LinearDirichlet()
    x = X_SPREAD[:20]
    options = dict(binary_search_steps=2, batch_size=8)
    expected = attack_eval.adaptive_cw_curves(model, x, (5, 20, 40), **options)
    with pytest.raises(Interrupted):
        attack_eval.adaptive_cw_curves(
            model, x, (5, 20, 40), backup_dir=tmp_path, log=_interrupt_after(2), **options
        )
    lines = []
    resumed = attack_eval.adaptive_cw_curves(
        model, x, (5, 20, 40), backup_dir=tmp_path, log=lines.append, **options
    )
    _assert_same(resumed, expected)
    assert [line.split(" (")[0] for line in lines if line.startswith("C&W")] == [
        "C&W L2 max_iterations 40"  # 5 and 20 were saved before the stop
    ]


def test_the_pacer_fits_pieces_into_the_save_interval():
    pacer = attack_backup.Pacer(10.0)
    assert pacer.chunk(0) == 0 and pacer.chunk(50) == 1  # one iteration to measure first
    pacer.ran(1, 2.0)
    assert pacer.chunk(50) == 5 and pacer.chunk(3) == 3
    pacer.ran(5, 100.0)  # slower than the interval: still one iteration at a time
    assert pacer.chunk(50) == 1


def test_a_prior_network_run_stopped_in_its_attacks_resumes_them(tmp_path, monkeypatch):
    """experiments.cifar_rkl's study: an MC-dropout run stopped at its 3rd attack backup
    (white-box, after the first of its two batches), run again with --resume, attacks to the
    numbers of an uninterrupted run and records where it resumed; the report says its
    seconds are partial."""
    options = dict(
        model_kind="mc_dropout",
        loss="cross_entropy",
        dropout_rate=0.3,
        ood_train_dataset="",
        eval_samples=3,
        eval_batch_size=8,
        attack=True,
        attack_method="mim",
        attack_iterations=["1", "3", "6"],
        attack_examples=12,
        attack_measure="total_uncertainty",
        attack_gradient_samples=2,
    )
    uninterrupted = pn_experiment.run(_tiny(tmp_path / "a", **options))
    assert "resumed_from" not in uninterrupted["attacks"]["white_box"]
    assert os.path.exists(
        tmp_path / "a" / "run" / "attack_backup" / "white_box" / attack_backup.BACKUP_FILE
    )
    with _stopped_at_save(monkeypatch, 3):
        pn_experiment.run(_tiny(tmp_path / "b", **options))
    assert not os.path.exists(tmp_path / "b" / "run" / "metrics.json")
    # the save interval is not part of the configuration: resuming with another one is allowed
    resumed = pn_experiment.run(
        _tiny(tmp_path / "b", resume=True, attack_backup_every_seconds=5.0, **options)
    )
    for key in ("success_rate", "auroc", "jsr"):
        assert resumed["attacks"]["white_box"][key] == uninterrupted["attacks"]["white_box"][key]
    assert resumed["attacks"]["white_box"]["resumed_from"] == {"batch": 1, "iterations": 0}
    summary = pn_report.summarize({"mc": {0: resumed}})
    assert summary["configurations"]["mc"]["resumed_attacks"] == [0]
    assert "continued from their backup" in pn_report.markdown_tables(summary)
    # without a backup, no folder
    none = pn_experiment.run(_tiny(tmp_path / "c", attack_backup_every_seconds=0, **options))
    assert not os.path.exists(tmp_path / "c" / "run" / "attack_backup")
    assert none["attacks"]["white_box"]["jsr"] == uninterrupted["attacks"]["white_box"]["jsr"]


def test_a_backup_of_another_model_configuration_is_not_resumed(tmp_path):
    """The same network as MC dropout with 4 masks, then with 32 (default_num_samples, not a
    weight): the second run must not continue the first one's curve."""
    model = _dropout_model(4)
    with pytest.raises(Interrupted):
        _curves(model, tmp_path, log=_interrupt_after(3))
    more_masks = mc_dropout(model.networks[0], num_samples=32)
    lines = []
    _curves(more_masks, tmp_path, log=lines.append)
    assert any("differs in: models.model.config" in line for line in lines)
    assert not any(line.startswith("resuming") for line in lines)


def test_a_resume_whose_clean_predictions_moved_starts_afresh(tmp_path, monkeypatch):
    """Non-deterministic ops would recompute other clean predictions: simulated by a saved
    natural score that differs; the curve is computed afresh, not continued."""
    model = LinearDirichlet()
    expected = _curves(model, criterion="kl_dir")
    with pytest.raises(Interrupted):
        _curves(model, tmp_path, log=_interrupt_after(2), criterion="kl_dir")
    path = tmp_path / attack_backup.BACKUP_FILE
    with np.load(path) as stored:
        content = {name: stored[name] for name in stored.files}
    content["natural_scores"] = content["natural_scores"] + 1e-6
    np.savez(path, **content)
    lines = []
    again = _curves(model, tmp_path, log=lines.append, criterion="kl_dir")
    assert any("natural_scores recomputed differ" in line for line in lines)
    assert again["resumed_from"] is None
    _assert_same(again, expected)
    assert len([line for line in lines if line.startswith("mim")]) == 9  # all recomputed
    # and the fresh backup it wrote is resumable again
    lines.clear()
    _assert_same(_curves(model, tmp_path, log=lines.append, criterion="kl_dir"), expected)
    assert not [line for line in lines if line.startswith("mim")]


def test_bad_backup_arguments_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="needs Keras models"):
        _curves(_mlp, tmp_path)
    with pytest.raises(ValueError, match="backup_every_seconds must be >= 0"):
        _curves(LinearDirichlet(), tmp_path, every=float("inf"), criterion="kl_dir")
    with pytest.raises(ValueError, match="backup_every_seconds must be >= 0"):
        _curves(LinearDirichlet(), tmp_path, every=-1.0, criterion="kl_dir")
    assert not os.listdir(tmp_path)
    for checkpoints in ((1, 1), (4, 1), ()):
        with pytest.raises(ValueError, match="non-empty increasing"):
            _curves(LinearDirichlet(), checkpoints=checkpoints, criterion="kl_dir")


def test_the_same_model_built_again_has_the_same_key_another_configuration_not():
    """Keras' generated layer names (dense_7) differ between two builds in one process (and
    between processes that built other models first); the key must not."""
    first, second = _dropout_model(5), _dropout_model(5)
    assert first.networks[0].layers[0].name != second.networks[0].layers[0].name
    key = attack_backup.computation_key("f", {}, {"x": X_SPREAD}, {"model": first})
    assert key == attack_backup.computation_key("f", {}, {"x": X_SPREAD}, {"model": second})
    other_rate = keras.Sequential(
        [
            keras.Input((DIM,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dropout(0.3, seed=5),
            keras.layers.Dense(K),
        ]
    )
    other_rate.set_weights(first.networks[0].get_weights())
    other = attack_backup.computation_key(
        "f", {}, {"x": X_SPREAD}, {"model": mc_dropout(other_rate, num_samples=4)}
    )
    assert other["models"]["model"]["weights"] == key["models"]["model"]["weights"]
    assert other["models"]["model"]["config"] != key["models"]["model"]["config"]
