"""Robustness and adversarial detection by attack protocol: sections of ``tables.md``.

``protocol_tables`` / ``protocol_markdown``: a row per (configuration, robustness key,
attack options as each curve records them — "not recorded" for runs that predate them) with
the accuracy at ε ∈ ``PROTOCOL_EPSILONS`` and the success rate at ε = 0.25, the
adversarial-detection numbers per configuration and protocol, and the lines "ML − VI at ε = 0.1
and 0.25" per (dataset, λ, σ², protocol) with both models (``ml_minus_vi``).
"""

import collections
import math

from uqmix import plotting, sweep
from uqmix.studies.mixture_report.attack_protocols import (
    NOT_RECORDED,
    _base_name,
    _by_protocol,
    _differing_options,
    _option_text,
    _options_key,
    _protocol_rank,
    _robustness_keys,
    _sample_count,
)
from uqmix.studies.mixture_report.study import (
    DATASET_ORDER,
    MIXTURE_MODELS,
    MODEL_ORDER,
    _close,
    _rank,
    dataset_title,
)
from uqmix.studies.mixture_report.tables import Column, _measure_columns, _seeds_text
from uqmix.sweep import format_cell, render_markdown_table, stats_of

# The ε of the robustness-by-protocol table, of its success-rate column and of the ML − VI lines.
PROTOCOL_EPSILONS = (0.05, 0.1, 0.15, 0.2, 0.25)
SUCCESS_EPS = 0.25
DIFFERENCE_EPSILONS = (0.1, 0.25)
# The recorded attack options (``attack_eval.AttackOptions.resolved``) with a column each;
# the others are stated once when every row shares them, else in the "other options" column.
PROTOCOL_OPTIONS = {
    "preset": "preset",
    "noise": "noise",
    "gradient_samples": "gradient samples / frozen draws",
    "nb_iter": "nb_iter",
    "rand_init": "rand_init",
    "labels": "labels",
}
# The adversarial-detection table's numbers: keys inside a run's ``adversarial_detection``.
PROTOCOL_DETECTION_COLUMNS = (
    [
        Column("adversarial accuracy", "adversarial_accuracy", ".3f"),
        Column("success rate", "success_rate", ".3f", spread=False),
    ]
    + _measure_columns("all", "AUROC all")
    + _measure_columns("correct_vs_successful", "AUROC correct vs successful")
)
SETTING_HEADER = ["dataset", "model", "λ", "σ²", "configuration"]


def _at_eps(curve, field, eps):
    """``curve[field]`` at ε; None when the curve lacks the field or ε is not in its grid."""
    values = curve.get(field)
    found = [v for x, v in zip(curve["epsilons"], values or []) if _close(x, eps)]
    return found[0] if found else None


def _protocol_row(config, options, group):
    """What a row of the protocol tables is: configuration, recorded options and seeds."""
    return {
        "dataset": config.dataset,
        "model": config.model,
        "kl_weight": config.kl_weight if config.is_mixture else None,
        "prior_variance": config.prior_variance if config.is_mixture else None,
        "configuration": config.name,
        "attack_options": options,
        "seeds": sorted(group),
    }


def _protocol_order(row, samples, root_index=0):
    """Dataset, protocol (recorded ones first), gradient samples, then ML next to VI of the same
    λ, σ², the baselines after them; folders of one setting as in the study order (the earlier
    root given first, then the name: ``ml_minus_vi`` takes the first among equally many
    seeds, as ``study._most_seeds`` does)."""
    *protocol, options = _protocol_rank(row["attack_options"])
    return (
        _rank(DATASET_ORDER, row["dataset"]),
        row["dataset"],
        *protocol,
        samples,
        options,
        row["model"] not in MIXTURE_MODELS,
        -(row["kl_weight"] or 0.0),
        row["prior_variance"] or 0.0,
        _rank(MODEL_ORDER, row["model"]),
        row["model"],
        root_index,
        row["configuration"],
    )


