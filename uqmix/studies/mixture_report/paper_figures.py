"""The paper's figures 9 and 10: the last sections of ``tables.md``.

``paper_figures_markdown`` (the paper prints no numbers for these figures): PGD accuracy (S=1)
against ε per prior variance σ² at λ = 1 (``robustness_vs_prior.png``, per attack protocol as
the other robustness figures, with a verdict of the spread across σ² against the seed std:
``robustness_vs_prior_table``) and the predictive entropy of correct vs wrong test inputs at
λ = σ² = 1 (``entropy_correct_vs_wrong.png``, histogram counts summed over seeds, which must
share their bin edges: ``BinEdgeMismatch`` otherwise).  Each names the command that regenerates
it and its configurations and seeds, or why it was skipped.
"""

import os

import numpy as np

from uqmix import plotting
from uqmix.studies import published
from uqmix.studies.mixture_report.attack_protocols import protocol_view
from uqmix.studies.mixture_report.figure_numbers import ROBUSTNESS_KEY, _robustness_curve
from uqmix.studies.mixture_report.figures import FigureFile, _spec
from uqmix.studies.mixture_report.published_tables import protocol_text
from uqmix.studies.mixture_report.study import dataset_title, mixtures
from uqmix.studies.mixture_report.tables import _seeds_text
from uqmix.sweep import format_cell, render_markdown_table

PAPER_FIGURES = ("robustness_vs_prior.png", "entropy_correct_vs_wrong.png")

# What the paper says of its figures 9 and 10 (it prints no numbers for them).
FIGURE_9_FINDING = "the prior variance hardly changes robustness"
FIGURE_10_FINDING = "entropy of correct vs wrong predictions (the text states no number)"


def _prior_verdict(panel, rows, epsilons):
    """The Fig. 9 verdict of one panel: at each ε the spread across σ² (largest − smallest
    mean) against the largest seed std of the σ² at that ε."""
    judged = []
    for index, eps in enumerate(epsilons):
        cells = [r["accuracy"][index] for r in rows if r["accuracy"][index]]
        cells = [c for c in cells if c["n"]]
        if len(cells) < 2 or any(c["n"] < 2 for c in cells):
            continue  # fewer than two σ², or a σ² with one seed (no seed std)
        means = [c["mean"] for c in cells]
        judged.append(
            {
                "eps": eps,
                "spread": max(means) - min(means),
                "seed_std": max(c["std"] for c in cells),
            }
        )
    if not judged:
        return {
            "judged": [],
            "within": None,
            "text": f"{panel}: not judged (no ε with two or more σ² of at least two seeds each)",
        }
    largest = max(judged, key=lambda j: j["spread"])
    outside = [j for j in judged if j["spread"] > j["seed_std"] * (1 + 1e-9)]
    text = (
        f"{panel}: max spread across σ² {largest['spread']:.3f} at ε={largest['eps']:g} "
        f"vs seed std ≤ {largest['seed_std']:.3f}: "
    )
    if outside:
        text += "outside seed noise at " + ", ".join(
            f"ε={j['eps']:g} ({j['spread']:.3f} > {j['seed_std']:.3f})" for j in outside
        )
    else:
        text += f"within seed noise at every ε ({len(judged)} compared)"
    return {"judged": judged, "within": not outside, "text": text}


def robustness_vs_prior_table(panels):
    """The numbers of the Fig. 9 section from ``robustness_vs_prior_data``.

    Returns {"epsilons": [every ε of any curve], "rows": [one per curve: panel, dataset,
    model, prior_variance, configuration, seeds, dropped_seeds, num_examples, accuracy =
    [stats {"mean", "std", "n"} or None per ε]], "verdicts": {panel: ``_prior_verdict``}}.
    """
    epsilons = sorted(
        {eps for curves in panels.values() for c in curves.values() for eps in c["epsilons"]}
    )
    rows, verdicts = [], {}
    for panel, curves in panels.items():
        members = []
        for curve in curves.values():
            at = {
                eps: {"mean": m, "std": s, "n": n}
                for eps, m, s, n in zip(curve["epsilons"], curve["mean"], curve["std"], curve["n"])
            }
            members.append(
                {
                    "panel": panel,
                    "dataset": curve["dataset"],
                    "model": curve["model"],
                    "prior_variance": curve["prior_variance"],
                    "configuration": curve["configuration"],
                    "seeds": curve["seeds"],
                    "dropped_seeds": curve["dropped_seeds"],
                    "num_examples": curve["num_examples"],
                    "accuracy": [at.get(eps) for eps in epsilons],
                }
            )
        rows += members
        verdicts[panel] = _prior_verdict(panel, members, epsilons)
    return {"epsilons": epsilons, "rows": rows, "verdicts": verdicts}


