"""Concentration parameters from network outputs: α = exp(z), guarded.

A Prior Network outputs logits z and predicts Dir(α) with α = exp(z).  For
|z| beyond ``LOG_ALPHA_BOUND`` float32 arithmetic on lnΓ/ψ of α and α0 starts
to lose all precision (and exp overflows at z ≈ 88), so the forward value uses
z clipped to [−B, B].  The clip is *straight-through*: its gradient is the
identity, so a network whose logits drift past the bound still receives the
gradient of the clipped objective and is pulled back, instead of a zero
gradient from ``tf.clip_by_value``.  Inside the bound α = exp(z) exactly.
"""

import tensorflow as tf

# exp(±30) ≈ 1e±13: α0 ≤ K·1e13 keeps lnΓ(α0) ≈ 3e14 and ψ(α) ≥ −1e13 finite
# in float32, with every KL/measure finite for logits in [−100, 100].
LOG_ALPHA_BOUND = 30.0


def log_alpha_from_logits(logits, bound=LOG_ALPHA_BOUND):
    """log α = clip(z, −bound, bound) with a straight-through (identity) gradient."""
    logits = tf.convert_to_tensor(logits)
    clipped = tf.clip_by_value(logits, -bound, bound)
    return logits + tf.stop_gradient(clipped - logits)


def alpha_from_logits(logits, bound=LOG_ALPHA_BOUND):
    """α = exp(z), z clipped straight-through to [−bound, bound]."""
    return tf.exp(log_alpha_from_logits(logits, bound))
