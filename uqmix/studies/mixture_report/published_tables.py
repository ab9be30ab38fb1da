"""Side by side with the published tables: the section of ``tables.md`` on the paper's tables.

The comparison with the paper's tables 1, 2, 3, 4, 5 and 7 (``published_comparison``: the
reference data and the verdicts of ``uqmix.studies.published``; ``published_markdown``): every
row names how our runs differ from the paper's protocol (``protocol_text``); Tables 4 and 7 a
sub-table per attack protocol when the runs have several.  ``published_target`` says which of
our numbers a published cell corresponds to.
"""

import dataclasses
import os

from uqmix import runs, sweep
from uqmix.studies import published
from uqmix.studies.mixture_report.attack_protocols import (
    NOT_RECORDED,
    _by_protocol,
    _option_text,
    _options_key,
    _protocol_rank,
    protocol_names,
)
from uqmix.studies.mixture_report.study import _close, _most_seeds

PUBLISHED_DATASETS = {"MNIST": "mnist", "FMNIST": "fashion_mnist"}
PUBLISHED_MEASURES = {"predictive variance": "predictive_variance", "entropy": "total_uncertainty"}
PUBLISHED_BASELINES = {"MC dropout (p = 0.5)": "mc_dropout", "deep ensemble (5)": "ensemble"}
# Tables 3, 4, 7: AUROC of the two measures; rows = measure, columns = "<dataset> <ML|VI>".
PUBLISHED_DETECTION = {
    "3": "ood",
    "4": "adversarial_detection.all",
    "7": "adversarial_detection.correct_vs_successful",
}
# What the adversarial tables (4, 7) fix besides the protocol: PGD ε and gradient samples.
PUBLISHED_ATTACK = {"adversarial_detection.eps": 0.25, "adversarial_detection.gradient_samples": 1}
ATTACK_FLAGS = ("attack_noise", "attack_preset", "attack_evaluation")
# Protocol settings that do not apply to a model (an ensemble predicts with its 5 networks).
PROTOCOL_NOT_APPLICABLE = {
    "ensemble": ("train_samples", "test_samples"),
    "deterministic": ("train_samples", "test_samples"),
}
# The published tables of adversarial numbers: compared once per attack protocol.
ADVERSARIAL_TABLES = ("4", "7")


@dataclasses.dataclass(frozen=True)
class Target:
    """Which of our numbers a published cell corresponds to (λ, σ² for ML / VI only)."""

    dataset: str
    model: str
    kl_weight: float
    prior_variance: float
    key: str


def _parameter(label):
    """The number of a column label: "σ² = 0.5" → 0.5, "1e-3" → 0.001."""
    return float(label.split("=")[-1])


def published_target(table, row, column):
    """The ``Target`` of the mixture paper's cell (table, row label, column label).

    Tables 1 / 2: test accuracy of "<dataset> <ML|VI>" at σ² (λ = 1) / at λ (σ² = 1);
    Tables 3, 4, 7: AUROC of the row's measure for "<dataset> <ML|VI>" at λ = σ² = 1;
    Table 5: test accuracy of the column's model on the row's dataset at λ = σ² = 1.
    """
    if table in ("1", "2"):
        dataset, model = row.split()
        value = _parameter(column)
        kl_weight, prior_variance = (1.0, value) if table == "1" else (value, 1.0)
        return Target(
            PUBLISHED_DATASETS[dataset], model.lower(), kl_weight, prior_variance, "test.accuracy"
        )
    if table in PUBLISHED_DETECTION:
        dataset, model = column.split()
        return Target(
            PUBLISHED_DATASETS[dataset],
            model.lower(),
            1.0,
            1.0,
            f"{PUBLISHED_DETECTION[table]}.{PUBLISHED_MEASURES[row]}.auroc",
        )
    if table == "5":
        model = PUBLISHED_BASELINES.get(column, column.lower())
        return Target(PUBLISHED_DATASETS[row], model, 1.0, 1.0, "test.accuracy")
    raise KeyError(f"the mixture report has no mapping of published Table {table}")


