"""uqmix.metrics against independent computations.

Oracles: scikit-learn (roc_auc_score, average_precision_score, roc_curve,
log_loss), brute-force enumeration of thresholds and pairs written out from
the definitions, bisection on the interpolated JSR curves, and hand cases.
"""

import itertools
import json
from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as skm

from uqmix import metrics
from uqmix.predictive import DirichletPredictive, SampledPredictive


# -- oracles ------------------------------------------------------------------------------------
def _brute_auroc(neg, pos):
    """P(s+ > s-) + ½ P(s+ = s-) over all pairs."""
    total = 0.0
    for a, b in itertools.product(pos, neg):
        total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(pos) * len(neg))


def _brute_fpr_at_tpr(neg, pos, level=Fraction(95, 100)):
    """min FPR over all thresholds t (flag s ≥ t) with TPR ≥ level, exact fractions."""
    best = None
    for t in list(np.unique(np.r_[neg, pos])) + [np.inf, -np.inf]:
        tpr = Fraction(sum(1 for s in pos if s >= t), len(pos))
        fpr = Fraction(sum(1 for s in neg if s >= t), len(neg))
        if tpr >= level and (best is None or fpr < best):
            best = fpr
    return float(best)


def _brute_jsr_curves(natural, adversarial, success):
    thresholds = sorted(set(natural.tolist()) | set(adversarial.tolist())) + [np.inf]
    fpr, joint = [], []
    for t in thresholds:
        fpr.append(sum(1 for s in natural if s >= t) / len(natural))
        joint.append(
            sum(1 for s, ok in zip(adversarial, success) if ok and s < t) / len(adversarial)
        )
    return np.array(thresholds), np.array(fpr), np.array(joint)


def _brute_jsr(natural, adversarial, success):
    """Crossing of the piecewise-linear curves (parameter = threshold index), by bisection."""
    _, fpr, joint = _brute_jsr_curves(natural, adversarial, success)
    index = np.arange(fpr.size, dtype=float)

    def gap(u):
        return np.interp(u, index, fpr) - np.interp(u, index, joint)

    lo, hi = 0.0, float(fpr.size - 1)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gap(mid) > 0:
            lo = mid
        else:
            hi = mid
    return float(np.interp(hi, index, fpr))


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _tied_scores(rng, n_neg, n_pos, levels):
    neg = rng.integers(0, levels, n_neg).astype(float)
    pos = rng.integers(0, levels, n_pos).astype(float) + rng.integers(0, 2, n_pos)
    return neg, pos


