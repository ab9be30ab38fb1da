"""End-to-end: experiments.synthetic_rkl with tiny settings, in process and as a CLI."""
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from experiments import synthetic_rkl
from uqmix import runs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(train_steps=40, steps_per_epoch=20, steps_per_execution=20, hidden_units=["16"],
            grid_resolution=12, verbose=0, deterministic=False)


def test_run_writes_metrics_figure_events_and_resumes(tmp_path):
    import keras

    from uqmix.data import load_arrays

    output_dir = str(tmp_path / "run")
    config = synthetic_rkl.default_config(output_dir=output_dir, **TINY)
    metrics = synthetic_rkl.run(config)
    on_disk = runs.read_json(os.path.join(output_dir, "metrics.json"))
    assert set(on_disk["models"]) == {"forward_kl", "reverse_kl"}
    for loss in ("forward_kl", "reverse_kl"):
        result = on_disk["models"][loss]
        for key in ("accuracy", "ood_auroc_mutual_information", "ood_auroc_total_uncertainty",
                    "mean_alpha0_in", "mean_alpha0_ood"):
            assert np.isfinite(result[key]), key
        assert os.listdir(os.path.join(output_dir, "tensorboard", loss, "train"))
    with open(os.path.join(output_dir, synthetic_rkl.FIGURE_FILE), "rb") as handle:
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
    again = synthetic_rkl.run(config)
    assert again["models"]["reverse_kl"]["train_seconds"] == pytest.approx(
        metrics["models"]["reverse_kl"]["train_seconds"])
    assert again["models"]["reverse_kl"]["accuracy"] == metrics["models"]["reverse_kl"]["accuracy"]
    for measure, scores in metrics["models"]["forward_kl"]["ood_detection"].items():
        assert again["models"]["forward_kl"]["ood_detection"][measure] == pytest.approx(scores)
    # ... while another configuration is refused, unless --overwrite.
    with pytest.raises(runs.ConfigMismatchError, match="train_steps"):
        synthetic_rkl.run(dict(config, train_steps=60))
    assert runs.read_json(os.path.join(output_dir, "config.json"))["train_steps"] == 40


def test_non_empty_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    config = synthetic_rkl.default_config(output_dir=str(tmp_path), **TINY)
    with pytest.raises(runs.ConfigMismatchError, match="not empty"):
        synthetic_rkl.run(config)


@pytest.mark.parametrize("overrides, message", [
    (dict(losses=["reverse_kl", "kl"]), "unknown entries"),
    (dict(losses=["reverse_kl", "reverse_kl"]), "twice"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(hidden_units=["64", "x"]), "hidden_units"),
    (dict(steps_per_execution=7), "must divide"),
    (dict(ood_weight=-1.0), "ood_weight"),
    (dict(grid_resolution=5), "grid_resolution"),
])
def test_bad_flags_are_rejected_before_training(overrides, message):
    with pytest.raises(ValueError, match=message):
        synthetic_rkl.validate_config(synthetic_rkl.default_config(**overrides))


def test_shipped_flagfile_matches_the_defaults():
    from absl import flags

    probe = flags.FlagValues()
    synthetic_rkl.define_flags(probe)
    probe(["synthetic_rkl", "--flagfile=" + os.path.join(REPO_ROOT, "experiments", "configs",
                                                         "synthetic_rkl.cfg")])
    assert {name: probe[name].value for name in probe} == synthetic_rkl.default_config()


def _parsed_flags(*args):
    from absl import flags

    flag_values = flags.FlagValues()
    synthetic_rkl.define_flags(flag_values)
    return flag_values, flag_values(["synthetic_rkl", *args])


def test_main_with_flagfile(tmp_path, capsys):
    """The binary's path: flagfile + flags → validation → run → summary (absl parsing in process)."""
    from absl import app

    flagfile = tmp_path / "tiny.cfg"
    flagfile.write_text("\n".join(f"--{k}={','.join(v) if isinstance(v, list) else v}"
                                  for k, v in TINY.items() if k != "deterministic") + "\n")
    output_dir = tmp_path / "out"
    flag_values, argv = _parsed_flags(f"--flagfile={flagfile}", f"--output_dir={output_dir}",
                                      "--losses=reverse_kl", "--nodeterministic")
    assert synthetic_rkl.main(argv, flag_values) == 0
    assert "reverse_kl: accuracy" in capsys.readouterr().out
    assert list(runs.read_json(str(output_dir / "metrics.json"))["models"]) == ["reverse_kl"]
    assert (output_dir / "flags.cfg").read_text().count("--train_steps=40") == 1
    # the same command again: resumes the finished run, exit code 0
    assert synthetic_rkl.main(argv, flag_values) == 0
    # bad flags: a usage error before anything is written
    flag_values, argv = _parsed_flags(f"--output_dir={tmp_path / 'bad'}", "--batch_size=0")
    with pytest.raises(app.UsageError, match="--batch_size must be >= 1"):
        synthetic_rkl.main(argv, flag_values)
    assert not (tmp_path / "bad").exists()
    # a different configuration into the finished run's folder: refused, exit code 2
    flag_values, argv = _parsed_flags(f"--flagfile={flagfile}", f"--output_dir={output_dir}",
                                      "--losses=reverse_kl", "--nodeterministic",
                                      "--learning_rate=0.01")
    assert synthetic_rkl.main(argv, flag_values) == 2
    assert "different configuration" in capsys.readouterr().err
