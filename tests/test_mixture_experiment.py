"""experiments.mixture_mnist / uqmix.studies.mixture_experiment on small generated IDX files."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.binaries import info_log_lines, run_binary
from tests.conftest import REPO_ROOT
from tests.lock_helpers import lockable_by_another_process
from tests.test_cifar_rkl import _tiny
from tests.test_data import write_idx_set
from uqmix import export_target, options, runs, tensorboard_logging
from uqmix.studies import mixture_experiment, pn_experiment


def _digits(n, seed):
    """Learnable 28×28 'digits': class c lights a 6×6 square at its own place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        row, col = 2 + 8 * (c // 4), 2 + 6 * (c % 4)
        images[i, row : row + 6, col : col + 6] = 230
    noisy = rng.random(n) < 0.1  # 10 % wrong labels: some errors are certain
    labels = np.where(noisy, (labels + 1 + rng.integers(0, 9, n)) % 10, labels)
    return images, labels.astype(np.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_set(str(root / "mnist"), "train", *_digits(400, 1))
    write_idx_set(str(root / "mnist"), "t10k", *_digits(100, 2))
    noise = np.random.default_rng(3).integers(0, 256, size=(80, 28, 28)).astype(np.uint8)
    write_idx_set(str(root / "notmnist"), "t10k", noise, np.arange(80).astype(np.uint8) % 10)
    return str(root)


def _config(data_dir, out, **overrides):
    config = dict(
        data_dir=data_dir,
        check_counts=False,
        use_tfds=False,
        steps=60,
        steps_per_epoch=30,
        batch_size=40,
        learning_rate=3e-3,
        test_samples=8,
        hidden_units=["32", "32"],
        verbose=0,
        output_dir=str(out),
    )
    config.update(overrides)
    return mixture_experiment.default_config(**config)


def _without_times(result):
    return {k: v for k, v in result.items() if k not in ("train_seconds", "eval_seconds")}


def test_binary_runs_every_evaluation_and_writes_its_outputs(data_dir, tmp_path):
    out = tmp_path / "ml"
    result = run_binary(
        "experiments.mixture_mnist",
        [
            f"--data_dir={data_dir}",
            "--nocheck_counts",
            "--nouse_tfds",
            "--steps=60",
            "--steps_per_epoch=30",
            "--batch_size=40",
            "--learning_rate=0.003",
            "--hidden_units=32,32",
            "--test_samples=8",
            "--verbose=2",
            f"--output_dir={out}",
            "--validation_examples=40",
            "--evaluations=classification,weight_variances,misclassification,ood,robustness,"
            "adversarial_detection",
            "--robustness_examples=30",
            "--robustness_epsilons=0,0.2",
            "--robustness_gradient_samples=1,3",
            "--pgd_iterations=3",
            "--detection_examples=30",
        ],
    )
    assert "test accuracy" in result.stdout
    assert "Training ML λ=1 σ²=1" in result.stdout.splitlines()
    assert "adversarial detection: PGD at eps 0.25 on 30 test images" in result.stdout
    noise = info_log_lines(result)
    assert not noise, noise
    m = runs.read_json(out / "metrics.json")
    assert m["test"]["accuracy"] > 0.5  # learnable: far above chance (0.1)
    assert set(m["weight_variances"]) == {"hidden_0", "hidden_1", "logits"}
    for summary in m["weight_variances"].values():
        assert summary["q05"] <= summary["median"] <= summary["q95"]
        assert sum(summary["log10_histogram"]["counts"]) > 0
    assert m["ood"]["num_examples"] == 80
    assert 0 <= m["ood"]["predictive_variance"]["auroc"] <= 1
    hist = m["histograms"]["predictive_variance"]
    assert sum(hist["correct"]) + sum(hist["wrong"]) == 100
    # fixed edges over the whole range, the same in every run: variance of a probability ≤ 1/4
    assert hist["bin_edges"][0] == 0 and hist["bin_edges"][-1] == pytest.approx(0.25)
    assert m["histograms"]["total_uncertainty"]["bin_edges"][-1] == pytest.approx(np.log(10))
    assert set(m["robustness"]) == {"S=1", "S=3"}
    assert m["robustness"]["S=1"]["epsilons"] == [0.0, 0.2]
    assert m["robustness"]["S=3"]["attack_options"]["gradient_samples"] == 3
    assert m["robustness"]["S=1"]["attack_options"]["noise"] == "redraw"
    assert m["robustness"]["S=1"]["success_rate"][0] == 0.0
    adv = m["adversarial_detection"]
    assert adv["num_examples"] == 30 and set(adv["all"]) == set(
        mixture_experiment.DETECTION_MEASURES
    )
    assert adv["attack_options"]["preset"] == "cleverhans4" and 0 <= adv["success_rate"] <= 1
    for figure in ("uncertainty_hist.png", "weight_variance.png", "robustness.png"):
        assert os.path.getsize(out / "figures" / figure) > 1000
    assert (out / "model.keras").exists() and (out / "flags.cfg").exists()
    tags = set()
    for root, _, files in os.walk(out / "tensorboard"):
        for name in files:
            if name.startswith("events.out"):
                for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                    tags.update(v.tag for v in event.summary.value)
    assert {"epoch_loss", "epoch_kl", "epoch_nll", "epoch_accuracy"} <= tags
    assert "log10_weight_variance/hidden_1" in tags
    # One axis, the optimizer step: scalars, histograms and validation at the epoch ends 30, 60;
    # the evaluation (metrics.json's numbers, curve points, figures) at the final step 60.
    events = tensorboard_logging.read_events(out / "tensorboard")
    for key in (
        ("train", "epoch_loss"),
        ("train", "log10_weight_variance/hidden_1"),
        ("validation", "epoch_loss"),
        ("validation", "epoch_accuracy"),
    ):
        assert [step for step, _ in events[key]] == [30, 60], key
    for tag, value in (
        ("test/accuracy", m["test"]["accuracy"]),
        ("test/ece", m["test"]["ece"]),
        ("ood/total_uncertainty/auroc", m["ood"]["total_uncertainty"]["auroc"]),
        (
            "misclassification/predictive_variance/auroc",
            m["misclassification"]["predictive_variance"]["auroc"],
        ),
        ("robustness/S=3/accuracy/eps=0.2", m["robustness"]["S=3"]["accuracy"][1]),
        ("weight_variances/logits/median", m["weight_variances"]["logits"]["median"]),
        (
            "adversarial_detection/all/mutual_information/auroc",
            adv["all"]["mutual_information"]["auroc"],
        ),
    ):
        assert events[("evaluation", f"evaluation/{tag}")] == [(60, pytest.approx(value))], tag
    for figure in ("uncertainty_hist", "weight_variance", "robustness"):
        assert [step for step, _ in events[("evaluation", f"figures/{figure}")]] == [60]


def test_attack_flags_are_applied_and_recorded(data_dir, tmp_path):
    config = _config(
        data_dir,
        tmp_path / "frozen",
        model="ml",
        steps=5,
        steps_per_epoch=5,
        evaluations=["robustness", "adversarial_detection"],
        robustness_examples=20,
        robustness_epsilons=["0", "0.1"],
        detection_examples=20,
        detection_eps=0.1,
        attack_preset="cleverhans3_pgd",
        attack_noise="frozen",
        attack_combine="mean_loss",
        attack_labels="true",
        attack_evaluation="per_sample",
        attack_evaluation_attacks=2,
    )
    result = mixture_experiment.run(config)
    record = result["robustness"]["S=1"]["attack_options"]
    assert (record["preset"], record["eps_iter"], record["nb_iter"], record["rand_init"]) == (
        "cleverhans3_pgd",
        0.05,
        10,
        True,
    )
    assert (
        record["noise"],
        record["frozen_scope"],
        record["combine"],
        record["labels"],
        record["evaluation"],
        record["eval_attacks"],
    ) == ("frozen", "batch", "mean_loss", "true", "per_sample", 2)
    assert result["adversarial_detection"]["attack_options"] == record
    assert result["robustness"]["S=1"]["success_rate"][0] == 0.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(attack_preset="cleverhans3_pgd", pgd_iterations=7), "--pgd_iterations apply to"),
        (
            dict(attack_preset="cleverhans3_pgd", robustness_epsilons=["0", "0.02"]),
            "eps_iter=0.05 > eps=0.02",
        ),
        (dict(attack_noise="fixed"), "noise must be one of"),
        (dict(attack_evaluation="cdn"), "evaluation must be one of"),
        (dict(attack_label_samples=-1), "--attack_label_samples must be >= 0"),
    ],
)
def test_bad_attack_flags_fail_before_any_work(data_dir, tmp_path, overrides, message):
    config = _config(data_dir, tmp_path / "bad", evaluations=["robustness"], **overrides)
    with pytest.raises(ValueError, match=message):
        mixture_experiment.validate_config(config)


