"""No axis traps: ``sample_axis`` of the Predictive constructors; length checks name both sides."""

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from uqmix import evaluation, metrics
from uqmix.predictive import SampledPredictive


def test_from_logits_and_from_probs_take_a_batch_first_sample_axis():
    logits_bsk = np.random.default_rng(0).normal(size=(7, 4, 3))  # Keras: [B, S, K]
    expected = log_softmax(np.transpose(logits_bsk, (1, 0, 2)), -1)  # uqmix: [S, B, K]
    for axis in (1, -2):
        batch_first = SampledPredictive.from_logits(logits_bsk, sample_axis=axis)
        assert batch_first.log_probs.shape == (4, 7, 3) and len(batch_first) == 7
        np.testing.assert_allclose(batch_first.log_probs.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(
        SampledPredictive.from_logits(logits_bsk).log_probs.numpy(),
        log_softmax(logits_bsk, -1),
        rtol=1e-12,
    )  # default: axis 0
    probs = SampledPredictive.from_probs(softmax(logits_bsk, -1), sample_axis=1)
    np.testing.assert_allclose(probs.probs.numpy(), np.exp(expected), rtol=1e-12)
    with pytest.raises(ValueError, match="sample_axis"):
        SampledPredictive.from_logits(logits_bsk, sample_axis=2)
    with pytest.raises(ValueError, match="rank 3"):
        SampledPredictive.from_logits(logits_bsk[0], sample_axis=1)


def _pred(n, seed=0):
    return SampledPredictive.from_logits(np.random.default_rng(seed).normal(size=(2, n, 3)))


PRED = _pred(6)
LABELS_5 = np.array([0, 1, 2, 0, 1])
SCORES_5 = np.linspace(0.0, 1.0, 5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: metrics.accuracy(PRED, LABELS_5), "labels has 5 entries but predictive has 6"),
        (lambda: metrics.nll(PRED, LABELS_5), "labels has 5 entries but predictive has 6"),
        (lambda: metrics.ece(PRED, LABELS_5), "labels has 5 entries but predictive has 6"),
        (lambda: metrics.brier_score(PRED, LABELS_5), "labels has 5 entries but predictive has 6"),
        (lambda: metrics.calibration_bins(PRED, LABELS_5), "labels has 5 entries but predictive"),
        (
            lambda: metrics.misclassification_detection(
                PRED, np.array([0, 1, 2, 0, 1, 2]), SCORES_5
            ),
            "scores has 5 entries but predictive and labels have 6",
        ),
        (
            lambda: metrics.attack_success(PRED, LABELS_5),
            "labels has 5 entries but adversarial has 6",
        ),
        (
            lambda: metrics.attack_success(PRED, targets=LABELS_5),
            "targets has 5 entries but adversarial has 6",
        ),
        (
            lambda: metrics.attack_success_rate(PRED, np.zeros(6, int), clean=_pred(5)),
            "clean has 5 examples but adversarial has 6",
        ),
        (
            lambda: metrics.joint_success_curves(SCORES_5, SCORES_5, [True] * 4),
            "adversarial_success has 4 entries but adversarial_scores has 5",
        ),
        (
            lambda: metrics.joint_success_rate(SCORES_5, SCORES_5, [True] * 6),
            "adversarial_success has 6 entries but adversarial_scores has 5",
        ),
        (
            lambda: evaluation.classification_metrics(PRED, LABELS_5),
            "labels has 5 entries but predictive has 6",
        ),
        (
            lambda: evaluation.misclassification_detection(PRED, LABELS_5),
            "labels has 5 entries but predictive has 6",
        ),
        (
            lambda: evaluation.measure_histograms(PRED, LABELS_5, "epkl"),
            "labels has 5 entries but predictive has 6",
        ),
        (
            lambda: evaluation.ood_detection(
                PRED, SampledPredictive.from_logits(np.zeros((2, 4, 5)))
            ),
            "pred_in has 3 classes but pred_out has 5",
        ),
    ],
)
def test_length_mismatches_name_which_is_which(call, match):
    with pytest.raises(ValueError, match=match):
        call()
