"""End-to-end: experiments.synthetic_rkl (uqmix.studies.synthetic_experiment) with tiny settings,
in process and as a CLI."""

import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from experiments import options_binary
from tests.binaries import info_log_lines, run_binary
from tests.conftest import REPO_ROOT
from uqmix import runs, tensorboard_logging
from uqmix.studies import synthetic_experiment

TINY = dict(
    train_steps=40,
    steps_per_epoch=20,
    steps_per_execution=20,
    hidden_units=["16"],
    grid_resolution=12,
    verbose=0,
    deterministic=False,
)


def test_run_writes_metrics_figure_events_and_resumes(tmp_path):
    import keras

    from uqmix.data import load_arrays

    output_dir = str(tmp_path / "run")
    config = synthetic_experiment.default_config(output_dir=output_dir, **TINY)
    metrics = synthetic_experiment.run(config)
    on_disk = runs.read_json(os.path.join(output_dir, "metrics.json"))
    assert set(on_disk["models"]) == {"forward_kl", "reverse_kl"}
    for loss in ("forward_kl", "reverse_kl"):
        result = on_disk["models"][loss]
        for key in (
            "accuracy",
            "ood_auroc_mutual_information",
            "ood_auroc_total_uncertainty",
            "mean_alpha0_in",
            "mean_alpha0_ood",
        ):
            assert np.isfinite(result[key]), key
        assert os.listdir(os.path.join(output_dir, "tensorboard", loss, "train"))
    with open(os.path.join(output_dir, synthetic_experiment.FIGURE_FILE), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert runs.read_json(os.path.join(output_dir, "config.json"))["train_steps"] == 40

    # The saved reverse-KL model reproduces the reported numbers (sklearn as the AUROC oracle).
    model = keras.models.load_model(os.path.join(output_dir, "reverse_kl", "model.keras"))
    x_test, y_test = load_arrays("synthetic3", "test")
    x_ood, _ = load_arrays("synthetic3_ood", "test")
    pred_in, pred_ood = model.predictive(x_test), model.predictive(x_ood)
    result = on_disk["models"]["reverse_kl"]
    assert result["accuracy"] == pytest.approx(np.mean(pred_in.predicted_class().numpy() == y_test))
    scores = np.r_[pred_in.mutual_information().numpy(), pred_ood.mutual_information().numpy()]
    truth = np.r_[np.zeros(len(x_test)), np.ones(len(x_ood))]
    assert result["ood_auroc_mutual_information"] == pytest.approx(roc_auc_score(truth, scores))

    # Re-running the same configuration succeeds without retraining (same numbers) ...
    again = synthetic_experiment.run(config)
    assert again["models"]["reverse_kl"]["train_seconds"] == pytest.approx(
        metrics["models"]["reverse_kl"]["train_seconds"]
    )
    assert again["models"]["reverse_kl"]["accuracy"] == metrics["models"]["reverse_kl"]["accuracy"]
    for measure, scores in metrics["models"]["forward_kl"]["ood_detection"].items():
        assert again["models"]["forward_kl"]["ood_detection"][measure] == pytest.approx(scores)
    # ... while another configuration is refused, unless --overwrite.
    with pytest.raises(runs.ConfigMismatchError, match="train_steps"):
        synthetic_experiment.run(dict(config, train_steps=60))
    assert runs.read_json(os.path.join(output_dir, "config.json"))["train_steps"] == 40


def test_metrics_json_is_written_after_the_figure(tmp_path, monkeypatch):
    """metrics.json marks a run finished: a run whose figure fails writes none."""
    config = synthetic_experiment.default_config(output_dir=str(tmp_path / "run"), **TINY)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(synthetic_experiment, "write_figure", disk_full)
    with pytest.raises(OSError, match="No space left"):
        synthetic_experiment.run(config)
    assert not (tmp_path / "run" / runs.METRICS_FILE).exists()
    assert (tmp_path / "run" / runs.CONFIG_FILE).exists()  # trained: only the figure failed


def test_non_empty_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    config = synthetic_experiment.default_config(output_dir=str(tmp_path), **TINY)
    with pytest.raises(runs.ConfigMismatchError, match="not empty"):
        synthetic_experiment.run(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(losses=["reverse_kl", "kl"]), "unknown entries"),
        (dict(losses=["reverse_kl", "reverse_kl"]), "twice"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(hidden_units=["64", "x"]), "hidden_units"),
        (dict(steps_per_execution=7), "must divide"),
        (dict(ood_weight=-1.0), "ood_weight"),
        (dict(grid_resolution=5), "grid_resolution"),
    ],
)
def test_bad_flags_are_rejected_before_training(overrides, message):
    with pytest.raises(ValueError, match=message):
        synthetic_experiment.validate_config(synthetic_experiment.default_config(**overrides))


