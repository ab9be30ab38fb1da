"""The per-norm rules of gradient attacks, as cleverhans 4.0 applies them.

All functions work on a batch: axis 0 indexes examples, every other axis is
one example's input, and norms are taken over those axes.

* ``optimize_linear(grad, eps, norm)`` — the maximiser of ⟨η, grad⟩ over
  ‖η‖ ≤ eps:
    L∞: eps · sign(grad)
    L1: eps · sign(grad) · 1[|grad| = max|grad|] / #ties  (all tied coordinates share eps)
    L2: eps · grad / sqrt(max(1e-12, Σ grad²))
* ``clip_eta(eta, norm, eps)`` — back into the ε-ball (clip, never normalise
  onto the sphere):
    L∞: clip(eta, −eps, eps)
    L2: eta · min(1, eps / sqrt(max(1e-12, Σ eta²)))
* ``random_lp_vector(shape, norm, eps, seed)`` — uniform in the ε-ball,
  stateless (same seed, same vector):
    L∞: U(−eps, eps) per coordinate
    L2: eps · w^(1/d) · n/‖n‖ with n ~ N(0, I_d), w ~ U(0, 1) (Calafiore et al. 1998)

The 1e-12 guards sit where cleverhans puts them (inside the square root), so
the results agree with cleverhans to the last bit in float32.
"""

import numpy as np
import tensorflow as tf

AVOID_ZERO_DIV = 1e-12
SUPPORTED_NORMS = (np.inf, 1, 2)


def canonical_norm(norm, allowed=SUPPORTED_NORMS, attack="this attack"):
    """np.inf, 1 or 2 from any spelling of them (np.inf, "inf", 1, 2.0, …); else ValueError."""
    if isinstance(norm, str):
        norm = norm.strip().lower()
        norm = np.inf if norm in ("inf", "linf", "l_inf", "infinity") else norm
    try:
        value = float(norm)
    except (TypeError, ValueError):
        value = None
    canonical = {np.inf: np.inf, 1.0: 1, 2.0: 2}.get(value)
    if canonical is None or canonical not in allowed:
        names = ", ".join("np.inf" if n == np.inf else str(n) for n in allowed)
        raise ValueError(f"norm must be one of {names} for {attack}, got {norm!r}.")
    return canonical


def _example_axes(tensor):
    return list(range(1, tensor.shape.rank))


def optimize_linear(grad, eps, norm=np.inf):
    """argmax_{‖η‖_norm ≤ eps} ⟨η, grad⟩ per example (formulas in the module docstring)."""
    norm = canonical_norm(norm)
    axes = _example_axes(grad)
    if norm == np.inf:
        direction = tf.stop_gradient(tf.sign(grad))
    elif norm == 1:
        abs_grad = tf.abs(grad)
        max_abs = tf.reduce_max(abs_grad, axes, keepdims=True)
        tied = tf.cast(tf.equal(abs_grad, max_abs), grad.dtype)
        direction = tf.sign(grad) * tied / tf.reduce_sum(tied, axes, keepdims=True)
    else:
        squared = tf.maximum(
            tf.cast(AVOID_ZERO_DIV, grad.dtype), tf.reduce_sum(tf.square(grad), axes, keepdims=True)
        )
        direction = grad / tf.sqrt(squared)
    return tf.multiply(tf.cast(eps, grad.dtype), direction)


def clip_eta(eta, norm, eps):
    """Projection of the perturbation into the ε-ball: clipping for L∞, rescaling for L2."""
    norm = canonical_norm(norm, allowed=(np.inf, 2), attack="clip_eta")
    eps = tf.cast(eps, eta.dtype)
    if norm == np.inf:
        return tf.clip_by_value(eta, -eps, eps)
    squared = tf.maximum(
        tf.cast(AVOID_ZERO_DIV, eta.dtype),
        tf.reduce_sum(tf.square(eta), _example_axes(eta), keepdims=True),
    )
    factor = tf.minimum(tf.cast(1.0, eta.dtype), tf.math.divide(eps, tf.sqrt(squared)))
    return eta * factor


def random_lp_vector(shape, norm, eps, seed, dtype=tf.float32):
    """A batch of vectors uniform in the ε-ball of ``norm`` (np.inf or 2), stateless.

    shape: [B, d1, d2, …] (a TensorShape, list or 1-D int tensor).
    eps: radius, scalar or broadcastable to [B, 1, …, 1].
    seed: int tensor of shape [2] (``tf.random.stateless_*`` convention).
    """
    norm = canonical_norm(norm, allowed=(np.inf, 2), attack="random_lp_vector")
    shape = tf.convert_to_tensor(shape, dtype=tf.int32)
    eps = tf.cast(eps, dtype)
    if norm == np.inf:
        unit = tf.random.stateless_uniform(shape, seed=seed, minval=-1.0, maxval=1.0, dtype=dtype)
        return eps * unit
    direction_seed, radius_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    dim = tf.reduce_prod(shape[1:])
    gaussian = tf.random.stateless_normal(
        tf.stack([shape[0], dim]), seed=direction_seed, dtype=dtype
    )
    length = tf.sqrt(tf.reduce_sum(tf.square(gaussian), axis=-1, keepdims=True))
    radius = tf.pow(
        tf.random.stateless_uniform(tf.stack([shape[0], 1]), seed=radius_seed, dtype=dtype),
        1.0 / tf.cast(dim, dtype),
    )
    return eps * tf.reshape(radius * gaussian / length, shape)
