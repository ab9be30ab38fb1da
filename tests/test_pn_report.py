"""uqmix.studies.pn_report / experiments.pn_report on hand-written sweep trees (no training)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from uqmix import plotting, runs
from uqmix.studies import pn_attacks, pn_experiment, pn_report

ITERATIONS = [1, 10, 100]


def _metrics(
    rng,
    loss="reverse_kl",
    kind="prior_network",
    adversarial=False,
    attack=True,
    iterations=ITERATIONS,
    method=None,
    criterion=None,
    black_box=False,
    median_l2=False,
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
        quantities = ("success_rate", "auroc", "jsr") + (("median_l2",) if median_l2 else ())
        settings = ("white_box", "black_box") if black_box else ("white_box",)
        metrics["attacks"] = {
            "iterations": iterations,
            "measure": "mutual_information",
            **{
                s: {
                    q: [
                        float(v)
                        for v in rng.uniform(0, 3 if q == "median_l2" else 1, len(iterations))
                    ]
                    for q in quantities
                }
                for s in settings
            },
        }
        if method is not None:
            metrics["attacks"].update(method=method, criterion=criterion, eps=0.3)
        if black_box:
            metrics["blackbox_source_seeds"] = [1000]
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


def _run_binary(sweep_root, output_dir):
    command = [
        sys.executable,
        "-m",
        "experiments.pn_report",
        f"--sweep_root={sweep_root}",
        f"--output_dir={output_dir}",
    ]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_binary_end_to_end_and_empty_root(study, tmp_path):
    root, _ = study
    out = str(tmp_path / "out")
    result = _run_binary(root, out)
    assert result.returncode == 0, result.stderr
    assert "| `rkl` | PN-RKL |" in result.stdout
    assert sorted(os.listdir(out)) == [
        "attack_curves.png",
        "summary.json",
        "tables.md",
        "uqmix_report.json",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run_binary(empty, f"{out}_empty")
    assert result.returncode != 0 and "no finished runs" in result.stderr
    assert not os.path.exists(f"{out}_empty")


def _section(tables, heading):
    """The lines of the section of ``tables`` under ``heading`` (to the next heading)."""
    text = tables.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return text.splitlines()


def _row(lines, *start):
    prefix = "| " + " | ".join(start) + " |"
    found = [line for line in lines if line.startswith(prefix)]
    assert len(found) == 1, (prefix, lines)
    return found[0]


def _cells(values, fmt=".3f"):
    """The table cells of [seeds, T] values: per column numpy mean ± std (ddof = 1) (n)."""
    return " | ".join(_cell(column, fmt) for column in np.asarray(values, np.float64).T)


def _curve(figure, panel, label):
    """The errorbar container of series ``label`` in the panel titled ``panel``."""
    axis = next(ax for ax in figure.axes if ax.get_title() == panel)
    return next(c for c in axis.containers if c.get_label() == label)


def test_no_two_curves_of_an_attack_panel_look_alike(tmp_path):
    """23 configurations with black-box transfer (46 curves a panel): colour, line style and
    marker tell every curve apart (they repeated from the 21st configuration on); beyond
    20 × len(MARKERS) configurations the figure is refused, not drawn ambiguously."""
    rng = np.random.default_rng(5)
    root = str(tmp_path / "pn")
    for index in range(23):
        _write(root, f"c{index:02d}", 0, _metrics(rng, method="mim", black_box=True))
    figure = pn_report.attack_figure(pn_report.summarize(pn_report.load_study(root)))
    axis = next(ax for ax in figure.axes if ax.get_title() == "success rate")
    lines = [container.lines[0] for container in axis.containers]
    looks = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(lines) == 46 and len(looks) == 46
    assert pn_attacks._line_styles(20 * len(plotting.MARKERS) - 1)
    with pytest.raises(ValueError, match="at most 120 configurations"):
        pn_attacks._line_styles(20 * len(plotting.MARKERS))


def test_black_box_rows_and_dashed_curves_beside_white_box(tmp_path):
    rng = np.random.default_rng(2)
    root = str(tmp_path / "pn")
    written = {
        "rkl": [_metrics(rng, method="mim", criterion="kl_pmf", black_box=True) for _ in range(3)],
        "dnn": [_metrics(rng, loss="cross_entropy", method="mim", criterion="kl_pmf")] * 2,
    }
    for name, seeds in written.items():
        for seed, metrics in enumerate(seeds):
            _write(root, name, seed, metrics)
    out = str(tmp_path / "out")
    tables = pn_report.write_report(root, out)["tables"]
    heading = "Adaptive attack (white-box and black-box transfer): joint success rate"
    lines = _section(tables, heading)
    assert "black-box: crafted on a source network trained inside the run" in lines[1]
    assert lines[3].startswith(
        "| configuration | model | setting | criterion | detection measure | 1 it |"
    )
    rkl, dnn = written["rkl"], written["dnn"]
    for setting, key in (("white-box", "white_box"), ("black-box", "black_box")):
        row = _row(lines, "`rkl`", "PN-RKL", setting, "kl_pmf", "mutual_information")
        assert row.endswith(_cells([m["attacks"][key]["jsr"] for m in rkl]) + " |")
    row = _row(lines, "`dnn`", "DNN", "white-box", "kl_pmf", "mutual_information")
    assert row.endswith(_cells([m["attacks"]["white_box"]["jsr"] for m in dnn]) + " |")
    assert not [line for line in tables.splitlines() if "`dnn`" in line and "black-box" in line]
    assert "Adaptive white-box attack:" not in tables
    summary = pn_report.summarize(pn_report.load_study(root))
    assert "black_box" in summary["configurations"]["rkl"]
    assert "black_box" not in summary["configurations"]["dnn"]
    assert sorted(os.listdir(out)) == [
        "attack_curves.png",
        "summary.json",
        "tables.md",
        "uqmix_report.json",
    ]
    figure = pn_report.attack_figure(summary)
    panel = "success rate"
    white = _curve(figure, panel, "PN-RKL: rkl (n=3)").lines[0]
    container = _curve(figure, panel, "PN-RKL: rkl, black-box (n=3)")
    black = container.lines[0]
    values = np.array([m["attacks"]["black_box"]["success_rate"] for m in rkl])
    np.testing.assert_allclose(black.get_ydata(), values.mean(0))
    assert (black.get_color(), black.get_linestyle()) == (white.get_color(), "--")
    assert white.get_linestyle() == "-"
    half = [(s[1][1] - s[0][1]) / 2 for s in container.lines[2][0].get_segments()]
    np.testing.assert_allclose(half, 3 * values.std(0, ddof=1))
    axis = next(ax for ax in figure.axes if ax.get_title() == panel)
    labels = {c.get_label() for c in axis.containers}
    assert labels == {"PN-RKL: rkl (n=3)", "PN-RKL: rkl, black-box (n=3)", "DNN: dnn (n=2)"}


def _two_roots(tmp_path, second_criterion="kl_dir", second_method="mim"):
    rng = np.random.default_rng(3)
    first, second = str(tmp_path / "pn_full"), str(tmp_path / "pn_full_other")
    written = {
        (first, "mnist_rkl"): [_metrics(rng, method="mim", criterion="kl_pmf") for _ in range(2)],
        (first, "mnist_dnn"): [_metrics(rng, loss="cross_entropy", method="mim")],
        (second, "mnist_rkl"): [
            _metrics(rng, method=second_method, criterion=second_criterion) for _ in range(3)
        ],
    }
    for (root, name), seeds in written.items():
        for seed, metrics in enumerate(seeds):
            _write(root, name, seed, metrics)
    return first, second, written


def test_kl_dir_and_kl_pmf_roots_give_separate_labelled_rows(tmp_path):
    first, second, written = _two_roots(tmp_path)
    out = str(tmp_path / "out")
    tables = pn_report.write_report([first, second], out)["tables"]
    pmf, kldir = written[first, "mnist_rkl"], written[second, "mnist_rkl"]
    names = ["`mnist_rkl (criterion kl_pmf)`", "`mnist_rkl (criterion kl_dir)`"]
    lines = _section(tables, "Classification and OOD detection")
    for name, seeds in zip(names, (pmf, kldir)):
        assert _cell([m["error"] for m in seeds], ".4f") in _row(lines, name, "PN-RKL")
    assert _row(lines, "`mnist_dnn`", "DNN")
    lines = _section(tables, "Adaptive white-box attack: AUROC (natural vs successful)")
    rows = [line for line in lines if line.startswith("| `mnist_rkl")]
    assert [row.split(" | ")[0][2:] for row in rows] == names  # next to each other, in order
    for row, seeds, criterion in zip(rows, (pmf, kldir), ("kl_pmf", "kl_dir")):
        assert row.endswith(_cells([m["attacks"]["white_box"]["auroc"] for m in seeds]) + " |")
        assert f" | {criterion} | " in row  # the recorded criterion has its own column
    with open(os.path.join(out, pn_report.SUMMARY_FILE), encoding="utf-8") as handle:
        summary = json.load(handle)
    assert summary["sweep_root"] == [first, second]
    config = summary["configurations"]["mnist_rkl (criterion kl_dir)"]
    assert (config["sweep_root"], config["folder"], config["seeds"]) == (
        second,
        "mnist_rkl",
        [0, 1, 2],
    )
    assert config["attack_criterion"] == "kl_dir"
    published_names = [r["configuration"] for r in summary["published"]["values"]]
    assert published_names == ["mnist_dnn", "mnist_rkl (criterion kl_pmf)", names[1][1:-1]]


def test_the_same_folder_and_attack_under_two_roots_is_refused(tmp_path):
    first, second, _ = _two_roots(tmp_path, second_criterion="kl_pmf")
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match=r"ambiguous: `mnist_rkl` under .*pn_full and under"):
        pn_report.write_report([first, second], out)
    assert not os.path.exists(out)
    with pytest.raises(ValueError, match="given twice"):
        pn_report.load_study([first, first])


def test_cw_root_shows_median_l2_over_max_iterations(tmp_path):
    rng = np.random.default_rng(4)
    root = str(tmp_path / "pn_full_cw")
    budgets = [10, 100]
    written = [
        _metrics(rng, method="cw", criterion="kl_pmf", iterations=budgets, median_l2=True)
        for _ in range(3)
    ]
    written[1]["attacks"]["white_box"]["median_l2"][0] = float("nan")  # no attack succeeded
    for seed, metrics in enumerate(written):
        _write(root, "mnist_rkl", seed, metrics)
    out = str(tmp_path / "out")
    tables = pn_report.write_report(root, out)["tables"]
    lines = _section(tables, "Adaptive white-box attack, C&W L2: median L2 of successful attacks")
    assert "max_iterations" in lines[1]
    assert lines[3].startswith(
        "| configuration | model | criterion | detection measure | 10 max it | 100 max it |"
    )
    l2 = [m["attacks"]["white_box"]["median_l2"] for m in written]
    row = _row(lines, "`mnist_rkl`", "PN-RKL", "kl_pmf", "mutual_information")
    first = _cell([v[0] for v in l2 if np.isfinite(v[0])], ".3f")
    assert row.endswith(f"{first} | {_cell([v[1] for v in l2], '.3f')} |")
    assert first.endswith("(2)")
    lines = _section(tables, "Adaptive white-box attack, C&W L2: success rate")
    row = _row(lines, "`mnist_rkl`", "PN-RKL", "kl_pmf", "mutual_information")
    assert row.endswith(_cells([m["attacks"]["white_box"]["success_rate"] for m in written]) + " |")
    assert sorted(os.listdir(out)) == [
        "attack_curves_cw.png",
        "summary.json",
        "tables.md",
        "uqmix_report.json",
    ]
    figure = pn_report.attack_figure(pn_report.summarize(pn_report.load_study(root)))
    line = _curve(figure, "median L2 of successful attacks", "PN-RKL: mnist_rkl (n=3)").lines[0]
    np.testing.assert_allclose(line.get_xdata(), budgets)
    np.testing.assert_allclose(
        line.get_ydata(), [np.nanmean([v[0] for v in l2]), np.mean([v[1] for v in l2])]
    )
    assert {ax.get_xlabel() for ax in figure.axes} == {"C&W L2 max_iterations"}


def test_cw_and_mim_roots_make_one_block_per_method(tmp_path):
    first, second, written = _two_roots(tmp_path, second_criterion="kl_pmf", second_method="cw")
    out = str(tmp_path / "out")
    tables = pn_report.write_report([first, second], out)["tables"]
    mim = _section(tables, "Adaptive white-box attack, MIM: success rate")
    cw = _section(tables, "Adaptive white-box attack, C&W L2: success rate")
    assert [line.split(" | ")[0] for line in mim if line.startswith("| `")] == [
        "| `mnist_dnn`",
        "| `mnist_rkl (MIM)`",
    ]
    assert [line.split(" | ")[0] for line in cw if line.startswith("| `")] == [
        "| `mnist_rkl (C&W L2)`"
    ]
    assert "10 max it" in cw[3] and "10 it" in mim[1]
    assert sorted(os.listdir(out)) == [
        "attack_curves_cw.png",
        "attack_curves_mim.png",
        "summary.json",
        "tables.md",
        "uqmix_report.json",
    ]


def test_binary_takes_several_roots(tmp_path):
    first, second, _ = _two_roots(tmp_path)
    result = _run_binary(f"{first},{second}", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "| `mnist_rkl (criterion kl_dir)` | PN-RKL |" in result.stdout


def test_seeds_attacked_differently_are_refused(tmp_path):
    """A seed attacked with cross-entropy next to one attacked with KL-PMF (e.g. left over
    from an older flagfile) would be averaged under one label: refused, nothing written."""
    rng = np.random.default_rng(3)
    root = str(tmp_path / "pn")
    _write(root, "mnist_dnn_adv", 0, _metrics(rng, method="mim", criterion="cross_entropy"))
    _write(root, "mnist_dnn_adv", 1, _metrics(rng, method="mim", criterion="kl_pmf"))
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="mnist_dnn_adv.*attacked differently.*criterion"):
        pn_report.write_report(root, out)
    assert not os.path.exists(out)


def test_seeds_without_black_box_transfer_join_the_white_box_rows(tmp_path):
    """Seed 0 with black-box transfer, seeds 1 and 2 without (the transfer's second training
    did not fit): one configuration, its white-box row the mean of the three seeds, its
    black-box row and dashed curve seed 0's alone, each labelled with its n."""
    rng = np.random.default_rng(8)
    root = str(tmp_path / "pn")
    seeds = [_metrics(rng, method="mim", criterion="kl_pmf", black_box=b) for b in (1, 0, 0)]
    for seed, metrics in enumerate(seeds):
        _write(root, "rkl_adv", seed, metrics)
        # the runs' records, as cifar_rkl writes them: they differ in the seed and the flag
        _write_config(root, "rkl_adv", seed, blackbox_transfer=seed == 0)
    tables = pn_report.write_report(root, str(tmp_path / "out"))["tables"]
    lines = _section(tables, "Adaptive attack (white-box and black-box transfer): success rate")
    white = _row(lines, "`rkl_adv`", "PN-RKL", "white-box", "kl_pmf", "mutual_information")
    assert white.endswith(_cells([m["attacks"]["white_box"]["success_rate"] for m in seeds]) + " |")
    black = _row(lines, "`rkl_adv`", "PN-RKL", "black-box", "kl_pmf", "mutual_information")
    assert black.endswith(_cells([seeds[0]["attacks"]["black_box"]["success_rate"]]) + " |")
    figure = pn_report.attack_figure(pn_report.summarize(pn_report.load_study(root)))
    axis = next(ax for ax in figure.axes if ax.get_title() == "success rate")
    assert {c.get_label() for c in axis.containers} == {
        "PN-RKL: rkl_adv (n=3)",
        "PN-RKL: rkl_adv, black-box (n=1)",
    }


