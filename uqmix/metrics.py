"""Classification, calibration, detection and attack metrics (float64 NumPy).

Every function accepts NumPy arrays or tensors, computes in float64 and
returns plain Python floats (or NumPy arrays for curves), ready for JSON.
Bad input raises one ``ValueError`` naming the problem: empty arrays, NaN/Inf
scores, wrong ranks, mismatched lengths, non-integer labels or labels outside
[0, K).

Predictions (``predictive`` arguments) are either a ``uqmix.predictive.Predictive``
or a probability array [B, K] (rows on the simplex; treated as the S = 1
``SampledPredictive``).  The predicted class is argmax_k p̄_k (first index on ties).

Detection convention (DESIGN.md): a *score* is higher for more suspicious
inputs; the *positive* class is what should be flagged (OOD, misclassified,
adversarial).  A threshold t flags every input with score ≥ t, so inputs with
equal scores always fall on the same side.
"""

import numpy as np

from uqmix.predictive import Predictive, SampledPredictive

DEFAULT_TPR_LEVEL = 0.95
DEFAULT_NUM_BINS = 15


# -- input handling -------------------------------------------------------------------
def _to_numpy(value):
    if hasattr(value, "numpy") and callable(value.numpy):
        return value.numpy()
    return np.asarray(value)


def _as_scores(value, name):
    """A non-empty, finite, 1-D float64 array."""
    array = _to_numpy(value)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
        or array.dtype == bool
    ):
        raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}.")
    array = array.astype(np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per example), got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{name} is empty.")
    if np.isnan(array).any():
        raise ValueError(
            f"{name} contains NaN values ({int(np.isnan(array).sum())} of {array.size})."
        )
    if np.isinf(array).any():
        raise ValueError(
            f"{name} contains Inf values ({int(np.isinf(array).sum())} of {array.size}); "
            "scores must be finite."
        )
    return array


def check_labels(value, name, num_classes=None, length=None, reference="the predictions"):
    """A 1-D int64 array of class indices in [0, num_classes).

    length: the number of examples of ``reference`` (what the labels are compared with); a
    different number of labels raises a ``ValueError`` naming both.
    """
    array = _to_numpy(value)
    if not np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        raise ValueError(f"{name} must be integer class indices, got dtype {array.dtype}.")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{name} is empty.")
    if length is not None and array.size != length:
        raise ValueError(
            f"{name} has {array.size} entries but {reference} has {length} "
            "examples; they must describe the same examples, in the same order."
        )
    if num_classes is not None and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}); got values in [{array.min()}, {array.max()}]."
        )
    return array.astype(np.int64)


def _as_indicator(value, name, length, reference):
    """A 1-D bool array (bool, or integers in {0, 1}) with one entry per example of ``reference``."""
    array = _to_numpy(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}.")
    if array.size != length:
        raise ValueError(
            f"{name} has {array.size} entries but {reference} has {length}; "
            "they must describe the same examples."
        )
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.integer) or not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or integers 0/1), got dtype {array.dtype}.")
        array = array.astype(bool)
    return array


def _as_predictive(value, name="predictive"):
    if isinstance(value, Predictive):
        return value
    array = _to_numpy(value)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a Predictive or a probability array [batch, num_classes], got shape "
            f"{array.shape} (wrap [num_samples, batch, num_classes] in SampledPredictive)."
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty.")
    return SampledPredictive(array[None])


def _mean_and_log_mean(predictive):
    """p̄ and log p̄ as float64 arrays [B, K]."""
    predictive = _as_predictive(predictive)
    mean = np.asarray(_to_numpy(predictive.mean()), dtype=np.float64)
    log_mean = np.asarray(_to_numpy(predictive.log_mean()), dtype=np.float64)
    if mean.shape[0] == 0:
        raise ValueError("predictive is empty.")
    return mean, log_mean


def _mean_and_labels(predictive, labels):
    mean, log_mean = _mean_and_log_mean(predictive)
    labels = check_labels(
        labels, "labels", num_classes=mean.shape[1], length=mean.shape[0], reference="predictive"
    )
    return mean, log_mean, labels


def predicted_classes(predictive):
    """argmax_k p̄_k as int64 [B] (first index on ties)."""
    mean, _ = _mean_and_log_mean(predictive)
    return np.argmax(mean, axis=-1).astype(np.int64)


# -- classification ---------------------------------------------------------------------
def accuracy(predictive, labels):
    """(1/B) Σ_i [argmax_k p̄_ik = y_i]."""
    mean, _, labels = _mean_and_labels(predictive, labels)
    return float(np.mean(np.argmax(mean, axis=-1) == labels))


