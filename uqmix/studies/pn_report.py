"""The Prior Network study's report: tables and the adaptive-attack figures over runs.

Reads one or several sweep trees ``ROOT/<configuration>/seed_<S>/metrics.json`` written by
``experiments.cifar_rkl`` (through ``experiments.sweep``) and writes

* ``tables.md``: per configuration, mean ± sample std (ddof = 1) over seeds of
  the test error, OOD-detection AUROC of every OOD test set by mutual
  information, total uncertainty and α0 (precision; Prior Networks only),
  mean α0 in-domain and per OOD set, the wall time of training, evaluation and
  attack curves, and the adaptive attacks' success rate, AUROC (natural vs
  successful attacks) and joint success rate at every recorded iteration count
  (``pn_attacks``): white-box, and black-box transfer rows where the runs recorded
  them; one block of tables per attack method, C&W L2 over its max_iterations and
  with the median L2 of its successful attacks;
* ``attack_curves.png`` (``attack_curves_<method>.png`` per method when the runs used
  C&W or several methods): those quantities against attack iterations, one
  line per configuration and setting (mean over seeds, error bars ± 3 sample std;
  black-box dashed);
* ``summary.json``: the numbers of the tables and the figures;
* ``uqmix_report.json`` in each folder written, the marker of a uqmix report's folder
  (``uqmix.report_output``): a folder without it that already holds a file the report would
  write (the user's own ``tables.md``, say) is refused before the runs are read.

Several roots (``load_sources``) make one report: a configuration folder name found in
one root keeps its name; the same folder name in several roots stays several
configurations, each named after what its runs recorded about their attack, e.g.
``mnist_rkl (criterion kl_dir)``, and sorted next to each other (in the order of the
roots).  Two roots with the same folder name and the same recorded attack are refused.

``tables.md`` ends with the side-by-side comparison with the paper's Table 1 (MNIST test
error, the only published row we can run; ``published_comparison``): a row per
configuration of a published column (DNN, PN-KL, PN-RKL, ensemble of 5), with the verdicts
of ``uqmix.studies.published`` and how the runs differ from the full protocol (the
flagfiles' epochs, read from each run's flags.cfg; the paper's 5 initialisations).

A value a run did not record is "—" in the tables and a gap in the figure,
never a zero.
"""

import collections
import json
import os

from uqmix import plotting, report_output, runs, sweep
from uqmix.studies import pn_attacks, published
from uqmix.studies.pn_attacks import (  # noqa: F401  (the report's names before the split)
    ATTACK_QUANTITIES,
    FIGURE_FILE,
    SIGMAS,
    attack_figure,
    attack_iterations,
    attack_series,
)
from uqmix.sweep import format_cell, lookup, render_markdown_table, stats_of

TABLES_FILE = "tables.md"
SUMMARY_FILE = "summary.json"
BINARY = "experiments.pn_report"  # the command named in the folders' report marker
OOD_MEASURES = (("mutual_information", "MI"), ("total_uncertainty", "TU"), ("precision", "α0"))
# wall time of a run's parts: training, evaluation (test set + OOD sets), attack curves, and
# the black-box source network's training (a column only where some run recorded it; runs
# from before it was timed apart counted it in attack s)
SECONDS_COLUMNS = {
    "train_seconds": "train s",
    "eval_seconds": "eval s",
    "attack_seconds": "attack s",
    "blackbox_source_train_seconds": "black-box source train s",
}
OPTIONAL_SECONDS = frozenset({"blackbox_source_train_seconds"})


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


# the attack fields a configuration's name shows first when they tell its roots apart
SIGNATURE_FIRST = ("method", "criterion", "measure")


