"""Evaluation of a ``Predictive``: classification quality and uncertainty-based detection.

Thin layer over ``uqmix.metrics``: it turns the uncertainty measures of a
``Predictive`` into detection scores (higher = more suspicious, via
``uqmix.uncertainty.SCORE_SIGN``) and returns plain Python floats and NumPy
arrays, ready for ``json.dump`` (after ``.tolist()`` for arrays) and for figures.
"""

import numpy as np

from uqmix import metrics, uncertainty
from uqmix.predictive import Predictive


def _check_predictive(predictive, name):
    if not isinstance(predictive, Predictive):
        raise ValueError(f"{name} must be a uqmix Predictive, got {type(predictive).__name__}.")
    return predictive


def _resolve_measures(measures, *predictives):
    """The requested measure names, checked against what every predictive provides."""
    available = [
        name
        for name in predictives[0].measure_names
        if all(name in p.measure_names for p in predictives[1:])
    ]
    if measures is None:
        return available
    if isinstance(measures, str):
        measures = [measures]
    measures = list(measures)
    if not measures:
        raise ValueError("measures is empty.")
    unknown = [name for name in measures if name not in available]
    if unknown:
        raise ValueError(f"unknown measure(s) {unknown}; available: {available}.")
    return measures


def measure_values(predictive, measure):
    """The measure ``measure`` of every example as a float64 array [B] (unsigned)."""
    predictive = _check_predictive(predictive, "predictive")
    (measure,) = _resolve_measures([measure], predictive)
    return np.asarray(getattr(predictive, measure)(), dtype=np.float64)


def detection_score(predictive, measure):
    """``measure`` signed by ``SCORE_SIGN`` so that higher = more suspicious, float64 [B]."""
    return uncertainty.SCORE_SIGN[measure] * measure_values(predictive, measure)


def classification_metrics(predictive, labels, num_bins=metrics.DEFAULT_NUM_BINS):
    """{accuracy, error, nll, ece, brier} of the mean prediction p̄ (see ``uqmix.metrics``)."""
    predictive = _check_predictive(predictive, "predictive")
    acc = metrics.accuracy(predictive, labels)
    return {
        "accuracy": acc,
        "error": 1.0 - acc,
        "nll": metrics.nll(predictive, labels),
        "ece": metrics.ece(predictive, labels, num_bins=num_bins),
        "brier": metrics.brier_score(predictive, labels),
    }


def ood_detection(pred_in, pred_out, measures=None):
    """{measure: detection_scores} with in-domain inputs negative and OOD inputs positive.

    ``measures`` defaults to every measure both predictives provide.
    """
    pred_in = _check_predictive(pred_in, "pred_in")
    pred_out = _check_predictive(pred_out, "pred_out")
    if pred_in.num_classes != pred_out.num_classes:
        raise ValueError(
            f"pred_in has {pred_in.num_classes} classes but pred_out has {pred_out.num_classes}: "
            "both must come from the same model."
        )
    return {
        name: metrics.detection_scores(
            detection_score(pred_in, name), detection_score(pred_out, name)
        )
        for name in _resolve_measures(measures, pred_in, pred_out)
    }


def misclassification_detection(predictive, labels, measures=None):
    """{measure: detection_scores} with correctly classified inputs negative, wrong ones positive."""
    predictive = _check_predictive(predictive, "predictive")
    return {
        name: metrics.misclassification_detection(
            predictive, labels, detection_score(predictive, name)
        )
        for name in _resolve_measures(measures, predictive)
    }


def measure_histograms(predictive, labels, measure, bins=30):
    """Histograms of ``measure`` (unsigned) for correctly and wrongly classified inputs.

    ``bins`` is a number of equal-width bins spanning the values of both groups,
    or an increasing array of edges (``np.histogram`` semantics).  Returns a dict:
    ``bin_edges`` [M + 1], ``correct`` and ``wrong`` counts [M] (int64).
    """
    values = measure_values(predictive, measure)
    labels = metrics.check_labels(
        labels, "labels", predictive.num_classes, values.size, "predictive"
    )
    correct = metrics.predicted_classes(predictive) == labels
    edges = np.histogram_bin_edges(values, bins=bins)
    return {
        "bin_edges": edges,
        "correct": np.histogram(values[correct], bins=edges)[0].astype(np.int64),
        "wrong": np.histogram(values[~correct], bins=edges)[0].astype(np.int64),
    }