def _target_configurations(configurations, target):
    """Every configuration (folder) of a ``Target``'s setting, in study order."""
    return [
        c
        for c in configurations
        if c.dataset == target.dataset
        and c.model == target.model
        and (
            not c.is_mixture
            or (
                _close(c.kl_weight, target.kl_weight)
                and _close(c.prior_variance, target.prior_variance)
            )
        )
    ]


def configuration_of(configurations, target):
    """Our configuration of a ``Target`` (the one with most seeds), or None."""
    found = _target_configurations(configurations, target)
    return _most_seeds(found) if found else None


def _detection_groups(configurations, target):
    """{``_options_key``: (attack options, [configuration])}: per attack protocol of the
    adversarial-detection records (``_by_protocol``: the full recorded options, None = not
    recorded) of a ``Target``'s folders, those folders reduced to their seeds under it."""
    found = {}
    for config in _target_configurations(configurations, target):
        records = {seed: m.get("adversarial_detection") for seed, m in config.runs.items()}
        for options, group in _by_protocol(records):
            runs_of_group = {seed: config.runs[seed] for seed in group}
            found.setdefault(_options_key(options), (options, []))[1].append(
                dataclasses.replace(config, runs=runs_of_group)
            )
    return found


def detection_protocols_of(configurations, target):
    """{``_options_key``: (attack options, configuration)}: per attack protocol of a
    ``Target``'s adversarial-detection records (``_detection_groups``) the folder with most
    seeds under it (the first in study order among equals), reduced to those seeds."""
    return {
        key: (options, _most_seeds(members))
        for key, (options, members) in _detection_groups(configurations, target).items()
    }


def run_settings(config):
    """{seed: settings} of a configuration's runs: its flags.cfg (``config.path``/seed_<S>/,
    the folder the runs were read from) overlaid with the scalars of its metrics.json."""
    settings = {}
    for seed, metrics in config.runs.items():
        merged = published.read_flags(os.path.join(config.path, f"seed_{seed}", runs.FLAGS_FILE))
        merged.update(sweep.flatten(metrics))
        settings[seed] = merged
    return settings


def _attack_phrases(settings_by_seed):
    """The adversarial tables' own checks: ε, gradient samples, and the attack protocol."""
    phrases = []
    for key, expected in PUBLISHED_ATTACK.items():
        found = {s.get(key) for s in settings_by_seed.values()}
        if found != {expected}:
            shown = ", ".join(str(v) for v in sorted(found, key=str))
            phrases.append(f"{key.rsplit('.', 1)[-1]} {shown} (paper: {expected})")
    phrases.append(_attack_protocol_phrase(settings_by_seed))
    return phrases


def _attack_protocol_phrase(settings_by_seed):
    """The attack protocol flags the runs recorded (``ATTACK_FLAGS``), or that they did not."""
    recorded = {
        name: sorted({str(s[name]) for s in settings_by_seed.values() if name in s})
        for name in ATTACK_FLAGS
    }
    shown = [f"{name} {'/'.join(values)}" for name, values in recorded.items() if values]
    return (
        "attack " + ", ".join(shown)
        if shown
        else "attack protocol flags not recorded (run predates them)"
    )


def protocol_text(config, reference, table):
    """``published.protocol_label`` of a configuration's runs for a published table
    (``table``: its number, or "figure 9" / "figure 10" for the paper's figures)."""
    settings = run_settings(config)
    skipped = PROTOCOL_NOT_APPLICABLE.get(config.model, ())
    protocol = {k: v for k, v in reference["protocol"].items() if k not in skipped}
    phrases = published.protocol_differences(settings, dict(reference, protocol=protocol))
    text = published.protocol_label(phrases)
    if table in ("4", "7"):
        text += "; " + "; ".join(_attack_phrases(settings))
    elif table == "figure 9":  # robustness curves: the attack protocol, not Table 4's ε
        text += "; " + _attack_protocol_phrase(settings)
    return text


