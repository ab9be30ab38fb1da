"""Concentration parameters from network outputs: α = exp(z), guarded.

A Prior Network outputs logits z and predicts Dir(α) with α = exp(z).  For
|z| beyond ``LOG_ALPHA_BOUND`` float32 arithmetic on lnΓ/ψ of α and α0 starts
to lose all precision (and exp overflows at z ≈ 88), so the forward value uses
z clipped to [−B, B].  The clip is *straight-through*: its gradient is the
identity, so a network whose logits drift past the bound still receives the
gradient of the clipped objective and is pulled back, instead of a zero
gradient from ``tf.clip_by_value``.  Inside the bound α = exp(z) exactly.

The clip is a ``tf.custom_gradient`` (forward ``clip_by_value``, backward the
identity), not ``z + stop_gradient(clip(z) − z)``: that sum cancels
catastrophically in float32 once |z| ≳ 1e8 (log α = 32 at z = 1e8, 0 — a flat
Dirichlet — for z ≥ 1e9), while the forward clip is exact for every finite
float32 z.  NaN logits are a ``ValueError`` when called eagerly; inside a
compiled step they propagate to the loss, whose NaN stops training as
divergence (``uqmix.training``), not as an op error.
"""

import numpy as np
import tensorflow as tf

# exp(±30) ≈ 1e±13: α0 ≤ K·1e13 keeps lnΓ(α0) ≈ 3e14 and ψ(α) ≥ −1e13 finite
# in float32, with every KL/measure finite for logits in [−100, 100].
LOG_ALPHA_BOUND = 30.0


def _straight_through_clip(logits, bound):
    """clip(z, −bound, bound) forward, identity gradient."""

    @tf.custom_gradient
    def clip(z):
        return tf.clip_by_value(z, -bound, bound), lambda upstream: upstream

    return clip(logits)


def log_alpha_from_logits(logits, bound=LOG_ALPHA_BOUND):
    """log α = clip(z, −bound, bound) with a straight-through (identity) gradient.

    Exact for every finite float32 z; ValueError on NaN logits when called eagerly.
    """
    logits = tf.convert_to_tensor(logits)
    if tf.executing_eagerly() and bool(tf.reduce_any(tf.math.is_nan(logits))):
        raise ValueError("logits contain NaN; a Dirichlet needs finite (or ±inf) logits.")
    return _straight_through_clip(logits, tf.cast(bound, logits.dtype))


def alpha_from_logits(logits, bound=LOG_ALPHA_BOUND):
    """α = exp(z), z clipped straight-through to [−bound, bound]."""
    return tf.exp(log_alpha_from_logits(logits, bound))


# Above this argument h(a) below uses its asymptotic series (error < 1e-10 at a = 10).
STIRLING_THRESHOLD = 10.0


def lgamma_minus_a_digamma_plus_a(a):
    """h(a) = lnΓ(a) − a·ψ(a) + a, accurate for every a > 0 (no cancellation for large a).

    For a ≥ 10 the Stirling series of lnΓ and ψ gives
      h(a) = ½ ln(2π) + ½ − ½ ln a + 1/(6a) − 1/(90a³) + 1/(210a⁵) − 1/(210a⁷)
             + O(a⁻⁹),
    so h stays of order ln a where lnΓ(a) and a·ψ(a) are each of order a·ln a.
    Both branches get safe arguments, so gradients stay finite through ``tf.where``.
    """
    dtype = a.dtype
    threshold = tf.constant(STIRLING_THRESHOLD, dtype)
    large = a >= threshold
    a_large = tf.where(large, a, threshold)
    a_small = tf.where(large, tf.ones_like(a), a)
    direct = tf.math.lgamma(a_small) - a_small * tf.math.digamma(a_small) + a_small
    inv = 1.0 / a_large
    inv2 = inv * inv
    series = (
        0.5 * np.log(2.0 * np.pi)
        + 0.5
        - 0.5 * tf.math.log(a_large)
        + inv * (1.0 / 6.0 + inv2 * (-1.0 / 90.0 + inv2 * (1.0 / 210.0 - inv2 / 210.0)))
    )
    return tf.where(large, series, direct)


def log_minus_digamma_of_next(a):
    """g(a) = ln a − ψ(a + 1), accurate for every a > 0 (g → 0 as a grows; no cancellation).

    For a ≥ 10, from ψ(a + 1) = ψ(a) + 1/a and the asymptotic series of ψ,
      g(a) = −1/(2a) + 1/(12a²) − 1/(120a⁴) + 1/(252a⁶) + O(a⁻⁸)   (error < 1e-10 at a = 10);
    below, the direct difference (both terms of order 1).  Both branches get safe arguments,
    so gradients stay finite through ``tf.where``.
    """
    dtype = a.dtype
    threshold = tf.constant(STIRLING_THRESHOLD, dtype)
    large = a >= threshold
    a_large = tf.where(large, a, threshold)
    a_small = tf.where(large, tf.ones_like(a), a)
    direct = tf.math.log(a_small) - tf.math.digamma(a_small + 1.0)
    inv = 1.0 / a_large
    inv2 = inv * inv
    series = -0.5 * inv + inv2 * (1.0 / 12.0 + inv2 * (-1.0 / 120.0 + inv2 / 252.0))
    return tf.where(large, series, direct)