def nll(predictive, labels):
    """Mean negative log-likelihood −(1/B) Σ_i log p̄_{i, y_i}, from ``log_mean()``.

    ``log_mean`` is the stable logsumexp form, so the NLL stays finite where
    p̄ underflows in float32.  A true label of probability exactly 0 gives +inf.
    """
    _, log_mean, labels = _mean_and_labels(predictive, labels)
    return float(-np.mean(log_mean[np.arange(labels.size), labels]))


def brier_score(predictive, labels):
    """(1/B) Σ_i Σ_k (p̄_ik − [k = y_i])², *summed* over classes (range [0, 2])."""
    mean, _, labels = _mean_and_labels(predictive, labels)
    onehot = np.zeros_like(mean)
    onehot[np.arange(labels.size), labels] = 1.0
    return float(np.mean(np.sum((mean - onehot) ** 2, axis=-1)))


def calibration_bins(predictive, labels, num_bins=DEFAULT_NUM_BINS):
    """Reliability-diagram statistics with ``num_bins`` equal-width confidence bins.

    Confidence c_i = max_k p̄_ik; bin m (m = 1..M) holds c ∈ ((m−1)/M, m/M]
    (the first bin also holds c = 0), the edges being ``np.linspace(0, 1, M + 1)``.
    Returns a dict of arrays [M]: ``bin_edges`` [M + 1], ``counts``,
    ``accuracy`` and ``confidence`` (bin means; 0 for empty bins).
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")
    mean, _, labels = _mean_and_labels(predictive, labels)
    confidence = np.max(mean, axis=-1)
    correct = (np.argmax(mean, axis=-1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins).astype(np.float64)
    safe = np.maximum(counts, 1.0)
    return {
        "bin_edges": edges,
        "counts": counts.astype(np.int64),
        "accuracy": np.bincount(index, weights=correct, minlength=num_bins) / safe,
        "confidence": np.bincount(index, weights=confidence, minlength=num_bins) / safe,
    }


def ece(predictive, labels, num_bins=DEFAULT_NUM_BINS):
    """Expected calibration error, ECE = Σ_m (|B_m| / B) · |acc(B_m) − conf(B_m)|.

    B_m are the equal-width confidence bins of ``calibration_bins``; acc and
    conf are the bin's accuracy and mean confidence (max_k p̄_k).
    """
    bins = calibration_bins(predictive, labels, num_bins)
    weights = bins["counts"] / bins["counts"].sum()
    return float(np.sum(weights * np.abs(bins["accuracy"] - bins["confidence"])))


# -- detection ------------------------------------------------------------------------------
def _counts_above_thresholds(negative_scores, positive_scores):
    """Distinct thresholds t (descending) and counts of positives / negatives with score ≥ t."""
    scores = np.concatenate([positive_scores, negative_scores])
    is_positive = np.concatenate(
        [np.ones(positive_scores.size, bool), np.zeros(negative_scores.size, bool)]
    )
    order = np.argsort(-scores, kind="mergesort")
    scores, is_positive = scores[order], is_positive[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
    true_positives = np.cumsum(is_positive)[last_of_group]
    false_positives = last_of_group + 1 - true_positives
    return scores[last_of_group], true_positives, false_positives


def roc_curve_points(negative_scores, positive_scores):
    """The ROC curve at every distinct threshold, flagging score ≥ t.

    Returns a dict of arrays: ``thresholds`` (descending; the first, +inf,
    flags nothing), ``fpr`` and ``tpr`` (from (0, 0) to (1, 1)).  Same points
    as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    negative_scores = _as_scores(negative_scores, "negative_scores")
    positive_scores = _as_scores(positive_scores, "positive_scores")
    thresholds, tp, fp = _counts_above_thresholds(negative_scores, positive_scores)
    return {
        "thresholds": np.r_[np.inf, thresholds],
        "fpr": np.r_[0.0, fp / negative_scores.size],
        "tpr": np.r_[0.0, tp / positive_scores.size],
    }


