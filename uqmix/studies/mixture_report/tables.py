"""The per-dataset tables of every configuration: the first section of ``tables.md``.

Per dataset, tables of every configuration (classification and detection; predictive variance;
adversarial detection; weight variances of the mixing distribution; wall time), a row per
configuration, a cell per number: "mean ± std (n)" over seeds (``study``), "—" when no seed has
it.  ``aggregate_table`` holds the numbers behind them (summary.json).
"""

import dataclasses

from uqmix import plotting, sweep
from uqmix.studies.mixture_report.study import _weight_variance_layers, dataset_title, datasets_of
from uqmix.sweep import format_cell, render_markdown_table

DETECTION_MEASURES = ("predictive_variance", "total_uncertainty")


def _with_wall_time(metrics):
    seconds = [metrics.get("train_seconds"), metrics.get("eval_seconds")]
    if all(isinstance(s, (int, float)) for s in seconds):
        return dict(metrics, wall_seconds=float(sum(seconds)))
    return metrics


def aggregate_table(configurations):
    """{name: {dotted key: {"mean", "std", "n"}}} of every scalar metric over seeds.

    ``uqmix.sweep.aggregate`` of the runs, plus ``wall_seconds`` =
    train_seconds + eval_seconds of each run.
    """
    return sweep.aggregate(
        {c.name: {seed: _with_wall_time(m) for seed, m in c.runs.items()} for c in configurations}
    )


@dataclasses.dataclass(frozen=True)
class Column:
    title: str
    key: str
    fmt: str = ".4f"
    spread: bool = True  # False: "mean (n)" without the std (``sweep.format_cell``)


def _measure_columns(prefix, title):
    return [
        Column(f"{title} ({plotting.MEASURE_TITLES[m].lower()})", f"{prefix}.{m}.auroc")
        for m in DETECTION_MEASURES
    ]


def table_sections(configurations):
    """[(section title, [Column])] of the tables of one dataset."""
    sections = [
        (
            "Classification and detection (AUROC)",
            [Column("accuracy", "test.accuracy"), Column("NLL", "test.nll")]
            + _measure_columns("ood", "OOD")
            + _measure_columns("misclassification", "misclassification"),
        ),
        (
            "Mean predictive variance of the test inputs",
            [
                Column(group, f"histograms.predictive_variance.mean_{group}", ".3g")
                for group in ("all", "correct", "wrong")
            ],
        ),
        (
            "Adversarial detection (AUROC) at the recorded ε",
            [
                Column("ε", "adversarial_detection.eps", ".3g"),
                Column("adversarial accuracy", "adversarial_detection.adversarial_accuracy"),
            ]
            + _measure_columns("adversarial_detection.all", "all")
            + _measure_columns(
                "adversarial_detection.correct_vs_successful", "correct vs successful"
            ),
        ),
    ]
    layers = _weight_variance_layers(configurations)
    if layers:
        sections.append(
            (
                "Mean weight variance Var[W_ij] of the mixing distribution",
                [Column(layer, f"weight_variances.{layer}.mean", ".3g") for layer in layers],
            )
        )
    sections.append(
        (
            "Wall time per run (seconds)",
            [
                Column("steps", "steps", ".0f"),
                Column("train", "train_seconds", ".0f"),
                Column("evaluation", "eval_seconds", ".0f"),
                Column("total", "wall_seconds", ".0f"),
            ],
        )
    )
    return sections


def markdown_table(configurations, table, columns):
    """One Markdown table: a row per configuration, a column per ``Column``."""
    rows = [
        [config.label, f"`{config.name}`"]
        + [format_cell(table.get(config.name, {}).get(c.key), c.fmt, c.spread) for c in columns]
        for config in configurations
    ]
    return render_markdown_table(["configuration", "folder"] + [c.title for c in columns], rows)


def markdown_tables(configurations, table=None):
    """The Markdown text of ``tables.md``: per dataset, one table per section."""
    table = aggregate_table(configurations) if table is None else table
    parts = [
        "# ML vs VI infinite mixtures: results over seeds",
        "Cells: mean ± sample std (ddof = 1) (n seeds); a single seed shows its value (1); "
        "— = not evaluated.",
    ]
    if any("/" in c.name for c in configurations):  # ``study.load_study``'s names
        parts[-1] += (
            " A folder `<root>/<folder>` is a folder name found under several sweep roots: one "
            "configuration per root, `<root>` its basename (the root as given when two roots "
            "share a basename)."
        )
    for dataset in datasets_of(configurations):
        members = [c for c in configurations if c.dataset == dataset]
        parts.append(f"## {dataset_title(dataset)}")
        for title, columns in table_sections(members):
            parts.append(f"### {title}")
            parts.append(markdown_table(members, table, columns))
    return "\n\n".join(parts) + "\n"


def _seeds_text(seeds, dropped=()):
    text = f"{len(seeds)} ({', '.join(str(s) for s in seeds)})"
    if dropped:
        text += f"; seeds {', '.join(str(s) for s in dropped)} left out (other ε grid)"
    return text