def _value_record(row, column, config, target, cell, reference, table):
    stats = config.stats(target.key) if config else None
    verdict, difference = published.value_verdict(
        stats["mean"] if stats and stats["n"] else None, cell, reference
    )
    return {
        "row": row,
        "column": column,
        "configuration": config.name if config else None,
        "ours": stats,
        "published": cell,
        "verdict": verdict,
        "difference": difference,
        "band": published.band(reference, cell),
        "protocol": protocol_text(config, reference, table)
        if stats and stats["n"]
        else "not evaluated",
    }


def _table_cells(table, spec):
    """[(row, column, published cell, Target)] of a published table."""
    return [
        (row, column, cell, published_target(table, row, column))
        for row, by_column in spec["rows"].items()
        for column, cell in by_column.items()
    ]


def _setting_values(configurations, reference, table, cells):
    """The value records of a table's cells, each from the folder of its setting
    (``configuration_of``: the one with most seeds)."""
    return [
        _value_record(
            row,
            column,
            configuration_of(configurations, target),
            target,
            cell,
            reference,
            table,
        )
        for row, column, cell, target in cells
    ]


def _adversarial_values(configurations, reference, table, cells):
    """The value records of Table 4 or 7: per attack protocol of the runs' adversarial-detection
    records (``detection_protocols_of``) one record per published cell (the folder of the
    cell's setting under that protocol; none when it has no record under it and the study has
    several protocols), each with "attack_protocol" (name,
    ``protocol_names``) and "attack_options"; ([records], [protocol names]).  Without any
    record: one per cell as for the other tables, attack_protocol None."""
    found = [detection_protocols_of(configurations, target) for *_, target in cells]
    protocols = {key: options for by_key in found for key, (options, _) in by_key.items()}
    if not protocols:
        values = _setting_values(configurations, reference, table, cells)
        return [dict(v, attack_protocol=None, attack_options=None) for v in values], []
    names = protocol_names(protocols.values())
    ordered = sorted(protocols, key=lambda key: _protocol_rank(protocols[key]))
    values = []
    for key in ordered:
        for (row, column, cell, target), by_key in zip(cells, found):
            if key in by_key:
                config = by_key[key][1]
            else:  # not evaluated: with one protocol, named as in the other tables
                config = configuration_of(configurations, target) if len(ordered) == 1 else None
            record = _value_record(row, column, config, target, cell, reference, table)
            values.append(dict(record, attack_protocol=names[key], attack_options=protocols[key]))
    return values, [names[key] for key in ordered]


