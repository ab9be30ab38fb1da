"""The Prior Network study's report: tables and the adaptive-attack figure over runs.

Reads a sweep tree ``ROOT/<configuration>/seed_<S>/metrics.json`` written by
``experiments.cifar_rkl`` (through ``experiments.sweep``) and writes

* ``tables.md``: per configuration, mean ± sample std (ddof = 1) over seeds of
  the test error, OOD-detection AUROC of every OOD test set by mutual
  information, total uncertainty and α0 (precision; Prior Networks only),
  mean α0 in-domain and per OOD set, the wall time of training, evaluation and
  attack curves, and the adaptive white-box attack's
  success rate, AUROC (natural vs successful attacks) and joint success rate
  at every recorded iteration count;
* ``attack_curves.png``: those three quantities against attack iterations, one
  line per configuration (mean over seeds, error bars ± 3 sample std);
* ``summary.json``: the numbers of the tables and the figure.

``tables.md`` ends with the side-by-side comparison with the paper's Table 1 (MNIST test
error, the only published row we can run; ``published_comparison``): a row per
configuration of a published column (DNN, PN-KL, PN-RKL, ensemble of 5), with the verdicts
of ``uqmix.studies.published`` and how the runs differ from the full protocol (the
flagfiles' epochs, read from each run's flags.cfg; the paper's 5 initialisations).

A value a run did not record is "—" in the tables and a gap in the figure,
never a zero.
"""

import os

import numpy as np

from uqmix import plotting, runs, sweep
from uqmix.studies import published
from uqmix.sweep import format_cell, lookup, render_markdown_table, stats_of

TABLES_FILE = "tables.md"
FIGURE_FILE = "attack_curves.png"
SUMMARY_FILE = "summary.json"
OOD_MEASURES = (("mutual_information", "MI"), ("total_uncertainty", "TU"), ("precision", "α0"))
# wall time of a run's parts: training, evaluation (test set + OOD sets), attack curves
SECONDS_COLUMNS = {
    "train_seconds": "train s",
    "eval_seconds": "eval s",
    "attack_seconds": "attack s",
}
ATTACK_QUANTITIES = (
    ("success_rate", "success rate"),
    ("auroc", "AUROC (natural vs successful)"),
    ("jsr", "joint success rate"),
)
SIGMAS = 3.0


def model_label(metrics):
    """A short name of the model a run trained: PN-RKL, PN-KL, DNN (+ -ADV), ensemble, MC dropout."""
    kind = metrics.get("model_kind", "prior_network")
    if kind == "ensemble":
        label = f"ensemble of {metrics.get('num_networks', '?')}"
    elif kind == "mc_dropout":
        label = "MC dropout"
    else:
        label = {"reverse_kl": "PN-RKL", "forward_kl": "PN-KL", "cross_entropy": "DNN"}.get(
            metrics.get("loss"), str(metrics.get("loss"))
        )
    return label + ("-ADV" if metrics.get("adversarial_training") else "")


def load_study(root):
    """{configuration: {seed: metrics}} of the finished runs under ``root``."""
    study = sweep.collect(root)
    if not study:
        raise ValueError(f"no finished runs (<configuration>/seed_<S>/metrics.json) under {root}")
    return study


def _stats(by_seed, *path):
    return stats_of([lookup(m, *path) for m in by_seed.values()])


def ood_sets(study):
    return sorted(
        {
            name
            for by_seed in study.values()
            for m in by_seed.values()
            for name in (m.get("ood_detection") or {})
        }
    )


def attack_iterations(study):
    return sorted(
        {
            int(i)
            for by_seed in study.values()
            for m in by_seed.values()
            for i in (lookup(m, "attacks", "iterations") or [])
        }
    )


def attack_series(by_seed, quantity, iterations):
    """[seeds, T] values of ``quantity`` at ``iterations`` (NaN where a run lacks one)."""
    rows = []
    for metrics in by_seed.values():
        recorded = lookup(metrics, "attacks", "iterations") or []
        values = lookup(metrics, "attacks", "white_box", quantity) or []
        at = {int(i): v for i, v in zip(recorded, values)}
        rows.append([np.nan if at.get(i) is None else float(at[i]) for i in iterations])
    return np.asarray(rows, np.float64)


def _series_stats(rows):
    """``stats_of`` per iteration count (column); missing (NaN) entries are not counted."""
    return [stats_of(column.tolist()) for column in rows.T]