def test_metrics_match_a_direct_evaluation_of_the_saved_model(data_dir, tmp_path):
    """Deterministic net: every number recomputed from model.keras with uqmix.metrics / numpy."""
    import keras

    config = _config(
        data_dir,
        tmp_path / "det",
        model="deterministic",
        evaluations=["classification", "misclassification", "ood", "robustness"],
        robustness_examples=40,
        robustness_epsilons=["0"],
        pgd_iterations=2,
    )
    result = mixture_experiment.run(config)
    assert lockable_by_another_process(config["output_dir"])  # released when the run ended
    model = keras.saving.load_model(tmp_path / "det" / "model.keras")
    data = mixture_experiment.load_data(config)
    logits = model(data["x_test"]).numpy()
    accuracy = float(np.mean(logits.argmax(-1) == data["y_test"]))
    assert result["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    # ε = 0: PGD cannot move the inputs, so the accuracy is the clean one on those examples.
    assert result["robustness"]["S=1"]["accuracy"][0] == pytest.approx(
        float(np.mean(logits[:40].argmax(-1) == data["y_test"][:40]))
    )
    from sklearn.metrics import roc_auc_score

    probs = tf.nn.softmax(logits).numpy()
    ood_probs = tf.nn.softmax(model(data["x_ood"])).numpy()
    entropy = lambda p: -np.sum(p * np.log(np.maximum(p, 1e-30)), -1)  # noqa: E731
    scores = np.concatenate([entropy(probs), entropy(ood_probs)])
    truth = np.r_[np.zeros(len(probs)), np.ones(len(ood_probs))]
    assert result["ood"]["total_uncertainty"]["auroc"] == pytest.approx(
        roc_auc_score(truth, scores), abs=1e-4
    )
    wrong = logits.argmax(-1) != data["y_test"]
    if 0 < wrong.sum() < len(wrong):
        assert result["misclassification"]["total_uncertainty"]["auroc"] == pytest.approx(
            roc_auc_score(wrong, entropy(probs)), abs=1e-4
        )


def test_weight_variance_summary_matches_numpy(data_dir, tmp_path):
    config = _config(
        data_dir,
        tmp_path / "vi",
        model="vi",
        steps=5,
        steps_per_epoch=5,
        evaluations=["weight_variances"],
    )
    model = mixture_experiment.build_model(config, (28, 28, 1), 400)
    summary = mixture_experiment.weight_variance_summary(model, bins=10)
    for layer in model.dense_layers:
        u = np.exp(layer.log_row_variance.numpy().astype(np.float64))
        v = np.exp(layer.log_column_variance.numpy().astype(np.float64))
        variance = np.outer(u, v)
        assert summary[layer.name]["mean"] == pytest.approx(variance.mean(), rel=1e-5)
        assert summary[layer.name]["median"] == pytest.approx(np.median(variance), rel=1e-5)
        assert sum(summary[layer.name]["log10_histogram"]["counts"]) == variance.size


def test_same_seed_same_metrics_and_resume_after_a_crash(
    data_dir, tmp_path, interrupted_after_first_epoch
):
    config = dict(model="ml", evaluations=["classification", "misclassification", "ood"])
    uninterrupted = mixture_experiment.run(_config(data_dir, tmp_path / "a", **config))
    again = mixture_experiment.run(_config(data_dir, tmp_path / "b", **config))
    assert _without_times(again) == _without_times(uninterrupted)
    with interrupted_after_first_epoch():
        mixture_experiment.run(_config(data_dir, tmp_path / "c", **config))
    assert not (tmp_path / "c" / "metrics.json").exists()
    resumed = mixture_experiment.run(_config(data_dir, tmp_path / "c", resume=True, **config))
    assert _without_times(resumed) == _without_times(uninterrupted)


def test_steps_per_execution_changes_no_result(data_dir, tmp_path):
    """Several steps per compiled call (auto: 30 here) train exactly like one step per call."""
    config = dict(model="vi", evaluations=["classification", "ood"])
    one = mixture_experiment.run(_config(data_dir, tmp_path / "a", steps_per_execution=1, **config))
    auto = mixture_experiment.run(_config(data_dir, tmp_path / "b", **config))
    assert options.resolve_steps_per_execution(_config(data_dir, tmp_path / "c"), 60, 30) == 30
    assert _without_times(auto) == _without_times(one)


@pytest.mark.parametrize(
    "total, per_epoch, strategy, expected",
    [
        (30000, 1000, "default", 50),
        (9380, 469, "default", 7),
        (60, 30, "mirrored", 30),
        (97, 97, "default", 1),
        (30000, 1000, "multi_worker", 1),
    ],
)
def test_auto_steps_per_execution(total, per_epoch, strategy, expected):
    config = {"steps_per_execution": 0, "strategy": strategy}
    assert options.resolve_steps_per_execution(config, total, per_epoch) == expected
    assert total % expected == 0 and per_epoch % expected == 0


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--steps_per_execution=7", "--steps_per_execution (7) must divide the steps per epoch"),
        ("--steps_per_execution=-2", "--steps_per_execution must be an integer >= 0"),
        ("--kl_weight=-1", "--kl_weight must be >= 0"),
        ("--prior_variance=0", "--prior_variance must be > 0"),
        ("--train_samples=0", "--train_samples must be >= 1"),
        ("--dataset=cifar10", "Unknown --dataset 'cifar10'"),
        ("--model=bnn", "Unknown --model 'bnn'"),
        ("--evaluations=accuracy", "Unknown --evaluations"),
    ],
)
def test_bad_flags_fail_before_training(flag, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        name, value = flag[2:].split("=")
        overrides = {
            name: value.split(",")
            if name == "evaluations"
            else type(mixture_experiment.default_config()[name])(value)
        }
        mixture_experiment.validate_config(mixture_experiment.default_config(**overrides))


def test_bad_flag_exits_with_code_1_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.mixture_mnist",
            "--kl_weight=-0.5",
            f"--output_dir={out}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "--kl_weight must be >= 0" in result.stderr
    assert not out.exists()


def test_missing_data_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    config = _config(str(tmp_path / "empty"), tmp_path / "out")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        mixture_experiment.run(config)
    assert not (tmp_path / "out").exists()


def test_real_mnist_short_run(shared_data_dir, tmp_path):
    """The binary's data path on the real files (skips without ../shared/data)."""
    config = mixture_experiment.default_config(
        data_dir=shared_data_dir,
        use_tfds=False,
        steps=30,
        steps_per_epoch=30,
        test_samples=4,
        test_examples=500,
        ood_examples=500,
        verbose=0,
        output_dir=str(tmp_path / "real"),
        evaluations=["classification", "ood"],
    )
    result = mixture_experiment.run(config)
    assert result["num_train_examples"] == 60000 and result["ood"]["num_examples"] == 500
    assert result["test"]["accuracy"] > 0.5


@pytest.mark.parametrize("experiment", [mixture_experiment, pn_experiment])
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(output_dir=""), "--output_dir must be set"),
        (dict(resume=True, overwrite=True), "--resume and --overwrite contradict each other"),
        (dict(strategy="tpu", deterministic=True), "--deterministic is not supported on TPU"),
    ],
)
def test_run_options_shared_by_every_experiment(experiment, overrides, message, tmp_path):
    config = experiment.default_config(**{"output_dir": str(tmp_path), **overrides})
    with pytest.raises(ValueError, match=re.escape(message)):
        experiment.validate_config(config)