def detection_scores(negative_scores, positive_scores, tpr_level=DEFAULT_TPR_LEVEL):
    """Detection quality of a score (higher = more suspicious) → dict of floats.

    * ``auroc``: area under the ROC curve with ties counted ½,
      = P(s⁺ > s⁻) + ½ P(s⁺ = s⁻) (Mann–Whitney), equal to sklearn's ``roc_auc_score``;
      computed as the trapezoid area over all distinct thresholds.
    * ``aupr_pos``: average precision with the positives as the detected
      class, AP = Σ_n (R_n − R_{n−1}) P_n over the distinct thresholds in
      descending order (sklearn's ``average_precision_score``).
    * ``aupr_neg``: the same with the negatives as the detected class and the
      score negated.
    * ``fpr_at_95_tpr``: min over thresholds t with TPR(t) ≥ ``tpr_level`` of
      FPR(t), where TPR(t) / FPR(t) are the fractions of positives / negatives
      with score ≥ t and t ranges over the distinct scores (+inf included), so
      tied examples are always on the same side.  As both rates fall with t,
      this is the FPR at the largest such threshold.  (The key keeps its
      name when another ``tpr_level`` is asked for.)
    """
    if not 0.0 < tpr_level <= 1.0:
        raise ValueError(f"tpr_level must be in (0, 1], got {tpr_level}.")
    negative_scores = _as_scores(negative_scores, "negative_scores")
    positive_scores = _as_scores(positive_scores, "positive_scores")
    num_neg, num_pos = negative_scores.size, positive_scores.size
    _, tp, fp = _counts_above_thresholds(negative_scores, positive_scores)
    tp0, fp0 = np.r_[0, tp], np.r_[0, fp]
    auroc = np.sum(np.diff(fp0) * (tp0[1:] + tp0[:-1])) / (2.0 * num_pos * num_neg)
    reaches_level = np.flatnonzero(tp >= tpr_level * num_pos - 1e-9 * num_pos)
    return {
        "auroc": float(auroc),
        "aupr_pos": _average_precision(tp, fp, num_pos),
        "aupr_neg": _average_precision_negatives(tp, fp, num_neg),
        "fpr_at_95_tpr": float(fp[reaches_level[0]] / num_neg),
    }


def _average_precision(tp, fp, num_pos):
    """AP = Σ_n (R_n − R_{n−1}) P_n from cumulative counts at descending thresholds."""
    precision = tp / (tp + fp)
    recall_step = np.diff(np.r_[0, tp]) / num_pos
    return float(np.sum(recall_step * precision))


def _average_precision_negatives(tp, fp, num_neg):
    """AP of the negated score with negatives as the detected class.

    Negating the score reverses the threshold order: flagging −s ≥ −t is
    flagging s ≤ t, i.e. the complement of s > t.  Counts of s ≤ t_j are the
    totals minus the counts at the next larger threshold.
    """
    num_pos = tp[-1]
    neg_flagged = num_neg - np.r_[0, fp[:-1]]  # negatives with s ≤ t_j, j descending
    pos_flagged = num_pos - np.r_[0, tp[:-1]]
    # In ascending order of t these are the cumulative counts of the negated score.
    return _average_precision(neg_flagged[::-1], pos_flagged[::-1], num_neg)


def misclassification_detection(predictive, labels, scores, tpr_level=DEFAULT_TPR_LEVEL):
    """``detection_scores`` with positives = misclassified examples (argmax p̄ ≠ y).

    Needs at least one correctly and one wrongly classified example.
    """
    mean, _, labels = _mean_and_labels(predictive, labels)
    scores = _as_scores(scores, "scores")
    if scores.size != labels.size:
        raise ValueError(
            f"scores has {scores.size} entries but predictive and labels have "
            f"{labels.size}; they must describe the same examples."
        )
    wrong = np.argmax(mean, axis=-1) != labels
    if wrong.all() or not wrong.any():
        raise ValueError(
            "misclassification detection needs both correctly and wrongly classified examples; "
            f"got {int(wrong.sum())} wrong of {wrong.size}."
        )
    return detection_scores(scores[~wrong], scores[wrong], tpr_level=tpr_level)


# -- attacks ------------------------------------------------------------------------------------
def attack_success(adversarial, labels=None, targets=None):
    """Per-example success of an attack, bool [B].

    Untargeted (``targets`` None): argmax p̄(x') ≠ y.  Targeted: argmax p̄(x') = target.
    """
    mean, _ = _mean_and_log_mean(_as_predictive(adversarial, "adversarial"))
    batch, num_classes = mean.shape
    predicted = np.argmax(mean, axis=-1)
    if targets is not None:
        return predicted == check_labels(targets, "targets", num_classes, batch, "adversarial")
    if labels is None:
        raise ValueError("an untargeted attack's success needs the true labels.")
    return predicted != check_labels(labels, "labels", num_classes, batch, "adversarial")