def test_shipped_flagfile_matches_the_defaults():
    from absl import flags

    probe = flags.FlagValues()
    options_binary.define_flags(synthetic_experiment, probe)
    probe(
        [
            "synthetic_rkl",
            "--flagfile=" + os.path.join(REPO_ROOT, "experiments", "configs", "synthetic_rkl.cfg"),
        ]
    )
    assert {name: probe[name].value for name in probe} == synthetic_experiment.default_config()


def test_defaults_of_the_default_job():
    """README's default job: no flags → runs/synthetic_rkl, resuming by default."""
    config = synthetic_experiment.default_config()
    assert config["output_dir"] == os.path.join("runs", "synthetic_rkl")
    assert config["resume"] is True and config["overwrite"] is False
    assert config["losses"] == ["forward_kl", "reverse_kl"]
    assert synthetic_experiment.validate_config(config)["hidden_units"] == [64, 64]


def _parsed_flags(*args):
    from absl import flags

    flag_values = flags.FlagValues()
    options_binary.define_flags(synthetic_experiment, flag_values)
    return flag_values, flag_values(["synthetic_rkl", *args])


def _main(argv, flag_values):
    return options_binary.main_for(synthetic_experiment, flag_values)(argv)


def test_main_with_flagfile(tmp_path, capsys):
    """The binary's path: flagfile + flags → validation → run → summary (absl parsing in process)."""
    from absl import app

    flagfile = tmp_path / "tiny.cfg"
    flagfile.write_text(
        "\n".join(
            f"--{k}={','.join(v) if isinstance(v, list) else v}"
            for k, v in TINY.items()
            if k != "deterministic"
        )
        + "\n"
    )
    output_dir = tmp_path / "out"
    flag_values, argv = _parsed_flags(
        f"--flagfile={flagfile}",
        f"--output_dir={output_dir}",
        "--losses=reverse_kl",
        "--nodeterministic",
    )
    assert _main(argv, flag_values) == 0
    assert "reverse_kl: accuracy" in capsys.readouterr().out
    assert list(runs.read_json(str(output_dir / "metrics.json"))["models"]) == ["reverse_kl"]
    assert (output_dir / "flags.cfg").read_text().count("--train_steps=40") == 1
    # the same command again: resumes the finished run, exit code 0
    assert _main(argv, flag_values) == 0
    # bad flags: a usage error before anything is written
    flag_values, argv = _parsed_flags(f"--output_dir={tmp_path / 'bad'}", "--batch_size=0")
    with pytest.raises(app.UsageError, match="--batch_size must be >= 1"):
        _main(argv, flag_values)
    assert not (tmp_path / "bad").exists()
    # a different configuration into the finished run's folder: refused, exit code 2
    flag_values, argv = _parsed_flags(
        f"--flagfile={flagfile}",
        f"--output_dir={output_dir}",
        "--losses=reverse_kl",
        "--nodeterministic",
        "--learning_rate=0.01",
    )
    assert _main(argv, flag_values) == 2
    assert "different configuration" in capsys.readouterr().err