def _tiny_run(experiment, data_dir, out, **overrides):
    """A seconds-long run of ``experiment`` (the mixture study on ``data_dir``'s IDX files, the
    Prior Network study on its generated images)."""
    if experiment is mixture_experiment:
        return _config(data_dir, out, steps=30, evaluations=["classification"], **overrides)
    return _tiny(out, **{"output_dir": str(out), **overrides})


@pytest.mark.parametrize("experiment", [mixture_experiment, pn_experiment])
def test_metrics_json_is_written_last_after_the_export(experiment, data_dir, tmp_path, monkeypatch):
    """metrics.json marks a run finished (a sweep skips it, --reuse_training_from accepts it):
    a run whose export fails writes none and is finished by --resume, which records the export."""
    out, export_dir = tmp_path / "run", tmp_path / "export"
    config = _tiny_run(experiment, data_dir, out, export_dir=str(export_dir))

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(export_target, "export_run_model", disk_full)
    with pytest.raises(OSError, match="No space left"):
        experiment.run(config)
    assert not (out / runs.METRICS_FILE).exists()
    assert (out / runs.CONFIG_FILE).exists()  # the run was under way when its export failed
    monkeypatch.undo()
    metrics = experiment.run(dict(config, resume=True))
    assert runs.read_json(out / runs.METRICS_FILE)["export_dir"] == str(export_dir)
    assert metrics["export_dir"] == str(export_dir)
    assert (export_dir / "saved_model.pb").is_file()


