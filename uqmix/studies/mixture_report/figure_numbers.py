"""The numbers each figure of the report draws, taken from the configurations of a study.

One ``<figure>_data(configurations)`` per figure of ``figures.FIGURES``: its panels of series,
bars, histograms or curves with mean, std and n over seeds (``study``), or ``MissingRuns`` when
the study lacks the runs it needs.  Histograms of a configuration's seeds are summed only when
the seeds share their bin edges (``pool_histograms``; ``summed_histogram`` raises
``BinEdgeMismatch``); robustness curves are those of one attack protocol
(``attack_protocols.protocol_view``).
"""

import collections
import math

import numpy as np

from uqmix.studies.mixture_report.attack_protocols import (
    ONLY_PROTOCOL,
    _robustness_keys,
    protocol_view,
)
from uqmix.studies.mixture_report.study import (
    BASELINE_MODELS,
    MIXTURE_MODELS,
    STOCHASTIC_MODELS,
    _one_per_setting,
    _order,
    _weight_variance_layers,
    dataset_title,
    datasets_of,
    mixtures,
)
from uqmix.sweep import stats_of

# Default selection of the weight-variance bars: (λ, σ²) of ML and VI.
WEIGHT_VARIANCE_SETTINGS = ((1.0, 0.5), (1.0, 3.0), (1.0, 1.0), (0.1, 1.0))
HISTOGRAM_KL_WEIGHTS = (1.0, 0.1)

# The paper's figures 9 and 10 (Däubener & Fischer), at λ = 1 (σ² = 1 for Fig. 10).
ROBUSTNESS_KEY = "S=1"
ENTROPY = "total_uncertainty"


class MissingRuns(ValueError):
    """The runs a figure needs are not in the sweep."""


class BinEdgeMismatch(ValueError):
    """Histograms of one configuration that must be summed over seeds have different bins."""


class UnknownConfigurations(ValueError):
    """--weight_variance_configs names configurations the study does not have (a flag error)."""


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

    names: names of the configurations to show, as in tables.md (default
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


def _display_label(config, configurations):
    """The run label, prefixed with the dataset when the study has several."""
    if len(datasets_of(configurations)) > 1:
        return f"{dataset_title(config.dataset)}: {config.label}"
    return config.label


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
