"""The report of the ML-vs-VI infinite-mixture study: tables, figures and a summary of a sweep.

Input: the output root of ``python -m experiments.sweep --binary=experiments.mixture_mnist``,
one folder per configuration with one ``seed_<S>/metrics.json`` per seed
(read by ``uqmix.sweep.collect``).  A configuration is known by the fields
every ``metrics.json`` records — ``dataset``, ``model`` (ml | vi |
deterministic | mc_dropout | ensemble), ``label``, ``kl_weight`` (λ) and
``prior_variance`` (σ²) — never by its folder name; the seeds of one folder
must agree on them.  λ and σ² mean something for ``ml`` / ``vi`` only.

Statistics: every number is taken over the seeds of a configuration that
have it (a missing or null evaluation, or a non-finite value, does not count):
mean = (1/n) Σ_s x_s, std = sample standard deviation √(Σ_s (x_s − mean)² / (n − 1))
(0 for n = 1), n = number of such seeds (``uqmix.sweep.mean_std``).  Tables
show "mean ± std (n)", "—" when no seed has the number; figures draw the mean
with error bars of ±3·std where n > 1 and write the seed count "(n=K)" in
their legends.

``write_report(root, output_dir)`` writes

* ``tables.md``: per dataset, tables of every configuration (classification
  and detection; predictive variance; adversarial detection; weight variances
  of the mixing distribution; wall time);
* the figures of ``FIGURES`` (PNG); a figure whose runs are absent is skipped
  and the reason returned (a partial sweep gives what it can);
* ``summary.json``: the numbers behind the tables and figures.

Folders of one setting (dataset, model, λ, σ²) are reduced to the one with most seeds for
what does not depend on an attack (the accuracy, variance, weight-variance and entropy
figures, Tables 1, 2, 3, 5).  Adversarial numbers are never compared or drawn across attack
protocols (the ``attack_options`` each robustness curve and adversarial-detection record
carries; "not recorded" for runs that predate them): the robustness figures are drawn once
per protocol (``figure_files``: with several protocols the file name gets the protocol's
slug, with one the names of ``FIGURE_FILES`` stay) and Tables 4 and 7 are compared once per
protocol (``published_comparison``); ``duplicate_settings`` notes which folder is used where.

``tables.md`` then has robustness and adversarial detection by attack protocol
(``protocol_tables`` / ``protocol_markdown``): a row per (configuration, robustness key,
attack options as each curve records them — "not recorded" for runs that predate them) with
the accuracy at ε ∈ ``PROTOCOL_EPSILONS`` and the success rate at ε = 0.25, the
adversarial-detection numbers per configuration and protocol, and the lines "ML − VI at ε = 0.1
and 0.25" per (dataset, λ, σ², protocol) with both models (``ml_minus_vi``); then the
side-by-side comparison with the paper's tables 1, 2, 3, 4, 5
and 7 (``published_comparison``: the reference data and the verdicts of
``uqmix.studies.published``; every row names how our runs differ from the paper's protocol;
Tables 4 and 7 a sub-table per attack protocol when the runs have several),
and ends with the sections of the paper's figures 9 and 10 (``paper_figures_markdown``; the
paper prints no numbers for them): PGD accuracy (S=1) against ε per prior variance σ² at λ = 1
(``robustness_vs_prior.png``, per attack protocol as the other robustness figures, with a
verdict of the spread across σ² against the seed std) and the predictive entropy of correct
vs wrong test inputs at λ = σ² = 1 (``entropy_correct_vs_wrong.png``, histogram counts
summed over seeds, which must share their bin edges: ``BinEdgeMismatch`` otherwise).  Each
names the command that regenerates it and its configurations and seeds, or why it was
skipped.

The robustness figures are drawn by ``uqmix.attack_eval.robustness_figure``,
imported lazily: everything else here runs without TensorFlow (Fig. 9's panels are
``uqmix.plotting.robustness_panels``, which shares its axes with ``robustness_figure``).
"""

import collections
import dataclasses
import json
import math
import os
import re

import numpy as np

from uqmix import plotting, runs, sweep
from uqmix.studies import published
from uqmix.sweep import format_cell, render_markdown_table, stats_of

TABLES_FILE = "tables.md"
SUMMARY_FILE = "summary.json"
SIGMAS = 3.0

MIXTURE_MODELS = ("ml", "vi")
STOCHASTIC_MODELS = ("ml", "vi", "mc_dropout")
BASELINE_MODELS = ("deterministic", "mc_dropout", "ensemble")
MODEL_ORDER = MIXTURE_MODELS + BASELINE_MODELS
DATASET_ORDER = ("mnist", "fashion_mnist")
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
REQUIRED_FIELDS = ("dataset", "model", "label", "kl_weight", "prior_variance")
DETECTION_MEASURES = ("predictive_variance", "total_uncertainty")
# Default selection of the weight-variance bars: (λ, σ²) of ML and VI.
WEIGHT_VARIANCE_SETTINGS = ((1.0, 0.5), (1.0, 3.0), (1.0, 1.0), (0.1, 1.0))
HISTOGRAM_KL_WEIGHTS = (1.0, 0.1)
MODEL_COLORS = {"ML": "C0", "VI": "C1"}


class MissingRuns(ValueError):
    """The runs a figure needs are not in the sweep."""


class BinEdgeMismatch(ValueError):
    """Histograms of one configuration that must be summed over seeds have different bins."""


class UnknownConfigurations(ValueError):
    """--weight_variance_configs names folders the sweep does not have (a flag error)."""


class MixedProtocols(ValueError):
    """An adversarial figure asked for the study's one attack protocol when it has several."""


# -- the study -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Configuration:
    """One configuration of the sweep: its folder name, what it is, and {seed: metrics}."""

    name: str
    dataset: str
    model: str
    label: str
    kl_weight: float
    prior_variance: float
    runs: dict

    @property
    def seeds(self):
        return sorted(self.runs)

    @property
    def is_mixture(self):
        return self.model in MIXTURE_MODELS

    @property
    def setting(self):
        """What the configuration is: (dataset, model[, λ, σ²]) — λ, σ² for mixtures only."""
        if self.is_mixture:
            return (self.dataset, self.model, self.kl_weight, self.prior_variance)
        return (self.dataset, self.model)

    def values(self, key):
        """The value of a dotted metric key (``test.accuracy``) per seed; None where absent."""
        return [sweep.flatten(metrics).get(key) for _, metrics in sorted(self.runs.items())]

    def stats(self, key):
        """{"mean", "std", "n"} of a dotted metric key over seeds (module docstring)."""
        return stats_of(self.values(key))