# -- detection scores -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seed,n_neg,n_pos,levels",
    [
        (0, 50, 30, 3),
        (1, 200, 17, 6),
        (2, 13, 90, 2),
        (3, 1, 5, 4),
        (4, 7, 1, 3),
        (5, 300, 300, 1000),
    ],
)
def test_detection_scores_match_sklearn_and_brute_force_with_ties(seed, n_neg, n_pos, levels):
    rng = np.random.default_rng(seed)
    neg, pos = _tied_scores(rng, n_neg, n_pos, levels)
    got = metrics.detection_scores(neg, pos)
    y = np.r_[np.zeros(n_neg), np.ones(n_pos)]
    s = np.r_[neg, pos]
    assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert got["auroc"] == pytest.approx(_brute_auroc(neg, pos), abs=1e-12)
    assert got["aupr_pos"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert got["aupr_neg"] == pytest.approx(skm.average_precision_score(1 - y, -s), abs=1e-12)
    assert got["fpr_at_95_tpr"] == pytest.approx(_brute_fpr_at_tpr(neg, pos), abs=1e-12)
    assert all(type(v) is float for v in got.values())
    json.dumps(got)


@pytest.mark.parametrize("level", [0.5, 0.8, 1.0])
def test_fpr_at_other_tpr_levels_matches_brute_force(level):
    rng = np.random.default_rng(7)
    for _ in range(5):
        neg, pos = _tied_scores(rng, 40, 20, 5)
        got = metrics.detection_scores(neg, pos, tpr_level=level)["fpr_at_95_tpr"]
        assert got == pytest.approx(_brute_fpr_at_tpr(neg, pos, Fraction(str(level))), abs=1e-12)


def test_fpr_at_95_tpr_hand_cases_keep_ties_on_one_side():
    # 20 positives: TPR ≥ 0.95 needs 19 flagged.  Positive 0..19, negatives at 0.5 and 5.
    pos = np.arange(20.0)
    assert metrics.detection_scores([0.5, 5.0], pos)["fpr_at_95_tpr"] == 0.5
    # A negative tied with the 19th-highest positive (score 1) must be flagged with it.
    assert metrics.detection_scores([1.0, 0.0], pos)["fpr_at_95_tpr"] == 0.5
    # All scores equal: only "flag everything" reaches the TPR level.
    assert metrics.detection_scores(np.zeros(10), np.zeros(3))["fpr_at_95_tpr"] == 1.0


def test_detection_hand_cases():
    perfect = metrics.detection_scores([0.0, 1.0, 2.0], [3.0, 4.0])
    assert perfect == {"auroc": 1.0, "aupr_pos": 1.0, "aupr_neg": 1.0, "fpr_at_95_tpr": 0.0}
    tied = metrics.detection_scores(np.ones(6), np.ones(2))
    assert tied["auroc"] == 0.5
    assert tied["aupr_pos"] == pytest.approx(2 / 8)
    assert tied["aupr_neg"] == pytest.approx(6 / 8)
    reversed_ = metrics.detection_scores([3.0, 4.0], [0.0, 1.0, 2.0])
    assert reversed_["auroc"] == 0.0 and reversed_["fpr_at_95_tpr"] == 1.0


def test_detection_swapping_roles_and_monotone_transform():
    rng = np.random.default_rng(3)
    neg, pos = rng.normal(size=40), rng.normal(0.7, size=25)
    base = metrics.detection_scores(neg, pos)
    swapped = metrics.detection_scores(-pos, -neg)
    assert swapped["auroc"] == pytest.approx(base["auroc"], abs=1e-12)
    assert swapped["aupr_pos"] == pytest.approx(base["aupr_neg"], abs=1e-12)
    transformed = metrics.detection_scores(np.exp(neg), np.exp(pos))
    for key in base:
        assert transformed[key] == pytest.approx(base[key], abs=1e-12)


def test_detection_accepts_tensors():
    rng = np.random.default_rng(4)
    neg, pos = rng.normal(size=30).astype(np.float32), rng.normal(size=20).astype(np.float32)
    assert metrics.detection_scores(tf.constant(neg), tf.constant(pos)) == metrics.detection_scores(
        neg, pos
    )


def test_roc_curve_points_match_sklearn():
    rng = np.random.default_rng(5)
    neg, pos = _tied_scores(rng, 60, 40, 7)
    got = metrics.roc_curve_points(neg, pos)
    y = np.r_[np.zeros(60), np.ones(40)]
    fpr, tpr, thr = skm.roc_curve(y, np.r_[neg, pos], drop_intermediate=False)
    np.testing.assert_allclose(got["fpr"], fpr, atol=1e-12)
    np.testing.assert_allclose(got["tpr"], tpr, atol=1e-12)
    np.testing.assert_array_equal(got["thresholds"][1:], thr[1:])
    assert got["thresholds"][0] == np.inf


@pytest.mark.parametrize(
    "neg,pos,match",
    [
        ([], [1.0], "negative_scores is empty"),
        ([1.0], [], "positive_scores is empty"),
        ([np.nan, 1.0], [1.0], "NaN"),
        ([1.0], [np.inf], "Inf"),
        ([[1.0, 2.0]], [1.0], "1-D"),
        (["a"], [1.0], "numeric"),
    ],
)
def test_detection_bad_input(neg, pos, match):
    with pytest.raises(ValueError, match=match):
        metrics.detection_scores(neg, pos)
    with pytest.raises(ValueError, match="tpr_level"):
        metrics.detection_scores([0.0], [1.0], tpr_level=0.0)


# -- classification -------------------------------------------------------------------------------
@pytest.fixture
def sampled_case():
    rng = np.random.default_rng(11)
    probs = _softmax(rng.normal(size=(5, 200, 4)) * 2.0)
    labels = rng.integers(0, 4, 200)
    return SampledPredictive(probs), probs.mean(0), labels


def test_accuracy_nll_brier_match_definitions(sampled_case):
    pred, mean, labels = sampled_case
    n = labels.size
    assert metrics.accuracy(pred, labels) == pytest.approx(
        sum(int(np.argmax(mean[i]) == labels[i]) for i in range(n)) / n, abs=1e-12
    )
    assert metrics.nll(pred, labels) == pytest.approx(
        skm.log_loss(labels, mean, labels=range(4)), rel=1e-6
    )
    brier = sum(sum((mean[i, k] - (k == labels[i])) ** 2 for k in range(4)) for i in range(n)) / n
    assert metrics.brier_score(pred, labels) == pytest.approx(brier, rel=1e-6)
    # Probability arrays [B, K] give the same answers as the S = 1 predictive.
    assert metrics.nll(mean, labels) == pytest.approx(
        metrics.nll(SampledPredictive(mean[None]), labels)
    )
    assert metrics.accuracy(tf.constant(mean), tf.constant(labels)) == metrics.accuracy(
        pred, labels
    )


def test_dirichlet_predictive_metrics_use_its_mean():
    rng = np.random.default_rng(12)
    alpha = np.exp(rng.normal(size=(50, 3)))
    labels = rng.integers(0, 3, 50)
    p = alpha / alpha.sum(-1, keepdims=True)
    pred = DirichletPredictive(alpha)
    assert metrics.accuracy(pred, labels) == pytest.approx(np.mean(p.argmax(-1) == labels))
    assert metrics.nll(pred, labels) == pytest.approx(
        -np.mean(np.log(p[np.arange(50), labels])), rel=1e-6
    )


def test_nll_uses_stable_log_mean():
    # p̄_y = e^-200 underflows to 0 in float32, but log p̄_y = −200 exactly.
    pred = SampledPredictive.from_logits(np.array([[[0.0, -200.0]]], np.float32))
    assert metrics.nll(pred, [1]) == pytest.approx(200.0, rel=1e-6)
    mixed = SampledPredictive.from_logits(np.array([[[0.0, -1000.0]], [[-1000.0, 0.0]]]))
    assert metrics.nll(mixed, [1]) == pytest.approx(np.log(2.0), abs=1e-12)


def _brute_ece(mean, labels, num_bins):
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    conf, pred = mean.max(-1), mean.argmax(-1)
    total = 0.0
    for m in range(num_bins):
        members = [
            i
            for i in range(len(conf))
            if (edges[m] < conf[i] or (m == 0 and conf[i] == 0)) and conf[i] <= edges[m + 1]
        ]
        if members:
            acc = np.mean([pred[i] == labels[i] for i in members])
            total += len(members) / len(conf) * abs(acc - np.mean(conf[members]))
    return total


@pytest.mark.parametrize("num_bins", [1, 5, 15])
def test_ece_matches_brute_force(sampled_case, num_bins):
    pred, mean, labels = sampled_case
    assert metrics.ece(pred, labels, num_bins) == pytest.approx(
        _brute_ece(mean, labels, num_bins), abs=1e-12
    )
    if num_bins == 1:
        acc = np.mean(mean.argmax(-1) == labels)
        assert metrics.ece(pred, labels, 1) == pytest.approx(
            abs(acc - mean.max(-1).mean()), abs=1e-12
        )


def test_ece_hand_cases_and_bins():
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert metrics.ece(probs, [0, 1]) == pytest.approx(0.4)  # one bin: |0.5 − 0.9|
    probs = np.array([[0.7, 0.3], [0.05, 0.95]])
    assert metrics.ece(probs, [0, 1], num_bins=10) == pytest.approx(0.5 * 0.3 + 0.5 * 0.05)
    # Confidence on a bin edge (0.6 with 5 bins) belongs to the lower bin (0.4, 0.6].
    bins = metrics.calibration_bins(np.array([[0.6, 0.4], [0.4, 0.6]]), [0, 0], num_bins=5)
    np.testing.assert_array_equal(bins["counts"], [0, 0, 2, 0, 0])
    assert bins["accuracy"][2] == 0.5 and bins["confidence"][2] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="num_bins"):
        metrics.ece(probs, [0, 1], num_bins=0)


