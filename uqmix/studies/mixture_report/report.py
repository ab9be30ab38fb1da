"""The report of a sweep: ``tables.md``, the figures and ``summary.json``, written together.

``write_report(roots, output_dir)`` writes, over the runs of one sweep root or several
(``study.load_study``: a folder name under several roots is a configuration per root,
``<root label>/<folder>``),

* ``tables.md``: per dataset, tables of every configuration (classification
  and detection; predictive variance; adversarial detection; weight variances
  of the mixing distribution; wall time; ``tables``), then robustness and adversarial
  detection by attack protocol (``attack_tables``), the side-by-side comparison with the
  paper's tables (``published_tables``), and the sections of the paper's figures 9 and 10
  (``paper_figures``);
* the figures of ``FIGURES`` (PNG; ``figures``); a figure whose runs are absent is skipped
  and the reason returned (a partial sweep gives what it can);
* ``summary.json``: the numbers behind the tables and figures;
* ``uqmix_report.json`` in each folder written, the marker of a uqmix report's folder
  (``uqmix.report_output``): a folder without it that already holds a file the report would
  write (the user's own ``tables.md``, say) is refused before the runs are read.

``duplicate_settings`` notes which folder of a setting in several folders is used where
(under one root or across several: the one with most seeds, the earlier root given among
equals).
"""

import collections
import os

from uqmix import plotting, report_output, runs, sweep
from uqmix.studies.mixture_report.attack_protocols import (
    _protocol_rank,
    figure_protocols,
    protocol_names,
    protocol_view,
)
from uqmix.studies.mixture_report.attack_tables import protocol_markdown, protocol_tables
from uqmix.studies.mixture_report.figures import (
    SIGMAS,
    figure_data,
    figure_files,
    is_figure_file,
)
from uqmix.studies.mixture_report.paper_figures import (
    PAPER_FIGURES,
    paper_figure_tables,
    paper_figures_markdown,
)
from uqmix.studies.mixture_report.published_tables import (
    Target,
    _detection_groups,
    published_comparison,
    published_markdown,
)
from uqmix.studies.mixture_report.study import _most_seeds, load_study
from uqmix.studies.mixture_report.tables import aggregate_table, markdown_tables

TABLES_FILE = "tables.md"
SUMMARY_FILE = "summary.json"
BINARY = "experiments.mixture_report"  # the command named in the folders' report marker


def report_command(roots, output_dir, figures_dir=None, weight_variance_configs=None):
    """The command line of ``experiments.mixture_report`` that writes this report (``roots``:
    one sweep root or a list, comma-joined as given)."""
    parts = [
        "python -m experiments.mixture_report",
        f"--sweep_root={','.join(sweep.sweep_roots(roots))}",
        f"--output_dir={output_dir}",
    ]
    if figures_dir:
        parts.append(f"--figures_dir={figures_dir}")
    if weight_variance_configs:
        parts.append(f"--weight_variance_configs={','.join(weight_variance_configs)}")
    return " ".join(parts)


def duplicate_settings(configurations):
    """Notes on folders that describe the same setting and what the report uses of each: the
    figures and published tables without attacks use the one with most seeds; the robustness
    figures and the Table 4/7 comparison use, per attack protocol, the folder with most seeds
    among those attacked under it (folders of different protocols are never reduced)."""
    by_setting = collections.defaultdict(list)
    for config in configurations:
        by_setting[config.setting].append(config)
    notes = []
    for group in by_setting.values():
        if len(group) > 1:
            chosen = _most_seeds(group)
            note = (
                f"{', '.join(c.name for c in group)} are the same setting "
                f"({chosen.dataset} {chosen.label}); the figures and tables without attacks "
                f"(Tables 1, 2, 3, 5, the non-adversarial figures, Fig. 10) use {chosen.name}"
            )
            curves = {name: protocol_view(group, key) for key, _, name in figure_protocols(group)}
            if curves:
                note += "; the robustness figures use, per attack protocol, " + _uses(curves)
            target = Target(
                chosen.dataset, chosen.model, chosen.kl_weight, chosen.prior_variance, ""
            )
            found = _detection_groups(group, target)
            if found:
                names = protocol_names(options for options, _ in found.values())
                records = {
                    names[key]: members
                    for key, (_, members) in sorted(
                        found.items(), key=lambda item: _protocol_rank(item[1][0])
                    )
                }
                note += "; Tables 4/7 use, per attack protocol, " + _uses(records)
            notes.append(note + ".")
    return notes


