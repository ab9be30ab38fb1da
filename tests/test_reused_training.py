"""--reuse_training_from: a Prior Network run evaluated and attacked on another finished run's
networks gives that run's numbers, never touches it, and refuses a source of other training
flags before any work."""

import json
import os

import pytest

from tests.test_cifar_rkl import _tiny
from uqmix import run_lock, runs, training
from uqmix.studies import pn_experiment, reused_training

ATTACK = dict(attack=True, attack_examples=16, attack_iterations=[1, 2], blackbox_transfer=True)
TIMES = {"train_seconds", "eval_seconds", "attack_seconds", "blackbox_source_train_seconds"}


def _tree(folder):
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name != ".uqmix_lock":
                with open(os.path.join(root, name), "rb") as f:
                    files[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return files


def _comparable(metrics):
    """The metrics without wall times and the reuse record, as JSON text (NaN == NaN)."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMES}
        return value

    kept = {k: v for k, v in metrics.items() if k != "training_reused_from"}
    return json.dumps(strip(runs.jsonable(kept)), sort_keys=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished run at ROOT/cfg/seed_0 (as a sweep lays it out), attacked, with black-box."""
    root = tmp_path_factory.mktemp("source_root")
    config = _tiny(root, output_dir=str(root / "cfg" / "seed_0"), **ATTACK)
    metrics = pn_experiment.run(config)
    return root, config, metrics


def test_reused_networks_give_the_source_runs_numbers_and_the_source_is_untouched(source, tmp_path):
    root, config, source_metrics = source
    before = _tree(root)
    out = tmp_path / "kldir" / "cfg" / "seed_0"  # another sweep root, same layout
    reused = pn_experiment.run(dict(config, output_dir=str(out), reuse_training_from=str(root)))
    assert reused["training_reused_from"] == str(root / "cfg" / "seed_0")
    assert _comparable(reused) == _comparable(source_metrics)  # same networks, same attacks
    for name in ("model", "blackbox_source_model"):
        assert training.has_checkpoint(str(out / name))
    assert runs.read_seconds(str(out), "train_seconds") == runs.read_seconds(
        str(root / "cfg" / "seed_0"), "train_seconds"
    )
    assert _tree(root) == before


def test_other_attack_flags_reuse_and_a_resumed_run_keeps_its_own_networks(source, tmp_path):
    root, config, _ = source
    out = tmp_path / "run"
    first = pn_experiment.run(
        dict(
            config,
            output_dir=str(out),
            reuse_training_from=str(root / "cfg" / "seed_0"),
            attack_criterion="kl_dir",
            blackbox_transfer=False,
        )
    )
    assert first["attacks"]["criterion"] == "kl_dir"
    assert not (out / "blackbox_source_model").exists()  # not asked for: not copied
    copied = reused_training.copy_networks(str(root / "cfg" / "seed_0"), str(out), ["model"])
    assert copied == []  # this run has its networks: a resume never copies over them


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(learning_rate=2e-3), "trained its networks with other flags \\(learning_rate: "),
        (dict(epochs=2), "epochs: 1 → 2"),
        (dict(seed=1), "seed: 0 → 1"),
    ],
)
def test_a_source_of_other_training_flags_is_refused_before_any_work(
    source, tmp_path, change, message
):
    root, config, _ = source
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        pn_experiment.run(
            dict(
                config,
                output_dir=str(out),
                reuse_training_from=str(root / "cfg" / "seed_0"),
                **change,
            )
        )
    assert not out.exists()


def test_unfinished_missing_or_own_sources_are_refused(source, tmp_path):
    root, config, _ = source
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in (runs.CONFIG_FILE, runs.FLAGS_FILE):
        (unfinished / name).write_bytes((root / "cfg" / "seed_0" / name).read_bytes())
    out = str(tmp_path / "run")
    with pytest.raises(ValueError, match="has not finished \\(no metrics.json\\)"):
        pn_experiment.run(dict(config, output_dir=out, reuse_training_from=str(unfinished)))
    with pytest.raises(ValueError, match="neither .*nowhere nor .*nowhere/.*/run is a uqmix run"):
        pn_experiment.run(
            dict(config, output_dir=out, reuse_training_from=str(tmp_path / "nowhere"))
        )
    own = str(root / "cfg" / "seed_0")
    with pytest.raises(ValueError, match="is this run's own folder"):
        reused_training.source_run(own, own)
    assert not os.path.exists(out)