def robustness_protocol_table(configurations):
    """Robustness by attack protocol: a row per (configuration, robustness key, recorded attack
    options) with the seeds that have the curve.

    Returns {"epsilons": PROTOCOL_EPSILONS, "success_eps": SUCCESS_EPS, "rows": [dataset,
    model, kl_weight, prior_variance (None for baselines), configuration, key, attack_options
    (None: not recorded), seeds, num_examples, accuracy = [stats per ε], success_rate = stats
    at SUCCESS_EPS]}; stats over the seeds whose curve has the ε (n = 0: none), rows in
    ``_protocol_order``.
    """
    rows = []
    for config in configurations:
        for key in _robustness_keys(config):
            curves = {s: (m.get("robustness") or {}).get(key) for s, m in config.runs.items()}
            for options, group in _by_protocol(curves):
                rows.append(
                    dict(
                        _protocol_row(config, options, group),
                        key=key,
                        num_examples=sorted(
                            {
                                int(c["num_examples"])
                                for c in group.values()
                                if c.get("num_examples")
                            }
                        ),
                        accuracy=[
                            stats_of([_at_eps(c, "accuracy", eps) for c in group.values()])
                            for eps in PROTOCOL_EPSILONS
                        ],
                        success_rate=stats_of(
                            [_at_eps(c, "success_rate", SUCCESS_EPS) for c in group.values()]
                        ),
                    )
                )
    index = {config.name: config.root_index for config in configurations}
    rows.sort(key=lambda r: _protocol_order(r, _sample_count(r["key"]), index[r["configuration"]]))
    return {"epsilons": list(PROTOCOL_EPSILONS), "success_eps": SUCCESS_EPS, "rows": rows}


def detection_protocol_table(configurations):
    """Adversarial detection by attack protocol: a row per (configuration, recorded attack
    options) with the seeds that have the evaluation.

    Returns {"rows": [dataset, model, kl_weight, prior_variance, configuration,
    attack_options, seeds, eps and gradient_samples (the values the seeds recorded), stats =
    {key of ``PROTOCOL_DETECTION_COLUMNS``: stats over seeds}]} in ``_protocol_order``.
    """
    rows = []
    for config in configurations:
        records = {s: m.get("adversarial_detection") for s, m in config.runs.items()}
        for options, group in _by_protocol(records):
            flat = [sweep.flatten(record) for record in group.values()]
            rows.append(
                dict(
                    _protocol_row(config, options, group),
                    eps=sorted({f["eps"] for f in flat if "eps" in f}),
                    gradient_samples=sorted(
                        {int(f["gradient_samples"]) for f in flat if "gradient_samples" in f}
                    ),
                    stats={
                        c.key: stats_of([f.get(c.key) for f in flat])
                        for c in PROTOCOL_DETECTION_COLUMNS
                    },
                )
            )
    index = {config.name: config.root_index for config in configurations}
    rows.sort(
        key=lambda r: _protocol_order(
            r, min(r["gradient_samples"], default=math.inf), index[r["configuration"]]
        )
    )
    return {"rows": rows}


def _protocol_label(row):
    """preset/noise/S=<gradient samples or frozen draws> of a robustness row."""
    options = row["attack_options"]
    if options is None:
        return f"attack options {NOT_RECORDED}, {row['key']}"
    return f"{_base_name(options)}/S={_option_text(options.get('gradient_samples'))}"


def _disambiguate(entries):
    """Appends to the labels that different options of one (dataset, λ, σ²) share the options
    in which they differ."""
    same = collections.defaultdict(list)
    for entry in entries:
        same[
            (entry["dataset"], entry["kl_weight"], entry["prior_variance"], entry["label"])
        ].append(entry)
    for group in same.values():
        if len(group) > 1:
            options = [entry["attack_options"] or {} for entry in group]
            names = _differing_options(options)
            for entry, chosen in zip(group, options):
                shown = ", ".join(f"{n} {_option_text(chosen.get(n))}" for n in names)
                entry["label"] += f" [{shown}]"


def _difference_text(entry):
    where = f"{dataset_title(entry['dataset'])}, {entry['label']}"
    if not (entry["kl_weight"] == 1.0 and entry["prior_variance"] == 1.0):
        where += f" (λ = {entry['kl_weight']:g}, σ² = {entry['prior_variance']:g})"
    values = ", ".join(
        ("—" if d is None else f"{d:+.3f}") + f" at ε {eps:g}"
        for eps, d in zip(entry["epsilons"], entry["difference"])
    )
    seeds = f"seeds: ML {len(entry['ml']['seeds'])}, VI {len(entry['vi']['seeds'])}"
    return f"{where}: ML − VI = {values} ({seeds})"


