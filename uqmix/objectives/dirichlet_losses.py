"""Losses of Dirichlet Prior Networks: KL between Dirichlets and its two directions.

A Prior Network maps x to logits z and predicts Dir(α) with α = exp(z)
(guarded, see ``uqmix.dirichlet``).  It is trained against a target
concentration α̂ (``target_concentrations``):

    α̂ = c·1 + β·onehot(y)

with c = ``concentration`` (1) and β = ``target_concentration``: β_in = 100
for in-domain examples, β = 0 (the flat Dirichlet c·1) for out-of-domain
examples (``labels=None``), β_adv = 1 for adversarial-training inputs.

KL between Dirichlets, a0 = Σ_k a_k, b0 = Σ_k b_k:

    KL(Dir(a) ‖ Dir(b)) = lnΓ(a0) − lnΓ(b0) − Σ_k [lnΓ(a_k) − lnΓ(b_k)]
                          + Σ_k (a_k − b_k)(ψ(a_k) − ψ(a0))

* reverse KL (Malinin & Gales 2019): KL(Dir(α) ‖ Dir(α̂))
* forward KL (Malinin & Gales 2018): KL(Dir(α̂) ‖ Dir(α))

``cross_entropy_loss`` is the plain-network (DNN) baseline with the same
``labels=None`` convention: cross-entropy to the uniform distribution for OOD
inputs (outlier exposure).

Both return per-example losses [B] (average them over the *global* batch,
e.g. with ``tf.nn.compute_average_loss``, so they scale correctly under a
``tf.distribute`` strategy).

``normalize_by_target=True`` divides the loss by β (``target_concentration``),
as the reference implementation divides its total loss by β_in to keep the
gradient scale (and so the optimiser's step) comparable to cross-entropy.  An
OOD batch trained next to an in-domain one should be divided by the same β_in,
so the OOD call passes β_in too (with ``labels=None`` it only sets the
divisor).

Numerics: α comes from ``uqmix.dirichlet.alpha_from_logits`` (log α clipped
straight-through to [−30, 30]), so values and gradients are finite in float32
for logits in [−100, 100].
"""

import numpy as np
import tensorflow as tf

from uqmix import dirichlet


def dirichlet_kl(alpha_p, alpha_q):
    """KL(Dir(alpha_p) ‖ Dir(alpha_q)) per example.

    alpha_p, alpha_q: concentrations [..., K] (broadcastable), positive.
    Returns [...]:
      lnΓ(p0) − lnΓ(q0) − Σ_k [lnΓ(p_k) − lnΓ(q_k)]
      + Σ_k (p_k − q_k)(ψ(p_k) − ψ(p0)).

    Evaluated as the algebraically equal
      h(p0) − Σ_k h(p_k) − lnΓ(q0) + Σ_k lnΓ(q_k) − Σ_k q_k (ψ(p_k) − ψ(p0)),
    h(a) = lnΓ(a) − a·ψ(a) + a (using p0 = Σ_k p_k), which avoids the
    cancellation of terms of size p·ln p when p is large: in float32 the
    textbook form loses the value (even its sign) and the gradient for
    concentrations near 1e13, this one keeps both.
    """
    alpha_p = tf.convert_to_tensor(alpha_p)
    alpha_q = tf.convert_to_tensor(alpha_q, dtype=alpha_p.dtype)
    if tf.executing_eagerly():  # in graphs α comes from exp(z); eager calls get checked
        for name, value in (("alpha_p", alpha_p), ("alpha_q", alpha_q)):
            values = value.numpy()
            if not (np.all(np.isfinite(values)) and np.all(values > 0)):
                raise ValueError(f"{name} must be finite and positive (Dirichlet concentrations).")
    alpha_p, alpha_q = alpha_p + tf.zeros_like(alpha_q), alpha_q + tf.zeros_like(alpha_p)
    p0 = tf.reduce_sum(alpha_p, axis=-1)
    q0 = tf.reduce_sum(alpha_q, axis=-1)
    h = dirichlet.lgamma_minus_a_digamma_plus_a
    digamma_gap = tf.math.digamma(alpha_p) - tf.math.digamma(p0)[..., None]
    return (
        h(p0)
        - tf.reduce_sum(h(alpha_p), axis=-1)
        - tf.math.lgamma(q0)
        + tf.reduce_sum(tf.math.lgamma(alpha_q), axis=-1)
        - tf.reduce_sum(alpha_q * digamma_gap, axis=-1)
    )