# -- --training_cache ---------------------------------------------------------------------------
REUSE_KEYS = ("training_reused_from", "train_seconds_this_run")


def _cached(data_dir, out, cache, **overrides):
    """A short ML run with the training cache ``cache`` ("" = off): 30 steps in 2 epochs."""
    config = dict(
        model="ml",
        steps=30,
        steps_per_epoch=15,
        evaluations=["classification"],
        training_cache=str(cache) if cache else "",
    )
    config.update(overrides)
    return _config(data_dir, out, **config)


def _comparable_metrics(result):
    return {k: v for k, v in _without_times(result).items() if k not in REUSE_KEYS}


def _no_training(*args, **kwargs):
    raise AssertionError("trained although the training cache holds this training")


def _counting_train(monkeypatch):
    calls = []
    original = mixture_experiment.train

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(mixture_experiment, "train", counted)
    return calls


def test_training_cache_reuses_a_training_for_another_evaluation(
    data_dir, tmp_path, monkeypatch, capsys
):
    cache = tmp_path / "cache"
    first = mixture_experiment.run(_cached(data_dir, tmp_path / "first", cache))
    key, keyed = mixture_experiment.training_cache_key(
        mixture_experiment.validate_config(_cached(data_dir, tmp_path / "first", cache))
    )
    entry = cache / key
    assert sorted(os.listdir(cache)) == [key]  # no temp folder left behind
    assert sorted(os.listdir(entry)) == ["model.keras", "record.json"]
    record = runs.read_json(entry / "record.json")
    assert record["keyed"] == keyed and record["key"] == key
    assert record["source_run"] == str(tmp_path / "first")
    assert record["train_seconds"] == first["train_seconds"]
    assert not any(k in first for k in REUSE_KEYS)
    capsys.readouterr()

    # Another attack protocol and evaluation list, the same training: reused, not trained.
    variant = dict(
        evaluations=["classification", "robustness"],
        robustness_examples=20,
        robustness_epsilons=["0", "0.1"],
        pgd_iterations=2,
        attack_noise="frozen",
        test_samples=6,
    )
    monkeypatch.setattr(mixture_experiment, "train", _no_training)
    reused = mixture_experiment.run(
        _cached(data_dir, tmp_path / "reused", cache, verbose=2, **variant)
    )
    monkeypatch.undo()
    assert (
        f"training reused from {entry} (trained in {record['train_seconds']:.0f} s by "
        f"{tmp_path / 'first'})" in capsys.readouterr().out
    )
    assert reused["training_reused_from"] == str(entry)
    assert reused["train_seconds"] == record["train_seconds"]
    assert 0 <= reused["train_seconds_this_run"] < reused["train_seconds"] + 60
    assert (tmp_path / "reused" / "model.keras").exists()
    assert sorted(os.listdir(cache)) == [key]  # a hit stores nothing

    # The same flags trained without the cache: the same numbers (runs are deterministic).
    fresh = mixture_experiment.run(_cached(data_dir, tmp_path / "fresh", "", verbose=2, **variant))
    assert _comparable_metrics(reused) == _comparable_metrics(fresh)
    assert reused["test"] == fresh["test"] and reused["robustness"] == fresh["robustness"]