def summarize(study):
    """The numbers of the report: {configuration: {label, seeds, cells, attack}}."""
    sets, iterations = ood_sets(study), attack_iterations(study)
    summary = {}
    for name, by_seed in study.items():
        first = next(iter(by_seed.values()))
        cells = {
            "error": _stats(by_seed, "error"),
            "alpha0_in": _stats(by_seed, "mean_alpha0_in"),
            **{key: _stats(by_seed, key) for key in SECONDS_COLUMNS},
        }
        for ood in sets:
            cells[f"alpha0_{ood}"] = _stats(by_seed, "mean_alpha0_ood", ood)
            for measure, _ in OOD_MEASURES:
                cells[f"ood_{ood}_{measure}"] = _stats(
                    by_seed, "ood_detection", ood, measure, "auroc"
                )
        attack = {
            q: _series_stats(attack_series(by_seed, q, iterations)) for q, _ in ATTACK_QUANTITIES
        }
        summary[name] = {
            "label": model_label(first),
            "seeds": sorted(by_seed),
            "attack_measure": lookup(first, "attacks", "measure"),
            "cells": cells,
            "attack": attack,
        }
    return {"ood_sets": sets, "iterations": iterations, "configurations": summary}


def markdown_tables(summary):
    sets, iterations = summary["ood_sets"], summary["iterations"]
    configs = summary["configurations"]
    header = ["configuration", "model", "test error"]
    header += [f"OOD {ood} ({short})" for ood in sets for _, short in OOD_MEASURES]
    header += ["mean α0 in-domain"] + [f"mean α0 {ood}" for ood in sets]
    header += list(SECONDS_COLUMNS.values())
    rows = []
    for name, config in configs.items():
        cells = config["cells"]
        row = [f"`{name}`", config["label"], format_cell(cells["error"])]
        row += [format_cell(cells[f"ood_{ood}_{m}"]) for ood in sets for m, _ in OOD_MEASURES]
        row += [format_cell(cells["alpha0_in"], ".1f")]
        row += [format_cell(cells[f"alpha0_{ood}"], ".1f") for ood in sets]
        row += [format_cell(cells[key], ".0f") for key in SECONDS_COLUMNS]
        rows.append(row)
    parts = [
        "# Prior Network study: results over seeds",
        "",
        "Cells: mean ± sample std (ddof = 1) (n seeds); a single seed shows its value (1); "
        "— = not recorded. OOD columns: AUROC by mutual information (MI), total uncertainty "
        "(TU) and precision α0.",
        "",
        "## Classification and OOD detection",
        "",
        render_markdown_table(header, rows),
    ]
    if iterations:
        for quantity, title in ATTACK_QUANTITIES:
            rows = [
                [f"`{name}`", config["label"], str(config["attack_measure"])]
                + [format_cell(s, ".3f") for s in config["attack"][quantity]]
                for name, config in configs.items()
            ]
            parts += [
                "",
                f"## Adaptive white-box attack: {title}",
                "",
                render_markdown_table(
                    ["configuration", "model", "detection measure"]
                    + [f"{i} it" for i in iterations],
                    rows,
                ),
            ]
    return "\n".join(parts) + "\n"


# -- side by side with the published Table 1 -----------------------------------------------------
PUBLISHED_TABLE, PUBLISHED_ROW = "1", "MNIST"
# (A, B) pairs of published columns whose order the comparison checks (A − B).
PUBLISHED_PAIRS = (("PN-KL", "PN-RKL"), ("DNN", "PN-RKL"))


def error_percent(by_seed):
    """Stats of the test error in percent (100 · error) over seeds."""
    return stats_of(
        [None if m.get("error") is None else 100.0 * m["error"] for m in by_seed.values()]
    )


def run_settings(root, name, by_seed):
    """{seed: settings}: each run's flags.cfg overlaid with the scalars of its metrics.json."""
    return {
        seed: {
            **published.read_flags(os.path.join(root, name, f"seed_{seed}", runs.FLAGS_FILE)),
            **{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))},
        }
        for seed, metrics in by_seed.items()
    }


def published_comparison(study, root, reference=None):
    """{"values": [record], "directions": [record]} against the paper's Table 1 (MNIST).

    A value record per configuration whose model (``model_label``) is a column of the
    published table; a direction record per ``PUBLISHED_PAIRS`` pair of configurations
    with the same schedule (a 3-epoch run is never compared with a 20-epoch one; the
    seed counts may differ).
    """
    reference = reference or published.load_reference(published.PRIOR_NETWORKS)
    cells = reference["tables"][PUBLISHED_TABLE]["rows"][PUBLISHED_ROW]
    values = []
    for name, by_seed in study.items():
        label = model_label(next(iter(by_seed.values())))
        if label not in cells:
            continue
        stats = error_percent(by_seed)
        verdict, difference = published.value_verdict(
            stats["mean"] if stats["n"] else None, cells[label], reference
        )
        settings = run_settings(root, name, by_seed)
        values.append(
            {
                "configuration": name,
                "column": label,
                "ours": stats,
                "published": cells[label],
                "verdict": verdict,
                "difference": difference,
                "band": published.band(reference, cells[label]),
                "protocol": published.protocol_label(
                    published.protocol_differences(settings, reference)
                ),
                # the schedule alone (seed counts may differ between compared runs)
                "schedule": published.protocol_differences(settings, dict(reference, seeds=0)),
            }
        )
    directions = [
        {"a": a, "b": b}
        for first, second in PUBLISHED_PAIRS
        for a in values
        if a["column"] == first
        for b in values
        if b["column"] == second and b["schedule"] == a["schedule"]
    ]
    return {"values": values, "directions": directions}


