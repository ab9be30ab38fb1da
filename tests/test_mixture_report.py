"""uqmix.studies.mixture_report / experiments.mixture_report on synthetic sweep trees (no training)."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from uqmix import runs
from uqmix.studies import mixture_report, published
from uqmix.studies.mixture_report import attack_tables, figure_numbers, paper_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPSILONS = [0.0, 0.1, 0.2, 0.3]
LAYERS = ("hidden_0", "hidden_1", "logits")
# folder name: (dataset, model, λ, σ²); the names deliberately say nothing the report relies on.
FULL_STUDY = {
    "a_ml": ("mnist", "ml", 1.0, 1.0),
    "b_vi": ("mnist", "vi", 1.0, 1.0),
    "c_ml": ("mnist", "ml", 1.0, 3.0),
    "d_vi": ("mnist", "vi", 1.0, 0.5),
    "e_ml": ("mnist", "ml", 0.1, 1.0),
    "f_vi": ("mnist", "vi", 0.1, 1.0),
    "g_vi": ("mnist", "vi", 0.01, 1.0),
    "h_fashion": ("fashion_mnist", "vi", 1.0, 1.0),
    "i_det": ("mnist", "deterministic", 1.0, 1.0),
    "j_drop": ("mnist", "mc_dropout", 1.0, 1.0),
    "k_ens": ("mnist", "ensemble", 1.0, 1.0),
}
ALL_EVALUATIONS = (
    "classification",
    "weight_variances",
    "misclassification",
    "ood",
    "robustness",
    "adversarial_detection",
)


def _detection(rng, measures=("predictive_variance", "total_uncertainty", "mutual_information")):
    return {
        m: {
            "auroc": float(rng.uniform(0.5, 1.0)),
            "aupr_pos": 0.5,
            "aupr_neg": 0.5,
            "fpr_at_95_tpr": 0.3,
        }
        for m in measures
    }


def _histogram(rng, shared_edges, upper=0.2):
    edges = np.linspace(0.0, upper if shared_edges else rng.uniform(0.1, 0.3), 11)
    correct, wrong = rng.integers(0, 500, 10), rng.integers(0, 50, 10)
    return {
        "bin_edges": edges.tolist(),
        "correct": correct.tolist(),
        "wrong": wrong.tolist(),
        "mean_all": float(rng.uniform(0, 0.01)),
        "mean_correct": float(rng.uniform(0, 0.01)),
        "mean_wrong": float(rng.uniform(0.01, 0.05)),
    }


def _robustness(rng, model, kl_weight, prior_variance):
    counts = [1, 5, 100] if model in ("ml", "vi") and kl_weight == prior_variance == 1.0 else [1]
    return {
        f"S={s}": {
            "epsilons": EPSILONS,
            "accuracy": np.sort(rng.uniform(0, 1, 4))[::-1].tolist(),
            "num_examples": 1000,
        }
        for s in counts
    }


def synthetic_metrics(dataset, model, kl_weight, prior_variance, seed, evaluations, rng):
    """A metrics.json of experiments.mixture_mnist (the real one's shape) with random values."""
    metrics = {
        "dataset": dataset,
        "model": model,
        "label": f"{model.upper()} λ={kl_weight:g} σ²={prior_variance:g}"
        if model in ("ml", "vi")
        else model,
        "kl_weight": kl_weight,
        "prior_variance": prior_variance,
        "seed": seed,
        "steps": 100,
        "train_seconds": float(rng.uniform(10, 20)),
        "eval_seconds": float(rng.uniform(1, 2)),
    }
    if "classification" in evaluations:
        accuracy = float(rng.uniform(0.9, 0.99))
        metrics["test"] = {
            "accuracy": accuracy,
            "error": 1 - accuracy,
            "nll": float(rng.uniform(0.05, 0.3)),
            "ece": 0.01,
            "brier": 0.02,
        }
    if "weight_variances" in evaluations and model in ("ml", "vi"):
        metrics["weight_variances"] = {
            layer: {
                "mean": float(10 ** rng.uniform(-5, -1)),
                "median": 1e-3,
                "q05": 1e-4,
                "q95": 1e-2,
                "log10_histogram": {"bin_edges": [-5, -3, -1], "counts": [3, 4]},
            }
            for layer in LAYERS
        }
    if "misclassification" in evaluations:
        metrics["misclassification"] = _detection(rng)
        shared = model == "vi"  # VI histograms pool; ML ones have per-seed edges
        metrics["histograms"] = {
            "predictive_variance": _histogram(rng, shared),
            # the entropy's edges are fixed, [0, log K], as in experiments.mixture_mnist
            "total_uncertainty": _histogram(rng, True, upper=math.log(10)),
        }
    if "ood" in evaluations:
        metrics["ood"] = dict(_detection(rng), dataset="notmnist", num_examples=100)
        metrics["ood_measure_means"] = {"predictive_variance": 0.01, "total_uncertainty": 1.0}
    if "robustness" in evaluations:
        metrics["robustness"] = _robustness(rng, model, kl_weight, prior_variance)
    if "adversarial_detection" in evaluations:
        metrics["adversarial_detection"] = {
            "all": _detection(rng),
            "correct_vs_successful": _detection(rng),
            "eps": 0.25,
            "gradient_samples": 1,
            "num_correct": 900,
            "num_successful": 400,
            "num_subsampled": 400,
            "adversarial_accuracy": float(rng.uniform(0, 0.5)),
        }
    return metrics


def write_study(root, study, seeds, evaluations=ALL_EVALUATIONS):
    """Writes ROOT/<name>/seed_<S>/metrics.json; returns {name: {seed: metrics}}."""
    written = {}
    for index, (name, setting) in enumerate(sorted(study.items())):
        for seed in seeds:
            rng = np.random.default_rng([index, seed])
            metrics = synthetic_metrics(*setting, seed, evaluations, rng)
            runs.atomic_write_json(
                os.path.join(root, name, f"seed_{seed}", runs.METRICS_FILE), metrics
            )
            written.setdefault(name, {})[seed] = metrics
    return written


def _cell(values, fmt):
    values = np.asarray(values, np.float64)
    return f"{values.mean():{fmt}} ± {values.std(ddof=1):{fmt}} ({values.size})"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sweep"))
    written = write_study(root, FULL_STUDY, seeds=[0, 1, 2])
    out = str(tmp_path_factory.mktemp("report"))
    return written, out, mixture_report.write_report(root, out)


def test_tables_and_summary_match_numpy(full_report):
    written, out, report = full_report
    with open(os.path.join(out, mixture_report.TABLES_FILE), encoding="utf-8") as handle:
        tables = handle.read()
    assert report["tables"] == tables
    seeds = written["a_ml"].values()
    accuracy = [m["test"]["accuracy"] for m in seeds]
    assert _cell(accuracy, ".4f") in tables
    hidden_1 = [m["weight_variances"]["hidden_1"]["mean"] for m in written["b_vi"].values()]
    assert _cell(hidden_1, ".3g") in tables
    adv = [
        m["adversarial_detection"]["correct_vs_successful"]["total_uncertainty"]["auroc"]
        for m in written["j_drop"].values()
    ]
    assert _cell(adv, ".4f") in tables
    wall = [m["train_seconds"] + m["eval_seconds"] for m in written["k_ens"].values()]
    assert _cell(wall, ".0f") in tables
    assert "## MNIST" in tables and "## Fashion-MNIST" in tables
    det_row = next(
        line for line in tables.splitlines() if "`i_det`" in line and line.count("—") == len(LAYERS)
    )
    assert det_row  # the weight-decay net has no mixing distribution: "—" per layer

    with open(os.path.join(out, mixture_report.SUMMARY_FILE), encoding="utf-8") as handle:
        summary = json.load(handle)
    entry = summary["configurations"]["a_ml"]["metrics"]["test.accuracy"]
    assert entry["n"] == 3
    assert entry["mean"] == pytest.approx(np.mean(accuracy))
    assert entry["std"] == pytest.approx(np.std(accuracy, ddof=1))
    assert summary["configurations"]["h_fashion"]["dataset"] == "fashion_mnist"
    curve = summary["figures"]["robustness.png"]["MNIST: ML λ=1 σ²=1, S=1"]
    per_seed = np.array([m["robustness"]["S=1"]["accuracy"] for m in seeds])
    np.testing.assert_allclose(curve["mean"], per_seed.mean(axis=0))
    np.testing.assert_allclose(curve["std"], per_seed.std(axis=0, ddof=1))


def test_every_figure_is_a_png(full_report):
    _, out, report = full_report
    assert report["skipped"] == {}
    for filename in mixture_report.FIGURE_FILES:
        path = os.path.join(out, filename)
        assert path in report["written"]
        with open(path, "rb") as handle:
            content = handle.read()
        assert content.startswith(PNG_MAGIC), filename
        assert len(content) > 10_000, filename


def test_figure_data_selects_by_metrics_not_names(full_report):
    _, out, _ = full_report
    with open(os.path.join(out, mixture_report.SUMMARY_FILE), encoding="utf-8") as handle:
        figures = json.load(handle)["figures"]
    prior = figures["accuracy_vs_prior.png"]["MNIST (λ = 1)"]
    assert prior["ML"]["x"] == [1.0, 3.0] and prior["VI"]["x"] == [0.5, 1.0]
    assert figures["accuracy_vs_lambda.png"]["MNIST (σ² = 1)"]["VI"]["x"] == [0.01, 0.1, 1.0]
    assert "Fashion-MNIST (σ² = 1)" not in figures["accuracy_vs_lambda.png"]  # one λ only
    bars = figures["weight_variance_bars.png"]["MNIST"]
    assert bars["groups"] == list(LAYERS)
    assert set(bars["series"]) == {
        "ML λ=1 σ²=1",
        "VI λ=1 σ²=1",
        "ML λ=1 σ²=3",
        "VI λ=1 σ²=0.5",
        "ML λ=0.1 σ²=1",
        "VI λ=0.1 σ²=1",
    }
    hist = figures["predictive_variance_hist.png"]["MNIST, λ = 1, σ² = 1"]
    assert hist["VI"]["pooled"] and len(hist["VI"]["histograms"]) == 1
    assert not hist["ML"]["pooled"] and len(hist["ML"]["histograms"]) == 3
    samples = figures["robustness_samples.png"]
    assert {
        "MNIST: ML λ=1 σ²=1, S=100",
        "MNIST: VI λ=1 σ²=1, S=5",
        "MNIST: deterministic",
        "MNIST: mc_dropout, S=1",
        "MNIST: ensemble",
    } <= set(samples)


def test_pool_histograms_sums_equal_edges_and_keeps_different_ones():
    a = {"bin_edges": [0.0, 1.0, 2.0], "counts": [1, 2]}
    b = {"bin_edges": [0.0, 1.0, 2.0], "counts": [3, 4]}
    pooled, is_pooled = figure_numbers.pool_histograms([a, b])
    assert is_pooled and pooled == [{"bin_edges": [0.0, 1.0, 2.0], "counts": [4, 6]}]
    c = {"bin_edges": [0.0, 1.5, 3.0], "counts": [3, 4]}
    kept, is_pooled = figure_numbers.pool_histograms([a, c])
    assert not is_pooled and kept == [a, c]


def test_partial_sweep_writes_what_it_can(tmp_path):
    root, out = str(tmp_path / "sweep"), str(tmp_path / "report")
    study = {name: s for name, s in FULL_STUDY.items() if s[1] == "ml" and s[2] == 1.0}
    written = write_study(
        root,
        study,
        seeds=[4],
        evaluations=("classification", "weight_variances", "misclassification"),
    )
    report = mixture_report.write_report(root, out)
    assert set(report["skipped"]) == {
        "accuracy_vs_lambda.png",
        "robustness.png",
        "robustness_samples.png",
        "robustness_vs_prior.png",
    }
    assert all(reason.startswith("needs") for reason in report["skipped"].values())
    assert f"Skipped: {report['skipped']['robustness_vs_prior.png']}." in report["tables"]
    for filename in (
        "accuracy_vs_prior.png",
        "weight_variance_bars.png",
        "predictive_variance_hist.png",
        "correct_vs_wrong_variance.png",
        "entropy_correct_vs_wrong.png",
    ):
        assert os.path.getsize(os.path.join(out, filename)) > 10_000
    accuracy = written["c_ml"][4]["test"]["accuracy"]
    assert f"{accuracy:.4f} (1)" in report["tables"] and "± 0.0000 (1)" not in report["tables"]
    ood_row = next(line for line in report["tables"].splitlines() if "`c_ml`" in line)
    assert ood_row.count("—") == 2  # OOD by variance and entropy not evaluated
    with open(os.path.join(out, mixture_report.SUMMARY_FILE), encoding="utf-8") as handle:
        assert json.load(handle)["skipped"] == report["skipped"]
    assert _section(report["tables"], "## Robustness by attack protocol") == [
        "",
        "No run has a robustness curve.",
        "",
    ]


def test_bad_sweeps_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        mixture_report.load_study(str(tmp_path))
    root = str(tmp_path / "sweep")
    write_study(root, {"x": ("mnist", "ml", 1.0, 1.0)}, seeds=[0], evaluations=())
    metrics = synthetic_metrics("mnist", "vi", 1.0, 1.0, 1, (), np.random.default_rng(0))
    runs.atomic_write_json(os.path.join(root, "x", "seed_1", runs.METRICS_FILE), metrics)
    with pytest.raises(ValueError, match="seeds of x are different configurations"):
        mixture_report.load_study(root)
    del metrics["kl_weight"]
    runs.atomic_write_json(os.path.join(root, "x", "seed_1", runs.METRICS_FILE), metrics)
    with pytest.raises(ValueError, match="x/seed_1/metrics.json lacks kl_weight"):
        mixture_report.load_study(root)
    ok = str(tmp_path / "ok")
    write_study(ok, {"y": FULL_STUDY["a_ml"]}, seeds=[0])
    with pytest.raises(ValueError, match="unknown configurations"):
        figure_numbers.weight_variance_bars_data(mixture_report.load_study(ok), names=["nope"])


def _run_binary(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.mixture_report", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_binary_end_to_end_and_empty_root(tmp_path):
    root, out = str(tmp_path / "sweep"), str(tmp_path / "report")
    study = {name: FULL_STUDY[name] for name in ("a_ml", "b_vi", "e_ml")}
    write_study(root, study, seeds=[0, 1], evaluations=ALL_EVALUATIONS[:4])
    result = _run_binary(f"--sweep_root={root}", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "| ML λ=1 σ²=1 | `a_ml` |" in result.stdout
    assert f"wrote {os.path.join(out, 'summary.json')}" in result.stdout
    assert "skipped robustness.png: needs" in result.stdout
    assert os.path.exists(os.path.join(out, "accuracy_vs_lambda.png"))

    figures = str(tmp_path / "figures")
    result = _run_binary(
        f"--sweep_root={root}", f"--output_dir={out}_2", f"--figures_dir={figures}"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(f"{out}_2")) == ["summary.json", "tables.md", "uqmix_report.json"]
    assert "accuracy_vs_lambda.png" in os.listdir(figures)

    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run_binary(f"--sweep_root={empty}", f"--output_dir={out}_empty")
    assert result.returncode != 0
    assert "no finished runs" in result.stderr
    assert not os.path.exists(f"{out}_empty")


# -- the paper's figures 9 and 10 -----------------------------------------------------------------
def _section(tables, heading):
    """The lines of tables.md from ``heading`` to the next heading."""
    lines = tables.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start + 1 : end]


def _row(lines, folder):
    (row,) = [line for line in lines if f"| `{folder}` |" in line]
    return row


FIG_9 = "### Fig. 9: PGD robustness vs prior variance σ² (λ = 1, S=1)"
FIG_10 = "### Fig. 10: predictive entropy of correct vs wrong test inputs (λ = 1, σ² = 1)"


def test_figure_9_table_and_verdicts_match_numpy(full_report):
    written, out, report = full_report
    section = _section(report["tables"], FIG_9)
    with open(os.path.join(out, mixture_report.SUMMARY_FILE), encoding="utf-8") as handle:
        summary = json.load(handle)
    verdicts = summary["paper_figures"]["robustness_vs_prior.png"]["verdicts"]
    # λ = 1: ML at σ² = 1 (a_ml), 3 (c_ml); VI at σ² = 0.5 (d_vi), 1 (b_vi)
    for panel, folders in (
        ("MNIST ML (λ = 1)", ["a_ml", "c_ml"]),
        ("MNIST VI (λ = 1)", ["d_vi", "b_vi"]),
    ):
        accuracy = {
            f: np.array([m["robustness"]["S=1"]["accuracy"] for m in written[f].values()])
            for f in folders
        }
        for folder, per_seed in accuracy.items():
            row = _row(section, folder)
            assert "| 3 (0, 1, 2) |" in row and "| SHORTENED: steps 100 (full: 30000);" in row
            assert row.endswith(
                "; 3 of 10 seeds; attack protocol flags not recorded (run predates them) |"
            )
            for mean, std in zip(per_seed.mean(axis=0), per_seed.std(axis=0, ddof=1)):
                assert f"| {mean:.3f} ± {std:.3f} (3) |" in row
        means = np.array([a.mean(axis=0) for a in accuracy.values()])
        stds = np.array([a.std(axis=0, ddof=1) for a in accuracy.values()])
        spread, noise = means.max(axis=0) - means.min(axis=0), stds.max(axis=0)
        worst = int(np.argmax(spread))
        verdict = verdicts[panel]
        np.testing.assert_allclose([j["spread"] for j in verdict["judged"]], spread)
        np.testing.assert_allclose([j["seed_std"] for j in verdict["judged"]], noise)
        assert verdict["within"] == bool(np.all(spread <= noise))
        expected = (
            f"- {panel}: max spread across σ² {spread[worst]:.3f} at ε={EPSILONS[worst]:g} "
            f"vs seed std ≤ {noise[worst]:.3f}: "
            + ("within seed noise" if np.all(spread <= noise) else "outside seed noise at ")
        )
        assert any(line.startswith(expected) for line in section), expected
    assert [line for line in section if line.startswith("| ")][0].split(" | ")[5:9] == [
        f"ε = {eps:g}" for eps in EPSILONS
    ]
    # one σ² with a curve, or none: named with the reason, not drawn
    assert "`h_fashion` (the only σ² with a S=1 curve of Fashion-MNIST VI)" in "\n".join(section)
    assert "`g_vi`" not in "\n".join(section)  # λ = 0.01
    root = summary["sweep_root"]
    assert (
        f"Regenerate with `python -m experiments.mixture_report --sweep_root={root} "
        in (report["tables"])
    )
    assert "[robustness_vs_prior.png](robustness_vs_prior.png)" in "\n".join(section)


def test_figure_10_table_matches_numpy(full_report):
    written, out, report = full_report
    section = _section(report["tables"], FIG_10)
    with open(os.path.join(out, mixture_report.SUMMARY_FILE), encoding="utf-8") as handle:
        summary = json.load(handle)
    figure = summary["figures"]["entropy_correct_vs_wrong.png"]
    assert set(figure) == {  # summary.json sorts its keys
        "MNIST ML (λ = 1, σ² = 1)",
        "MNIST VI (λ = 1, σ² = 1)",
        "Fashion-MNIST VI (λ = 1, σ² = 1)",
    }
    for folder in ("a_ml", "b_vi", "h_fashion"):
        hists = [m["histograms"]["total_uncertainty"] for m in written[folder].values()]
        correct = [h["mean_correct"] for h in hists]
        wrong = [h["mean_wrong"] for h in hists]
        counts = {g: np.sum([h[g] for h in hists], axis=0) for g in ("correct", "wrong")}
        row = _row(section, folder)
        assert f"| {_cell(correct, '.4f')} | {_cell(wrong, '.4f')} |" in row
        assert f"| {np.mean(wrong) / np.mean(correct):.2f} |" in row
        assert f"| {counts['correct'].sum():,} / {counts['wrong'].sum():,} |" in row
        assert "| 3 (0, 1, 2) |" in row and "| SHORTENED: steps 100 (full: 30000);" in row
        assert row.endswith("; 3 of 10 seeds |")
        (entry,) = [e for e in figure.values() if e["configuration"] == folder]
        for group in ("correct", "wrong"):
            assert entry[group]["counts"] == counts[group].tolist()
            assert entry[group]["bin_edges"] == hists[0]["bin_edges"]
    # the figure draws the summed counts as densities
    drawn = mixture_report.entropy_correct_vs_wrong_figure(
        mixture_report.load_study(summary["sweep_root"])
    )
    hists = [m["histograms"]["total_uncertainty"] for m in written["a_ml"].values()]
    counts = np.sum([h["wrong"] for h in hists], axis=0)
    width = np.diff(hists[0]["bin_edges"])
    (stairs,) = [p for p in drawn.axes[0].patches if p.get_label().startswith("wrong")]
    np.testing.assert_allclose(stairs.get_data().values, counts / (counts.sum() * width))


def test_figure_9_draws_one_panel_per_dataset_and_model(full_report):
    _, out, _ = full_report
    with open(os.path.join(out, mixture_report.SUMMARY_FILE), encoding="utf-8") as handle:
        summary = json.load(handle)
    configurations = mixture_report.load_study(summary["sweep_root"])
    figure = mixture_report.robustness_vs_prior_figure(configurations)
    assert [ax.get_title() for ax in figure.axes] == ["MNIST ML (λ = 1)", "MNIST VI (λ = 1)"]
    panel = figure_numbers.robustness_vs_prior_data(configurations)["MNIST ML (λ = 1)"]
    assert list(panel) == ["σ² = 1", "σ² = 3"]
    assert [c["configuration"] for c in panel.values()] == ["a_ml", "c_ml"]
    for container, curve in zip(figure.axes[0].containers, panel.values()):
        np.testing.assert_allclose(container.lines[0].get_ydata(), curve["mean"])


def test_entropy_bin_edge_mismatch_is_a_clear_error(tmp_path):
    root, out = str(tmp_path / "sweep"), str(tmp_path / "report")
    written = write_study(root, {"a_ml": FULL_STUDY["a_ml"]}, seeds=[0, 1])
    metrics = written["a_ml"][1]
    metrics["histograms"]["total_uncertainty"]["bin_edges"][3] += 0.01
    runs.atomic_write_json(os.path.join(root, "a_ml", "seed_1", runs.METRICS_FILE), metrics)
    edges = written["a_ml"][0]["histograms"]["total_uncertainty"]["bin_edges"]
    message = (
        "the total_uncertainty histograms of a_ml have different bin edges in seed 0 and seed 1 "
        f"(edge 3: {edges[3]:.6g} vs {edges[3] + 0.01:.6g}); their counts cannot be summed"
    )
    with pytest.raises(mixture_report.BinEdgeMismatch) as raised:
        mixture_report.write_report(root, out)
    assert message in str(raised.value)
    assert not os.path.exists(out)  # nothing written
    result = _run_binary(f"--sweep_root={root}", f"--output_dir={out}")
    assert result.returncode == 2 and message in result.stderr


def test_paper_figure_sections_state_why_they_are_skipped(tmp_path):
    root, out = str(tmp_path / "sweep"), str(tmp_path / "report")
    # λ = σ² = 1 only (no prior variants), robustness but no histograms
    study = {name: FULL_STUDY[name] for name in ("a_ml", "b_vi")}
    write_study(root, study, seeds=[0, 1], evaluations=("classification", "robustness"))
    report = mixture_report.write_report(root, out)
    skipped = report["skipped"]
    assert "at least two prior variances" in skipped["robustness_vs_prior.png"]
    assert "histograms at λ = 1, σ² = 1" in skipped["entropy_correct_vs_wrong.png"]
    assert _section(report["tables"], FIG_9) == [
        "",
        f"Skipped: {skipped['robustness_vs_prior.png']}.",
        "",
    ]
    assert _section(report["tables"], FIG_10) == [
        "",
        f"Skipped: {skipped['entropy_correct_vs_wrong.png']}.",
    ]
    assert not os.path.exists(os.path.join(out, "robustness_vs_prior.png"))


def _hand_curve(prior_variance, accuracy, epsilons=(0.0, 0.1)):
    accuracy = np.asarray(accuracy, np.float64)
    std = accuracy.std(axis=0, ddof=1) if len(accuracy) > 1 else np.zeros(accuracy.shape[1])
    return {
        "epsilons": list(epsilons),
        "accuracy": accuracy.tolist(),
        "seeds": list(range(len(accuracy))),
        "dropped_seeds": [],
        "num_examples": [1000],
        "mean": accuracy.mean(axis=0).tolist(),
        "std": std.tolist(),
        "n": [len(accuracy)] * accuracy.shape[1],
        "configuration": f"c{prior_variance:g}",
        "dataset": "mnist",
        "model": "ml",
        "prior_variance": prior_variance,
    }


def test_figure_9_verdicts_on_hand_made_curves():
    base = [[0.9, 0.5], [0.8, 0.4], [0.85, 0.45]]  # std 0.05 at both ε
    close = [[0.89, 0.49], [0.79, 0.39], [0.84, 0.44]]  # means 0.01 lower: within
    far = [[0.89, 0.3], [0.79, 0.2], [0.84, 0.25]]  # 0.2 lower at ε = 0.1: outside
    table = paper_figures.robustness_vs_prior_table(
        {
            "within": {"a": _hand_curve(1.0, base), "b": _hand_curve(3.0, close)},
            "outside": {"a": _hand_curve(1.0, base), "b": _hand_curve(3.0, far)},
            "one seed": {"a": _hand_curve(1.0, base), "b": _hand_curve(3.0, far[:1])},
        }
    )
    verdicts = {panel: v["text"] for panel, v in table["verdicts"].items()}
    assert verdicts == {
        "within": "within: max spread across σ² 0.010 at ε=0 vs seed std ≤ 0.050: "
        "within seed noise at every ε (2 compared)",
        "outside": "outside: max spread across σ² 0.200 at ε=0.1 vs seed std ≤ 0.050: "
        "outside seed noise at ε=0.1 (0.200 > 0.050)",
        "one seed": "one seed: not judged (no ε with two or more σ² of at least two seeds each)",
    }
    assert table["epsilons"] == [0.0, 0.1] and len(table["rows"]) == 6


# -- robustness and adversarial detection by attack protocol -------------------------------------
ROBUSTNESS_BY_PROTOCOL = "## Robustness by attack protocol"
DETECTION_BY_PROTOCOL = "## Adversarial detection by attack protocol"
TABLE_EPSILONS = (0.05, 0.1, 0.15, 0.2, 0.25)
PROTOCOL_GRID = np.linspace(0.0, 0.5, 11).tolist()  # 0.15000000000000002: found by value
CH4_FROZEN = {
    "preset": "cleverhans4",
    "noise": "frozen",
    "nb_iter": 40,
    "rand_init": False,
    "labels": "true",
    "eps_iter": None,
    "eps_iter_ratio": 0.0625,
    "frozen_scope": "batch",
    "combine": "log_mean",
    "evaluation": "single",
    "norm": "inf",
    "label_samples": None,
    "eval_attacks": None,
}
CH4_REDRAW = dict(CH4_FROZEN, noise="redraw", frozen_scope=None)
CH3_PGD = dict(
    CH4_REDRAW,
    preset="cleverhans3_pgd",
    nb_iter=10,
    rand_init=True,
    labels="predicted",
    eps_iter=0.05,
    eps_iter_ratio=None,
)
# folder: (dataset, model, λ, σ², attack options; None: a run that predates them)
PROTOCOL_STUDY = {
    "p_ml_frozen": ("mnist", "ml", 1.0, 1.0, CH4_FROZEN),
    "p_vi_frozen": ("mnist", "vi", 1.0, 1.0, CH4_FROZEN),
    "p_ml_ch3": ("mnist", "ml", 1.0, 1.0, CH3_PGD),
    "p_vi_ch3": ("mnist", "vi", 1.0, 1.0, CH3_PGD),
    "p_ml_ch3_20": ("mnist", "ml", 1.0, 1.0, dict(CH3_PGD, nb_iter=20)),
    "p_vi_ch3_20": ("mnist", "vi", 1.0, 1.0, dict(CH3_PGD, nb_iter=20)),
    "q_vi_mixed": ("mnist", "vi", 1.0, 1.0, CH3_PGD),  # seed 2 without options (below)
    "r_det": ("mnist", "deterministic", 1.0, 1.0, CH4_REDRAW),
    "s_fashion_ml": ("fashion_mnist", "ml", 1.0, 1.0, CH4_FROZEN),  # no VI: no ML − VI line
}
PROTOCOL_OVERRIDES = {("q_vi_mixed", 2): None}
SHORT_GRID = {("p_vi_frozen", 2)}  # its curves stop at ε = 0.2: n = 2 at ε = 0.25


def _protocol_options(name, seed):
    return PROTOCOL_OVERRIDES.get((name, seed), PROTOCOL_STUDY[name][4])


def write_protocol_study(root, seeds=(0, 1, 2)):
    """Runs with recorded attack options and success rates; returns {name: {seed: metrics}}."""
    written = {}
    for index, (name, (dataset, model, kl_weight, prior_variance, _)) in enumerate(
        sorted(PROTOCOL_STUDY.items())
    ):
        for seed in seeds:
            rng = np.random.default_rng([100 + index, seed])
            grid = PROTOCOL_GRID[:5] if (name, seed) in SHORT_GRID else PROTOCOL_GRID
            metrics = attacked_metrics(
                (dataset, model, kl_weight, prior_variance),
                seed,
                _protocol_options(name, seed),
                rng,
                grid,
            )
            runs.atomic_write_json(
                os.path.join(root, name, f"seed_{seed}", runs.METRICS_FILE), metrics
            )
            written.setdefault(name, {})[seed] = metrics
    return written


def attacked_metrics(setting, seed, options, rng, grid=PROTOCOL_GRID):
    """A metrics.json with robustness curves (S = 1, 5, 100 for ML / VI, else 1) and the
    adversarial-detection record, attacked under ``options`` (None: a run that predates them)."""
    dataset, model, kl_weight, prior_variance = setting
    metrics = synthetic_metrics(
        dataset, model, kl_weight, prior_variance, seed, ("classification",), rng
    )
    metrics["robustness"] = {}
    for samples in [1, 5, 100] if model in ("ml", "vi") else [1]:
        curve = {
            "epsilons": grid,
            "accuracy": np.sort(rng.uniform(0, 1, len(grid)))[::-1].tolist(),
            "num_examples": 1000,
        }
        if options is not None:
            curve["success_rate"] = rng.uniform(0, 1, len(grid)).tolist()
            curve["attack_options"] = dict(options, gradient_samples=samples)
        metrics["robustness"][f"S={samples}"] = curve
    detection = {
        "all": _detection(rng),
        "correct_vs_successful": _detection(rng),
        "eps": 0.25,
        "gradient_samples": 1,
        "adversarial_accuracy": float(rng.uniform(0, 0.5)),
    }
    if options is not None:
        detection["success_rate"] = float(rng.uniform(0.5, 1))
        detection["attack_options"] = dict(options, gradient_samples=1)
    metrics["adversarial_detection"] = detection
    return metrics


@pytest.fixture(scope="module")
def protocol_report(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("protocol_sweep"))
    written = write_protocol_study(root)
    out = str(tmp_path_factory.mktemp("protocol_report"))
    return written, out, mixture_report.write_report(root, out)


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table(lines):
    """{column title: index} and the rows (lists of cells) of the one table in ``lines``."""
    table = [_cells(line) for line in lines if line.startswith("| ")]
    return {title: i for i, title in enumerate(table[0])}, table[1:]


def _protocol_rows(lines, folder, key=None):
    columns, rows = _table(lines)
    return [
        r
        for r in rows
        if r[columns["configuration"]] == f"`{folder}`"
        and (key is None or r[columns["curve"]] == key)
    ]


def _expected(values, fmt, spread=True):
    """The cell of ``values`` (None: missing), computed with NumPy."""
    values = np.array([v for v in values if v is not None], np.float64)
    if values.size == 0:
        return "—"
    if values.size == 1 or not spread:
        return f"{values.mean():{fmt}} ({values.size})"
    return _cell(values, fmt)


def _value_at(curve, field, eps):
    found = np.flatnonzero(np.isclose(curve["epsilons"], eps, rtol=0, atol=1e-9))
    return curve[field][found[0]] if found.size and field in curve else None


def _seed_groups(written, name):
    """[(seeds, options)] of a folder: its seeds grouped by their recorded options."""
    groups = []
    for seed in sorted(written[name]):
        options = _protocol_options(name, seed)
        for seeds, known in groups:
            if known == options:
                seeds.append(seed)
                break
        else:
            groups.append(([seed], options))
    return groups


def _option_cells_expected(options, samples):
    if options is None:
        return ["not recorded"] * 6
    return [
        options["preset"],
        options["noise"],
        str(samples),
        str(options["nb_iter"]),
        "yes" if options["rand_init"] else "no",
        options["labels"],
    ]


def test_robustness_by_protocol_matches_numpy(protocol_report):
    written, _, report = protocol_report
    section = _section(report["tables"], ROBUSTNESS_BY_PROTOCOL)
    columns, rows = _table(section)
    assert [title for title in columns][13:] == [
        *(f"ε = {eps:g}" for eps in TABLE_EPSILONS),
        "success rate ε = 0.25",
        "seeds",
    ]
    checked = 0
    for name, (dataset, model, kl_weight, prior_variance, _) in PROTOCOL_STUDY.items():
        for seeds, options in _seed_groups(written, name):
            seeds_text = f"{len(seeds)} ({', '.join(str(s) for s in seeds)})"
            for key in written[name][seeds[0]]["robustness"]:
                (row,) = [
                    r
                    for r in _protocol_rows(section, name, key)
                    if r[columns["seeds"]] == seeds_text
                ]
                curves = [written[name][s]["robustness"][key] for s in seeds]
                mixture = model in ("ml", "vi")
                assert row[:6] == [
                    {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}[dataset],
                    model.upper() if mixture else model,
                    f"{kl_weight:g}" if mixture else "—",
                    f"{prior_variance:g}" if mixture else "—",
                    f"`{name}`",
                    key,
                ]
                assert row[6:12] == _option_cells_expected(options, key.split("=")[1])
                assert row[13:18] == [
                    _expected([_value_at(c, "accuracy", eps) for c in curves], ".3f")
                    for eps in TABLE_EPSILONS
                ]
                assert row[18] == _expected(
                    [_value_at(c, "success_rate", 0.25) for c in curves], ".3f", spread=False
                )
                checked += 1
    assert checked == len(rows) == 7 * 3 + 2 * 3 + 1  # q_vi_mixed: rows per protocol
    # the truncated grid of one seed: n = 2 at ε = 0.25, 3 before it
    (frozen,) = _protocol_rows(section, "p_vi_frozen", "S=1")
    assert frozen[columns["ε = 0.2"]].endswith("(3)")
    assert frozen[columns["ε = 0.25"]].endswith("(2)")
    success = frozen[columns["success rate ε = 0.25"]]
    assert success.endswith(" (2)") and "±" not in success
    # options without a column: shared ones stated once, the others per row
    assert section[1].endswith(
        "Recorded by every row with options (no column): combine log_mean, evaluation single, "
        "norm inf."
    )
    (ch3,) = _protocol_rows(section, "p_ml_ch3", "S=1")
    assert ch3[columns["other options"]] == "eps_iter 0.05"
    (ch4,) = _protocol_rows(section, "p_ml_frozen", "S=1")
    assert ch4[columns["other options"]] == "eps_iter_ratio 0.0625, frozen_scope batch"
    # order: MNIST first, recorded protocols before unrecorded, ML right before VI
    order = [(r[columns["configuration"]], r[columns["curve"]]) for r in rows]
    for protocol in ("frozen", "ch3", "ch3_20"):
        for key in ("S=1", "S=5", "S=100"):
            ml = order.index((f"`p_ml_{protocol}`", key))
            assert order[ml + 1] == (f"`p_vi_{protocol}`", key)
    assert [r[0] for r in rows].index("Fashion-MNIST") == len(rows) - 3
    unrecorded = [i for i, r in enumerate(rows) if r[6] == "not recorded"]
    assert unrecorded == [len(rows) - 6, len(rows) - 5, len(rows) - 4]  # last of MNIST


def _ml_minus_vi(written, ml, vi, key, eps, seeds=(0, 1, 2)):
    means = [
        np.mean(
            [
                v
                for v in (
                    _value_at(written[name][s]["robustness"][key], "accuracy", eps) for s in seeds
                )
                if v is not None
            ]
        )
        for name in (ml, vi)
    ]
    return means[0] - means[1]


def _difference_lines(section):
    start = next(i for i, line in enumerate(section) if line.startswith("ML − VI at ε = 0.1"))
    return [line for line in section[start:] if line.startswith("- ")]


def test_ml_minus_vi_per_protocol(protocol_report):
    written, out, report = protocol_report
    section = _section(report["tables"], ROBUSTNESS_BY_PROTOCOL)
    expected = []
    for folder, label in (
        ("ch3", "cleverhans3_pgd/redraw/{key} [nb_iter 10]"),
        ("ch3_20", "cleverhans3_pgd/redraw/{key} [nb_iter 20]"),
        ("frozen", "cleverhans4/frozen/{key}"),
    ):
        for key in ("S=1", "S=5", "S=100"):
            ml, vi = f"p_ml_{folder}", f"p_vi_{folder}"
            d = [_ml_minus_vi(written, ml, vi, key, eps) for eps in (0.1, 0.25)]
            expected.append(
                f"- MNIST, {label.format(key=key)}: ML − VI = {d[0]:+.3f} at ε 0.1, "
                f"{d[1]:+.3f} at ε 0.25 (seeds: ML 3, VI 3)"
            )
    # p_vi_ch3 (3 seeds), not q_vi_mixed (2 seeds with the same options); no Fashion-MNIST VI;
    # q_vi_mixed's unrecorded seed has no ML partner
    assert sorted(_difference_lines(section)) == sorted(expected)
    with open(os.path.join(out, mixture_report.SUMMARY_FILE), encoding="utf-8") as handle:
        summary = json.load(handle)
    entries = summary["attack_protocols"]["ml_minus_vi"]
    # a setting in two folders with the same options: the one with most seeds, in any row order
    rows = attack_tables.robustness_protocol_table(
        mixture_report.load_study(summary["sweep_root"])
    )["rows"]
    for reordered in (rows, rows[::-1]):
        chosen = {
            e["vi"]["configuration"]
            for e in attack_tables.ml_minus_vi(reordered)
            if "nb_iter 10" in e["label"]
        }
        assert chosen == {"p_vi_ch3"}
    (frozen,) = [e for e in entries if e["label"] == "cleverhans4/frozen/S=1"]
    assert frozen["vi"] == {"configuration": "p_vi_frozen", "seeds": [0, 1, 2]}
    np.testing.assert_allclose(
        frozen["difference"],
        [_ml_minus_vi(written, "p_ml_frozen", "p_vi_frozen", "S=1", e) for e in (0.1, 0.25)],
    )


def test_old_runs_without_attack_options(full_report):
    written, _, report = full_report
    section = _section(report["tables"], ROBUSTNESS_BY_PROTOCOL)
    columns, _ = _table(section)
    (row,) = _protocol_rows(section, "a_ml", "S=1")
    assert row[6:13] == ["not recorded"] * 7
    curves = [m["robustness"]["S=1"] for m in written["a_ml"].values()]
    assert row[13:18] == [
        "—",
        _cell([c["accuracy"][1] for c in curves], ".3f"),
        "—",
        _cell([c["accuracy"][2] for c in curves], ".3f"),
        "—",
    ]  # the old grid 0, 0.1, 0.2, 0.3
    assert row[columns["success rate ε = 0.25"]] == "—"  # no success rate recorded
    expected = []
    for ml, vi, key, where in (
        ("a_ml", "b_vi", "S=1", ""),
        ("e_ml", "f_vi", "S=1", " (λ = 0.1, σ² = 1)"),
        ("a_ml", "b_vi", "S=5", ""),
        ("a_ml", "b_vi", "S=100", ""),
    ):
        d = _ml_minus_vi(written, ml, vi, key, 0.1)
        expected.append(
            f"- MNIST, attack options not recorded, {key}{where}: ML − VI = {d:+.3f} at ε 0.1, "
            "— at ε 0.25 (seeds: ML 3, VI 3)"
        )
    assert _difference_lines(section) == expected
    detection = _section(report["tables"], DETECTION_BY_PROTOCOL)
    columns, rows = _table(detection)
    (row,) = [r for r in rows if r[columns["configuration"]] == "`j_drop`"]
    assert row[5:9] == ["0.25", "not recorded", "not recorded", "1"]
    assert row[columns["success rate"]] == "—"


def test_detection_by_protocol_matches_numpy(protocol_report):
    written, _, report = protocol_report
    section = _section(report["tables"], DETECTION_BY_PROTOCOL)
    columns, rows = _table(section)
    assert len(rows) == len(PROTOCOL_STUDY) + 1  # q_vi_mixed: a row per protocol
    for name in ("p_ml_frozen", "p_vi_ch3_20", "r_det"):
        records = [m["adversarial_detection"] for m in written[name].values()]
        options = PROTOCOL_STUDY[name][4]
        (row,) = [r for r in rows if r[columns["configuration"]] == f"`{name}`"]
        assert row[5:9] == ["0.25", options["preset"], options["noise"], "1"]
        assert row[columns["adversarial accuracy"]] == _cell(
            [r["adversarial_accuracy"] for r in records], ".3f"
        )
        assert row[columns["success rate"]] == _expected(
            [r["success_rate"] for r in records], ".3f", spread=False
        )
        for group, title in (("all", "all"), ("correct_vs_successful", "correct vs successful")):
            for measure, measure_title in (
                ("predictive_variance", "predictive variance"),
                ("total_uncertainty", "total uncertainty"),
            ):
                values = [r[group][measure]["auroc"] for r in records]
                assert row[columns[f"AUROC {title} ({measure_title})"]] == _cell(values, ".4f")
    mixed = [r for r in rows if r[columns["configuration"]] == "`q_vi_mixed`"]
    assert [(r[6], r[-1]) for r in mixed] == [
        ("cleverhans3_pgd", "2 (0, 1)"),
        ("not recorded", "1 (2)"),
    ]


# -- adversarial figures and Tables 4 / 7 per attack protocol -----------------------------------
# folder: (dataset, model, attack options, seeds). Every setting (dataset, model, λ = σ² = 1) is in
# a folder per protocol; the folder with most seeds is CH4_FROZEN's for MNIST and CH3_PGD's for
# Fashion-MNIST, so one folder per setting would mix the two protocols across the datasets.
# MNIST also has runs that predate recorded options ("not recorded", a protocol of its own).
DUAL_STUDY = {
    "u_mnist_ml_frozen": ("mnist", "ml", CH4_FROZEN, (0, 1, 2)),
    "u_mnist_vi_frozen": ("mnist", "vi", CH4_FROZEN, (0, 1, 2)),
    "v_mnist_ml_ch3": ("mnist", "ml", CH3_PGD, (0, 1)),
    "v_mnist_vi_ch3": ("mnist", "vi", CH3_PGD, (0, 1)),
    "w_mnist_ml_old": ("mnist", "ml", None, (5,)),
    "w_mnist_vi_old": ("mnist", "vi", None, (5,)),
    "x_fashion_ml_frozen": ("fashion_mnist", "ml", CH4_FROZEN, (0, 1)),
    "x_fashion_vi_frozen": ("fashion_mnist", "vi", CH4_FROZEN, (0, 1)),
    "y_fashion_ml_ch3": ("fashion_mnist", "ml", CH3_PGD, (0, 1, 2)),
    "y_fashion_vi_ch3": ("fashion_mnist", "vi", CH3_PGD, (0, 1, 2)),
}
# protocol name (``protocol_names``), its file-name slug, and its folders per (dataset, model)
DUAL_PROTOCOLS = {
    "cleverhans3_pgd/redraw": ("cleverhans3_pgd-redraw", "v_mnist_{}_ch3", "y_fashion_{}_ch3"),
    "cleverhans4/frozen": ("cleverhans4-frozen", "u_mnist_{}_frozen", "x_fashion_{}_frozen"),
    "not recorded": ("not-recorded", "w_mnist_{}_old", None),
}
ADVERSARIAL_FIGURES = ("robustness", "robustness_samples")


def write_dual_study(root, names=tuple(DUAL_STUDY)):
    written = {}
    for name in names:
        index = sorted(DUAL_STUDY).index(name)  # the values of a folder do not depend on names
        dataset, model, options, seeds = DUAL_STUDY[name]
        for seed in seeds:
            rng = np.random.default_rng([200 + index, seed])
            metrics = attacked_metrics((dataset, model, 1.0, 1.0), seed, options, rng)
            runs.atomic_write_json(
                os.path.join(root, name, f"seed_{seed}", runs.METRICS_FILE), metrics
            )
            written.setdefault(name, {})[seed] = metrics
    return written


@pytest.fixture(scope="module")
def dual_report(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("dual_sweep"))
    written = write_dual_study(root)
    out = str(tmp_path_factory.mktemp("dual_report"))
    report = mixture_report.write_report(root, out)
    return written, out, report, runs.read_json(os.path.join(out, mixture_report.SUMMARY_FILE))


def _dual_folders(protocol):
    """{(dataset title, model): folder} of a protocol of DUAL_STUDY."""
    _, mnist, fashion = DUAL_PROTOCOLS[protocol]
    folders = {}
    for title, pattern in (("MNIST", mnist), ("Fashion-MNIST", fashion)):
        if pattern:
            folders.update({(title, model): pattern.format(model) for model in ("ml", "vi")})
    return folders


def test_adversarial_figures_one_file_per_protocol(dual_report):
    written, out, report, summary = dual_report
    for stem in ADVERSARIAL_FIGURES:
        assert f"{stem}.png" not in summary["figures"]
        for protocol, (slug, *_) in DUAL_PROTOCOLS.items():
            filename = f"{stem}_{slug}.png"
            assert os.path.join(out, filename) in report["written"]
            assert summary["figure_protocols"][filename]["attack_protocol"] == protocol
            curves = summary["figures"][filename]
            expected = {}
            for (title, model), folder in _dual_folders(protocol).items():
                seeds = written[folder]
                for key in ("S=1",) if stem == "robustness" else ("S=1", "S=5", "S=100"):
                    accuracy = np.array([m["robustness"][key]["accuracy"] for m in seeds.values()])
                    expected[f"{title}: {model.upper()} λ=1 σ²=1, {key}"] = (
                        sorted(seeds),
                        accuracy.mean(axis=0),
                    )
            assert set(curves) == set(expected), filename
            for label, (seeds, mean) in expected.items():
                assert curves[label]["seeds"] == seeds, (filename, label)
                np.testing.assert_allclose(curves[label]["mean"], mean)
    # one σ²: Fig. 9 is drawn under no protocol, so it is skipped once, under its own name
    assert set(summary["skipped"]) == {
        "accuracy_vs_prior.png",
        "accuracy_vs_lambda.png",
        "weight_variance_bars.png",
        "predictive_variance_hist.png",
        "correct_vs_wrong_variance.png",
        "robustness_vs_prior.png",
        "entropy_correct_vs_wrong.png",
    }
    # asked for "the" protocol of a study with several: an error, never a mix
    with pytest.raises(mixture_report.MixedProtocols, match="several protocols"):
        figure_numbers.robustness_data(mixture_report.load_study(summary["sweep_root"]))


def _dual_auroc(written, folder, group, measure):
    return [m["adversarial_detection"][group][measure]["auroc"] for m in written[folder].values()]


@pytest.mark.parametrize(
    "table, group", [("4", "all"), ("7", "correct_vs_successful")], ids=["table4", "table7"]
)
def test_tables_4_and_7_one_comparison_per_protocol(dual_report, table, group):
    written, _, report, summary = dual_report
    tables = report["tables"]
    heading = next(line for line in tables.splitlines() if line.startswith(f"### Table {table}:"))
    assert _section(tables, heading)[1].startswith("One comparison per attack protocol (3:")
    assert summary["published"][table]["protocols"] == list(DUAL_PROTOCOLS)
    for protocol in DUAL_PROTOCOLS:
        section = _section(tables, f"#### Table {table}, attack protocol {protocol}")
        rows = [_cells(line) for line in section if line.startswith("| ") and "MNIST" in line]
        value_rows = [row for row in rows if len(row) == 9]
        directions = [row for row in rows if len(row) == 7]
        assert len(value_rows) == 8 and len(directions) == 4
        measures = {"predictive variance": "predictive_variance", "entropy": "total_uncertainty"}
        folders = _dual_folders(protocol)
        means = {}
        for row in value_rows:
            dataset, model = row[1].split()
            title = {"MNIST": "MNIST", "FMNIST": "Fashion-MNIST"}[dataset]
            folder = folders.get((title, model.lower()))
            if folder is None:  # Fashion-MNIST has no run that predates the options
                assert row[2:4] == ["—", "—"] and row[7] == "not run"
                continue
            values = _dual_auroc(written, folder, group, measures[row[0]])
            assert row[2] == f"`{folder}`", (protocol, row)
            assert row[3] == _expected(values, ".4f"), (protocol, row)
            means[(row[0], row[1])] = np.mean(values)
        for row in directions:
            ml, vi = means.get((row[0], row[1])), means.get((row[2], row[3]))
            assert row[4] == ("—" if ml is None else f"{ml - vi:+.4f}"), (protocol, row)
    # each record says its protocol; a record's folder is of that protocol only
    for record in summary["published"][table]["values"]:
        folders = set(_dual_folders(record["attack_protocol"]).values())
        assert record["configuration"] in folders | {None}


def test_duplicate_settings_note_says_what_is_used_where(dual_report):
    *_, summary = dual_report
    (note,) = [n for n in summary["notes"] if n.startswith("u_mnist_ml_frozen")]
    assert note == (
        "u_mnist_ml_frozen, v_mnist_ml_ch3, w_mnist_ml_old are the same setting (mnist ML λ=1 "
        "σ²=1); the figures and tables without attacks (Tables 1, 2, 3, 5, the non-adversarial "
        "figures, Fig. 10) use u_mnist_ml_frozen; the robustness figures use, per attack "
        "protocol, cleverhans3_pgd/redraw: v_mnist_ml_ch3; cleverhans4/frozen: "
        "u_mnist_ml_frozen; not recorded: w_mnist_ml_old; Tables 4/7 use, per attack protocol, "
        "cleverhans3_pgd/redraw: v_mnist_ml_ch3; cleverhans4/frozen: u_mnist_ml_frozen; not "
        "recorded: w_mnist_ml_old."
    )


def test_single_protocol_root_keeps_its_file_names_and_tables(dual_report, tmp_path):
    written, _, _, summary = dual_report
    root, out = str(tmp_path / "sweep"), str(tmp_path / "report")
    write_dual_study(root, [n for n in DUAL_STUDY if DUAL_STUDY[n][2] is CH4_FROZEN])
    report = mixture_report.write_report(root, out)
    single = runs.read_json(os.path.join(out, mixture_report.SUMMARY_FILE))
    assert set(single["figures"]) == {"robustness.png", "robustness_samples.png"}
    assert "robustness_vs_prior.png" in single["skipped"]
    # the same curves as the protocol's own figure of the study with several protocols
    for stem in ADVERSARIAL_FIGURES:
        assert (
            single["figures"][f"{stem}.png"] == summary["figures"][f"{stem}_cleverhans4-frozen.png"]
        )
        assert single["figure_protocols"][f"{stem}.png"]["attack_protocol"] == "cleverhans4/frozen"
    assert (
        "#### " not in report["tables"]
        and "One comparison per attack protocol" not in report["tables"]
    )
    section = _section(
        report["tables"],
        next(line for line in report["tables"].splitlines() if line.startswith("### Table 4:")),
    )
    (row,) = [_cells(line) for line in section if line.startswith("| entropy | FMNIST VI |")]
    values = _dual_auroc(written, "x_fashion_vi_frozen", "all", "total_uncertainty")
    assert row[2:4] == ["`x_fashion_vi_frozen`", _expected(values, ".4f")]
    assert single["notes"] == []


def test_figure_9_once_per_protocol(tmp_path):
    root, out = str(tmp_path / "sweep"), str(tmp_path / "report")
    written = {}
    for index, (options, tag) in enumerate(((CH4_FROZEN, "a"), (CH3_PGD, "b"))):
        for prior_variance in (1.0, 3.0):
            name = f"{tag}_ml_{prior_variance:g}"
            for seed in (0, 1):
                rng = np.random.default_rng([300 + index, int(prior_variance), seed])
                metrics = attacked_metrics(("mnist", "ml", 1.0, prior_variance), seed, options, rng)
                path = os.path.join(root, name, f"seed_{seed}", runs.METRICS_FILE)
                runs.atomic_write_json(path, metrics)
                written.setdefault(name, []).append(metrics["robustness"]["S=1"]["accuracy"])
    report = mixture_report.write_report(root, out)
    for tag, slug, protocol in (
        ("a", "cleverhans4-frozen", "cleverhans4/frozen"),
        ("b", "cleverhans3_pgd-redraw", "cleverhans3_pgd/redraw"),
    ):
        section = _section(report["tables"], f"#### Fig. 9, attack protocol {protocol}")
        assert section[1].startswith(f"Figure: [robustness_vs_prior_{slug}.png]")
        columns, rows = _table(section)
        assert [r[columns["configuration"]] for r in rows] == [f"`{tag}_ml_1`", f"`{tag}_ml_3`"]
        for row in rows:
            accuracy = np.array(written[row[columns["configuration"]].strip("`")])
            assert row[columns["ε = 0.1"]] == _cell(accuracy[:, 2], ".3f")


# -- several sweep roots ---------------------------------------------------------------------------
def _regenerate_free(tables):
    """tables.md without its "Regenerate with" line (it names the roots and output folder)."""
    return "\n".join(line for line in tables.splitlines() if "Regenerate with" not in line)


def _flags(root, folder, seeds, text):
    for seed in seeds:
        with open(os.path.join(root, folder, f"seed_{seed}", runs.FLAGS_FILE), "w") as handle:
            handle.write(text)


def _published_row(tables, table, row, column):
    """The cells of a published table's value row (row label, column label)."""
    heading = next(line for line in tables.splitlines() if line.startswith(f"### Table {table}:"))
    (cells,) = [
        _cells(line)
        for line in _section(tables, heading)
        if line.startswith("| ")
        and _cells(line)[:2] == [row, column]
        and _cells(line)[2].startswith("`")
    ]
    return cells


def test_two_roots_with_disjoint_folders_equal_one_root(tmp_path):
    whole = str(tmp_path / "whole")
    write_study(whole, FULL_STUDY, seeds=[0, 1, 2])
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    for index, name in enumerate(sorted(FULL_STUDY)):
        shutil.copytree(os.path.join(whole, name), os.path.join((second, first)[index % 2], name))
    _flags(whole, "c_ml", [0, 1, 2], "--batch_size=100\n")
    _flags(second, "c_ml", [0, 1, 2], "--batch_size=100\n")  # c_ml is under the second root
    one = mixture_report.write_report(whole, str(tmp_path / "one"))
    two = mixture_report.write_report([first, second], str(tmp_path / "two"))
    assert "batch_size 100 (full: 200)" in _published_row(two["tables"], "1", "MNIST ML", "3")[-1]
    assert _regenerate_free(two["tables"]) == _regenerate_free(one["tables"])
    assert f"--sweep_root={first},{second} " in two["tables"]
    assert two["notes"] == one["notes"] == [] and two["skipped"] == one["skipped"]
    summaries = [
        runs.read_json(str(tmp_path / d / mixture_report.SUMMARY_FILE)) for d in ("one", "two")
    ]
    assert summaries[0]["sweep_root"] == whole and summaries[1]["sweep_root"] == [first, second]
    assert summaries[1]["configurations"]["c_ml"]["path"] == os.path.join(second, "c_ml")
    assert "path" not in summaries[0]["configurations"]["c_ml"]
    for key in ("figures", "published", "attack_protocols"):
        assert summaries[1][key] == summaries[0][key], key


@pytest.fixture()
def shared_folder(tmp_path):
    """a_ml under two roots: 3 seeds with batch_size 100 under ``first``, 5 seeds (other
    values) with batch_size 200 under ``second``; b_vi under ``first`` only."""
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    written = {
        "first": write_study(first, {n: FULL_STUDY[n] for n in ("a_ml", "b_vi")}, [0, 1, 2]),
        "second": write_study(second, {"a_ml": FULL_STUDY["a_ml"]}, [10, 11, 12, 13, 14]),
    }
    _flags(first, "a_ml", [0, 1, 2], "--batch_size=100\n")
    _flags(second, "a_ml", [10, 11, 12, 13, 14], "--batch_size=200\n")
    return first, second, written


def test_a_folder_under_two_roots_is_a_configuration_per_root(shared_folder, tmp_path):
    first, second, written = shared_folder
    configurations = mixture_report.load_study([first, second])
    assert [c.name for c in configurations] == ["first/a_ml", "second/a_ml", "b_vi"]
    assert [c.path for c in configurations] == [
        os.path.join(first, "a_ml"),
        os.path.join(second, "a_ml"),
        os.path.join(first, "b_vi"),
    ]
    report = mixture_report.write_report([first, second], str(tmp_path / "out"))
    tables = report["tables"]
    assert "A folder `<root>/<folder>` is a folder name found under several sweep roots" in tables
    row = next(line for line in tables.splitlines() if "| `first/a_ml` |" in line)
    assert row.startswith("| ML λ=1 σ²=1 | `first/a_ml` |")  # its own row in the tables
    accuracy = {
        root: [m["test"]["accuracy"] for m in by_seed["a_ml"].values()]
        for root, by_seed in written.items()
    }
    assert _cell(accuracy["first"], ".4f") in row
    assert _cell(accuracy["first"], ".4f") != _cell(accuracy["second"], ".4f")
    # the published tables use the folder with most seeds (5, the second root's), whose
    # flags.cfg says batch_size 200; the note says so
    for table, column in (("1", "1"), ("2", "λ = 1")):
        cells = _published_row(tables, table, "MNIST ML", column)
        assert cells[2:4] == ["`second/a_ml`", _cell(accuracy["second"], ".4f")]
        assert "batch_size" not in cells[-1] and cells[-1].endswith("; 5 of 10 seeds")
    (note,) = report["notes"]
    assert note.startswith(
        "first/a_ml, second/a_ml are the same setting (mnist ML λ=1 σ²=1); the figures and "
        "tables without attacks (Tables 1, 2, 3, 5, the non-adversarial figures, Fig. 10) use "
        "second/a_ml;"
    )
    # the flags.cfg of each configuration is read from its own root
    by_name = {c.name: c for c in configurations}
    assert {
        s["batch_size"] for s in mixture_report.run_settings(by_name["first/a_ml"]).values()
    } == {"100"}
    reference = published.load_reference(published.MIXTURE)
    assert "batch_size 100 (full: 200)" in mixture_report.protocol_text(
        by_name["first/a_ml"], reference, "1"
    )
    assert "batch_size" not in mixture_report.protocol_text(by_name["second/a_ml"], reference, "1")


def test_equal_seeds_under_two_roots_the_earlier_root_is_used(tmp_path):
    roots = [str(tmp_path / "zeta"), str(tmp_path / "alpha")]  # not in name order
    for index, root in enumerate(roots):
        write_study(
            root, {n: FULL_STUDY[n] for n in ("a_ml", "b_vi")}, [10 * index, 10 * index + 1]
        )
    for given in (roots, roots[::-1]):
        earlier = os.path.basename(given[0])
        configurations = mixture_report.load_study(given)
        assert [c.name for c in configurations] == [
            f"{os.path.basename(r)}/{f}" for f in ("a_ml", "b_vi") for r in given
        ]
        comparison = mixture_report.published_comparison(configurations)
        record = next(
            r for r in comparison["1"]["values"] if r["row"] == "MNIST ML" and r["column"] == "1"
        )
        assert record["configuration"] == f"{earlier}/a_ml"
        (note, _) = mixture_report.duplicate_settings(configurations)
        assert f"Fig. 10) use {earlier}/a_ml;" in note
        pairs = mixture_report.protocol_tables(configurations)["ml_minus_vi"]
        assert pairs and {(p["ml"]["configuration"], p["vi"]["configuration"]) for p in pairs} == {
            (f"{earlier}/a_ml", f"{earlier}/b_vi")
        }


def test_roots_with_one_basename_are_named_by_the_root_as_given(tmp_path):
    roots = [str(tmp_path / "a" / "runs"), str(tmp_path / "b" / "runs") + "/"]
    for root in roots:
        write_study(root, {"a_ml": FULL_STUDY["a_ml"]}, [0])
    names = [c.name for c in mixture_report.load_study(roots)]
    assert names == [f"{tmp_path}/a/runs/a_ml", f"{tmp_path}/b/runs/a_ml"]
    bars = figure_numbers.weight_variance_bars_data(
        mixture_report.load_study(roots), names=[names[1]]
    )
    assert list(bars["MNIST"]["series"]) == ["ML λ=1 σ²=1"]
    with pytest.raises(
        mixture_report.UnknownConfigurations, match=r"unknown configurations \['a_ml'\]"
    ):
        figure_numbers.weight_variance_bars_data(mixture_report.load_study(roots), names=["a_ml"])


def test_several_roots_refusals(tmp_path):
    root, empty, out = str(tmp_path / "sweep"), str(tmp_path / "empty"), str(tmp_path / "out")
    write_study(root, {"a_ml": FULL_STUDY["a_ml"]}, [0])
    os.makedirs(empty)
    for roots, message in (
        ([root, root], "a sweep root is given twice"),
        ([root, root + "/"], "a sweep root is given twice"),
        ([root, empty], f"no finished runs .* under {re.escape(empty)}$"),
        ([root, str(tmp_path / "absent")], "no sweep results at"),
        ([], "no sweep root given"),
    ):
        with pytest.raises(ValueError, match=message):
            mixture_report.write_report(roots, out)
        assert not os.path.exists(out)


def test_binary_takes_several_roots(shared_folder, tmp_path):
    first, second, _ = shared_folder
    out = str(tmp_path / "out")
    result = _run_binary(f"--sweep_root={first},,{second},", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "| ML λ=1 σ²=1 | `second/a_ml` |" in result.stdout
    assert "note: first/a_ml, second/a_ml are the same setting" in result.stdout
    assert (
        f"Regenerate with `python -m experiments.mixture_report --sweep_root={first},{second} "
        in result.stdout
    )
    summary = runs.read_json(os.path.join(out, mixture_report.SUMMARY_FILE))
    assert summary["sweep_root"] == [first, second]
    assert summary["paper_figures"]["command"].startswith(
        f"python -m experiments.mixture_report --sweep_root={first},{second} --output_dir={out}"
    )
    result = _run_binary(f"--sweep_root={first},{second},{first}", f"--output_dir={out}_twice")
    assert result.returncode == 2 and not os.path.exists(f"{out}_twice")
    assert result.stderr.strip().splitlines() == [
        f"error: a sweep root is given twice ({first} and {first}): {first}, {second}, {first}"
    ]
    result = _run_binary("--sweep_root=,", f"--output_dir={out}_none")
    assert result.returncode == 1 and "--sweep_root names no folder" in result.stderr
    assert not os.path.exists(f"{out}_none")