def ml_minus_vi(rows):
    """ML − VI mean accuracy at each ε of ``DIFFERENCE_EPSILONS``, per (dataset, λ, σ²,
    robustness key, attack options) that has an ML and a VI row of
    ``robustness_protocol_table`` (a setting in several folders: the row with most seeds).
    Rows without recorded options pair by their key alone.

    Returns [{"dataset", "kl_weight", "prior_variance", "key", "attack_options", "label",
    "epsilons", "difference" (None where either has no value), "ml" / "vi": {"configuration",
    "seeds"}, "text"}] in table order.
    """
    pairs = {}
    for row in rows:
        if row["model"] in MIXTURE_MODELS:
            group = pairs.setdefault(
                (
                    row["dataset"],
                    row["kl_weight"],
                    row["prior_variance"],
                    row["key"],
                    _options_key(row["attack_options"]),
                ),
                {},
            )
            kept = group.get(row["model"])
            if kept is None or len(row["seeds"]) > len(kept["seeds"]):
                group[row["model"]] = row
    indices = [PROTOCOL_EPSILONS.index(eps) for eps in DIFFERENCE_EPSILONS]
    entries = []
    for group in pairs.values():
        if set(group) != set(MIXTURE_MODELS):
            continue
        ml, vi = (group[model]["accuracy"] for model in MIXTURE_MODELS)
        entries.append(
            {
                **{k: group["ml"][k] for k in ("dataset", "kl_weight", "prior_variance", "key")},
                "attack_options": group["ml"]["attack_options"],
                "label": _protocol_label(group["ml"]),
                "epsilons": list(DIFFERENCE_EPSILONS),
                "difference": [
                    ml[i]["mean"] - vi[i]["mean"] if ml[i]["n"] and vi[i]["n"] else None
                    for i in indices
                ],
                **{
                    model: {k: group[model][k] for k in ("configuration", "seeds")}
                    for model in MIXTURE_MODELS
                },
            }
        )
    _disambiguate(entries)
    for entry in entries:
        entry["text"] = _difference_text(entry)
    return entries


def protocol_tables(configurations):
    """{"robustness", "detection", "ml_minus_vi"}: the numbers of the attack-protocol sections."""
    robustness = robustness_protocol_table(configurations)
    return {
        "robustness": robustness,
        "detection": detection_protocol_table(configurations),
        "ml_minus_vi": ml_minus_vi(robustness["rows"]),
    }


def _shared_options(rows):
    """{option: text} of the options without a column of their own that every row with
    recorded options has with one value (None values left out)."""
    recorded = [r["attack_options"] for r in rows if r["attack_options"]]
    shared = {}
    for name in sorted({n for o in recorded for n in o} - set(PROTOCOL_OPTIONS)):
        texts = {_option_text(o.get(name)) for o in recorded}
        if len(texts) == 1:
            shared[name] = texts.pop()
    return shared


def _other_options(options, shared):
    if options is None:
        return NOT_RECORDED
    texts = [
        f"{n} {_option_text(v)}"
        for n, v in sorted(options.items())
        if n not in PROTOCOL_OPTIONS and n not in shared and v is not None
    ]
    return ", ".join(texts) or "—"


def _shared_text(rows):
    shared = {n: t for n, t in _shared_options(rows).items() if t != "—"}
    if not shared:
        return ""
    return (
        " Recorded by every row with options (no column): "
        + ", ".join(f"{n} {t}" for n, t in shared.items())
        + "."
    )


def _protocol_setting_cells(row):
    mixture = row["model"] in MIXTURE_MODELS
    return [
        dataset_title(row["dataset"]),
        row["model"].upper() if mixture else row["model"],
        f"{row['kl_weight']:g}" if mixture else "—",
        f"{row['prior_variance']:g}" if mixture else "—",
        f"`{row['configuration']}`",
    ]


def _option_cells(options, names):
    if options is None:
        return [NOT_RECORDED] * len(names)
    return [_option_text(options.get(name)) for name in names]


