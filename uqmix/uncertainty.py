"""Uncertainty measures of a distribution over categorical distributions.

Pure tensor functions, graph-safe (usable inside ``tf.function`` and under
``tf.GradientTape``).  ``uqmix.predictive`` wraps them in the ``Predictive``
classes; use those unless you need a single measure on raw tensors.

Notation: K classes, B examples, S samples (mixture components).

Sampled (``log_probs`` [S, B, K], p_s = exp(log_probs[s]), p̄ = mean_s p_s):

* total uncertainty           H[p̄] = −Σ_k p̄_k log p̄_k
* expected data uncertainty   E_s H[p_s] = −(1/S) Σ_s Σ_k p_sk log p_sk
* mutual information          H[p̄] − E_s H[p_s]           (≥ 0, Jensen)
* class variance              (1/S) Σ_s p_sk² − p̄_k²       ([B, K])
* predictive variance         max_k class variance
* EPKL                        E_{s,s'} KL(p_s ‖ p_s')
                              = −Σ_k p̄_k E_s[log p_sk] − E_s H[p_s]
  (s and s' independent draws from the same S samples, pairs s = s'
  included, which contribute zero)
* max probability             max_k p̄_k

Dirichlet (``alpha`` [B, K], α0 = Σ_k α_k, p = α / α0):

* total uncertainty           −Σ_k p_k log p_k
* expected data uncertainty   −Σ_k p_k [ψ(α_k + 1) − ψ(α0 + 1)]
* mutual information          total − expected data uncertainty
* EPKL                        (K − 1) / α0
* precision                   α0
* differential entropy        Σ_k lnΓ(α_k) − lnΓ(α0) − Σ_k (α_k − 1)(ψ(α_k) − ψ(α0))
* class variance              p_k (1 − p_k) / (α0 + 1)
"""

import tensorflow as tf

from uqmix import dirichlet

# Sign that turns each measure into a score where higher = more suspicious
# (more uncertain / more likely OOD, misclassified or adversarial).
SCORE_SIGN = {
    "total_uncertainty": 1.0,
    "expected_data_uncertainty": 1.0,
    "mutual_information": 1.0,
    "predictive_variance": 1.0,
    "epkl": 1.0,
    "max_probability": -1.0,
    "precision": -1.0,
    "differential_entropy": 1.0,
}


def entropy_from_log_probs(log_probs, axis=-1):
    """H[p] = −Σ_k p_k log p_k, with 0 · log 0 = 0 (log_probs may hold −inf)."""
    probs = tf.exp(log_probs)
    safe_log = tf.where(probs > 0, log_probs, tf.zeros_like(log_probs))
    return -tf.reduce_sum(probs * safe_log, axis=axis)


def log_mean_probs(log_probs):
    """log p̄ = logsumexp_s log p_s − log S, stable in the tails ([S, B, K] → [B, K])."""
    num_samples = tf.cast(tf.shape(log_probs)[0], log_probs.dtype)
    return tf.reduce_logsumexp(log_probs, axis=0) - tf.math.log(num_samples)


def sampled_total_uncertainty(log_probs):
    return entropy_from_log_probs(log_mean_probs(log_probs))


def sampled_expected_data_uncertainty(log_probs):
    return tf.reduce_mean(entropy_from_log_probs(log_probs), axis=0)


def sampled_mutual_information(log_probs):
    """H[p̄] − E_s H[p_s], clamped at 0 against round-off (it is ≥ 0 exactly)."""
    mi = sampled_total_uncertainty(log_probs) - sampled_expected_data_uncertainty(log_probs)
    return tf.maximum(mi, tf.zeros_like(mi))


def sampled_class_variance(log_probs):
    """Var_s[p_sk] = (1/S) Σ_s p_sk² − p̄_k², computed two-pass (no cancellation)."""
    probs = tf.exp(log_probs)
    mean = tf.reduce_mean(probs, axis=0, keepdims=True)
    return tf.reduce_mean(tf.square(probs - mean), axis=0)


def sampled_epkl(log_probs):
    """E_{s,s'} KL(p_s ‖ p_s') = −Σ_k p̄_k E_s[log p_sk] − E_s H[p_s].

    Terms with p̄_k = 0 contribute 0; a class with p̄_k > 0 but some p_sk = 0
    makes the EPKL infinite, as it is mathematically.
    """
    probs = tf.exp(log_probs)
    mean = tf.reduce_mean(probs, axis=0)
    mean_log = tf.reduce_mean(log_probs, axis=0)
    cross = -tf.reduce_sum(tf.where(mean > 0, mean * mean_log, tf.zeros_like(mean)), axis=-1)
    epkl = cross - sampled_expected_data_uncertainty(log_probs)
    return tf.maximum(epkl, tf.zeros_like(epkl))


def dirichlet_mutual_information(alpha):
    """I = H[p] − E[H[π]] = g(α0) − Σ_k p_k g(α_k),  g(a) = ln a − ψ(a + 1),  p = α / α0.

    (From −Σ_k p_k [ψ(α_k + 1) − ψ(α0 + 1)] = H[p] + Σ_k p_k g(α_k) − g(α0), using
    Σ_k p_k = 1.)  Written with g, which tends to 0 like −1/(2a), the terms stay small
    for confident predictions where H[p] and E[H[π]] are nearly equal: no cancellation
    (``uqmix.dirichlet.log_minus_digamma_of_next``).  Clamped at 0 against round-off.
    """
    g = dirichlet.log_minus_digamma_of_next
    alpha0 = tf.reduce_sum(alpha, axis=-1)
    probs = alpha / alpha0[..., None]
    mi = g(alpha0) - tf.reduce_sum(probs * g(alpha), axis=-1)
    return tf.maximum(mi, tf.zeros_like(mi))


def dirichlet_expected_data_uncertainty(alpha):
    """−Σ_k p_k [ψ(α_k + 1) − ψ(α0 + 1)], evaluated as H[p] − I (see above), ≥ 0."""
    log_probs = tf.math.log(alpha) - tf.math.log(tf.reduce_sum(alpha, axis=-1, keepdims=True))
    expected = entropy_from_log_probs(log_probs) - dirichlet_mutual_information(alpha)
    return tf.maximum(expected, tf.zeros_like(expected))


def dirichlet_differential_entropy(alpha):
    """Σ_k lnΓ(α_k) − lnΓ(α0) − Σ_k (α_k − 1)(ψ(α_k) − ψ(α0)), evaluated as the equal

        Σ_k h(α_k) − h(α0) + Σ_k (ψ(α_k) − ψ(α0)),   h(a) = lnΓ(a) − a ψ(a) + a,

    whose terms are of order ln α rather than α ln α (no float32 cancellation for
    confident predictions; ``uqmix.dirichlet.lgamma_minus_a_digamma_plus_a``).
    """
    h = dirichlet.lgamma_minus_a_digamma_plus_a
    alpha0 = tf.reduce_sum(alpha, axis=-1)
    return (
        tf.reduce_sum(h(alpha), axis=-1)
        - h(alpha0)
        + tf.reduce_sum(tf.math.digamma(alpha) - tf.math.digamma(alpha0)[..., None], axis=-1)
    )


def dirichlet_class_variance(alpha):
    alpha0 = tf.reduce_sum(alpha, axis=-1, keepdims=True)
    probs = alpha / alpha0
    return probs * (1.0 - probs) / (alpha0 + 1.0)


def dirichlet_epkl(alpha):
    num_classes = tf.cast(tf.shape(alpha)[-1], alpha.dtype)
    return (num_classes - 1.0) / tf.reduce_sum(alpha, axis=-1)