def _uses(by_protocol):
    """ "name: folder" per protocol ({name: [configurations of the protocol]}), naming the
    folders the one with most seeds stands for."""
    texts = []
    for name, members in by_protocol.items():
        used = _most_seeds(members)
        text = f"{name}: {used.name}"
        if len(members) > 1:
            text += f" (most seeds of {', '.join(c.name for c in members)})"
        texts.append(text)
    return "; ".join(texts)


def _configuration_summary(config, table, several_roots):
    summary = {
        "dataset": config.dataset,
        "model": config.model,
        "label": config.label,
        "kl_weight": config.kl_weight,
        "prior_variance": config.prior_variance,
        "seeds": config.seeds,
        "metrics": table[config.name],
    }
    if several_roots:  # where it came from (one root: the report's sweep_root)
        summary["path"] = config.path
    return summary


def write_report(roots, output_dir, weight_variance_configs=None, figures_dir=None):
    """Writes tables.md, the figures and summary.json of the sweeps under ``roots`` (one
    root, str, or a list: one report; ``load_study``).

    The figures go to ``figures_dir`` (default ``output_dir``).
    weight_variance_configs: configuration names for the weight-variance bars — the names
    of the report's tables: the folder name, ``<root label>/<folder>`` for a folder name
    found under several roots (default ``default_weight_variance_selection``).
    The adversarial figures are written once per attack protocol (``figure_files``).
    Returns {"written": [paths], "skipped": {figure file: reason}, "notes":
    [str], "tables": Markdown text}; the paths end with the report marker of each folder
    (``report_output.REPORT_MARKER``).  Writes all files or none
    (``report_output.write_report_files``).  Raises ValueError (before writing
    anything) when a root is given twice or holds no usable run, or the seeds of a Fig. 10
    configuration have different entropy bin edges (``BinEdgeMismatch``),
    ``runs.OutputPathError`` (before reading the runs) when an output folder cannot be
    written or holds, without the report marker, a file the report would write.
    """
    report_output.check_report_dirs(
        output_dir, figures_dir, (TABLES_FILE, SUMMARY_FILE), is_figure_file
    )
    roots = sweep.sweep_roots(roots)
    configurations = load_study(roots)
    table = aggregate_table(configurations)
    comparison = published_comparison(configurations)
    files = figure_files(configurations)
    data, skipped = figure_data(configurations, weight_variance_configs, files)
    command = report_command(roots, output_dir, figures_dir, weight_variance_configs)
    figures_dir = figures_dir or output_dir
    links = {
        f.filename: os.path.relpath(os.path.join(figures_dir, f.filename), output_dir)
        for f in files
        if f.spec.filename in PAPER_FIGURES
    }
    figure_tables = paper_figure_tables(data, files)
    protocols = protocol_tables(configurations)
    tables = (
        markdown_tables(configurations, table)
        + "\n"
        + protocol_markdown(protocols)
        + "\n"
        + published_markdown(comparison)
        + "\n"
        + paper_figures_markdown(
            configurations, figure_tables, skipped, command, links, files=files
        )
    )
    contents = {os.path.join(output_dir, TABLES_FILE): tables.encode("utf-8")}
    for file in files:
        if file.filename in data:
            path = os.path.join(figures_dir, file.filename)
            contents[path] = plotting.figure_bytes(file.draw(data[file.filename]), path)
    notes = duplicate_settings(configurations)
    summary = {
        # as given: no machine-specific prefix; one root stays a string
        "sweep_root": roots[0] if len(roots) == 1 else roots,
        "statistics": "over the seeds of a configuration that have the value: mean; std = sample "
        "standard deviation (ddof = 1, 0 for one seed); n = number of seeds; "
        f"figure error bars = ±{SIGMAS:g} std",
        "configurations": {
            c.name: _configuration_summary(c, table, len(roots) > 1) for c in configurations
        },
        "figures": data,
        # the attack protocol of each adversarial figure drawn (name, recorded options)
        "figure_protocols": {
            f.filename: {"attack_protocol": f.name, "attack_options": f.attack_options}
            for f in files
            if f.spec.adversarial and f.filename in data
        },
        "skipped": skipped,
        "notes": notes,
        "published": comparison,
        "attack_protocols": protocols,
        # Fig. 10's numbers are its figure data (above)
        "paper_figures": {
            "command": command,
            **{f: t for f, t in figure_tables.items() if f != "entropy_correct_vs_wrong.png"},
        },
    }
    contents[os.path.join(output_dir, SUMMARY_FILE)] = runs.json_bytes(summary)
    return {
        "written": report_output.write_report_files(contents, BINARY),
        "skipped": skipped,
        "notes": notes,
        "tables": tables,
    }