def _robustness_protocol_markdown(table, differences):
    rows = table["rows"]
    if not rows:
        return ["No run has a robustness curve."]
    examples = sorted({n for r in rows for n in r["num_examples"]})
    parts = [
        "One row per configuration (folder), robustness curve (key S=k) and attack protocol, "
        "as each curve's `attack_options` in metrics.json records it (not recorded: the run "
        "predates them; its numbers are shown all the same). Noise redraw: fresh weight "
        "samples at every gradient; frozen: one set of draws held for the whole attack (the "
        "gradient samples are then the frozen draws). Cells: accuracy under untargeted L∞ PGD "
        f"on {plotting.count_text(examples, 'attacked test image')} per run, mean ± sample std "
        "(n seeds); success rate = share of the correctly classified test inputs that the "
        f"attack at ε = {table['success_eps']:g} makes misclassified, mean (n seeds); — = not "
        "evaluated at that ε. Rows: by dataset, protocol and gradient samples; ML next to VI "
        "of the same λ, σ²." + _shared_text(rows)
    ]
    shared = _shared_options(rows)
    header = (
        SETTING_HEADER
        + ["curve"]
        + list(PROTOCOL_OPTIONS.values())
        + ["other options"]
        + [f"ε = {eps:g}" for eps in table["epsilons"]]
        + [f"success rate ε = {table['success_eps']:g}", "seeds"]
    )
    parts.append(
        render_markdown_table(
            header,
            [
                _protocol_setting_cells(r)
                + [r["key"]]
                + _option_cells(r["attack_options"], PROTOCOL_OPTIONS)
                + [_other_options(r["attack_options"], shared)]
                + [format_cell(cell, ".3f") for cell in r["accuracy"]]
                + [format_cell(r["success_rate"], ".3f", spread=False), _seeds_text(r["seeds"])]
                for r in rows
            ],
        )
    )
    epsilons = " and ".join(f"{eps:g}" for eps in DIFFERENCE_EPSILONS)
    lines = [f"- {d['text']}" for d in differences] or [
        "- none: no dataset and protocol with both an ML and a VI row"
    ]
    parts.append(
        f"ML − VI at ε = {epsilons} per protocol (difference of the mean accuracies above; "
        "λ = σ² = 1 unless stated; a protocol = the same curve key and recorded options):\n\n"
        + "\n".join(lines)
    )
    return parts


def _detection_protocol_markdown(table):
    rows = table["rows"]
    if not rows:
        return ["No run has the adversarial-detection evaluation."]
    parts = [
        "The adversarial-detection evaluation per configuration (folder) and attack protocol "
        "(`attack_options` of metrics.json; not recorded: the run predates them) at the ε and "
        "gradient samples (frozen draws) it recorded: adversarial accuracy, mean ± sample std "
        "(n seeds); success rate among the correctly classified inputs, mean (n seeds); AUROC "
        "of clean vs adversarial test inputs (all) and of correctly classified clean vs "
        "successful adversarial inputs (correct vs successful), mean ± sample std (n seeds)."
    ]
    header = (
        SETTING_HEADER
        + ["ε", "preset", "noise", PROTOCOL_OPTIONS["gradient_samples"]]
        + [c.title for c in PROTOCOL_DETECTION_COLUMNS]
        + ["seeds"]
    )
    parts.append(
        render_markdown_table(
            header,
            [
                _protocol_setting_cells(r)
                + [", ".join(f"{eps:g}" for eps in r["eps"]) or "—"]
                + _option_cells(r["attack_options"], ("preset", "noise"))
                + [", ".join(str(s) for s in r["gradient_samples"]) or "—"]
                + [
                    format_cell(r["stats"][c.key], c.fmt, spread=c.spread)
                    for c in PROTOCOL_DETECTION_COLUMNS
                ]
                + [_seeds_text(r["seeds"])]
                for r in rows
            ],
        )
    )
    return parts


def protocol_markdown(tables):
    """The Markdown of the attack-protocol sections of ``tables.md`` (``protocol_tables``)."""
    parts = ["## Robustness by attack protocol"]
    parts += _robustness_protocol_markdown(tables["robustness"], tables["ml_minus_vi"])
    parts.append("## Adversarial detection by attack protocol")
    parts += _detection_protocol_markdown(tables["detection"])
    return "\n\n".join(parts) + "\n"
