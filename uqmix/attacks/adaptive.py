"""Adaptive attack criteria for Prior Networks (Malinin & Gales 2019) as ``loss_fn``s.

The attacker wants the prediction at x' to look like a *confident* prediction
of a target class t (the clean input's second most likely class): take the
clean output and swap its top class c with t,

    π_adv = π̂(x) with entries c and t exchanged,   α_adv = α(x) likewise,

and minimise, over x' in the ε-ball,

    KL-PMF = KL(π_adv ‖ π̂(x')) = Σ_k π_adv,k (log π_adv,k − log π̂_k(x'))
    KL-DIR = KL(Dir(α_adv) ‖ Dir(α(x'))).

Both are 0 exactly when the output at x' equals the swapped clean output and
positive otherwise.  Interface (cleverhans' ``loss_fn(labels, logits)``):

* the constructors close over the clean output: ``kl_pmf_loss(clean_probs)``,
  ``kl_dir_loss(clean_alpha)`` (arrays [B, K] or a ``Predictive``);
* ``labels`` are the target classes t [B] — pass them as ``y`` with
  ``targeted=True``, so the attack *descends* the criterion;
* KL-PMF takes any logits whose softmax is the prediction (``log p̄`` from
  ``predictive_logits_fn``, or a Prior Network's z); KL-DIR needs the
  Dirichlet logits z (``dirichlet_logits_fn``), α(x') = exp z guarded by
  ``uqmix.dirichlet.alpha_from_logits``.

They are ``BoundLoss``es: a new clean batch with the same criterion reuses the
attack's compiled trace.
"""

import numpy as np
import tensorflow as tf

from uqmix import dirichlet
from uqmix.attacks import checks
from uqmix.attacks.losses import BoundLoss
from uqmix.objectives.dirichlet_losses import dirichlet_kl
from uqmix.predictive import DirichletPredictive, Predictive


def second_most_likely_class(probs):
    """The adaptive attacks' target: the index of the second largest entry of each row, [B]."""
    if isinstance(probs, Predictive):
        probs = probs.mean()
    probs = tf.convert_to_tensor(probs)
    if probs.shape.rank != 2 or probs.shape[-1] is None or probs.shape[-1] < 2:
        raise ValueError(f"probs must have shape [batch, classes >= 2], got {probs.shape}.")
    return tf.math.top_k(probs, k=2).indices[:, 1]


def swap_top_and_target(values, target):
    """values [B, K] with, per row, the argmax entry and the ``target`` entry exchanged.

    A row whose target is its argmax is returned unchanged.  Exact (a gather,
    no arithmetic).
    """
    values = tf.convert_to_tensor(values)
    num_classes = values.shape[-1]
    target = checks.assert_class_labels(tf.cast(target, tf.int32), num_classes)
    top = tf.argmax(values, axis=-1, output_type=tf.int32)
    classes = tf.range(num_classes, dtype=tf.int32)[None, :]
    source = tf.where(
        classes == top[:, None],
        target[:, None],
        tf.where(classes == target[:, None], top[:, None], classes),
    )
    return tf.gather(values, source, axis=-1, batch_dims=1)


def _clean_values(value, name, positive):
    array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if array.ndim != 2 or array.shape[-1] < 2:
        raise ValueError(f"{name} must have shape [batch, classes >= 2], got {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf values.")
    if positive and np.any(array <= 0):
        raise ValueError(f"{name} must be positive (Dirichlet concentrations).")
    if not positive:
        if np.any(array < 0) or np.max(np.abs(array.sum(-1) - 1.0)) > 1e-3:
            raise ValueError(f"{name} must be probabilities (non-negative rows summing to 1).")
    dtype = np.float64 if array.dtype == np.float64 else np.float32
    return tf.convert_to_tensor(array.astype(dtype))


# Plain tensor code: no AutoGraph conversion needed (it also keeps AutoGraph away
# from the helpers these call).
@tf.autograph.experimental.do_not_convert
def _kl_pmf(clean_probs, labels, logits):
    """KL(π_adv ‖ softmax(logits)), π_adv = swap_top_and_target(clean_probs, labels)."""
    target_probs = tf.cast(swap_top_and_target(clean_probs, labels), logits.dtype)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    return tf.reduce_sum(
        tf.math.xlogy(target_probs, target_probs) - target_probs * log_probs, axis=-1
    )


@tf.autograph.experimental.do_not_convert
def _kl_dir(clean_alpha, labels, logits):
    """KL(Dir(α_adv) ‖ Dir(exp z)), α_adv = swap_top_and_target(clean_alpha, labels)."""
    target_alpha = tf.cast(swap_top_and_target(clean_alpha, labels), logits.dtype)
    return dirichlet_kl(target_alpha, dirichlet.alpha_from_logits(logits))


def kl_pmf_loss(clean_probs):
    """KL-PMF criterion; ``clean_probs`` [B, K] (or a ``Predictive``: its mean). See module doc."""
    if isinstance(clean_probs, Predictive):
        clean_probs = clean_probs.mean()
    return BoundLoss(_kl_pmf, _clean_values(clean_probs, "clean_probs", positive=False))


def kl_dir_loss(clean_alpha):
    """KL-DIR criterion; ``clean_alpha`` [B, K] (or a ``DirichletPredictive``). See module doc."""
    if isinstance(clean_alpha, Predictive):
        if not isinstance(clean_alpha, DirichletPredictive):
            raise ValueError("kl_dir_loss needs a DirichletPredictive (a Prior Network's output).")
        clean_alpha = clean_alpha.alpha
    return BoundLoss(_kl_dir, _clean_values(clean_alpha, "clean_alpha", positive=True))
