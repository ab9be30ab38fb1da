"""uqmix.studies.pn_report / experiments.pn_report on hand-written sweep trees (no training)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from uqmix import plotting, runs
from uqmix.studies import pn_report

ITERATIONS = [1, 10, 100]


def _metrics(
    rng,
    loss="reverse_kl",
    kind="prior_network",
    adversarial=False,
    attack=True,
    iterations=ITERATIONS,
):
    dirichlet = loss != "cross_entropy"
    ood = {}
    for name in ("notmnist", "fashion_mnist"):
        measures = {
            "mutual_information": {"auroc": float(rng.uniform(0.5, 1))},
            "total_uncertainty": {"auroc": float(rng.uniform(0.5, 1))},
        }
        if dirichlet:
            measures["precision"] = {"auroc": float(rng.uniform(0.5, 1))}
        ood[name] = measures
    metrics = {
        "model_kind": kind,
        "loss": loss,
        "adversarial_training": adversarial,
        "num_networks": 5 if kind == "ensemble" else 1,
        "error": float(rng.uniform(0, 0.05)),
        "train_seconds": float(rng.uniform(1, 9)),
        "eval_seconds": float(rng.uniform(1, 9)),
        "ood_detection": ood,
    }
    if dirichlet:
        metrics["mean_alpha0_in"] = float(rng.uniform(50, 150))
        metrics["mean_alpha0_ood"] = {n: float(rng.uniform(9, 12)) for n in ood}
    if attack:
        metrics["attack_seconds"] = float(rng.uniform(10, 90))
        metrics["attacks"] = {
            "iterations": iterations,
            "measure": "mutual_information",
            "white_box": {
                q: [float(v) for v in rng.uniform(0, 1, len(iterations))]
                for q in ("success_rate", "auroc", "jsr")
            },
        }
    return metrics


def _write(root, name, seed, metrics):
    runs.atomic_write_json(os.path.join(root, name, f"seed_{seed}", runs.METRICS_FILE), metrics)


def _cell(values, fmt):
    values = np.asarray(values, np.float64)
    if values.size == 1:
        return f"{values[0]:{fmt}} (1)"
    return f"{values.mean():{fmt}} ± {values.std(ddof=1):{fmt}} ({values.size})"


@pytest.fixture()
def study(tmp_path):
    rng = np.random.default_rng(0)
    root = str(tmp_path / "pn")
    written = {
        "rkl": [_metrics(rng) for _ in range(3)],
        "dnn": [_metrics(rng, loss="cross_entropy")],
        "ens": [_metrics(rng, loss="cross_entropy", kind="ensemble", attack=False)],
    }
    for name, seeds in written.items():
        for seed, metrics in enumerate(seeds):
            _write(root, name, seed, metrics)
    return root, written


def test_tables_match_numpy_and_leave_gaps_empty(study, tmp_path):
    root, written = study
    out, figures = str(tmp_path / "report"), str(tmp_path / "figures")
    report = pn_report.write_report(root, out, figures)
    with open(os.path.join(out, pn_report.TABLES_FILE), encoding="utf-8") as handle:
        tables = handle.read()
    assert tables == report["tables"]
    rkl = written["rkl"]
    row = next(line for line in tables.splitlines() if line.startswith("| `rkl` | PN-RKL |"))
    assert _cell([m["error"] for m in rkl], ".4f") in row
    notmnist_mi = [m["ood_detection"]["notmnist"]["mutual_information"]["auroc"] for m in rkl]
    assert _cell(notmnist_mi, ".4f") in row
    assert _cell([m["mean_alpha0_in"] for m in rkl], ".1f") in row
    seconds = [
        _cell([m[key] for m in rkl], ".0f")
        for key in ("train_seconds", "eval_seconds", "attack_seconds")
    ]
    assert row.endswith(" | ".join(seconds) + " |")
    jsr_100 = [m["attacks"]["white_box"]["jsr"][2] for m in rkl]
    jsr_section = tables.split("joint success rate")[1]
    jsr_row = next(line for line in jsr_section.splitlines() if line.startswith("| `rkl`"))
    assert jsr_row.endswith(_cell(jsr_100, ".3f") + " |")
    dnn_row = next(line for line in tables.splitlines() if line.startswith("| `dnn` | DNN |"))
    assert dnn_row.count("—") == 5  # α0 AUROC on both OOD sets, α0 in-domain and per OOD set
    ours = tables.split("## Side by side")[0]  # the published comparison has its own rows
    ens_rows = [line for line in ours.splitlines() if line.startswith("| `ens` | ensemble of 5")]
    assert len(ens_rows) == 4 and ens_rows[1].count("—") == len(ITERATIONS)
    assert ens_rows[0].endswith(" | — |")  # no attack, no attack time
    assert os.path.getsize(os.path.join(figures, pn_report.FIGURE_FILE)) > 10_000
    with open(os.path.join(out, pn_report.SUMMARY_FILE), encoding="utf-8") as handle:
        summary = json.load(handle)
    assert summary["iterations"] == ITERATIONS
    assert summary["configurations"]["rkl"]["seeds"] == [0, 1, 2]


def test_attack_figure_draws_means_and_three_sigma(study):
    root, written = study
    summary = pn_report.summarize(pn_report.load_study(root))
    figure = pn_report.attack_figure(summary)
    success = figure.axes[0]
    label = "PN-RKL: rkl (n=3)"
    container = next(c for c in success.containers if c.get_label() == label)
    values = np.array([m["attacks"]["white_box"]["success_rate"] for m in written["rkl"]])
    np.testing.assert_allclose(container.lines[0].get_ydata(), values.mean(0))
    half = [(s[1][1] - s[0][1]) / 2 for s in container.lines[2][0].get_segments()]
    np.testing.assert_allclose(half, 3 * values.std(0, ddof=1))
    assert {c.get_label() for c in success.containers} == {label, "DNN: dnn (n=1)"}


def test_runs_with_different_iteration_counts_share_one_axis(tmp_path):
    rng = np.random.default_rng(1)
    root = str(tmp_path / "pn")
    _write(root, "short", 0, _metrics(rng, iterations=[1, 10]))
    _write(root, "long", 0, _metrics(rng, iterations=[1, 10, 1000]))
    summary = pn_report.summarize(pn_report.load_study(root))
    assert summary["iterations"] == [1, 10, 1000]
    assert summary["configurations"]["short"]["attack"]["jsr"][2]["n"] == 0
    assert "| — |" in pn_report.markdown_tables(summary).split("joint success rate")[1]


def test_attack_curves_refuses_a_spread_of_the_wrong_length():
    with pytest.raises(ValueError, match="spread of 'a'"):
        plotting.attack_curves([1, 2], {"p": {"a": [0.1, 0.2]}}, spreads={"p": {"a": [0.1]}})


def test_binary_end_to_end_and_empty_root(study, tmp_path):
    root, _ = study
    out = str(tmp_path / "out")
    command = [
        sys.executable,
        "-m",
        "experiments.pn_report",
        f"--sweep_root={root}",
        f"--output_dir={out}",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| `rkl` | PN-RKL |" in result.stdout
    assert sorted(os.listdir(out)) == ["attack_curves.png", "summary.json", "tables.md"]
    empty = tmp_path / "empty"
    empty.mkdir()
    command[3:] = [f"--sweep_root={empty}", f"--output_dir={out}_empty"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "no finished runs" in result.stderr
    assert not os.path.exists(f"{out}_empty")