def attack_signature(by_seed):
    """{field: text} of what a configuration's runs recorded about their attacks: the
    scalars of ``metrics["attacks"]`` (method, criterion, measure, eps, ...), its
    ``attack_options`` but the seed, the iteration counts and whether black-box transfer
    was recorded; values that differ between seeds are joined with " / "."""
    fields = collections.defaultdict(set)
    for metrics in by_seed.values():
        attacks = metrics.get("attacks") if isinstance(metrics.get("attacks"), dict) else {}
        recorded = {k: v for k, v in attacks.items() if not isinstance(v, (dict, list))}
        options = attacks.get("attack_options") or {}
        recorded.update({k: v for k, v in options.items() if k != "seed"})
        if attacks:
            recorded["iterations"] = ",".join(str(i) for i in attacks.get("iterations") or [])
            recorded["black-box transfer"] = "yes" if attacks.get("black_box") else "no"
        for key, value in recorded.items():
            fields[key].add(value if isinstance(value, str) else json.dumps(value))
    return {key: " / ".join(sorted(values)) for key, values in fields.items()}


# recorded by some seeds only without changing the attack of the others: black-box transfer adds
# rows (each cell counts the seeds that have it), the white-box attack is the same
MAY_DIFFER_BETWEEN_SEEDS = ("black-box transfer",)


def _check_one_attack(name, by_seed):
    """A configuration's seeds must have been attacked alike (``attack_signature`` without
    values joined by " / ", but for ``MAY_DIFFER_BETWEEN_SEEDS``): a mean over seeds of
    different attacks is refused.  Seeds with and without black-box transfer are one
    configuration: its white-box rows average every seed, its black-box rows the seeds that
    have them (n in each cell)."""
    differing = {
        k: v
        for k, v in attack_signature(by_seed).items()
        if " / " in v and k not in MAY_DIFFER_BETWEEN_SEEDS
    }
    if differing:
        raise ValueError(
            f"the seeds of `{name}` were attacked differently "
            f"({'; '.join(f'{k}: {v}' for k, v in sorted(differing.items()))}); the report "
            "would average different attacks: rerun the odd seeds or move them to a folder "
            "of their own."
        )


def _field_text(key, value):
    if key == "method" and value in pn_attacks.METHOD_NAMES:
        return pn_attacks.METHOD_NAMES[value]
    return f"{key} {value}"


def _variants(folder, entries):
    """Names of the configurations of one folder name found in several roots, from the
    fields their attack signatures differ in (``SIGNATURE_FIRST`` first)."""
    signatures = [attack_signature(e["runs"]) for e in entries]
    for i, a in enumerate(signatures):
        for j in range(i):
            if a == signatures[j]:
                raise ValueError(
                    f"ambiguous: `{folder}` under {entries[j]['root']} and under "
                    f"{entries[i]['root']} recorded the same attack "
                    f"({', '.join(f'{k} {v}' for k, v in sorted(a.items())) or 'none'}); "
                    "the report cannot tell them apart: give one of these roots only."
                )
    keys = sorted(set().union(*signatures))
    differ = [k for k in keys if len({s.get(k, "not recorded") for s in signatures}) > 1]
    first = [k for k in SIGNATURE_FIRST if k in differ]
    for fields in (first, first + [k for k in differ if k not in first]):
        labels = [
            ", ".join(_field_text(k, s.get(k, "not recorded")) for k in fields) for s in signatures
        ]
        if fields and len(set(labels)) == len(labels):
            return labels
    raise AssertionError("distinct signatures always differ in some field")


# Flags the seeds of one configuration may differ in: the seed, and whether the run also
# measured black-box transfer. ``blackbox_transfer`` trains the source network after the
# white-box curves and changes none of the run's other numbers, so a seed without it joins
# the white-box rows and the black-box rows count the seeds that have it (each cell its n).
SEED_KEYS = sweep.PER_SEED_KEYS | {"blackbox_transfer"}