def test_training_cache_reuse_continues_the_dropout_noise_of_a_fresh_run(
    data_dir, tmp_path, monkeypatch
):
    """model.keras does not hold the state of Keras' Dropout noise; the entry's record does, so
    MC dropout evaluated from the cache draws the masks a freshly trained model draws."""
    short = dict(model="mc_dropout", steps=10, steps_per_epoch=10, evaluations=["classification"])
    cache = tmp_path / "cache"
    mixture_experiment.run(_cached(data_dir, tmp_path / "a", cache, **short))
    monkeypatch.setattr(mixture_experiment, "train", _no_training)
    reused = mixture_experiment.run(
        _cached(data_dir, tmp_path / "b", cache, test_samples=5, **short)
    )
    monkeypatch.undo()
    fresh = mixture_experiment.run(_cached(data_dir, tmp_path / "f", "", test_samples=5, **short))
    assert "training_reused_from" in reused and reused["test"] == fresh["test"]


def test_training_cache_misses_when_a_training_flag_changes(data_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = _counting_train(monkeypatch)
    mixture_experiment.run(_cached(data_dir, tmp_path / "a", cache, steps=10, steps_per_epoch=10))
    result = mixture_experiment.run(
        _cached(data_dir, tmp_path / "b", cache, steps=10, steps_per_epoch=10, seed=1)
    )
    assert len(calls) == 2 and "training_reused_from" not in result
    assert len(os.listdir(cache)) == 2  # a second entry


def test_training_cache_hit_does_not_override_a_started_training(
    data_dir, tmp_path, monkeypatch, interrupted_after_first_epoch
):
    """--resume of a run with a checkpoint continues it; the cache serves runs not started."""
    cache = tmp_path / "cache"
    with interrupted_after_first_epoch():
        mixture_experiment.run(_cached(data_dir, tmp_path / "c", cache))
    assert not cache.exists()  # an interrupted training is not stored
    stored = mixture_experiment.run(_cached(data_dir, tmp_path / "a", cache))
    calls = _counting_train(monkeypatch)
    resumed = mixture_experiment.run(_cached(data_dir, tmp_path / "c", cache, resume=True))
    assert len(calls) == 1 and "training_reused_from" not in resumed
    assert _comparable_metrics(resumed) == _comparable_metrics(stored)
    assert len(os.listdir(cache)) == 1  # the entry was there: never overwritten


def _spoil_missing_model(entry):
    os.remove(entry / "model.keras")


def _spoil_record(entry):
    (entry / "record.json").write_text("{not json")


def _spoil_key(entry):
    record = runs.read_json(entry / "record.json")
    record["keyed"]["flags"]["learning_rate"] = 0.5
    runs.atomic_write_json(entry / "record.json", record)


def _spoil_model(entry):
    (entry / "model.keras").write_bytes(b"half a zip")


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (_spoil_missing_model, "no model.keras"),
        (_spoil_record, "corrupt JSON"),
        (_spoil_key, "do not hash to its name"),
        (_spoil_model, "not a Keras archive"),
    ],
    ids=["missing model", "unreadable record", "record of another key", "truncated model"],
)
def test_training_cache_refuses_a_broken_entry_before_any_work(
    data_dir, tmp_path, monkeypatch, spoil, reason
):
    from uqmix import training_cache

    cache = tmp_path / "cache"
    config = _cached(data_dir, tmp_path / "run", cache)
    key, keyed = mixture_experiment.training_cache_key(mixture_experiment.validate_config(config))
    # A complete entry, made without training: a freshly built model stored under this key.
    model = mixture_experiment.build_model(
        mixture_experiment.validate_config(config), (28, 28, 1), 400
    )
    (tmp_path / "made").mkdir()
    runs.atomic_save_model(model, str(tmp_path / "made" / "model.keras"))
    training_cache.store(
        str(cache), key, keyed, model, str(tmp_path / "made" / "model.keras"), 1.0, "made"
    )
    entry = cache / key
    spoil(entry)
    monkeypatch.setattr(mixture_experiment, "train", _no_training)
    with pytest.raises(training_cache.TrainingCacheError) as error:
        mixture_experiment.run(config)
    message = str(error.value)
    assert reason in message and f"entry {entry} is incomplete or corrupt" in message
    assert f"rm -r {entry}" in message
    assert not (tmp_path / "run").exists()  # nothing written


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return value + ["7"]
    return value + "_other"