def _figure_9_files(files):
    return [f for f in files if f.spec.filename == "robustness_vs_prior.png"]


def paper_figure_tables(data, files=None):
    """{file name: the numbers of its section} of the drawn figures of ``PAPER_FIGURES``, Fig. 9
    once per attack protocol (``files``: ``figure_files``; default: the names of
    ``PAPER_FIGURES``; Fig. 10's numbers are its figure data)."""
    files = [FigureFile(f, _spec(f)) for f in PAPER_FIGURES] if files is None else files
    tables = {}
    for file in _figure_9_files(files):
        if file.filename in data:
            tables[file.filename] = robustness_vs_prior_table(data[file.filename])
    if "entropy_correct_vs_wrong.png" in data:
        tables["entropy_correct_vs_wrong.png"] = data["entropy_correct_vs_wrong.png"]
    return tables


def _not_in_figure_9(configurations, rows):
    """Why the ML / VI configurations at λ = 1 without a row of Fig. 9 are not in it
    (``configurations``: those of the figure's attack protocol, ``protocol_view``, when the
    study has several)."""
    shown = {r["configuration"] for r in rows}
    notes = []
    for config in mixtures(configurations, kl_weight=1.0):
        if config.name in shown:
            continue
        reason = (
            f"the only σ² with a {ROBUSTNESS_KEY} curve of {dataset_title(config.dataset)} "
            f"{config.model.upper()}"
            if _robustness_curve(config, ROBUSTNESS_KEY)
            else f"no {ROBUSTNESS_KEY} robustness curve"
        )
        notes.append(f"`{config.name}` ({reason})")
    return notes


def _figure_9_markdown(configurations, table, link, protocol):
    examples = sorted({n for r in table["rows"] for n in r["num_examples"] or []})
    parts = [
        f"Figure: [{os.path.basename(link)}]({link}). Published finding (qualitative, no "
        f"numbers): {FIGURE_9_FINDING}. Cells: accuracy under untargeted PGD with one gradient "
        f"sample ({ROBUSTNESS_KEY}) on {plotting.count_text(examples, 'attacked test image')} "
        "per run, mean ± sample std (n seeds), for every ML / VI configuration at λ = 1 with "
        "that curve. Verdict per (dataset, model): at each ε, the spread across σ² (largest − "
        "smallest mean) against the largest seed std of the σ² at that ε; within seed noise "
        "when the spread is at most that std at every ε (a rough yardstick, not a test)."
    ]
    left_out = _not_in_figure_9(configurations, table["rows"])
    if left_out:
        parts.append("Not in the figure: " + "; ".join(left_out) + ".")
    header = (
        ["dataset", "model", "σ²", "configuration", "seeds"]
        + [f"ε = {eps:g}" for eps in table["epsilons"]]
        + ["our runs vs the paper's protocol"]
    )
    rows = [
        [
            dataset_title(r["dataset"]),
            r["model"].upper(),
            f"{r['prior_variance']:g}",
            f"`{r['configuration']}`",
            _seeds_text(r["seeds"], r["dropped_seeds"]),
        ]
        + [format_cell(cell, ".3f") for cell in r["accuracy"]]
        + [protocol(r["configuration"])]
        for r in table["rows"]
    ]
    parts.append(render_markdown_table(header, rows))
    parts.append("Verdicts:\n\n" + "\n".join(f"- {v['text']}" for v in table["verdicts"].values()))
    return parts