def _identity(name, seed, metrics):
    missing = [f for f in REQUIRED_FIELDS if metrics.get(f) is None]
    if missing:
        raise ValueError(
            f"{name}/seed_{seed}/{runs.METRICS_FILE} lacks {', '.join(missing)}; "
            "is it a metrics.json of experiments.mixture_mnist?"
        )
    return (
        str(metrics["dataset"]),
        str(metrics["model"]),
        str(metrics["label"]),
        float(metrics["kl_weight"]),
        float(metrics["prior_variance"]),
    )


def _configuration(name, by_seed):
    identities = {seed: _identity(name, seed, m) for seed, m in by_seed.items()}
    distinct = set(identities.values())
    if len(distinct) > 1:
        listed = "; ".join(f"seed {s}: {i}" for s, i in sorted(identities.items()))
        raise ValueError(
            f"the seeds of {name} are different configurations "
            f"(dataset, model, label, λ, σ²): {listed}"
        )
    dataset, model, label, kl_weight, prior_variance = distinct.pop()
    return Configuration(name, dataset, model, label, kl_weight, prior_variance, dict(by_seed))


def _rank(order, value):
    """The position of ``value`` in ``order`` (values not in it after all of them)."""
    return order.index(value) if value in order else len(order)


def _order(config):
    return (
        _rank(DATASET_ORDER, config.dataset),
        config.dataset,
        _rank(MODEL_ORDER, config.model),
        config.model,
        -config.kl_weight if config.is_mixture else 0.0,
        config.prior_variance if config.is_mixture else 0.0,
        config.name,
    )


def load_study(root):
    """The configurations of the sweep under ``root``, ordered by dataset, model, λ (↓), σ².

    Raises ValueError when ``root`` holds no finished run, a metrics.json
    lacks the identifying fields, or the seeds of one folder disagree on them.
    """
    collected = sweep.collect(root)
    configurations = [
        _configuration(name, by_seed) for name, by_seed in collected.items() if by_seed
    ]
    if not configurations:
        raise ValueError(f"no finished runs (<config>/seed_<S>/{runs.METRICS_FILE}) under {root}")
    return sorted(configurations, key=_order)


def datasets_of(configurations):
    return list(dict.fromkeys(c.dataset for c in configurations))


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


def _most_seeds(group):
    """The configuration with most seeds; the first in study order among equals."""
    return max(group, key=lambda c: len(c.runs))


def _one_per_setting(configurations):
    """The configurations with duplicates of a setting reduced to the one with most seeds."""
    by_setting = collections.defaultdict(list)
    for config in configurations:
        by_setting[config.setting].append(config)
    chosen = {_most_seeds(group).name for group in by_setting.values()}
    return [c for c in configurations if c.name in chosen]


def _close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def mixtures(configurations, kl_weight=None, prior_variance=None, dataset=None):
    """ML/VI configurations at the given λ, σ² and dataset (None = any), one per setting."""
    return _one_per_setting(
        [
            c
            for c in configurations
            if c.is_mixture
            and (kl_weight is None or _close(c.kl_weight, kl_weight))
            and (prior_variance is None or _close(c.prior_variance, prior_variance))
            and (dataset is None or c.dataset == dataset)
        ]
    )


def _display_label(config, configurations):
    """The run label, prefixed with the dataset when the study has several."""
    if len(datasets_of(configurations)) > 1:
        return f"{dataset_title(config.dataset)}: {config.label}"
    return config.label


def dataset_title(dataset):
    return DATASET_TITLES.get(dataset, dataset)


# -- tables --------------------------------------------------------------------------------------
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


def _weight_variance_layers(configurations):
    layers = []
    for config in configurations:
        for metrics in config.runs.values():
            for layer in metrics.get("weight_variances") or {}:
                if layer not in layers:
                    layers.append(layer)
    return layers


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
    for dataset in datasets_of(configurations):
        members = [c for c in configurations if c.dataset == dataset]
        parts.append(f"## {dataset_title(dataset)}")
        for title, columns in table_sections(members):
            parts.append(f"### {title}")
            parts.append(markdown_table(members, table, columns))
    return "\n\n".join(parts) + "\n"


# -- robustness and adversarial detection by attack protocol: sections of tables.md ------------
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
NOT_RECORDED = "not recorded"
# The adversarial-detection table's numbers: keys inside a run's ``adversarial_detection``.
PROTOCOL_DETECTION_COLUMNS = (
    [
        Column("adversarial accuracy", "adversarial_accuracy", ".3f"),
        Column("success rate", "success_rate", ".3f", spread=False),
    ]
    + _measure_columns("all", "AUROC all")
    + _measure_columns("correct_vs_successful", "AUROC correct vs successful")
)


def _options_key(options):
    """A hashable identity of recorded attack options (None: not recorded)."""
    return None if options is None else json.dumps(options, sort_keys=True)


def _by_protocol(entries):
    """[(attack options or None, {seed: entry})]: the seeds' entries (robustness curves or
    adversarial_detection records, each with its ``attack_options``) grouped by those options,
    seeds without an entry left out.  The seeds of a folder share their protocol, so this is one
    group; a folder whose seeds differ gets a row per protocol, never a mean over attacks."""
    groups = {}
    for seed, entry in sorted(entries.items()):
        if entry:
            options = entry.get("attack_options") or None
            groups.setdefault(_options_key(options), (options, {}))[1][seed] = entry
    return list(groups.values())


def _attack_protocol(options):
    """The attack protocol of recorded options as the adversarial figures group curves: the
    options without the gradient samples (a curve's key S=k names those); None: not recorded."""
    if options is None:
        return None
    return {name: value for name, value in options.items() if name != "gradient_samples"}


def _protocol_rank(options):
    """The order of protocols: recorded ones first, then by preset, noise and the options."""
    shown = options or {}
    return (
        options is None,
        str(shown.get("preset", "")),
        str(shown.get("noise", "")),
        _options_key(options) or "",
    )


def _base_name(options):
    """preset/noise of recorded options; "not recorded" for None."""
    if options is None:
        return NOT_RECORDED
    return "/".join(_option_text(options.get(name)) for name in ("preset", "noise"))