def _validated_labels(labels, num_classes):
    """labels as int32 [B]; out-of-range or badly shaped labels raise ValueError."""
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating:
        if tf.executing_eagerly():
            values = labels.numpy()
            if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
                raise ValueError("labels must be integer class indices, got non-integer values.")
    elif not labels.dtype.is_integer:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype.name}.")
    if labels.shape.rank is not None and labels.shape.rank != 1:
        raise ValueError(f"labels must have shape [batch], got {labels.shape}.")
    labels = tf.cast(labels, tf.int32)
    if tf.executing_eagerly():
        values = labels.numpy()
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"labels must be in [0, {num_classes - 1}], got values in "
                f"[{values.min()}, {values.max()}]."
            )
        return labels
    checks = [
        tf.debugging.assert_non_negative(labels, message="labels must be >= 0."),
        tf.debugging.assert_less(
            labels, num_classes, message=f"labels must be < num_classes = {num_classes}."
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def _check_concentrations(target_concentration, concentration):
    if not target_concentration >= 0:
        raise ValueError(f"target_concentration must be >= 0, got {target_concentration}.")
    if not concentration > 0:
        raise ValueError(f"concentration must be > 0, got {concentration}.")


def target_concentrations(
    labels, num_classes, target_concentration, concentration=1.0, batch_size=None, dtype=tf.float32
):
    """α̂ = c·1 + β·onehot(y), [B, K].

    labels: int class indices [B], or None for the flat target c·1 (OOD); then
      the batch size comes from ``batch_size`` (an int or scalar tensor).
    target_concentration: β (≥ 0); concentration: c (> 0).
    """
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    _check_concentrations(target_concentration, concentration)
    if labels is None:
        if batch_size is None:
            raise ValueError("target_concentrations needs labels or batch_size.")
        return tf.fill(tf.stack([batch_size, num_classes]), tf.cast(concentration, dtype))
    labels = _validated_labels(labels, num_classes)
    onehot = tf.one_hot(labels, num_classes, dtype=dtype)
    return concentration + target_concentration * onehot


def _alpha_and_target(logits, labels, target_concentration, concentration):
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        raise ValueError(f"logits must be floating point, got {logits.dtype.name}.")
    if logits.shape.rank != 2:
        raise ValueError(f"logits must have shape [batch, num_classes], got {logits.shape}.")
    num_classes = logits.shape[-1]
    if num_classes is None:
        raise ValueError("logits need a static number of classes (last axis).")
    alpha = dirichlet.alpha_from_logits(logits)
    target = target_concentrations(
        labels,
        num_classes,
        target_concentration,
        concentration,
        batch_size=tf.shape(logits)[0],
        dtype=logits.dtype,
    )
    return alpha, target


def _normalised(loss, target_concentration, normalize_by_target):
    if not normalize_by_target:
        return loss
    if not target_concentration > 0:
        raise ValueError("normalize_by_target needs target_concentration > 0.")
    return loss / target_concentration


def reverse_kl_loss(
    logits, labels, target_concentration, concentration=1.0, normalize_by_target=False
):
    """Reverse KL KL(Dir(α) ‖ Dir(α̂)) per example, [B].

    logits: z [B, K] with α = exp(z); labels: int [B] or None (flat target c·1);
    α̂ from ``target_concentrations``; divided by β when ``normalize_by_target``.
    """
    alpha, target = _alpha_and_target(logits, labels, target_concentration, concentration)
    return _normalised(dirichlet_kl(alpha, target), target_concentration, normalize_by_target)


def forward_kl_loss(
    logits, labels, target_concentration, concentration=1.0, normalize_by_target=False
):
    """Forward KL KL(Dir(α̂) ‖ Dir(α)) per example, [B] (arguments as ``reverse_kl_loss``)."""
    alpha, target = _alpha_and_target(logits, labels, target_concentration, concentration)
    return _normalised(dirichlet_kl(target, alpha), target_concentration, normalize_by_target)


def cross_entropy_loss(logits, labels):
    """Cross-entropy per example, [B]: −log softmax(z)_y.

    labels=None: cross-entropy to the uniform distribution, −(1/K) Σ_k log softmax(z)_k
    (= KL(uniform ‖ softmax(z)) + log K), the DNN baseline's OOD term.
    """
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank != 2 or logits.shape[-1] is None:
        raise ValueError(f"logits must have shape [batch, num_classes], got {logits.shape}.")
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    if labels is None:
        return -tf.reduce_mean(log_probs, axis=-1)
    labels = _validated_labels(labels, logits.shape[-1])
    return -tf.gather(log_probs, labels, axis=-1, batch_dims=1)