def test_tensorboard_holds_training_validation_and_evaluation_on_the_global_step(tmp_path):
    """Every curve on the optimizer-step axis: epoch scalars at steps 20 and 40, the validation
    loss equal to an independent ``model.evaluate`` of the validation split, the evaluation
    metrics and the figure at the final step 40."""
    import keras

    output_dir = str(tmp_path / "run")
    config = synthetic_experiment.default_config(
        output_dir=output_dir, losses=["reverse_kl"], **TINY
    )
    metrics = synthetic_experiment.run(config)
    events = tensorboard_logging.read_events(os.path.join(output_dir, "tensorboard", "reverse_kl"))
    assert [step for step, _ in events[("train", "epoch_loss")]] == [20, 40]
    assert [step for step, _ in events[("train", "epoch_learning_rate")]] == [20, 40]
    assert events[("train", "epoch_learning_rate")][0][1] == pytest.approx(3e-3)
    assert [step for step, _ in events[("validation", "epoch_loss")]] == [20, 40]
    assert [step for step, _ in events[("validation", "epoch_accuracy")]] == [20, 40]

    model = keras.models.load_model(os.path.join(output_dir, "reverse_kl", "model.keras"))
    data = synthetic_experiment.load_data()
    expected = model.evaluate(
        synthetic_experiment._validation_dataset(data, 512), verbose=0, return_dict=True
    )
    assert events[("validation", "epoch_loss")][-1][1] == pytest.approx(expected["loss"], rel=1e-4)
    assert events[("validation", "epoch_accuracy")][-1][1] == pytest.approx(
        np.mean(model.predictive(data["x_val"]).predicted_class().numpy() == data["y_val"])
    )

    result = metrics["models"]["reverse_kl"]
    for tag, value in (
        ("evaluation/accuracy", result["accuracy"]),
        ("evaluation/nll", result["nll"]),
        ("evaluation/ece", result["ece"]),
        ("evaluation/ood_auroc_mutual_information", result["ood_auroc_mutual_information"]),
        (
            "evaluation/ood_detection/total_uncertainty/auroc",
            result["ood_detection"]["total_uncertainty"]["auroc"],
        ),
    ):
        assert events[("evaluation", tag)] == [(40, pytest.approx(value, rel=1e-6))], tag
    ((step, image),) = events[("evaluation", "figures/uncertainty_maps")]
    assert step == 40 and image.shape == (3,)  # width, height, PNG bytes
    import tensorflow as tf

    with open(os.path.join(output_dir, synthetic_experiment.FIGURE_FILE), "rb") as handle:
        np.testing.assert_array_equal(
            tf.io.decode_png(image[2], channels=4).numpy(),
            tf.io.decode_png(handle.read(), channels=4).numpy(),
        )


def test_cli_names_the_model_that_trains_and_prints_no_info_lines(tmp_path):
    """``python -m experiments.synthetic_rkl``: "Training forward_kl (1/2)" before each fit,
    nothing from TF/absl INFO logging on stdout or stderr."""
    args = [
        f"--{k}={','.join(v) if isinstance(v, list) else v}"
        for k, v in TINY.items()
        if k not in ("deterministic", "verbose")
    ]
    result = run_binary(
        "experiments.synthetic_rkl",
        [
            *args,
            "--verbose=2",
            f"--output_dir={tmp_path / 'run'}",
        ],
    )
    lines = result.stdout.splitlines()
    assert "Training forward_kl (1/2)" in lines and "Training reverse_kl (2/2)" in lines
    assert lines.index("Training forward_kl (1/2)") < lines.index("Training reverse_kl (2/2)")
    noise = info_log_lines(result)
    assert not noise, noise


def test_a_sweep_runs_the_synthetic_binary_and_skips_it_when_done(tmp_path):
    """The sweep locks each run folder and opens its log.txt before the binary starts; the
    binary (``--resume`` on by default) must take that folder as a new run (it refused every
    sweep run while it resumed only folders holding config.json)."""
    flagfile = tmp_path / "tiny.cfg"
    flagfile.write_text(
        "\n".join(
            f"--{k}={','.join(v) if isinstance(v, list) else v}"
            for k, v in dict(TINY, losses=["reverse_kl"]).items()
            if k != "deterministic"
        )
        + "\n--nodeterministic\n"
    )
    root = tmp_path / "out"
    args = ["--binary=experiments.synthetic_rkl", f"--flagfiles={flagfile}", "--seeds=0"]
    run_binary("experiments.sweep", [*args, f"--output_root={root}"])
    run = root / "tiny" / "seed_0"
    assert list(runs.read_json(str(run / runs.METRICS_FILE))["models"]) == ["reverse_kl"]
    assert runs.is_run_dir(str(run))
    again = run_binary("experiments.sweep", [*args, f"--output_root={root}"])
    assert "1 of 1 runs already done" in again.stdout + again.stderr