def _write_config(root, name, seed, **flags):
    """The config.json of seed ``seed``'s run (its record's flags, with that seed) beside its
    metrics.json."""
    config = pn_experiment.default_config(seed=seed, **flags)
    runs.atomic_write_json(os.path.join(root, name, f"seed_{seed}", runs.CONFIG_FILE), config)


def test_seeds_differing_in_more_than_seed_and_black_box_transfer_are_refused(tmp_path):
    rng = np.random.default_rng(9)
    root = str(tmp_path / "pn")
    for seed, epochs in ((0, 20), (1, 3)):
        _write(root, "rkl_adv", seed, _metrics(rng, method="mim", criterion="kl_pmf"))
        _write_config(root, "rkl_adv", seed, epochs=epochs, blackbox_transfer=True)
    with pytest.raises(ValueError, match="mixes runs of different configurations.*epochs"):
        pn_report.write_report(root, str(tmp_path / "out"))


def test_black_box_source_training_time_gets_a_column_only_where_recorded(tmp_path):
    rng = np.random.default_rng(5)
    root = str(tmp_path / "pn")
    rkl = [_metrics(rng, method="mim", criterion="kl_pmf", black_box=True) for _ in range(2)]
    for seed, metrics in enumerate(rkl):
        metrics["blackbox_source_train_seconds"] = float(rng.uniform(100, 900))
        _write(root, "rkl", seed, metrics)
    _write(root, "dnn", 0, _metrics(rng, loss="cross_entropy", method="mim", criterion="kl_pmf"))
    tables = pn_report.write_report(root, str(tmp_path / "out"))["tables"]
    lines = _section(tables, "Classification and OOD detection")
    header = next(line for line in lines if line.startswith("| configuration |"))
    assert header.endswith("| train s | eval s | attack s | black-box source train s |")
    source = [m["blackbox_source_train_seconds"] for m in rkl]
    assert _row(lines, "`rkl`").endswith(f"| {_cell(source, '.0f')} |")
    assert _row(lines, "`dnn`").endswith("| — |")
    assert "made before training seconds were counted epoch by epoch" not in tables
    del rkl[1]["blackbox_source_train_seconds"]  # a run of the older accounting
    _write(root, "rkl", 1, rkl[1])
    flagged = pn_report.write_report(root, str(tmp_path / "out1"))["tables"]
    assert "Seconds of `rkl` (seed 1): made before training seconds were counted" in flagged
    without = str(tmp_path / "plain")
    _write(without, "dnn", 0, _metrics(rng, loss="cross_entropy", method="mim", criterion="kl_pmf"))
    plain = pn_report.write_report(without, str(tmp_path / "out2"))["tables"]
    assert "black-box source train s" not in plain