def _differing_options(options_list):
    """The names of the options whose values differ among ``options_list`` (None = {})."""
    options_list = [options or {} for options in options_list]
    return sorted(
        {
            name
            for options in options_list
            for name in options
            if len({_option_text(o.get(name)) for o in options_list}) > 1
        }
    )


def protocol_names(options_list):
    """{``_options_key``: name} of distinct recorded attack options (None: not recorded):
    "preset/noise", with the options in which protocols of one such name differ appended in
    brackets ("cleverhans3_pgd/redraw [nb_iter 10]")."""
    distinct = {_options_key(options): options for options in options_list}
    by_base = collections.defaultdict(list)
    for key, options in distinct.items():
        by_base[_base_name(options)].append(key)
    names = {}
    for base, keys in by_base.items():
        differing = _differing_options([distinct[k] for k in keys]) if len(keys) > 1 else []
        for key in keys:
            shown = ", ".join(
                f"{n} {_option_text((distinct[key] or {}).get(n))}" for n in differing
            )
            names[key] = f"{base} [{shown}]" if shown else base
    return names


def protocol_slug(name):
    """A file-name part of a protocol name: runs of other characters than letters, digits,
    "_" and "." become "-" ("cleverhans3_pgd/redraw [nb_iter 10]" →
    "cleverhans3_pgd-redraw-nb_iter-10", "not recorded" → "not-recorded")."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-.") or "protocol"


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


def _protocol_order(row, samples):
    """Dataset, protocol (recorded ones first), gradient samples, then ML next to VI of the same
    λ, σ², the baselines after them."""
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
    rows.sort(key=lambda r: _protocol_order(r, _sample_count(r["key"])))
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
    rows.sort(key=lambda r: _protocol_order(r, min(r["gradient_samples"], default=math.inf)))
    return {"rows": rows}


def _option_text(value):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


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


SETTING_HEADER = ["dataset", "model", "λ", "σ²", "configuration"]


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


# -- side by side with the published tables -----------------------------------------------------
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


def run_settings(root, config):
    """{seed: settings} of a configuration's runs: its flags.cfg and metrics.json (scalars)."""
    settings = {}
    for seed, metrics in config.runs.items():
        merged = published.read_flags(
            os.path.join(root, config.name, f"seed_{seed}", runs.FLAGS_FILE)
        )
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


# Protocol settings that do not apply to a model (an ensemble predicts with its 5 networks).
PROTOCOL_NOT_APPLICABLE = {
    "ensemble": ("train_samples", "test_samples"),
    "deterministic": ("train_samples", "test_samples"),
}


def protocol_text(root, config, reference, table):
    """``published.protocol_label`` of a configuration's runs for a published table
    (``table``: its number, or "figure 9" / "figure 10" for the paper's figures)."""
    settings = run_settings(root, config)
    skipped = PROTOCOL_NOT_APPLICABLE.get(config.model, ())
    protocol = {k: v for k, v in reference["protocol"].items() if k not in skipped}
    phrases = published.protocol_differences(settings, dict(reference, protocol=protocol))
    text = published.protocol_label(phrases)
    if table in ("4", "7"):
        text += "; " + "; ".join(_attack_phrases(settings))
    elif table == "figure 9":  # robustness curves: the attack protocol, not Table 4's ε
        text += "; " + _attack_protocol_phrase(settings)
    return text


# The published tables of adversarial numbers: compared once per attack protocol.
ADVERSARIAL_TABLES = ("4", "7")


def _value_record(row, column, config, target, cell, root, reference, table):
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
        "protocol": protocol_text(root, config, reference, table)
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


def _adversarial_values(configurations, root, reference, table, cells):
    """The value records of Table 4 or 7: per attack protocol of the runs' adversarial-detection
    records (``detection_protocols_of``) one record per published cell (the folder of the
    cell's setting under that protocol; none when it has no record under it and the study has
    several protocols), each with "attack_protocol" (name,
    ``protocol_names``) and "attack_options"; ([records], [protocol names]).  Without any
    record: one per cell as for the other tables, attack_protocol None."""
    found = [detection_protocols_of(configurations, target) for *_, target in cells]
    protocols = {key: options for by_key in found for key, (options, _) in by_key.items()}
    if not protocols:
        values = [
            dict(
                _value_record(
                    row,
                    column,
                    configuration_of(configurations, target),
                    target,
                    cell,
                    root,
                    reference,
                    table,
                ),
                attack_protocol=None,
                attack_options=None,
            )
            for row, column, cell, target in cells
        ]
        return values, []
    names = protocol_names(protocols.values())
    ordered = sorted(protocols, key=lambda key: _protocol_rank(protocols[key]))
    values = []
    for key in ordered:
        for (row, column, cell, target), by_key in zip(cells, found):
            if key in by_key:
                config = by_key[key][1]
            else:  # not evaluated: with one protocol, named as in the other tables
                config = configuration_of(configurations, target) if len(ordered) == 1 else None
            record = _value_record(row, column, config, target, cell, root, reference, table)
            values.append(dict(record, attack_protocol=names[key], attack_options=protocols[key]))
    return values, [names[key] for key in ordered]


