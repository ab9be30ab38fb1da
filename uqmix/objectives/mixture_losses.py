"""ML and VI (ELBO) objectives of infinite mixtures, per mini-batch.

Notation (DESIGN.md): B examples, S weight samples θ_s, dataset size N,
ℓ_bs = log p(y_b | x_b, θ_s), KL = Σ_layers KL(q ‖ p).

* VI (ELBO):  loss = mean_b[ −(1/S) Σ_s ℓ_bs ]              + (λ/N)·KL
* ML:         loss = mean_b[ −logsumexp_s ℓ_bs + log S ]     + (λ/N)·KL

λ = 1 is exact VI; with S = 1 the two objectives coincide.

The per-example data terms are exposed separately (``per_example_nll``) so a
custom ``train_step`` can average them over the *global* batch under a
``tf.distribute`` strategy (``tf.nn.compute_average_loss``) and add the KL
term once (``tf.nn.scale_regularization_loss``).
"""

import math

import tensorflow as tf

OBJECTIVES = ("ml", "vi")


def check_objective(objective):
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    return objective


def check_kl_scale(kl_weight, dataset_size):
    """Validates λ ≥ 0 and N ≥ 1 (finite numbers)."""
    if not (isinstance(kl_weight, (int, float)) and math.isfinite(kl_weight) and kl_weight >= 0):
        raise ValueError(f"kl_weight (λ) must be a finite number >= 0, got {kl_weight}.")
    if int(dataset_size) != dataset_size or dataset_size < 1:
        raise ValueError(f"dataset_size (N) must be a positive integer, got {dataset_size}.")


def _checked_range(labels, num_classes):
    """``labels`` after checking 0 ≤ y < K: a ValueError eagerly, an assertion in a graph
    (the cross-entropy op would fail with an opaque error on CPU and give NaN on GPU)."""
    num_classes = tf.cast(num_classes, labels.dtype)
    in_range = tf.reduce_all((labels >= 0) & (labels < num_classes))
    message = "labels must be class indices in [0, num_classes)"
    if tf.executing_eagerly():
        if not bool(in_range):
            bad = labels.numpy()[(labels.numpy() < 0) | (labels.numpy() >= int(num_classes))]
            raise ValueError(f"{message} = [0, {int(num_classes)}); got {bad[:5].tolist()}.")
        return labels
    with tf.control_dependencies([tf.debugging.Assert(in_range, [message])]):
        return tf.identity(labels)


def sample_log_likelihoods(labels, logits):
    """ℓ_sb = log softmax(logits_sb)[y_b], [S, B], from int labels [B] and logits [S, B, K]."""
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer:
        # Float labels must be whole numbers: truncating 2.7 to class 2 would be a silent
        # wrong loss.
        message = "labels must be integer class indices, got non-integer values."
        if tf.executing_eagerly():
            if not tf.reduce_all(tf.equal(labels, tf.round(labels))):
                raise ValueError(message)
        else:
            with tf.control_dependencies(
                [tf.debugging.assert_equal(labels, tf.round(labels), message=message)]
            ):
                labels = tf.identity(labels)
        labels = tf.cast(labels, tf.int32)
    if labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = labels[:, 0]
    labels = _checked_range(labels, tf.shape(logits)[-1])
    labels = tf.broadcast_to(labels[None], tf.shape(logits)[:-1])
    return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def per_example_nll(log_likelihoods, objective):
    """The data term per example, [B], from ℓ [S, B].

    "vi": −(1/S) Σ_s ℓ_bs;  "ml": −logsumexp_s ℓ_bs + log S (the NLL of the S-sample mixture).
    """
    check_objective(objective)
    if objective == "vi":
        return -tf.reduce_mean(log_likelihoods, axis=0)
    num_samples = tf.cast(tf.shape(log_likelihoods)[0], log_likelihoods.dtype)
    return -(tf.reduce_logsumexp(log_likelihoods, axis=0) - tf.math.log(num_samples))


def kl_term(kl, kl_weight, dataset_size):
    """(λ/N)·KL."""
    return (kl_weight / dataset_size) * kl


def mixture_loss(log_likelihoods, kl, objective, kl_weight, dataset_size):
    """The per-batch loss: mean_b[per_example_nll] + (λ/N)·KL (scalar)."""
    check_kl_scale(kl_weight, dataset_size)
    nll = tf.reduce_mean(per_example_nll(log_likelihoods, objective))
    return nll + kl_term(tf.cast(kl, nll.dtype), kl_weight, dataset_size)
