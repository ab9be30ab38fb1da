"""Attack losses: the cleverhans default, losses bound to tensors, and EOT averaging.

Every loss follows cleverhans' convention ``loss_fn(labels, logits) -> [B]``
(called with the keywords ``labels=`` and ``logits=``), one value per example;
untargeted attacks ascend it, targeted attacks descend it.

``BoundLoss(fn, *context)`` is a loss that needs tensors beyond labels and
logits (e.g. the clean output of an adaptive attack): it computes
``fn(*context, labels=labels, logits=logits)``.  The attacks hand ``fn`` and
the context tensors to their compiled function separately, so attacking batch
after batch with the same ``fn`` reuses one trace (a plain closure over
different tensors would be traced again for every batch).

Expectation over transformation (EOT, Athalye et al. 2018) versus the log of
the mean prediction, for a stochastic model with samples p_s(x), s = 1..S:

* ``predictive_logits_fn`` (uqmix.attacks.model_fns) differentiates the loss
  of the mixture, −log p̄_y with p̄ = (1/S) Σ_s p_s:
  ∇ = −Σ_s p_s,y ∇log p_s,y / Σ_s p_s,y — samples that give y a high
  probability dominate.
* ``expectation_over_samples(loss_fn)`` with ``sample_logits_fn`` averages
  the per-sample losses, (1/S) Σ_s −log p_s,y:
  ∇ = −(1/S) Σ_s ∇log p_s,y — every sample has the same weight.
Both are one vectorised model call over [S, B, …]; with S = 1 they coincide.
"""

import weakref

import tensorflow as tf

from uqmix.attacks import checks


def cross_entropy(labels, logits):
    """Cleverhans' default loss: sparse softmax cross-entropy −log softmax(logits)_y, [B].

    Labels are checked in-graph to lie in [0, K).
    """
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank != 2:
        raise ValueError(
            f"The default loss needs logits of shape [batch, classes], got {logits.shape}; "
            "for per-sample logits [S, B, K] wrap the loss with expectation_over_samples()."
        )
    labels = checks.assert_class_labels(labels, logits.shape[-1])
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


class BoundLoss:
    """loss(labels, logits) = fn(*context, labels=labels, logits=logits), context = tensors."""

    def __init__(self, fn, *context):
        if not callable(fn):
            raise ValueError(f"BoundLoss needs a callable fn, got {fn!r}.")
        self.fn = fn
        self.context = tuple(tf.convert_to_tensor(c) for c in context)

    def __call__(self, labels, logits):
        return self.fn(*self.context, labels=labels, logits=logits)


def split_loss(loss_fn):
    """(static callable, context tensors) for the compiled attack; None → cross_entropy."""
    if loss_fn is None:
        return cross_entropy, ()
    if isinstance(loss_fn, BoundLoss):
        return loss_fn.fn, loss_fn.context
    if not callable(loss_fn):
        raise ValueError(
            f"loss_fn must be a callable loss_fn(labels, logits) -> [batch], got {loss_fn!r}."
        )
    return loss_fn, ()


def bind(static_fn, context):
    """Inverse of ``split_loss`` inside the compiled function."""
    if not context:
        return static_fn
    return lambda labels, logits: static_fn(*context, labels=labels, logits=logits)


def per_example_loss(loss_fn, labels, logits):
    """loss_fn(labels=…, logits=…) checked to be one value per example, [B]."""
    loss = loss_fn(labels=labels, logits=logits)
    loss = tf.convert_to_tensor(loss)
    if loss.shape.rank != 1:
        raise ValueError(
            f"loss_fn must return one loss per example (shape [batch]), got shape {loss.shape}."
        )
    return loss


def _sample_average(inner, context, labels, logits):
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank != 3:
        raise ValueError(
            "expectation_over_samples needs per-sample logits [S, B, K] (use "
            f"sample_logits_fn as model_fn), got shape {logits.shape}."
        )
    loss = bind(inner, context)
    per_sample = tf.vectorized_map(
        lambda sample_logits: per_example_loss(loss, labels, sample_logits),
        logits,
        fallback_to_while_loop=True,
    )
    return tf.reduce_mean(per_sample, axis=0)


# One averaging function per inner loss, so repeated wrapping of the same loss
# gives the same callable (and reuses the attack's compiled trace).
_AVERAGED = weakref.WeakKeyDictionary()


def _averaged(inner):
    try:
        return _AVERAGED[inner]
    except (KeyError, TypeError):
        pass

    def averaged(*context, labels, logits):
        return _sample_average(inner, context, labels, logits)

    averaged.__name__ = f"expectation_over_samples_{getattr(inner, '__name__', 'loss')}"
    try:
        _AVERAGED[inner] = averaged
    except TypeError:
        pass
    return averaged


def expectation_over_samples(loss_fn=None):
    """EOT loss over per-sample logits [S, B, K]: (1/S) Σ_s loss_fn(labels, logits[s]), [B].

    Use with ``model_fn = sample_logits_fn(model, S)``; ``loss_fn`` (default
    cross-entropy, or any per-example loss incl. a ``BoundLoss``) is applied to
    every sample in one vectorised computation (``tf.vectorized_map``).  See the
    module docstring for how this differs from attacking the mean prediction.
    """
    inner, context = split_loss(loss_fn)
    return BoundLoss(_averaged(inner), *context)