def published_comparison(configurations, reference=None):
    """{table: {"title", "values": [record], "directions": [record]}} against the paper.

    A value record per published cell (row, column, our configuration, our stats, the
    published cell, verdict, difference, band, protocol — read from the configuration's own
    folder, ``run_settings``); a direction record per pair of
    ML and VI cells of one table with everything else equal (verdict of ML − VI).
    Tables 4 and 7 (``ADVERSARIAL_TABLES``) are compared once per attack protocol of the
    runs' adversarial-detection records: a value record per (protocol, cell) with
    "attack_protocol" and "attack_options", directions within one protocol, and the table's
    "protocols" (names, in order); folders of one setting attacked under different protocols
    are never reduced to one (``_adversarial_values``).  Verdicts: ``uqmix.studies.published``.
    """
    reference = reference or published.load_reference(published.MIXTURE)
    comparison = {}
    for table, spec in reference["tables"].items():
        cells = _table_cells(table, spec)
        entry = {"title": spec["title"]}
        if table in ADVERSARIAL_TABLES:
            values, entry["protocols"] = _adversarial_values(
                configurations, reference, table, cells
            )
        else:
            values = _setting_values(configurations, reference, table, cells)
        targets = [target for *_, target in cells] * (len(values) // len(cells))
        by_cell = {
            (record.get("attack_protocol"), target): record
            for record, target in zip(values, targets)
        }
        directions = []
        for (protocol, target), ml in by_cell.items():
            vi = by_cell.get((protocol, dataclasses.replace(target, model="vi")))
            if target.model == "ml" and vi:
                directions.append({"ml": ml, "vi": vi})
        comparison[table] = dict(entry, values=values, directions=directions)
    return comparison


def _place(record):
    return [
        record["row"],
        record["column"],
        f"`{record['configuration']}`" if record["configuration"] else "—",
    ]


def published_markdown(comparison, reference=None):
    """The Markdown of the side-by-side section of ``tables.md``."""
    reference = reference or published.load_reference(published.MIXTURE)
    parts = [
        "## Side by side with the published tables (Däubener & Fischer)",
        f'Published: {reference["spread"]}. Verdict "{published.WITHIN}": '
        f"|ours − published| ≤ {published.K:g} published std (the band column); "
        f'"{published.OUTSIDE}" beyond it; "{published.NO_SPREAD}" when the paper '
        'prints the value alone. ML − VI rows: "direction reversed" when the sign of our '
        "difference differs from the paper's (definitions: uqmix/studies/published.py). "
        "The last column says how our runs differ from the paper's protocol "
        f"({', '.join(f'{k} {v}' for k, v in reference['protocol'].items())}, "
        f"{reference['seeds']} seeds).",
    ]
    for table, entry in comparison.items():
        parts.append(f"### Table {table}: {entry['title']}")
        protocols = entry.get("protocols") or []
        if len(protocols) <= 1:
            parts += _comparison_markdown(table, entry["values"], entry["directions"], reference)
            continue
        parts.append(
            f"One comparison per attack protocol ({len(protocols)}: the `attack_options` that "
            "the runs' adversarial-detection records carry), each with its own verdicts: "
            "folders of one setting attacked under different protocols are never merged or "
            "reduced to one; a cell without a run under the protocol is not run."
        )
        for protocol in protocols:
            values = [r for r in entry["values"] if r["attack_protocol"] == protocol]
            parts.append(f"#### Table {table}, attack protocol {protocol}")
            parts.append(f"Recorded attack options: {_options_text(values[0]['attack_options'])}.")
            directions = [d for d in entry["directions"] if d["ml"]["attack_protocol"] == protocol]
            parts += _comparison_markdown(
                f"{table}, attack protocol {protocol}", values, directions, reference
            )
    return "\n\n".join(parts) + "\n"


def _options_text(options):
    """Every recorded attack option with a value, "not recorded" for None."""
    if options is None:
        return f"{NOT_RECORDED} (the runs predate them)"
    return ", ".join(
        f"{name} {_option_text(value)}"
        for name, value in sorted(options.items())
        if value is not None
    )


def _comparison_markdown(title, values, directions, reference):
    """The value table and the ML − VI table of one published table (or protocol of it)."""
    rows = [
        _place(r)
        + published.comparison_row([], r["ours"], r["published"], reference, r["protocol"])
        for r in values
    ]
    parts = [
        published.render(
            ["published row", "published column", "our configuration"] + published.VALUE_HEADER,
            rows,
        )
    ]
    if directions:
        rows = [
            published.direction_row(
                [d["ml"]["row"], d["ml"]["column"], d["vi"]["row"], d["vi"]["column"]],
                d["ml"]["ours"],
                d["vi"]["ours"],
                d["ml"]["published"],
                d["vi"]["published"],
            )
            for d in directions
        ]
        parts.append(f"ML − VI (A = ML, B = VI), Table {title}:")
        parts.append(
            published.render(
                ["A row", "A column", "B row", "B column"] + published.DIRECTION_HEADER, rows
            )
        )
    return parts