@pytest.mark.parametrize(
    "probs,labels,match",
    [
        (np.full((3, 2), 0.5), [0, 1], "labels has 2 entries but predictive has 3"),
        (np.full((2, 2), 0.5), [0, 2], r"\[0, 2\)"),
        (np.full((2, 2), 0.5), [0, -1], r"\[0, 2\)"),
        (np.full((2, 2), 0.5), [0.0, 1.0], "integer"),
        (np.full((2, 2), 0.5), [[0, 1]], "1-D"),
        (np.full((1, 2, 2), 0.5), [0, 1], "SampledPredictive"),
        (np.full((2, 2), 0.7), [0, 1], "sum to 1"),
        (np.array([[np.nan, 1.0]]), [0], "NaN"),
        (np.zeros((0, 2)), np.zeros(0, int), "empty"),
    ],
)
def test_classification_bad_input(probs, labels, match):
    for fn in (metrics.accuracy, metrics.nll, metrics.ece, metrics.brier_score):
        with pytest.raises(ValueError, match=match):
            fn(probs, labels)


def test_misclassification_detection_matches_sklearn(sampled_case):
    pred, mean, labels = sampled_case
    scores = -mean.max(-1)
    wrong = (mean.argmax(-1) != labels).astype(int)
    got = metrics.misclassification_detection(pred, labels, scores)
    assert got["auroc"] == pytest.approx(skm.roc_auc_score(wrong, scores), abs=1e-12)
    assert got["aupr_pos"] == pytest.approx(skm.average_precision_score(wrong, scores), abs=1e-12)
    with pytest.raises(ValueError, match="both correctly and wrongly"):
        metrics.misclassification_detection(pred, mean.argmax(-1), scores)
    with pytest.raises(ValueError, match="scores has 3"):
        metrics.misclassification_detection(pred, labels, scores[:3])