def attack_success_rate(adversarial, labels, targets=None, clean=None):
    """Fraction of successful attacks (see ``attack_success``).

    Population: when the clean predictions ``clean`` are given, only the
    inputs the model classified correctly before the attack (argmax p̄(x) = y);
    otherwise all inputs.  The first is the recommended definition: an input
    that is already misclassified needs no attack, so counting it would credit
    the attack with the model's clean error (an ε = 0 "attack" would score the
    clean error rate) and would make success rates of models with different
    accuracies incomparable.  Over all inputs the untargeted rate is simply
    1 − adversarial accuracy.
    """
    success = attack_success(adversarial, labels, targets)
    if clean is None:
        return float(np.mean(success))
    clean_mean, _ = _mean_and_log_mean(_as_predictive(clean, "clean"))
    if clean_mean.shape[0] != success.size:
        raise ValueError(
            f"clean has {clean_mean.shape[0]} examples but adversarial has {success.size}."
        )
    labels = check_labels(labels, "labels", clean_mean.shape[1], success.size, "clean")
    originally_correct = np.argmax(clean_mean, axis=-1) == labels
    if not originally_correct.any():
        raise ValueError("no input was classified correctly before the attack.")
    return float(np.mean(success[originally_correct]))


def joint_success_curves(natural_scores, adversarial_scores, adversarial_success):
    """The two curves whose crossing is the joint success rate.

    For a threshold t (flag score ≥ t):
      FPR(t) = #{natural: s ≥ t} / N_nat                          (false alarms)
      JS(t)  = #{adversarial: successful and s < t} / N_adv       (over ALL adversarial inputs)
    t runs over the distinct scores of both sets in ascending order and then
    +inf (flag nothing).  FPR falls from 1 to 0 and JS rises from 0 to the
    success rate.  Returns a dict of arrays ``thresholds``, ``fpr``, ``joint_success``.
    """
    natural_scores = _as_scores(natural_scores, "natural_scores")
    adversarial_scores = _as_scores(adversarial_scores, "adversarial_scores")
    success = _as_indicator(
        adversarial_success, "adversarial_success", adversarial_scores.size, "adversarial_scores"
    )
    thresholds = np.r_[np.unique(np.concatenate([natural_scores, adversarial_scores])), np.inf]
    natural_sorted = np.sort(natural_scores)
    successful_sorted = np.sort(adversarial_scores[success])
    flagged_natural = natural_scores.size - np.searchsorted(natural_sorted, thresholds, "left")
    unflagged_success = np.searchsorted(successful_sorted, thresholds, "left")
    return {
        "thresholds": thresholds,
        "fpr": flagged_natural / natural_scores.size,
        "joint_success": unflagged_success / adversarial_scores.size,
    }


def joint_success_rate(natural_scores, adversarial_scores, adversarial_success):
    """JSR: the value where FPR(t) and JS(t) of ``joint_success_curves`` cross.

    D(t) = FPR(t) − JS(t) falls monotonically from 1 (flag all) to −success
    rate ≤ 0 (flag nothing).  If D(t_j) = 0 at some threshold, JSR = FPR(t_j)
    (the same value at every such t_j).  Otherwise D changes sign between
    consecutive thresholds t_j, t_{j+1}, and JSR is the crossing of the two
    curves linearly interpolated between them:
        λ = D_j / (D_j − D_{j+1}),   JSR = FPR_j + λ (FPR_{j+1} − FPR_j),
    i.e. the point where the segment between (FPR_j, JS_j) and
    (FPR_{j+1}, JS_{j+1}) meets the diagonal JS = FPR — the equal-error point
    of a detector that uses t_j or t_{j+1} at random with weights 1 − λ, λ.

    Properties: JSR ≤ success rate (JS ≤ success rate everywhere).  For a
    detector whose scores do not depend on being adversarial, FPR = 1 − F and
    JS = r·F (F the common score CDF, r the success rate), so JSR → r / (1 + r)
    ≤ ½ in the large-sample limit.  JSR = 0 when every attack fails, or when
    some threshold flags every successful attack and no natural input.
    """
    curves = joint_success_curves(natural_scores, adversarial_scores, adversarial_success)
    fpr, joint = curves["fpr"], curves["joint_success"]
    gap = fpr - joint
    first_non_positive = int(np.flatnonzero(gap <= 0)[0])  # exists: gap[-1] = −success rate ≤ 0
    if gap[first_non_positive] == 0:
        return float(fpr[first_non_positive])
    j = first_non_positive - 1  # gap[j] > 0 > gap[j + 1]; j ≥ 0 since gap[0] = 1
    weight = gap[j] / (gap[j] - gap[j + 1])
    return float(fpr[j] + weight * (fpr[j + 1] - fpr[j]))