def test_a_source_without_a_trained_network_is_refused(source, tmp_path):
    root, config, _ = source
    broken = tmp_path / "broken"
    for name in (runs.CONFIG_FILE, runs.FLAGS_FILE, runs.METRICS_FILE):
        os.makedirs(broken, exist_ok=True)
        (broken / name).write_bytes((root / "cfg" / "seed_0" / name).read_bytes())
    with pytest.raises(ValueError, match="holds no trained network in model"):
        pn_experiment.run(
            dict(config, output_dir=str(tmp_path / "run"), reuse_training_from=str(broken))
        )


def test_training_differences_ignore_evaluation_flags_and_default_what_the_source_predates():
    config = pn_experiment.default_config()
    source = {k: v for k, v in config.items() if k != "weight_decay"}  # predates the flag
    source.update(attack_eps=0.5, test_examples=7, output_dir="elsewhere", attack=True)
    assert reused_training.training_differences(source, config, config) == []
    source["weight_decay"] = 0.1
    assert reused_training.training_differences(source, config, config) == [
        f"weight_decay: 0.1 → {json.dumps(config['weight_decay'])}"
    ]


def test_multi_worker_is_refused_with_the_flag():
    with pytest.raises(ValueError, match="--reuse_training_from cannot be used with"):
        pn_experiment.validate_config(
            pn_experiment.default_config(reuse_training_from="x", strategy="multi_worker")
        )


def _stopped_before_training(out, config):
    """The folder of a run (this configuration, with --reuse_training_from) stopped before its
    first checkpoint: the run's record, model/ with its seed record and an empty checkpoints/."""
    with run_lock.holding(str(out)):
        runs.prepare_output_dir(str(out), pn_experiment.validate_config(config))
    (out / "model" / training.CHECKPOINT_SUBDIR).mkdir(parents=True)
    (out / "model" / pn_experiment.NETWORK_SEED_FILE).write_text('{"seed": 0}')


def test_a_network_folder_holding_other_files_is_refused_before_any_work(
    source, tmp_path, monkeypatch
):
    root, config, _ = source
    out = tmp_path / "run"
    config = dict(
        config, output_dir=str(out), reuse_training_from=str(root / "cfg" / "seed_0"), resume=True
    )
    _stopped_before_training(out, config)
    (out / "model" / "thesis_model.h5").write_text("irreplaceable")
    before = _tree(out)

    def no_work(*args, **kwargs):
        raise AssertionError("the data was read before the refusal")

    monkeypatch.setattr(pn_experiment.run_steps, "begin", no_work)
    with pytest.raises(runs.OutputPathError, match="holds model/thesis_model.h5 where the source"):
        pn_experiment.run(config)
    assert _tree(out) == before


def test_a_network_folder_of_the_runs_own_records_is_replaced_by_the_copy(source, tmp_path):
    root, config, _ = source
    out = tmp_path / "run"
    config = dict(
        config, output_dir=str(out), reuse_training_from=str(root / "cfg" / "seed_0"), resume=True
    )
    _stopped_before_training(out, config)
    metrics = pn_experiment.run(config)
    assert metrics["training_reused_from"] == str(root / "cfg" / "seed_0")
    assert training.has_checkpoint(str(out / "model"))


def test_a_copy_stopped_half_way_leaves_no_half_network_and_is_redone(
    source, tmp_path, monkeypatch
):
    root, _, _ = source
    out = tmp_path / "run"
    out.mkdir()
    real_copytree = reused_training.shutil.copytree

    def stopped(src, dst, *args, **kwargs):
        monkeypatch.setattr(reused_training.shutil, "copytree", real_copytree)  # its recursion
        real_copytree(src, dst, *args, **kwargs)
        for folder, _, names in os.walk(dst):  # the checkpoint half-written
            for name in names:
                if name.endswith(".index"):
                    os.remove(os.path.join(folder, name))
        raise KeyboardInterrupt

    monkeypatch.setattr(reused_training.shutil, "copytree", stopped)
    with pytest.raises(KeyboardInterrupt):
        reused_training.copy_networks(str(root / "cfg" / "seed_0"), str(out), ["model"])
    assert not (out / "model").exists()  # only the staging folder, never a half network
    assert reused_training.copy_networks(str(root / "cfg" / "seed_0"), str(out), ["model"]) == [
        "model"
    ]
    assert training.has_checkpoint(str(out / "model"))
    assert _tree(out / "model") == _tree(root / "cfg" / "seed_0" / "model")
    assert sorted(os.listdir(out)) == sorted([reused_training.COPY_RECORD, "model"])