def test_training_cache_key_excludes_exactly_the_named_evaluation_flags(tmp_path):
    config = mixture_experiment.validate_config(
        mixture_experiment.default_config(output_dir=str(tmp_path / "run"))
    )
    key, keyed = mixture_experiment.training_cache_key(config)
    names = [name for name, _, _ in mixture_experiment.OPTIONS]
    assert {n for n in names if n in mixture_experiment.TRAINING_CACHE_EXCLUDED} == {
        "ood_dataset",
        "ood_examples",
        "test_examples",
        "data_dir",
        "evaluations",
        "test_samples",
        "histogram_bins",
        "robustness_examples",
        "robustness_epsilons",
        "robustness_gradient_samples",
        "pgd_iterations",
        "pgd_eps_iter_ratio",
        "pgd_rand_init",
        "attack_preset",
        "attack_noise",
        "attack_frozen_scope",
        "attack_combine",
        "attack_labels",
        "attack_label_samples",
        "attack_evaluation",
        "attack_evaluation_attacks",
        "detection_eps",
        "detection_examples",
        "detection_gradient_samples",
        "output_dir",
        "export_dir",
        "resume",
        "overwrite",
        "verbose",
        "training_cache",
        "steps_per_execution",  # speed only (runs.VOLATILE_KEYS): the same training
    }
    assert mixture_experiment.TRAINING_CACHE_EXCLUDED >= runs.VOLATILE_KEYS
    assert keyed["binary"] == "experiments.mixture_mnist" and len(keyed["uqmix_source"]) == 64
    for name in names:
        other = mixture_experiment.training_cache_key({**config, name: _changed(config[name])})[0]
        if name in mixture_experiment.TRAINING_CACHE_EXCLUDED:
            assert other == key, f"--{name} changed the key"
        else:  # every other flag, a future one too, is part of the key
            assert other != key, f"--{name} is not in the key"
    for name in ("kl_weight", "steps", "seed", "jit_sampling", "eval_batch_size", "strategy"):
        assert name in keyed["flags"]


def test_source_fingerprint_covers_every_python_file_and_only_those(tmp_path):
    from uqmix import training_cache

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    before = training_cache.source_fingerprint(str(tmp_path))
    (tmp_path / "notes.txt").write_text("not code")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "c.py").write_text("cached")
    assert training_cache.source_fingerprint(str(tmp_path)) == before
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert training_cache.source_fingerprint(str(tmp_path)) != before
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "sub" / "b.py").rename(tmp_path / "sub" / "c.py")
    assert training_cache.source_fingerprint(str(tmp_path)) != before
    assert len(training_cache.source_fingerprint()) == 64  # the installed uqmix


def test_training_cache_is_refused_with_multi_worker(tmp_path):
    config = mixture_experiment.default_config(
        output_dir=str(tmp_path / "run"),
        training_cache=str(tmp_path / "cache"),
        strategy="multi_worker",
    )
    with pytest.raises(ValueError, match="--training_cache cannot be used with --strategy="):
        mixture_experiment.validate_config(config)
