"""experiments.cifar_rkl: the smoke flagfile end to end, CIFAR binary files, bad input, NaN stop."""

import gzip
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.binaries import info_log_lines, run_binary
from tests.conftest import REPO_ROOT
from tests.lock_helpers import held_by_another_process, lockable_by_another_process
from uqmix import data_synthetic_images, run_lock, runs, tensorboard_logging, training
from uqmix.data import DataSourceError
from uqmix.studies import pn_experiment

SMOKE = os.path.join(REPO_ROOT, "experiments", "configs", "smoke.cfg")


def _tiny(tmp_path, **overrides):
    """A seconds-long configuration on the generated images."""
    config = dict(
        dataset="synthetic_images",
        ood_train_dataset="synthetic_images_ood",
        ood_test_datasets=["synthetic_images_ood"],
        backbone="small_convnet",
        batch_size=32,
        epochs=1,
        steps_per_epoch=3,
        optimizer="adam",
        learning_rate=1e-3,
        lr_schedule="constant",
        augment=False,
        verbose=0,
        histogram_examples=0,
        test_examples=64,
        ood_test_examples=64,
        output_dir=str(tmp_path / "run"),
    )
    config.update(overrides)
    return pn_experiment.default_config(**config)


def _event_tags(folder):
    scalars, histograms = set(), set()
    for root, _, files in os.walk(folder):
        for name in files:
            if not name.startswith("events.out"):
                continue
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    kind = value.metadata.plugin_data.plugin_name
                    (histograms if kind == "histograms" else scalars).add(value.tag)
    return scalars, histograms


def test_smoke_flagfile_end_to_end(tmp_path):
    out = tmp_path / "smoke"
    result = run_binary(
        "experiments.cifar_rkl",
        [
            f"--flagfile={SMOKE}",
            f"--output_dir={out}",
            "--verbose=2",
        ],
    )
    assert "test error" in result.stdout
    assert "Training model" in result.stdout.splitlines()
    assert "attacking the first 100 test images" in result.stdout
    noise = info_log_lines(result)
    assert not noise, noise
    metrics = runs.read_json(out / "metrics.json")
    assert metrics["error"] < 0.5  # a learnable set: far better than chance (0.9)
    ood = metrics["ood_detection"]["synthetic_images_ood"]
    assert set(ood) == set(pn_experiment.OOD_MEASURES)
    assert ood["mutual_information"]["auroc"] > 0.8
    assert metrics["mean_alpha0_in"] > metrics["mean_alpha0_ood"]["synthetic_images_ood"]
    curves = metrics["attacks"]["white_box"]
    assert metrics["attacks"]["iterations"] == [2, 5, 10]
    assert all(len(curves[k]) == 3 for k in ("success_rate", "auroc", "jsr"))
    assert all(0 <= v <= 0.5 + 1e-9 for v in curves["jsr"])
    assert 0 < metrics["attack_seconds"] and 0 < metrics["eval_seconds"]
    # --verbose=2 (a log file): one timestamped progress line per curve point, its success rate
    progress = re.findall(
        r"\] white-box attack, \w+ (\d+) iterations \(batch 1/1, point \d/3\): "
        r"success rate ([0-9.]+)",
        result.stdout,
    )
    assert [int(n) for n, _ in progress] == [2, 5, 10]
    np.testing.assert_allclose([float(r) for _, r in progress], curves["success_rate"], atol=5e-4)
    for figure in metrics["figures"]:
        assert os.path.getsize(out / figure) > 1000
    assert {
        "figures/alpha0_histogram.png",
        "figures/mi_histogram.png",
        "figures/roc_mutual_information.png",
        "figures/attack_curves.png",
    } <= set(metrics["figures"])
    config = runs.read_json(out / "config.json")
    assert config["dataset"] == "synthetic_images" and config["epochs"] == 4
    assert "--loss=reverse_kl" in (out / "flags.cfg").read_text()
    assert tf.train.latest_checkpoint(str(out / "model" / "checkpoints")).endswith("-4")
    scalars, histograms = _event_tags(out / "tensorboard")
    for tag in (
        "loss",
        "in_domain_loss",
        "ood_loss",
        "accuracy",
        "mean_alpha0_in",
        "mean_alpha0_ood",
        "learning_rate",
    ):
        assert f"epoch_{tag}" in scalars, (tag, scalars)
    assert {"log10_alpha0/in_domain", "log10_alpha0/ood"} <= histograms
    # One axis, the optimizer step: 500 training images (100 held out) / 64 = 8 steps per epoch.
    events = tensorboard_logging.read_events(out / "tensorboard" / "model")
    epochs = [8, 16, 24, 32]
    assert [step for step, _ in events[("train", "epoch_loss")]] == epochs
    assert [step for step, _ in events[("train", "log10_alpha0/in_domain")]] == epochs
    assert [step for step, _ in events[("validation", "epoch_accuracy")]] == epochs
    evaluation = tensorboard_logging.read_events(out / "tensorboard" / "evaluation")
    for tag, value in (
        ("error", metrics["error"]),
        ("nll", metrics["nll"]),
        (
            "ood_detection/synthetic_images_ood/mutual_information/auroc",
            ood["mutual_information"]["auroc"],
        ),
        ("attacks/white_box/success_rate/iter=10", curves["success_rate"][2]),
        ("attacks/white_box/jsr/iter=2", curves["jsr"][0]),
    ):
        assert evaluation[(".", f"evaluation/{tag}")] == [(32, pytest.approx(value, rel=1e-6))]
    for figure in metrics["figures"]:
        name = os.path.splitext(os.path.basename(figure))[0]
        assert [step for step, _ in evaluation[(".", f"figures/{name}")]] == [32]