def test_a_copy_stopped_between_two_networks_is_finished_and_timed_once(
    source, tmp_path, monkeypatch
):
    """Stopped after the first network was in place: the next attempt copies the second (it
    must not take the first's checkpoint for "this run trained its networks" and train the
    second here), sets the seconds once and records the copy."""
    root, _, _ = source
    src, out = root / "cfg" / "seed_0", tmp_path / "run"
    out.mkdir()
    names = ["model", "blackbox_source_model"]
    keys = [("train_seconds", "model"), ("blackbox_source_train_seconds", names[1])]
    real_copytree = reused_training.shutil.copytree

    def second_stops(src_dir, dst, *args, **kwargs):
        if os.path.basename(dst) == f".{names[1]}.uqmix-copy":
            raise KeyboardInterrupt
        monkeypatch.setattr(reused_training.shutil, "copytree", real_copytree)
        try:
            return real_copytree(src_dir, dst, *args, **kwargs)
        finally:
            monkeypatch.setattr(reused_training.shutil, "copytree", second_stops)

    monkeypatch.setattr(reused_training.shutil, "copytree", second_stops)
    with pytest.raises(KeyboardInterrupt):
        reused_training.copy_networks(str(src), str(out), ["model"], names[1:], keys)
    monkeypatch.setattr(reused_training.shutil, "copytree", real_copytree)
    assert training.has_checkpoint(str(out / "model"))
    assert not (out / names[1]).exists()
    assert reused_training.copy_record(str(out))["finished"] is False
    for _ in range(2):  # finished, then nothing left to do
        reused_training.copy_networks(str(src), str(out), ["model"], names[1:], keys)
    for name in names:
        assert _tree(out / name) == _tree(src / name)
    for key, _ in keys:
        assert runs.read_seconds(str(out), key) == reused_training._source_seconds(str(src), key)
    assert reused_training.copy_record(str(out)) == {
        "source": str(src),
        "networks": names,
        "finished": True,
    }
    assert not [n for n in os.listdir(out) if n.endswith(".uqmix-copy")]
    # stopped after its last network was in place, before the seconds and the finished mark:
    # the next call finishes the record (the seconds set once)
    runs.set_seconds(str(out), "train_seconds", 0.0)
    runs.atomic_write_json(
        str(out / reused_training.COPY_RECORD),
        {"source": str(src), "networks": names, "finished": False},
    )
    assert reused_training.copy_networks(str(src), str(out), ["model"], names[1:], keys) == []
    assert reused_training.copy_record(str(out))["finished"] is True
    assert runs.read_seconds(str(out), "train_seconds") == reused_training._source_seconds(
        str(src), "train_seconds"
    )
    with pytest.raises(ValueError, match="was copying the networks of"):  # another source
        runs.atomic_write_json(
            str(out / reused_training.COPY_RECORD),
            {"source": "/elsewhere", "networks": names, "finished": False},
        )
        reused_training.networks_to_copy(str(src), str(out), ["model"], names[1:])


def test_a_run_that_trained_its_own_networks_does_not_claim_a_reuse(source, tmp_path):
    """--reuse_training_from added when resuming a run that trained its networks itself copies
    nothing, and metrics.json must not say the networks came from the source."""
    root, config, _ = source
    out = tmp_path / "run"
    own = dict(config, output_dir=str(out), blackbox_transfer=False, attack=False)
    pn_experiment.run(own)
    metrics = pn_experiment.run(
        dict(own, resume=True, reuse_training_from=str(root / "cfg" / "seed_0"))
    )
    assert "training_reused_from" not in metrics
    assert reused_training.copy_record(str(out)) is None
