"""uqmix.evaluation against independent computations (scikit-learn, NumPy definitions)."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from uqmix import evaluation
from uqmix.predictive import DirichletPredictive, SampledPredictive


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture
def in_domain():
    """Confident, mostly agreeing samples; labels = the sharp class except for a few."""
    rng = np.random.default_rng(0)
    centre = rng.normal(size=(150, 4)) * 3.0
    probs = _softmax(centre[None] + rng.normal(size=(6, 150, 4)) * 0.5)
    labels = probs.mean(0).argmax(-1)
    flip = rng.random(150) < 0.2
    labels[flip] = rng.integers(0, 4, flip.sum())
    return SampledPredictive(probs), probs, labels


@pytest.fixture
def out_of_domain():
    """Flat on average with disagreeing samples."""
    rng = np.random.default_rng(1)
    return SampledPredictive(_softmax(rng.normal(size=(6, 90, 4)) * 1.5))


def _numpy_measures(probs):
    mean = probs.mean(0)
    total = -(mean * np.log(mean)).sum(-1)
    expected = (-(probs * np.log(probs)).sum(-1)).mean(0)
    return {
        "total_uncertainty": total,
        "mutual_information": total - expected,
        "max_probability": mean.max(-1),
        "predictive_variance": probs.var(0).max(-1),
    }


def test_classification_metrics_match_definitions(in_domain):
    pred, probs, labels = in_domain
    mean = probs.mean(0)
    got = evaluation.classification_metrics(pred, labels)
    assert set(got) == {"accuracy", "error", "nll", "ece", "brier"}
    acc = np.mean(mean.argmax(-1) == labels)
    assert got["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert got["error"] == pytest.approx(1 - acc, abs=1e-12)
    assert got["nll"] == pytest.approx(skm.log_loss(labels, mean, labels=range(4)), rel=1e-10)
    assert got["brier"] == pytest.approx(
        np.mean(((mean - np.eye(4)[labels]) ** 2).sum(-1)), rel=1e-10
    )
    one_bin = evaluation.classification_metrics(pred, labels, num_bins=1)["ece"]
    assert one_bin == pytest.approx(abs(acc - mean.max(-1).mean()), abs=1e-12)
    assert all(type(v) is float for v in got.values())
    json.dumps(got)


def test_ood_detection_signs_and_values_match_sklearn(in_domain, out_of_domain):
    pred_in, probs_in, _ = in_domain
    got = evaluation.ood_detection(pred_in, out_of_domain)
    assert list(got) == list(SampledPredictive.measure_names)
    raw_in = _numpy_measures(probs_in)
    raw_out = _numpy_measures(out_of_domain.probs.numpy())
    y = np.r_[np.zeros(150), np.ones(90)]
    for name, higher_is_ood in [
        ("total_uncertainty", True),
        ("mutual_information", True),
        ("predictive_variance", True),
        ("max_probability", False),
    ]:
        raw = np.r_[raw_in[name], raw_out[name]]
        expected = skm.roc_auc_score(y, raw if higher_is_ood else -raw)
        assert got[name]["auroc"] == pytest.approx(expected, abs=1e-12), name
        assert got[name]["aupr_pos"] == pytest.approx(
            skm.average_precision_score(y, raw if higher_is_ood else -raw), abs=1e-12
        ), name
    # The fixture is built so that every measure separates the sets well.
    assert got["total_uncertainty"]["auroc"] > 0.9 and got["max_probability"]["auroc"] > 0.9
    json.dumps(got)


def test_ood_detection_dirichlet_precision_is_negated():
    rng = np.random.default_rng(2)
    in_alpha = np.exp(rng.normal(3.0, 1.0, size=(40, 3)))  # large α0
    out_alpha = np.exp(rng.normal(0.0, 1.0, size=(30, 3)))  # small α0
    got = evaluation.ood_detection(
        DirichletPredictive(in_alpha),
        DirichletPredictive(out_alpha),
        measures=["precision", "differential_entropy"],
    )
    assert list(got) == ["precision", "differential_entropy"]
    y = np.r_[np.zeros(40), np.ones(30)]
    alpha0 = np.r_[in_alpha.sum(-1), out_alpha.sum(-1)]
    assert got["precision"]["auroc"] == pytest.approx(1.0 - skm.roc_auc_score(y, alpha0), abs=1e-12)
    assert got["precision"]["auroc"] > 0.9


def test_ood_detection_measure_selection_errors(in_domain, out_of_domain):
    pred_in = in_domain[0]
    assert list(evaluation.ood_detection(pred_in, out_of_domain, measures="epkl")) == ["epkl"]
    with pytest.raises(ValueError, match="unknown measure"):
        evaluation.ood_detection(pred_in, out_of_domain, measures=["precision"])  # Dirichlet only
    with pytest.raises(ValueError, match="measures is empty"):
        evaluation.ood_detection(pred_in, out_of_domain, measures=[])
    with pytest.raises(ValueError, match="must be a uqmix Predictive"):
        evaluation.ood_detection(in_domain[1].mean(0), out_of_domain)


def test_misclassification_detection_matches_sklearn(in_domain):
    pred, probs, labels = in_domain
    wrong = (probs.mean(0).argmax(-1) != labels).astype(int)
    assert 0 < wrong.sum() < wrong.size
    got = evaluation.misclassification_detection(
        pred, labels, measures=["max_probability", "mutual_information"]
    )
    raw = _numpy_measures(probs)
    assert got["max_probability"]["auroc"] == pytest.approx(
        skm.roc_auc_score(wrong, -raw["max_probability"]), abs=1e-12
    )
    assert got["mutual_information"]["auroc"] == pytest.approx(
        skm.roc_auc_score(wrong, raw["mutual_information"]), abs=1e-12
    )
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        evaluation.misclassification_detection(pred, labels + 4)


def test_measure_histograms_split_correct_and_wrong(in_domain):
    pred, probs, labels = in_domain
    correct = probs.mean(0).argmax(-1) == labels
    values = _numpy_measures(probs)["predictive_variance"]
    got = evaluation.measure_histograms(pred, labels, "predictive_variance", bins=12)
    assert got["bin_edges"].shape == (13,)
    assert got["correct"].sum() == correct.sum() and got["wrong"].sum() == (~correct).sum()
    assert got["bin_edges"][0] == pytest.approx(values.min(), rel=1e-10)
    assert got["bin_edges"][-1] == pytest.approx(values.max(), rel=1e-10)
    np.testing.assert_array_equal(
        got["correct"], np.histogram(values[correct], bins=got["bin_edges"])[0]
    )
    np.testing.assert_array_equal(
        got["wrong"], np.histogram(values[~correct], bins=got["bin_edges"])[0]
    )
    edges = np.array([0.0, 0.01, 0.05, 1.0])
    fixed = evaluation.measure_histograms(pred, labels, "predictive_variance", bins=edges)
    np.testing.assert_array_equal(fixed["bin_edges"], edges)
    np.testing.assert_array_equal(fixed["wrong"], np.histogram(values[~correct], bins=edges)[0])
    with pytest.raises(ValueError, match="unknown measure"):
        evaluation.measure_histograms(pred, labels, "entropy", bins=5)
    with pytest.raises(ValueError, match="entries"):
        evaluation.measure_histograms(pred, labels[:-1], "epkl", bins=5)