# -- attacks ------------------------------------------------------------------------------------
def test_attack_success_rate_definitions():
    eye = np.eye(3) * 0.9 + (1 - np.eye(3)) * 0.05  # row k predicts class k
    clean = eye[[0, 1, 2, 0]]  # predictions 0 1 2 0
    labels = np.array([0, 1, 1, 0])  # inputs 0, 1, 3 correct; 2 wrong
    adversarial = eye[[1, 1, 0, 2]]  # predictions 1 1 0 2
    np.testing.assert_array_equal(
        metrics.attack_success(adversarial, labels), [True, False, True, True]
    )
    assert metrics.attack_success_rate(adversarial, labels) == 0.75
    # Among the originally correct inputs 0, 1, 3: 0 and 3 succeed.
    assert metrics.attack_success_rate(adversarial, labels, clean=clean) == pytest.approx(2 / 3)
    targets = np.array([1, 2, 0, 2])
    np.testing.assert_array_equal(
        metrics.attack_success(adversarial, targets=targets), [True, False, True, True]
    )
    assert metrics.attack_success_rate(
        adversarial, labels, targets=targets, clean=clean
    ) == pytest.approx(2 / 3)
    # An ε = 0 "attack" succeeds nowhere on the originally correct inputs.
    assert metrics.attack_success_rate(clean, labels, clean=clean) == 0.0
    with pytest.raises(ValueError, match="no input was classified correctly"):
        metrics.attack_success_rate(adversarial, np.array([1, 2, 0, 1]), clean=clean)
    with pytest.raises(ValueError, match="clean has 3"):
        metrics.attack_success_rate(adversarial, labels, clean=clean[:3])
    with pytest.raises(ValueError, match="true labels"):
        metrics.attack_success(adversarial)