def load_sources(roots):
    """(study, sources) of the finished runs under ``roots`` (one root or a list):
    study = {configuration: {seed: metrics}}, sources = {configuration: {"sweep_root",
    "folder", "variant"}}.  With one root the configurations are its folder names, as
    ``sweep.collect``.  With several, a folder name found under one root stays the name; one
    found under several gives a configuration per root named "<folder> (<variant>)", the
    variant naming the recorded attack fields that differ (``_variants``; ValueError when
    two are equal).  Sorted by folder name, then the order of ``roots``.  ValueError for a
    root given twice or without a finished run (``sweep.collect_roots``), or for seeds of
    one folder whose flags differ in more than ``SEED_KEYS``."""
    found = collections.defaultdict(list)
    for root, collected in sweep.collect_roots(roots, SEED_KEYS):
        for folder, by_seed in collected.items():
            found[folder].append({"root": root, "runs": by_seed})
    study, sources = {}, {}
    for folder in sorted(found):
        entries = found[folder]
        variants = _variants(folder, entries) if len(entries) > 1 else [None]
        for entry, variant in zip(entries, variants):
            name = folder if variant is None else f"{folder} ({variant})"
            if name in study:  # a folder literally named like another's variant
                raise ValueError(f"ambiguous: two configurations would be named {name!r}.")
            study[name] = entry["runs"]
            sources[name] = {"sweep_root": entry["root"], "folder": folder, "variant": variant}
    return study, sources


def load_study(roots):
    """{configuration: {seed: metrics}} of the finished runs under ``roots`` (one root or a
    list; ``load_sources``)."""
    return load_sources(roots)[0]


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


def _old_seconds(metrics):
    """True for a run with black-box transfer made before the seconds were counted per epoch
    (no ``blackbox_source_train_seconds``): its attack s includes the source network's
    training, and its train s covers only the invocation that finished training."""
    return "black_box" in (metrics.get("attacks") or {}) and (
        "blackbox_source_train_seconds" not in metrics
    )


def _seconds_note(configs, key, text):
    """A paragraph (as lines) naming the configurations and seeds listed under ``key`` in
    ``text``'s ``{runs}``; none when no configuration lists any."""
    listed = [
        f"`{name}` (seed{'s' * (len(config[key]) > 1)} {', '.join(map(str, config[key]))})"
        for name, config in configs.items()
        if config.get(key)
    ]
    return ["", text.format(runs=", ".join(listed))] if listed else []


def _resumed_attack(metrics):
    """True when a curve of the run continued from its attack backup (``resumed_from``):
    its attack s counts only the invocation that finished the attacks."""
    attacks = metrics.get("attacks") or {}
    return any(
        isinstance(attacks.get(setting), dict) and attacks[setting].get("resumed_from")
        for setting in ("white_box", "black_box")
    )


def summarize(study):
    """The numbers of the report: {configuration: {label, seeds, cells, attack entries
    (``pn_attacks.summarize_attacks``)}}."""
    sets, iterations = ood_sets(study), attack_iterations(study)
    summary = {}
    for name, by_seed in study.items():
        _check_one_attack(name, by_seed)
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
        summary[name] = {
            "label": model_label(first),
            "seeds": sorted(by_seed),
            "cells": cells,
            "old_seconds": [seed for seed, m in sorted(by_seed.items()) if _old_seconds(m)],
            "resumed_attacks": [seed for seed, m in sorted(by_seed.items()) if _resumed_attack(m)],
            **pn_attacks.summarize_attacks(by_seed, iterations),
        }
    return {"ood_sets": sets, "iterations": iterations, "configurations": summary}