def published_comparison(configurations, root, reference=None):
    """{table: {"title", "values": [record], "directions": [record]}} against the paper.

    A value record per published cell (row, column, our configuration, our stats, the
    published cell, verdict, difference, band, protocol); a direction record per pair of
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
                configurations, root, reference, table, cells
            )
        else:
            values = [
                _value_record(
                    row,
                    column,
                    configuration_of(configurations, target),
                    target,
                    cell,
                    root,
                    reference,
                    table,
                )
                for row, column, cell, target in cells
            ]
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


# -- the paper's figures 9 and 10: sections of tables.md -----------------------------------------
PAPER_FIGURES = ("robustness_vs_prior.png", "entropy_correct_vs_wrong.png")


def report_command(root, output_dir, figures_dir=None, weight_variance_configs=None):
    """The command line of ``experiments.mixture_report`` that writes this report."""
    parts = [
        "python -m experiments.mixture_report",
        f"--sweep_root={root}",
        f"--output_dir={output_dir}",
    ]
    if figures_dir:
        parts.append(f"--figures_dir={figures_dir}")
    if weight_variance_configs:
        parts.append(f"--weight_variance_configs={','.join(weight_variance_configs)}")
    return " ".join(parts)


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


def _seeds_text(seeds, dropped=()):
    text = f"{len(seeds)} ({', '.join(str(s) for s in seeds)})"
    if dropped:
        text += f"; seeds {', '.join(str(s) for s in dropped)} left out (other ε grid)"
    return text


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
    configurations, tables, skipped, root, command, links, reference=None, files=None
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
        return lambda name: protocol_text(root, by_name[name], reference, figure)

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


# -- figure data ---------------------------------------------------------------------------------
def _series(configurations, x_of, key):
    """{"x", "mean", "std", "n"} of ``key`` over configurations sorted by x_of."""
    ordered = sorted(configurations, key=x_of)
    stats = [c.stats(key) for c in ordered]
    return {
        "x": [x_of(c) for c in ordered],
        "mean": [s["mean"] for s in stats],
        "std": [s["std"] for s in stats],
        "n": [s["n"] for s in stats],
        "examples": sorted({int(v) for c in ordered for v in c.values("num_test_examples") if v}),
        "configurations": [c.name for c in ordered],
    }


def _accuracy_curves(configurations, fixed, varied, panel_suffix, requirement):
    """Panels {dataset: {"ML"/"VI": series}} of test accuracy against one parameter.

    fixed: {"kl_weight": v} or {"prior_variance": v}; varied: the attribute on
    the x axis.  A dataset gets a panel when one of its series has ≥ 2 points.
    """
    panels = {}
    for dataset in datasets_of(configurations):
        series = {}
        for model in MIXTURE_MODELS:
            members = [
                c
                for c in mixtures(configurations, dataset=dataset, **fixed)
                if c.model == model and c.stats("test.accuracy")["n"]
            ]
            if members:
                series[model.upper()] = _series(
                    members, lambda c: getattr(c, varied), "test.accuracy"
                )
        if any(len(s["x"]) >= 2 for s in series.values()):
            panels[f"{dataset_title(dataset)} ({panel_suffix})"] = series
    if not panels:
        raise MissingRuns(requirement)
    return panels


def accuracy_vs_prior_data(configurations):
    """Test accuracy (mean, std, n over seeds) against σ² at λ = 1, ML and VI, per dataset."""
    return _accuracy_curves(
        configurations,
        {"kl_weight": 1.0},
        "prior_variance",
        "λ = 1",
        "needs ML or VI runs with test accuracy at λ = 1 and at least two "
        "prior variances σ² in one dataset",
    )


def accuracy_vs_lambda_data(configurations):
    """Test accuracy (mean, std, n over seeds) against λ at σ² = 1, ML and VI, per dataset."""
    return _accuracy_curves(
        configurations,
        {"prior_variance": 1.0},
        "kl_weight",
        "σ² = 1",
        "needs ML or VI runs with test accuracy at σ² = 1 and at least two "
        "KL weights λ in one dataset",
    )


def default_weight_variance_selection(configurations):
    """ML/VI configurations at (λ, σ²) ∈ ``WEIGHT_VARIANCE_SETTINGS`` that exist."""
    chosen = []
    for kl_weight, prior_variance in WEIGHT_VARIANCE_SETTINGS:
        chosen += mixtures(configurations, kl_weight=kl_weight, prior_variance=prior_variance)
    return sorted(chosen, key=_order)


def _named(configurations, names):
    by_name = {c.name: c for c in configurations}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UnknownConfigurations(
            f"unknown configurations {unknown}; the sweep has {sorted(by_name)}"
        )
    return [by_name[n] for n in names]


def weight_variance_bars_data(configurations, names=None):
    """Mean weight variance per layer (mean, std, n over seeds) of selected configurations.

    names: folder names of the configurations to show (default
    ``default_weight_variance_selection``); one panel per dataset, one group
    of bars per layer, one bar per configuration.
    """
    selected = (
        _named(configurations, names)
        if names
        else default_weight_variance_selection(configurations)
    )
    selected = [c for c in selected if _weight_variance_layers([c])]
    if not selected and names:
        raise MissingRuns(f"needs weight variances, which none of {list(names)} has")
    if not selected:
        raise MissingRuns(
            "needs ML/VI runs with weight variances at λ = 1 with σ² ∈ {0.5, 1, 3} "
            "or at σ² = 1 with λ ∈ {1, 0.1}"
        )
    panels = {}
    for dataset in datasets_of(selected):
        members = [c for c in selected if c.dataset == dataset]
        layers = _weight_variance_layers(members)
        series = {}
        for config in members:
            stats = [config.stats(f"weight_variances.{layer}.mean") for layer in layers]
            label = f"{config.label} [{config.name}]" if config.label in series else config.label
            series[label] = {k: [s[k] for s in stats] for k in ("mean", "std", "n")}
        panels[dataset_title(dataset)] = {"groups": layers, "series": series}
    return panels


def _seed_histograms(config, measure, groups=("correct", "wrong")):
    """{seed: {"bin_edges", "counts" = sum of the ``groups`` counts}} of every seed that has
    the histogram of ``measure``."""
    found = {}
    for seed, metrics in sorted(config.runs.items()):
        hist = (metrics.get("histograms") or {}).get(measure)
        if hist:
            counts = np.sum([hist[group] for group in groups], axis=0)
            found[seed] = {"bin_edges": list(hist["bin_edges"]), "counts": counts.tolist()}
    return found


def _total_histograms(config, measure):
    """[{"bin_edges", "counts" = correct + wrong}] of every seed that has the histogram."""
    return list(_seed_histograms(config, measure).values())


def _first_other_edges(histograms):
    """Index of the first histogram whose bin edges differ from the first one's (None: all
    agree)."""
    first = np.asarray(histograms[0]["bin_edges"], np.float64)
    for index, hist in enumerate(histograms[1:], 1):
        if len(hist["bin_edges"]) != first.size or not np.allclose(
            hist["bin_edges"], first, rtol=1e-9, atol=0.0
        ):
            return index
    return None


def _same_edges(histograms):
    return _first_other_edges(histograms) is None


def _edges_difference(a, b):
    """How two lists of bin edges differ, for an error message."""
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} edges ({a[0]:.6g}–{a[-1]:.6g} vs {b[0]:.6g}–{b[-1]:.6g})"
    index = next(i for i, (x, y) in enumerate(zip(a, b)) if not math.isclose(x, y, rel_tol=1e-9))
    return f"edge {index}: {a[index]:.6g} vs {b[index]:.6g}"


def summed_histogram(config, measure, group):
    """{"bin_edges", "counts"} of the ``group`` ("correct" | "wrong") counts of ``measure``
    summed over the seeds that have the histogram; None when no seed has it.

    Raises BinEdgeMismatch when the seeds' bin edges differ (counts of different bins cannot
    be summed; re-binning would need the values inside each bin).
    """
    by_seed = _seed_histograms(config, measure, (group,))
    if not by_seed:
        return None
    seeds, histograms = list(by_seed), list(by_seed.values())
    other = _first_other_edges(histograms)
    if other is not None:
        raise BinEdgeMismatch(
            f"the {measure} histograms of {config.name} have different bin edges in seed "
            f"{seeds[0]} and seed {seeds[other]} "
            f"({_edges_difference(histograms[0]['bin_edges'], histograms[other]['bin_edges'])}); "
            "their counts cannot be summed over seeds"
        )
    return pool_histograms(histograms)[0][0]


def pool_histograms(histograms):
    """Seeds' histograms summed per bin when their bin edges agree; else returned unchanged.

    Returns (list of {"bin_edges", "counts"}, pooled: bool).  Histograms with
    different edges are not re-binned (that would need the values inside a
    bin); they are drawn one per seed.
    """
    if len(histograms) > 1 and _same_edges(histograms):
        counts = np.sum([h["counts"] for h in histograms], axis=0)
        return [{"bin_edges": histograms[0]["bin_edges"], "counts": counts.tolist()}], True
    return histograms, len(histograms) == 1


def predictive_variance_hist_data(configurations, measure="predictive_variance"):
    """Test-set histograms of predictive variance of ML vs VI at σ² = 1, λ ∈ {1, 0.1}.

    One panel per (dataset, λ); per configuration {"label", "seeds",
    "pooled", "histograms"}: counts of all test inputs (correct + wrong),
    summed over seeds when the bin edges agree, else one histogram per seed.
    """
    panels = {}
    for dataset in datasets_of(configurations):
        for kl_weight in HISTOGRAM_KL_WEIGHTS:
            entries = {}
            for config in mixtures(
                configurations, kl_weight=kl_weight, prior_variance=1.0, dataset=dataset
            ):
                found = _total_histograms(config, measure)
                if found:
                    histograms, pooled = pool_histograms(found)
                    entries[config.model.upper()] = {
                        "label": config.label,
                        "seeds": len(found),
                        "pooled": pooled,
                        "histograms": histograms,
                    }
            if entries:
                panels[f"{dataset_title(dataset)}, λ = {kl_weight:g}, σ² = 1"] = entries
    if not panels:
        raise MissingRuns(
            "needs ML or VI runs with predictive-variance histograms at σ² = 1 and λ ∈ {1, 0.1}"
        )
    return panels


def correct_vs_wrong_variance_data(configurations):
    """Mean predictive variance of correct and of wrong test inputs (mean, std, n over seeds).

    One panel per dataset, one group of two bars per configuration.
    """
    keys = {group: f"histograms.predictive_variance.mean_{group}" for group in ("correct", "wrong")}
    panels = {}
    for dataset in datasets_of(configurations):
        members = [
            c
            for c in _one_per_setting(configurations)
            if c.dataset == dataset and any(c.stats(key)["n"] for key in keys.values())
        ]
        if not members:
            continue
        series = {}
        for group, key in keys.items():
            stats = [c.stats(key) for c in members]
            series[group] = {k: [s[k] for s in stats] for k in ("mean", "std", "n")}
        panels[dataset_title(dataset)] = {"groups": [c.label for c in members], "series": series}
    if not panels:
        raise MissingRuns(
            "needs runs with the misclassification evaluation (predictive-variance "
            "means of correct and wrong test inputs)"
        )
    return panels


def _sample_count(key):
    try:
        return int(str(key).split("=", 1)[1])
    except (IndexError, ValueError):
        return math.inf


def _robustness_curve(config, key):
    """{"epsilons", "accuracy" [seeds, E], "seeds", "mean", "std", "n"} of one curve.

    Seeds whose ε grid differs from the most common one are left out
    (``dropped_seeds``).
    """
    curves = {seed: (m.get("robustness") or {}).get(key) for seed, m in sorted(config.runs.items())}
    curves = {seed: c for seed, c in curves.items() if c}
    if not curves:
        return None
    grids = collections.Counter(tuple(c["epsilons"]) for c in curves.values())
    grid = grids.most_common(1)[0][0]
    used = {s: c for s, c in curves.items() if tuple(c["epsilons"]) == grid}
    accuracy = np.array(
        [[np.nan if a is None else a for a in c["accuracy"]] for c in used.values()], np.float64
    )
    stats = [stats_of(column) for column in accuracy.T.tolist()]
    return {
        "epsilons": list(grid),
        "accuracy": accuracy.tolist(),
        "seeds": list(used),
        "num_examples": sorted(
            {int(c["num_examples"]) for c in used.values() if c.get("num_examples")}
        )
        or None,
        "dropped_seeds": [s for s in curves if s not in used],
        "mean": [s["mean"] for s in stats],
        "std": [s["std"] for s in stats],
        "n": [s["n"] for s in stats],
    }


def _robustness_keys(config):
    keys = set()
    for metrics in config.runs.values():
        keys.update(metrics.get("robustness") or {})
    return sorted(keys, key=_sample_count)


def _curve_label(config, key, configurations):
    label = _display_label(config, configurations)
    return f"{label}, {key}" if config.model in STOCHASTIC_MODELS else label


def _robustness_curves(chosen, configurations, keep_key):
    curves = {}
    for config in chosen:
        for key in filter(keep_key, _robustness_keys(config)):
            curve = _robustness_curve(config, key)
            if curve:
                curves[_curve_label(config, key, configurations)] = curve
    return curves


# The adversarial figures draw the robustness curves of one attack protocol each.
ONLY_PROTOCOL = "only"  # the study's one protocol (not an ``_options_key``: those are JSON)


def figure_protocols(configurations):
    """[(key, options, name)]: the attack protocols (``_attack_protocol``: the recorded options
    without the gradient samples; None = not recorded) of every robustness curve of the study,
    key = ``_options_key`` of the options, name from ``protocol_names``, in
    ``_protocol_rank`` order."""
    found = {}
    for config in configurations:
        for metrics in config.runs.values():
            for curve in (metrics.get("robustness") or {}).values():
                if curve:
                    options = _attack_protocol(curve.get("attack_options") or None)
                    found.setdefault(_options_key(options), options)
    names = protocol_names(found.values())
    ordered = sorted(found.items(), key=lambda item: _protocol_rank(item[1]))
    return [(key, options, names[key]) for key, options in ordered]


def _curve_protocol(curve):
    return _options_key(_attack_protocol(curve.get("attack_options") or None))


def protocol_view(configurations, protocol=ONLY_PROTOCOL):
    """The configurations with their robustness curves of one attack protocol only (``protocol``:
    a key of ``figure_protocols``); seeds without such a curve and configurations without any
    are left out, so that a setting's folders of one protocol are told apart by their seeds
    under it.  ONLY_PROTOCOL: the study's one protocol; MixedProtocols when it has several (an
    adversarial figure never mixes protocols)."""
    if protocol == ONLY_PROTOCOL:
        protocols = figure_protocols(configurations)
        if len(protocols) > 1:
            raise MixedProtocols(
                "the robustness curves were attacked under several protocols ("
                + "; ".join(name for _, _, name in protocols)
                + "): name one (figure_protocols)"
            )
        if not protocols:
            return []
        protocol = protocols[0][0]
    view = []
    for config in configurations:
        kept = {}
        for seed, metrics in sorted(config.runs.items()):
            curves = {
                key: curve
                for key, curve in (metrics.get("robustness") or {}).items()
                if curve and _curve_protocol(curve) == protocol
            }
            if curves:
                kept[seed] = dict(metrics, robustness=curves)
        if kept:
            view.append(dataclasses.replace(config, runs=kept))
    return view


def robustness_data(configurations, protocol=ONLY_PROTOCOL):
    """PGD accuracy against ε with one gradient sample (S=1), every configuration that has it
    under one attack protocol (``protocol_view``)."""
    curves = _robustness_curves(
        _one_per_setting(protocol_view(configurations, protocol)),
        configurations,
        lambda key: key == "S=1",
    )
    if not curves:
        raise MissingRuns("needs runs with the robustness evaluation (S=1)")
    return curves


def robustness_samples_data(configurations, protocol=ONLY_PROTOCOL):
    """PGD accuracy against ε for S = 1, 5, 100 gradient samples: ML and VI at λ = 1, σ² = 1
    with the deterministic (weight-decay) net, MC dropout and the ensemble, under one attack
    protocol (``protocol_view``)."""
    view = protocol_view(configurations, protocol)
    anchors = mixtures(view, kl_weight=1.0, prior_variance=1.0)
    curves = _robustness_curves(anchors, configurations, lambda key: True)
    if not curves:
        raise MissingRuns("needs ML or VI runs with the robustness evaluation at λ = 1, σ² = 1")
    baselines = [
        c
        for c in _one_per_setting(view)
        if c.model in BASELINE_MODELS and c.dataset in {a.dataset for a in anchors}
    ]
    curves.update(_robustness_curves(baselines, configurations, lambda key: True))
    return curves


# The paper's figures 9 and 10 (Däubener & Fischer), at λ = 1 (σ² = 1 for Fig. 10).
ROBUSTNESS_KEY = "S=1"
ENTROPY = "total_uncertainty"
FIGURE_9_FINDING = "the prior variance hardly changes robustness"
FIGURE_10_FINDING = "entropy of correct vs wrong predictions (the text states no number)"
FIGURE_10_COLORS = {"correct": "C2", "wrong": "C3"}


def robustness_vs_prior_data(configurations, protocol=ONLY_PROTOCOL):
    """Fig. 9: PGD accuracy against ε, one gradient sample (S=1), per σ² at λ = 1, under one
    attack protocol (``protocol_view``).

    One panel per (dataset, model ∈ {ML, VI}) that has S=1 curves of at least two prior
    variances; one curve per σ² (``_robustness_curve``: per-seed accuracies, mean, std, n
    per ε) with its configuration, dataset, model and σ².
    """
    view = protocol_view(configurations, protocol)
    panels = {}
    for dataset in datasets_of(view):
        for model in MIXTURE_MODELS:
            curves = {}
            for config in mixtures(view, kl_weight=1.0, dataset=dataset):
                curve = _robustness_curve(config, ROBUSTNESS_KEY) if config.model == model else None
                if curve:
                    curves[f"σ² = {config.prior_variance:g}"] = dict(
                        curve,
                        configuration=config.name,
                        dataset=dataset,
                        model=model,
                        prior_variance=config.prior_variance,
                    )
            if len(curves) >= 2:
                panels[f"{dataset_title(dataset)} {model.upper()} (λ = 1)"] = curves
    if not panels:
        raise MissingRuns(
            f"needs ML or VI runs with the robustness evaluation ({ROBUSTNESS_KEY}) at λ = 1 "
            "for at least two prior variances σ² of one dataset and model"
        )
    return panels


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


def entropy_correct_vs_wrong_data(configurations):
    """Fig. 10: predictive entropy (total uncertainty) of correctly vs wrongly classified test
    inputs, ML and VI at λ = 1, σ² = 1, one entry per (dataset, model) with the histograms.

    Per entry: "correct" / "wrong" = {"bin_edges", "counts"} summed over seeds
    (``summed_histogram``: BinEdgeMismatch when the seeds' edges differ); "mean_correct" /
    "mean_wrong" = stats over seeds of each run's mean entropy of the group; "ratio" = mean
    wrong / mean correct (of those two means); the configuration and its seeds.
    """
    panels = {}
    for config in mixtures(configurations, kl_weight=1.0, prior_variance=1.0):
        seeds = list(_seed_histograms(config, ENTROPY))
        if not seeds:
            continue
        entry = {
            "dataset": config.dataset,
            "model": config.model,
            "label": config.label,
            "configuration": config.name,
            "seeds": seeds,
        }
        for group in ("correct", "wrong"):
            entry[group] = summed_histogram(config, ENTROPY, group)
            entry[f"mean_{group}"] = config.stats(f"histograms.{ENTROPY}.mean_{group}")
        correct, wrong = entry["mean_correct"], entry["mean_wrong"]
        entry["ratio"] = (
            wrong["mean"] / correct["mean"]
            if correct["n"] and wrong["n"] and correct["mean"] > 0
            else None
        )
        panels[f"{dataset_title(config.dataset)} {config.model.upper()} (λ = 1, σ² = 1)"] = entry
    if not panels:
        raise MissingRuns(
            f"needs ML or VI runs with predictive-entropy ({ENTROPY}) histograms at λ = 1, σ² = 1"
        )
    return panels


# -- figures -------------------------------------------------------------------------------------
def _test_examples(panels):
    """The test-set sizes behind the accuracy points of ``panels`` (for the title)."""
    return [
        n for series in panels.values() for s in series.values() for n in s.get("examples", [])
    ] or None


def _draw_accuracy_vs_prior(panels):
    return plotting.errorbar_panels(
        panels,
        "prior variance σ²",
        "test accuracy",
        sigmas=SIGMAS,
        colors=MODEL_COLORS,
        title="Test accuracy vs prior variance",
        examples=_test_examples(panels),
    )


def _draw_accuracy_vs_lambda(panels):
    return plotting.errorbar_panels(
        panels,
        "KL weight λ",
        "test accuracy",
        log_x=True,
        sigmas=SIGMAS,
        colors=MODEL_COLORS,
        title="Test accuracy vs KL weight",
        examples=_test_examples(panels),
    )


def _draw_weight_variance_bars(panels):
    return plotting.grouped_bars(
        panels,
        "mean weight variance",
        log_y=True,
        sigmas=SIGMAS,
        title="Mixing-distribution weight variance per layer",
    )


def _draw_predictive_variance_hist(panels):
    def legend(entry):
        how = "pooled" if entry["pooled"] else "one line per seed"
        return f"{entry['label']} (n={entry['seeds']}, {how})"

    series = {
        panel: {legend(e): e["histograms"] for e in entries.values()}
        for panel, entries in panels.items()
    }
    colors = {
        legend(e): MODEL_COLORS[model]
        for entries in panels.values()
        for model, e in entries.items()
    }
    return plotting.density_stairs(
        series,
        plotting.MEASURE_TITLES["predictive_variance"],
        colors=colors,
        title="Predictive variance of the test inputs, ML vs VI",
    )


def _draw_correct_vs_wrong_variance(panels):
    return plotting.grouped_bars(
        panels,
        "mean predictive variance",
        sigmas=SIGMAS,
        title="Predictive variance of correct vs wrong test inputs",
    )


def _protocol_title(title, protocol):
    """The title of an adversarial figure, naming its attack protocol when the study has
    several (``protocol``: its name, None otherwise)."""
    return title if protocol is None else f"{title}\nattack protocol {protocol}"


def _draw_robustness(curves, title):
    from uqmix import attack_eval  # TensorFlow: only when a robustness figure is drawn

    return attack_eval.robustness_figure(curves, title=title, sigmas=SIGMAS)


def _draw_robustness_s1(curves, protocol=None):
    return _draw_robustness(curves, _protocol_title("PGD robustness, 1 gradient sample", protocol))


def _draw_robustness_samples(curves, protocol=None):
    return _draw_robustness(
        curves, _protocol_title("PGD robustness vs gradient samples S", protocol)
    )


def _draw_robustness_vs_prior(panels, protocol=None):
    return plotting.robustness_panels(
        panels,
        title=_protocol_title("PGD robustness vs prior variance σ², 1 gradient sample", protocol),
        sigmas=SIGMAS,
    )


def _draw_entropy_correct_vs_wrong(panels):
    series, colors = {}, {}
    for panel, entry in panels.items():
        series[panel] = {}
        for group, color in FIGURE_10_COLORS.items():
            label = f"{group} ({int(np.sum(entry[group]['counts'])):,} test inputs)"
            series[panel][label] = [entry[group]]
            colors[label] = color
    seeds = [len(entry["seeds"]) for entry in panels.values()]
    return plotting.density_stairs(
        series,
        "predictive entropy (total uncertainty, nats)",
        colors=colors,
        title="Predictive entropy of correct vs wrong test inputs: counts summed over "
        + plotting.count_text(seeds, "seed"),
        columns=2,
    )


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: its file, its data (raises MissingRuns) and how it is drawn.

    adversarial: it draws robustness curves, one attack protocol per file (``figure_files``);
    its data and draw functions take the protocol (``protocol=``)."""

    filename: str
    data: object
    draw: object
    adversarial: bool = False

    def figure(self, configurations):
        return self.draw(self.data(configurations))


FIGURES = (
    FigureSpec("accuracy_vs_prior.png", accuracy_vs_prior_data, _draw_accuracy_vs_prior),
    FigureSpec("accuracy_vs_lambda.png", accuracy_vs_lambda_data, _draw_accuracy_vs_lambda),
    FigureSpec("weight_variance_bars.png", weight_variance_bars_data, _draw_weight_variance_bars),
    FigureSpec(
        "predictive_variance_hist.png",
        predictive_variance_hist_data,
        _draw_predictive_variance_hist,
    ),
    FigureSpec(
        "correct_vs_wrong_variance.png",
        correct_vs_wrong_variance_data,
        _draw_correct_vs_wrong_variance,
    ),
    FigureSpec("robustness.png", robustness_data, _draw_robustness_s1, adversarial=True),
    FigureSpec(
        "robustness_samples.png",
        robustness_samples_data,
        _draw_robustness_samples,
        adversarial=True,
    ),
    FigureSpec(
        "robustness_vs_prior.png",
        robustness_vs_prior_data,
        _draw_robustness_vs_prior,
        adversarial=True,
    ),
    FigureSpec(
        "entropy_correct_vs_wrong.png",
        entropy_correct_vs_wrong_data,
        _draw_entropy_correct_vs_wrong,
    ),
)
FIGURE_FILES = tuple(spec.filename for spec in FIGURES)


@dataclasses.dataclass(frozen=True)
class FigureFile:
    """A figure file of one report: its spec and, for an adversarial figure, the attack
    protocol it draws (protocol: a key of ``figure_protocols`` or ONLY_PROTOCOL; name and
    attack_options: the protocol's, None for the other figures; titled: the study has several
    protocols, so the file name and title name this one)."""

    filename: str
    spec: FigureSpec
    protocol: object = ONLY_PROTOCOL
    name: object = None
    attack_options: object = None
    titled: bool = False

    def data(self, configurations, **options):
        if self.spec.adversarial:
            return self.spec.data(configurations, protocol=self.protocol)
        return self.spec.data(configurations, **options)

    def draw(self, data):
        if self.titled:
            return self.spec.draw(data, protocol=self.name)
        return self.spec.draw(data)


def figure_files(configurations):
    """[FigureFile]: every figure of ``FIGURES``, the adversarial ones once per attack protocol
    of the study's robustness curves (``figure_protocols``).  With one protocol (or none) the
    files keep the names of ``FIGURE_FILES``; with several, an adversarial figure's file name
    gets the protocol's ``protocol_slug`` ("robustness_cleverhans4-frozen.png") and its title
    the protocol's name."""
    protocols = figure_protocols(configurations)
    slugs = {}
    for key, _, name in protocols:
        slug = protocol_slug(name)
        while slug in slugs.values():
            slug += "_"
        slugs[key] = slug
    files = []
    for spec in FIGURES:
        if not spec.adversarial or not protocols:
            files.append(FigureFile(spec.filename, spec))
        elif len(protocols) == 1:
            ((key, options, name),) = protocols
            files.append(FigureFile(spec.filename, spec, key, name, options))
        else:
            stem, extension = os.path.splitext(spec.filename)
            files += [
                FigureFile(f"{stem}_{slugs[key]}{extension}", spec, key, name, options, True)
                for key, options, name in protocols
            ]
    return files


def _spec(filename):
    return FIGURES[FIGURE_FILES.index(filename)]


def accuracy_vs_prior_figure(configurations):
    """Test accuracy against σ² at λ = 1, ML vs VI, one panel per dataset."""
    return _spec("accuracy_vs_prior.png").figure(configurations)


def accuracy_vs_lambda_figure(configurations):
    """Test accuracy against λ (log axis) at σ² = 1, ML vs VI, one panel per dataset."""
    return _spec("accuracy_vs_lambda.png").figure(configurations)


def weight_variance_bars_figure(configurations, names=None):
    """Grouped bars of the mean weight variance per layer (log y); see weight_variance_bars_data."""
    return _draw_weight_variance_bars(weight_variance_bars_data(configurations, names))


def predictive_variance_hist_figure(configurations):
    """Predictive-variance densities of ML vs VI (σ² = 1; λ = 1 and 0.1), log y."""
    return _spec("predictive_variance_hist.png").figure(configurations)


def correct_vs_wrong_variance_figure(configurations):
    """Bars of the mean predictive variance of correct vs wrong test inputs per configuration."""
    return _spec("correct_vs_wrong_variance.png").figure(configurations)


def robustness_figure(configurations):
    """PGD accuracy vs ε, S = 1, every configuration with the robustness evaluation."""
    return _spec("robustness.png").figure(configurations)


def robustness_samples_figure(configurations):
    """PGD accuracy vs ε for S = 1/5/100 of ML and VI at λ = 1, σ² = 1, with the baselines."""
    return _spec("robustness_samples.png").figure(configurations)


def robustness_vs_prior_figure(configurations):
    """Fig. 9: PGD accuracy vs ε (S=1) per σ² at λ = 1, one panel per (dataset, ML | VI)."""
    return _spec("robustness_vs_prior.png").figure(configurations)


def entropy_correct_vs_wrong_figure(configurations):
    """Fig. 10: entropy densities of correct vs wrong test inputs, ML / VI at λ = σ² = 1."""
    return _spec("entropy_correct_vs_wrong.png").figure(configurations)


# -- the report ----------------------------------------------------------------------------------
def _configuration_summary(config, table):
    return {
        "dataset": config.dataset,
        "model": config.model,
        "label": config.label,
        "kl_weight": config.kl_weight,
        "prior_variance": config.prior_variance,
        "seeds": config.seeds,
        "metrics": table[config.name],
    }


def figure_data(configurations, weight_variance_configs=None, files=None):
    """({file name: data}, {file name: reason skipped}) of every file of ``figure_files``
    (``files``, default all).  An adversarial figure that no protocol can draw is skipped
    once, under its name in ``FIGURE_FILES``; one that some protocols can draw is skipped
    under the file name of each protocol that cannot.

    Raises ValueError (not MissingRuns) for unknown ``weight_variance_configs``.
    """
    files = figure_files(configurations) if files is None else files
    options = {"weight_variance_bars.png": {"names": weight_variance_configs}}
    data, reasons = {}, []
    for file in files:
        try:
            data[file.filename] = file.data(configurations, **options.get(file.spec.filename, {}))
        except MissingRuns as reason:
            reasons.append((file, str(reason)))
    skipped = {}
    for file, reason in reasons:
        drawn = [f for f in files if f.spec is file.spec and f.filename in data]
        if not file.titled:
            skipped[file.filename] = reason
        elif drawn:
            skipped[file.filename] = f"{reason} (attack protocol {file.name})"
        else:
            skipped[file.spec.filename] = reason
    return data, skipped


def write_report(root, output_dir, weight_variance_configs=None, figures_dir=None):
    """Writes tables.md, the figures and summary.json of the sweep under ``root``.

    The figures go to ``figures_dir`` (default ``output_dir``).
    weight_variance_configs: folder names for the weight-variance bars
    (default ``default_weight_variance_selection``).
    The adversarial figures are written once per attack protocol (``figure_files``).
    Returns {"written": [paths], "skipped": {figure file: reason}, "notes":
    [str], "tables": Markdown text}.  Writes all files or none
    (``runs.atomic_write_files``).  Raises ValueError (before writing
    anything) when ``root`` holds no usable run or the seeds of a Fig. 10
    configuration have different entropy bin edges (``BinEdgeMismatch``),
    ``runs.OutputPathError`` when an output folder cannot be written.
    """
    runs.check_output_dir(output_dir)
    runs.check_output_dir(figures_dir or output_dir, flag="figures_dir")
    configurations = load_study(root)
    table = aggregate_table(configurations)
    comparison = published_comparison(configurations, root)
    files = figure_files(configurations)
    data, skipped = figure_data(configurations, weight_variance_configs, files)
    command = report_command(root, output_dir, figures_dir, weight_variance_configs)
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
            configurations, figure_tables, skipped, root, command, links, files=files
        )
    )
    contents = {os.path.join(output_dir, TABLES_FILE): tables.encode("utf-8")}
    for file in files:
        if file.filename in data:
            path = os.path.join(figures_dir, file.filename)
            contents[path] = plotting.figure_bytes(file.draw(data[file.filename]), path)
    notes = duplicate_settings(configurations)
    summary = {
        "sweep_root": root,  # as given: no machine-specific prefix
        "statistics": "over the seeds of a configuration that have the value: mean; std = sample "
        "standard deviation (ddof = 1, 0 for one seed); n = number of seeds; "
        f"figure error bars = ±{SIGMAS:g} std",
        "configurations": {c.name: _configuration_summary(c, table) for c in configurations},
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
        "written": runs.atomic_write_files(contents),
        "skipped": skipped,
        "notes": notes,
        "tables": tables,
    }