def _figure_10_markdown(panels, link, protocol):
    edges = [e["correct"]["bin_edges"] for e in panels.values()]
    bins = sorted({f"{len(e) - 1} bins on [{e[0]:.4g}, {e[-1]:.4g}]" for e in edges})
    parts = [
        f"Figure: [entropy_correct_vs_wrong.png]({link}). Published: {FIGURE_10_FINDING}. "
        "Per (dataset, model), the histograms of the predictive entropy (total uncertainty, "
        f"nats; {', '.join(bins)}) of the correctly and of the wrongly classified test "
        "inputs, counts summed over the seeds (whose bin edges must agree) and drawn as "
        "densities (log y axis). Table: mean entropy of the group, mean ± sample std over "
        "seeds of each run's mean (n seeds); ratio = mean wrong / mean correct of those two "
        "means."
    ]
    header = [
        "dataset",
        "model",
        "configuration",
        "seeds",
        "test inputs correct / wrong (summed over seeds)",
        "mean entropy correct",
        "mean entropy wrong",
        "ratio wrong / correct",
        "our runs vs the paper's protocol",
    ]
    rows = [
        [
            dataset_title(e["dataset"]),
            e["model"].upper(),
            f"`{e['configuration']}`",
            _seeds_text(e["seeds"]),
            " / ".join(f"{int(np.sum(e[g]['counts'])):,}" for g in ("correct", "wrong")),
            format_cell(e["mean_correct"], ".4f"),
            format_cell(e["mean_wrong"], ".4f"),
            "—" if e["ratio"] is None else f"{e['ratio']:.2f}",
            protocol(e["configuration"]),
        ]
        for e in panels.values()
    ]
    parts.append(render_markdown_table(header, rows))
    return parts


def _figure_9_sections(configurations, tables, skipped, links, protocol, files):
    """Fig. 9's section: its table, or why it was skipped; one sub-section per attack protocol
    when the study's robustness curves have several (``figure_files``)."""
    files = _figure_9_files(files)
    if not any(f.filename in tables for f in files):
        return [f"Skipped: {skipped.get('robustness_vs_prior.png', 'not drawn')}."]
    parts = []
    for file in files:
        shown = configurations
        if file.titled:
            parts.append(f"#### Fig. 9, attack protocol {file.name}")
            shown = protocol_view(configurations, file.protocol)
        if file.filename in tables:
            parts += _figure_9_markdown(
                shown, tables[file.filename], links[file.filename], protocol
            )
        else:
            parts.append(f"Skipped: {skipped.get(file.filename, 'not drawn')}.")
    return parts


def paper_figures_markdown(
    configurations, tables, skipped, command, links, reference=None, files=None
):
    """The Markdown of the sections of ``tables.md`` on the paper's figures 9 and 10.

    tables: ``paper_figure_tables``; skipped: {file name: reason} (``figure_data``);
    command: the command line that regenerates the report; links: {file name: its path
    relative to tables.md}; files: ``figure_files`` (default: the names of
    ``PAPER_FIGURES``; Fig. 9 has a sub-section per attack protocol when its figure has a
    file per protocol).  A figure without its runs gets its section with the reason.
    """
    files = [FigureFile(f, _spec(f)) for f in PAPER_FIGURES] if files is None else files
    reference = reference or published.load_reference(published.MIXTURE)
    by_name = {c.name: c for c in configurations}

    def protocol(figure):
        return lambda name: protocol_text(by_name[name], reference, figure)

    parts = [
        "## Figures 9 and 10 of the paper (Däubener & Fischer)",
        f"Regenerate with `{command}` (from the runs' metrics.json and flags.cfg alone). The "
        "paper shows these as figures without numbers: the tables are ours, nothing is "
        "compared with a published value. Every row names its configuration (folder under "
        "the sweep root) and seeds; the last column says how the runs differ from the "
        "paper's protocol "
        f"({', '.join(f'{k} {v}' for k, v in reference['protocol'].items())}, "
        f"{reference['seeds']} seeds).",
        f"### Fig. 9: PGD robustness vs prior variance σ² (λ = 1, {ROBUSTNESS_KEY})",
    ]
    parts += _figure_9_sections(configurations, tables, skipped, links, protocol("figure 9"), files)
    parts.append("### Fig. 10: predictive entropy of correct vs wrong test inputs (λ = 1, σ² = 1)")
    filename = "entropy_correct_vs_wrong.png"
    if filename in tables:
        parts += _figure_10_markdown(tables[filename], links[filename], protocol("figure 10"))
    else:
        parts.append(f"Skipped: {skipped.get(filename, 'not drawn')}.")
    return "\n\n".join(parts) + "\n"