def markdown_tables(summary):
    sets, configs = summary["ood_sets"], summary["configurations"]
    header = ["configuration", "model", "test error"]
    header += [f"OOD {ood} ({short})" for ood in sets for _, short in OOD_MEASURES]
    header += ["mean α0 in-domain"] + [f"mean α0 {ood}" for ood in sets]
    seconds_keys = [
        key
        for key in SECONDS_COLUMNS
        if key not in OPTIONAL_SECONDS
        or any(config["cells"][key]["n"] for config in configs.values())
    ]
    header += [SECONDS_COLUMNS[key] for key in seconds_keys]
    rows = []
    for name, config in configs.items():
        cells = config["cells"]
        row = [f"`{name}`", config["label"], format_cell(cells["error"])]
        row += [format_cell(cells[f"ood_{ood}_{m}"]) for ood in sets for m, _ in OOD_MEASURES]
        row += [format_cell(cells["alpha0_in"], ".1f")]
        row += [format_cell(cells[f"alpha0_{ood}"], ".1f") for ood in sets]
        row += [format_cell(cells[key], ".0f") for key in seconds_keys]
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
    parts += _seconds_note(
        configs,
        "old_seconds",
        "Seconds of {runs}: made before training seconds were counted epoch by epoch, so their "
        "attack s includes the black-box source network's training and their train s covers "
        "only the invocation that finished training (too low for a run resumed mid-training; "
        "the epoch times in the run's log give the real sum).",
    )
    parts += _seconds_note(
        configs,
        "resumed_attacks",
        "Attack s of {runs}: the attacks continued from their backup (`resumed_from` in "
        "`metrics.json`), so the seconds cover only the invocation that finished them (the "
        "run's log gives the earlier ones).",
    )
    parts += pn_attacks.attack_markdown(summary)
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


def run_settings(folder, by_seed):
    """{seed: settings}: each run's flags.cfg (under the configuration's ``folder``)
    overlaid with the scalars of its metrics.json."""
    return {
        seed: {
            **published.read_flags(os.path.join(folder, f"seed_{seed}", runs.FLAGS_FILE)),
            **{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))},
        }
        for seed, metrics in by_seed.items()
    }


def published_comparison(study, sources, reference=None):
    """{"values": [record], "directions": [record]} against the paper's Table 1 (MNIST).

    ``sources``: the sweep root of a one-root study, or ``load_sources``'s
    {configuration: {"sweep_root", "folder"}}.

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
        source = (
            {"sweep_root": sources, "folder": name} if isinstance(sources, str) else sources[name]
        )
        settings = run_settings(os.path.join(source["sweep_root"], source["folder"]), by_seed)
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


def write_report(roots, output_dir, figures_dir=None):
    """Writes tables.md, summary.json (to ``output_dir``) and, when some run has attack
    curves, their figures (``pn_attacks.attack_figures``; to ``figures_dir``, default
    ``output_dir``) and the report marker of each folder (``report_output``), all or none
    (``report_output.write_report_files``), over the runs of ``roots`` (one sweep root or a
    list; ``load_sources``).  Returns {"written": paths, "tables": Markdown text}.  Raises
    ValueError before writing anything when a root has no usable run or two roots hold
    configurations the report cannot tell apart, and ``runs.OutputPathError`` (before reading
    the runs) when an output folder cannot be written or holds, without the report marker, a
    file the report would write."""
    report_output.check_report_dirs(
        output_dir, figures_dir, (TABLES_FILE, SUMMARY_FILE), pn_attacks.is_figure_file
    )
    study, sources = load_sources(roots)
    summary = summarize(study)
    root_list = sweep.sweep_roots(roots)
    if len(root_list) > 1:  # where each configuration came from
        for name, source in sources.items():
            summary["configurations"][name].update(source)
    summary["published"] = published_comparison(study, sources)
    tables = markdown_tables(summary) + published_markdown(summary["published"])
    contents = {os.path.join(output_dir, TABLES_FILE): tables.encode("utf-8")}
    for file_name, figure in pn_attacks.attack_figures(summary).items():
        path = os.path.join(figures_dir or output_dir, file_name)
        contents[path] = plotting.figure_bytes(figure, path)
    contents[os.path.join(output_dir, SUMMARY_FILE)] = runs.json_bytes(
        # as given: no machine-specific prefix; one root stays a string
        {"sweep_root": root_list[0] if len(root_list) == 1 else root_list, **summary}
    )
    return {"written": report_output.write_report_files(contents, BINARY), "tables": tables}