def _write_cifar(folder, subfolder, files, records):
    os.makedirs(os.path.join(folder, subfolder), exist_ok=True)
    start = 0
    for name, count in files:
        with open(os.path.join(folder, subfolder, name), "wb") as handle:
            handle.write(records[start : start + count].tobytes())
        start += count


def _cifar_records(images, label_columns):
    pixels = np.round(images * 255).astype(np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([np.stack(label_columns, 1).astype(np.uint8), pixels], axis=1)


def test_cifar_binary_files_train_and_evaluate(tmp_path):
    x, y = data_synthetic_images.load("synthetic_images", "train")
    x_test, y_test = data_synthetic_images.load("synthetic_images", "test")
    x_ood, _ = data_synthetic_images.load("synthetic_images_ood", "train")
    data_dir = tmp_path / "data"
    _write_cifar(
        str(data_dir / "cifar10"),
        "cifar-10-batches-bin",
        [(f"data_batch_{i}.bin", 40) for i in range(1, 6)],
        _cifar_records(x[:200], [y[:200]]),
    )
    _write_cifar(
        str(data_dir / "cifar10"),
        "cifar-10-batches-bin",
        [("test_batch.bin", 50)],
        _cifar_records(x_test[:50], [y_test[:50]]),
    )
    fine = np.arange(100) % 100
    _write_cifar(
        str(data_dir / "cifar100"),
        "cifar-100-binary",
        [("train.bin", 100)],
        _cifar_records(x_ood[:100], [fine // 5, fine]),
    )
    _write_cifar(
        str(data_dir / "cifar100"),
        "cifar-100-binary",
        [("test.bin", 60)],
        _cifar_records(x_ood[100:160], [fine[:60] // 5, fine[:60]]),
    )
    config = _tiny(
        tmp_path,
        dataset="cifar10",
        ood_train_dataset="cifar100",
        ood_test_datasets=["cifar100"],
        data_dir=str(data_dir),
        use_tfds=False,
        check_counts=False,
        backbone="vgg16",
        width_multiplier=0.0625,
        augment=True,
        test_examples=0,
        ood_test_examples=0,
    )
    data = pn_experiment.load_data(pn_experiment.validate_config(config))
    np.testing.assert_allclose(data["x_train"], np.round(x[:200] * 255) / 255, atol=1e-6)
    np.testing.assert_array_equal(data["y_train"], y[:200])
    assert data["input_shape"] == (32, 32, 3) and data["num_classes"] == 10
    metrics = pn_experiment.run(config)
    assert lockable_by_another_process(config["output_dir"])  # released when the run ended
    assert metrics["num_train_examples"] == 200 and metrics["num_test_examples"] == 50
    assert metrics["num_ood_train_examples"] == 100
    assert metrics["num_ood_test_examples"] == {"cifar100": 60}
    assert 0.0 <= metrics["error"] <= 1.0
    assert set(metrics["ood_detection"]["cifar100"]) == set(pn_experiment.OOD_MEASURES)


def _write_idx(folder, prefix, images):
    os.makedirs(folder, exist_ok=True)
    n = len(images)
    with gzip.open(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), "wb") as handle:
        handle.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
    with gzip.open(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as handle:
        handle.write(struct.pack(">II", 0x801, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"dataset": "imagenet"}, "Unknown --dataset 'imagenet'"),
        ({"ood_test_datasets": ["cifar10", "places"]}, "Unknown dataset 'places'"),
        ({"backbone": "resnet50"}, "Unknown --backbone 'resnet50'"),
        ({"target_concentration": 0.0}, "--target_concentration must be > 0"),
        ({"ood_weight": -0.5}, "--ood_weight must be >= 0"),
        ({"loss": "hinge"}, "Unknown --loss 'hinge'"),
        ({"model_kind": "ensemble"}, "--loss=cross_entropy"),
        ({"strategy": "horovod"}, "Unknown --strategy"),
        (
            {"loss": "cross_entropy", "attack_measure": "mutual_information"},
            "0.5 by construction; use --attack_measure=total_uncertainty",
        ),
        (
            {"model_kind": "ensemble", "loss": "cross_entropy", "attack_measure": "precision"},
            "--attack_measure=precision needs a Prior Network",
        ),
        ({"attack_noise": "fixed"}, "Unknown --attack_noise 'fixed'"),
        ({"attack_noise": "frozen"}, "a Prior Network has no sampled noise"),
        ({"attack_cw_binary_steps": 0}, "--attack_cw_binary_steps must be >= 1"),
    ],
)
def test_bad_flags_are_refused_before_anything_runs(tmp_path, overrides, message):
    config = _tiny(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        pn_experiment.run(config)
    assert not os.path.exists(config["output_dir"])


def test_adaptive_cw_on_mc_dropout_with_frozen_noise_is_recorded(tmp_path):
    config = _tiny(
        tmp_path,
        model_kind="mc_dropout",
        loss="cross_entropy",
        dropout_rate=0.3,
        ood_train_dataset="",
        eval_samples=3,
        attack=True,
        attack_method="cw",
        attack_iterations=["3", "6"],
        attack_examples=12,
        attack_measure="total_uncertainty",
        attack_noise="frozen",
        attack_combine="mean_loss",
        attack_gradient_samples=2,
        attack_cw_binary_steps=2,
        attack_cw_learning_rate=0.05,
    )
    metrics = pn_experiment.run(config)
    attacks = metrics["attacks"]
    assert attacks["method"] == "cw" and attacks["iterations"] == [3, 6]
    recorded = attacks["attack_options"]
    assert (
        recorded["noise"],
        recorded["combine"],
        recorded["num_gradient_samples"],
        recorded["binary_search_steps"],
        recorded["learning_rate"],
    ) == ("frozen", "mean_loss", 2, 2, 0.05)
    curves = attacks["white_box"]
    assert all(len(curves[k]) == 2 for k in ("success_rate", "auroc", "jsr", "median_l2"))
    assert all(0 <= v <= 1 for v in curves["success_rate"])


def test_bad_data_is_refused_before_training(tmp_path):
    # Missing files: a data_dir without the set, downloads off.
    empty = tmp_path / "empty"
    empty.mkdir()
    config = _tiny(
        tmp_path, dataset="cifar10", ood_train_dataset="", data_dir=str(empty), use_tfds=False
    )
    with pytest.raises(DataSourceError, match="cifar10"):
        pn_experiment.run(config)
    # OOD images of another shape (28x28x1 IDX files vs 32x32x3 images).
    data_dir = tmp_path / "data"
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    _write_idx(str(data_dir / "fashion_mnist"), "train", images)
    config = _tiny(
        tmp_path,
        ood_train_dataset="fashion_mnist",
        data_dir=str(data_dir),
        check_counts=False,
        use_tfds=False,
    )
    with pytest.raises(
        ValueError,
        match=r"\(32, 32, 3\) per example but OOD training set "
        r"fashion_mnist inputs have \(28, 28, 1\)",
    ):
        pn_experiment.run(config)
    assert not os.path.exists(config["output_dir"])


def test_output_dir_of_another_configuration_is_refused(tmp_path):
    config = _tiny(tmp_path)
    with run_lock.holding(config["output_dir"]):  # released for the other process below
        runs.prepare_output_dir(config["output_dir"], dict(config, ood_weight=0.3))
    with pytest.raises(runs.ConfigMismatchError, match="ood_weight"):
        pn_experiment.run(config)
    with pytest.raises(runs.ConfigMismatchError, match="ood_weight"):
        pn_experiment.run(dict(config, resume=True))
    assert not os.path.exists(os.path.join(config["output_dir"], "model"))
    with held_by_another_process(config["output_dir"]) as holder:
        missing_data = {"dataset": "mnist", "data_dir": str(tmp_path / "none"), "use_tfds": False}
        for options in ({"resume": True}, {"overwrite": True}, dict(resume=True, **missing_data)):
            # refused before the data is read (the missing data would be the error otherwise)
            with pytest.raises(runs.RunInUseError, match=f"pid {holder.pid} on "):
                pn_experiment.run(dict(config, **options))
        assert os.path.exists(os.path.join(config["output_dir"], runs.CONFIG_FILE))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.cifar_rkl",
            "--dataset=synthetic_images",
            "--backbone=resnet",
            f"--output_dir={tmp_path / 'cli'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Unknown --backbone 'resnet'" in result.stderr


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = training._EpochCheckpoint.on_epoch_end

    def blow_up_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        # A divergence that does not depend on how far a big step carries the weights: the
        # output layer's bias (nothing after it can mask a NaN, as a ReLU would) becomes NaN
        # after the checkpoint of epoch 1, so the next loss is NaN.
        bias = self.model.trainable_variables[-1]
        assert bias.path.endswith("logits/bias"), bias.path
        bias.assign(tf.fill(tf.shape(bias), float("nan")))

    monkeypatch.setattr(training._EpochCheckpoint, "on_epoch_end", blow_up_after_first_epoch)
    config = _tiny(tmp_path, epochs=3)
    with pytest.raises(training.TrainingDivergedError, match="ckpt-1") as info:
        pn_experiment.run(config)
    assert "nan" in str(info.value).lower() or "inf" in str(info.value).lower()
    checkpoint = tf.train.latest_checkpoint(
        os.path.join(config["output_dir"], "model", "checkpoints")
    )
    assert checkpoint.endswith("ckpt-1")
    reader = tf.train.load_checkpoint(checkpoint)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name
    assert not os.path.exists(os.path.join(config["output_dir"], "metrics.json"))


def test_crashed_run_resumes_to_the_uninterrupted_result(tmp_path, interrupted_after_first_epoch):
    """Killed after epoch 1 of 2, run again with --resume: the same metrics as one clean run."""
    options = dict(epochs=2, augment=True, augment_padding=2)
    times = ("train_seconds", "eval_seconds", "attack_seconds")
    uninterrupted = pn_experiment.run(_tiny(tmp_path / "a", **options))
    with interrupted_after_first_epoch():
        pn_experiment.run(_tiny(tmp_path / "b", **options))
    first_epoch = runs.read_seconds(str(tmp_path / "b" / "run"), "train_seconds")
    assert first_epoch > 0  # timed although the run never finished training
    resumed = pn_experiment.run(_tiny(tmp_path / "b", resume=True, **options))
    strip = lambda m: {k: v for k, v in m.items() if k not in times}  # noqa: E731
    assert strip(resumed) == strip(uninterrupted)
    # both epochs, the interrupted invocation's and the resumed one's
    assert resumed["train_seconds"] == runs.read_seconds(
        str(tmp_path / "b" / "run"), "train_seconds"
    )
    assert resumed["train_seconds"] > first_epoch


def test_non_finite_weights_under_a_finite_loss_stop_training(tmp_path, monkeypatch):
    """Weights that turn NaN after the last batch of epoch 2 (every loss of the epoch was
    finite; no batch ever sees them, so the test does not depend on how this CPU's ReLU treats
    NaN) are caught by the epoch-end weight check before that epoch's checkpoint is written."""
    epoch_now = {}

    def note_epoch(self, epoch, logs=None):
        epoch_now["epoch"] = epoch

    def poison_after_last_batch_of_second_epoch(self, batch, logs=None):
        if epoch_now.get("epoch") == 1 and batch == self.params["steps"] - 1:
            kernel = self.model.trainable_variables[0]
            assert kernel.path.endswith("conv/kernel"), kernel.path
            kernel.assign(tf.fill(tf.shape(kernel), float("nan")))

    # _EpochCheckpoint runs after the loss guard: the batch's loss was checked (finite) first.
    monkeypatch.setattr(training._EpochCheckpoint, "on_epoch_begin", note_epoch, raising=False)
    monkeypatch.setattr(
        training._EpochCheckpoint,
        "on_train_batch_end",
        poison_after_last_batch_of_second_epoch,
        raising=False,
    )
    config = _tiny(tmp_path, epochs=3)
    with pytest.raises(training.TrainingDivergedError, match="non-finite weights") as info:
        pn_experiment.run(config)
    assert "epoch 2, the end" in str(info.value) and "ckpt-1" in str(info.value)
    checkpoint = tf.train.latest_checkpoint(
        os.path.join(config["output_dir"], "model", "checkpoints")
    )
    assert checkpoint.endswith("ckpt-1")


def test_network_seeds_of_different_runs_are_disjoint():
    """Member 0 keeps the run's seed; the five members of seeds 0..99 are 500 distinct seeds
    (``seed + member`` shared four of five members between consecutive seeds)."""
    assert [pn_experiment.network_seed(s, 0) for s in (0, 7, 123)] == [0, 7, 123]
    members = [pn_experiment.network_seed(s, m) for s in range(100) for m in range(5)]
    assert len(set(members)) == 500
    assert all(0 <= seed < 2**31 for seed in members)
    assert pn_experiment.network_seed(3, 2) == pn_experiment.network_seed(3, 2)  # reproducible


def test_ensemble_and_blackbox_source_record_their_network_seeds(tmp_path):
    config = _tiny(
        tmp_path,
        model_kind="ensemble",
        ensemble_size=2,
        loss="cross_entropy",
        attack_measure="total_uncertainty",
        seed=4,
        attack=True,
        attack_iterations=["1", "2"],  # as many as the seeds: a curve's length
        attack_examples=8,
        blackbox_transfer=True,
    )
    metrics = pn_experiment.run(config)
    scalars, _ = _event_tags(tmp_path / "run" / "tensorboard")
    assert any("black_box" in tag for tag in scalars)
    assert not any("seeds" in tag for tag in scalars)  # seed lists are not logged as curves
    assert metrics["network_seeds"] == [4, pn_experiment.network_seed(4, 1)]
    assert metrics["network_seeds"][1] != 5
    assert metrics["blackbox_source_seeds"] == [
        1004,
        pn_experiment.network_seed(1004, 1),
    ]
    for key in ("train_seconds", "blackbox_source_train_seconds"):  # timed apart
        assert metrics[key] == runs.read_seconds(str(tmp_path / "run"), key) > 0
    assert set(os.listdir(tmp_path / "run")) >= {
        "member_0",
        "member_1",
        "blackbox_source_member_0",
        "blackbox_source_member_1",
    }


def test_network_seed_record_refuses_resuming_with_another_seed(tmp_path):
    """The chief records each network's seed beside its checkpoints; a resume with another
    seed, or an ensemble member's checkpoints from before the record (seeded seed + m), is
    refused with the fix; member 0 of an older run (seeded like today) is adopted."""
    folder = str(tmp_path / "member_1")
    pn_experiment.check_network_seed(folder, 77, member=1)
    assert runs.read_json(os.path.join(folder, pn_experiment.NETWORK_SEED_FILE)) == {"seed": 77}
    pn_experiment.check_network_seed(folder, 77, member=1)  # the same seed resumes
    with pytest.raises(ValueError, match="trained with seed 77; resuming it with seed 78"):
        pn_experiment.check_network_seed(folder, 78, member=1)
    older = tmp_path / "older_member_1"
    (older / "tensorboard").mkdir(parents=True)  # files, but no checkpoint to resume: adopted
    pn_experiment.check_network_seed(str(older), 5, member=1)
    assert runs.read_json(str(older / pn_experiment.NETWORK_SEED_FILE)) == {"seed": 5}
    (older / pn_experiment.NETWORK_SEED_FILE).unlink()
    tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(older / training.CHECKPOINT_SUBDIR / "ckpt"))
    assert training.has_checkpoint(str(older))
    with pytest.raises(ValueError, match="seed \\+ 1.*remove the run folder"):
        pn_experiment.check_network_seed(str(older), 5, member=1)
    older_single = tmp_path / "older_model"
    (older_single / "checkpoints").mkdir(parents=True)
    pn_experiment.check_network_seed(str(older_single), 5, member=0)
    assert runs.read_json(str(older_single / pn_experiment.NETWORK_SEED_FILE)) == {"seed": 5}


def test_finite_loss_but_overflowing_network_is_reported_as_divergence(tmp_path):
    """SGD at 0.05 without warm-up blows the small convnet's logits up in two steps: the losses
    (~1e14) and weights stay finite, the test logits are NaN.  The run stops with the divergence
    error (exit code 3) before evaluating, instead of failing on NaN logits."""
    config = _tiny(tmp_path, optimizer="sgd", learning_rate=0.05, lr_schedule="step", augment=True)
    config["steps_per_epoch"] = 2
    with pytest.raises(training.TrainingDivergedError, match="outputs on 64 test images are NaN"):
        pn_experiment.run(config)
    assert not (tmp_path / "run" / runs.METRICS_FILE).exists()