def published_markdown(comparison, reference=None):
    """The Markdown of the side-by-side section of ``tables.md``."""
    reference = reference or published.load_reference(published.PRIOR_NETWORKS)
    title = reference["tables"][PUBLISHED_TABLE]["title"]
    rows = [
        [f"`{r['configuration']}`", r["column"]]
        + published.comparison_row(
            [], r["ours"], r["published"], reference, r["protocol"], fmt=".2f"
        )
        for r in comparison["values"]
    ]
    parts = [
        "",
        "## Side by side with the published Table 1 (Malinin & Gales), MNIST",
        "",
        f"Published: {title}. Ours: 100 · test error, mean ± sample std over seeds. "
        f'Verdict "{published.WITHIN}": |ours − published| ≤ {published.K:g}σ '
        "(σ = printed spread / 2, so the band is the printed ± 2σ); "
        f'"{published.OUTSIDE}" beyond it; "{published.NO_SPREAD}" for the '
        "ensemble (printed alone). The paper's MNIST rows need no OOD-training data we "
        "lack; Table 2 (CIFAR) cannot run here. Full protocol: the flagfiles' "
        f"{reference['protocol']['epochs']} epochs, {reference['seeds']} initialisations.",
        "",
        published.render(["configuration", "published column"] + published.VALUE_HEADER, rows),
    ]
    if comparison["directions"]:
        rows = [
            published.direction_row(
                [f"`{d['a']['configuration']}`", f"`{d['b']['configuration']}`"],
                d["a"]["ours"],
                d["b"]["ours"],
                d["a"]["published"],
                d["b"]["published"],
                fmt=".2f",
            )
            for d in comparison["directions"]
        ]
        parts += [
            "",
            "Order of the test errors (A − B, runs of the same schedule only):",
            "",
            published.render(["A", "B"] + published.DIRECTION_HEADER, rows),
        ]
    return "\n".join(parts) + "\n"


def attack_figure(summary):
    iterations = summary["iterations"]
    panels, spreads, seeds = {}, {}, []
    for quantity, title in ATTACK_QUANTITIES:
        panels[title], spreads[title] = {}, {}
        for name, config in summary["configurations"].items():
            stats = config["attack"][quantity]
            if not any(s["n"] for s in stats):
                continue
            seeds.append(max(s["n"] for s in stats))
            label = f"{config['label']}: {name} (n={seeds[-1]})"
            panels[title][label] = [s["mean"] if s["n"] else None for s in stats]
            spreads[title][label] = [SIGMAS * s["std"] if s["n"] > 1 else 0.0 for s in stats]
    return plotting.attack_curves(
        iterations,
        panels,
        spreads=spreads,
        seeds=seeds,
        sigmas=SIGMAS,
        title="Adaptive white-box attacks",
    )


def write_report(root, output_dir, figures_dir=None):
    """Writes tables.md, summary.json (to ``output_dir``) and, when some run has attack
    curves, attack_curves.png (to ``figures_dir``, default ``output_dir``), all or none
    (``runs.atomic_write_files``).  Returns the paths written.  Raises ValueError before
    writing anything when ``root`` has no usable run, and ``runs.OutputPathError`` when an
    output folder cannot be written."""
    runs.check_output_dir(output_dir)
    runs.check_output_dir(figures_dir or output_dir, flag="figures_dir")
    study = load_study(root)
    summary = summarize(study)
    summary["published"] = published_comparison(study, root)
    tables = markdown_tables(summary) + published_markdown(summary["published"])
    contents = {os.path.join(output_dir, TABLES_FILE): tables.encode("utf-8")}
    if summary["iterations"]:
        path = os.path.join(figures_dir or output_dir, FIGURE_FILE)
        contents[path] = plotting.figure_bytes(attack_figure(summary), path)
    contents[os.path.join(output_dir, SUMMARY_FILE)] = runs.json_bytes(
        {"sweep_root": root, **summary}  # as given: no machine-specific prefix
    )
    return {"written": runs.atomic_write_files(contents), "tables": tables}