# -- joint success rate ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_jsr_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    n_nat, n_adv = rng.integers(1, 40, 2)
    levels = [2, 5, 1000][seed % 3]
    natural = rng.integers(0, levels, n_nat).astype(float)
    adversarial = rng.integers(0, levels, n_adv).astype(float) + rng.normal(0, 0.5) * (seed % 2)
    success = rng.random(n_adv) < rng.uniform(0, 1)
    curves = metrics.joint_success_curves(natural, adversarial, success)
    thresholds, fpr, joint = _brute_jsr_curves(natural, adversarial, success)
    np.testing.assert_array_equal(curves["thresholds"], thresholds)
    np.testing.assert_allclose(curves["fpr"], fpr, atol=1e-12)
    np.testing.assert_allclose(curves["joint_success"], joint, atol=1e-12)
    jsr = metrics.joint_success_rate(natural, adversarial, success)
    assert jsr == pytest.approx(_brute_jsr(natural, adversarial, success), abs=1e-9)
    assert 0.0 <= jsr <= success.mean() + 1e-12


def test_jsr_hand_cases():
    # Chance-like symmetric case: curves cross exactly at t = 2.
    assert metrics.joint_success_rate([0, 1, 2, 3.0], [0, 1, 2, 3.0], [True] * 4) == 0.5
    # Crossing between thresholds: FPR 1, 1, 0, 0 and JS 0, .75, .75, 1 → segment meets diagonal at .75.
    assert metrics.joint_success_rate([2.0] * 4, [1, 1, 1, 3.0], [1, 1, 1, 1]) == pytest.approx(
        0.75
    )
    # Between thresholds with unequal steps: natural [1], adversarial [0, 2] → 0.5.
    assert metrics.joint_success_rate([1.0], [0.0, 2.0], [True, True]) == pytest.approx(0.5)


def test_jsr_is_zero_when_attacks_fail_or_are_all_detected():
    rng = np.random.default_rng(8)
    natural, adversarial = rng.normal(size=50), rng.normal(size=60)
    assert metrics.joint_success_rate(natural, adversarial, np.zeros(60, bool)) == 0.0
    # Successful attacks all score above every natural input; failed ones are anywhere.
    success = rng.random(60) < 0.5
    adversarial[success] += 100.0
    assert metrics.joint_success_rate(natural, adversarial, success) == 0.0


@pytest.mark.parametrize("rate", [1.0, 0.6, 0.2])
def test_jsr_of_a_chance_detector(rate):
    rng = np.random.default_rng(9)
    n = 20000
    natural, adversarial = rng.normal(size=n), rng.normal(size=n)
    success = rng.random(n) < rate
    jsr = metrics.joint_success_rate(natural, adversarial, success)
    # FPR = 1 − F, JS = r F  ⇒  JSR = r / (1 + r) ≤ ½.
    assert jsr == pytest.approx(success.mean() / (1 + success.mean()), abs=0.01)
    assert jsr <= 0.5 + 0.01


@pytest.mark.parametrize(
    "success,match",
    [
        ([True, False], "2 entries"),
        ([0.0, 1.0, 1.0], "boolean"),
        ([0, 2, 1], "boolean"),
        ([[True, True, True]], "1-D"),
    ],
)
def test_jsr_bad_input(success, match):
    with pytest.raises(ValueError, match=match):
        metrics.joint_success_rate([0.0, 1.0], [0.0, 1.0, 2.0], success)
    with pytest.raises(ValueError, match="NaN"):
        metrics.joint_success_rate([np.nan], [0.0], [True])
