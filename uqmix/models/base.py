"""The contract every uqmix model follows: ``predictive(x, num_samples)``.

A model subclasses ``keras.Model`` and this mixin, and implements one method,
``predictive_parameters(x, num_samples, training=False)``: a differentiable,
graph-safe function of a batch that returns the tensor its ``Predictive`` is
built from (``predictive_kind`` says which):

* ``"sampled_logits"``: logits [S, B, K] → ``SampledPredictive.from_logits``
* ``"dirichlet_logits"``: logits z [B, K] with α = exp(z) → ``DirichletPredictive.from_logits``

From it the mixin derives
* ``predictive_on_batch(x, num_samples)`` — differentiable, for attacks and
  losses, usable inside ``tf.function``;
* ``predictive(x, num_samples, batch_size)`` — for evaluation: runs a compiled
  function batch by batch (memory does not grow with the data set beyond the
  [S, N, K] result) and joins the batches into one ``Predictive``.
"""

import numpy as np
import tensorflow as tf

from uqmix.layers import full_precision
from uqmix.predictive import DirichletPredictive, SampledPredictive

_KINDS = {
    "sampled_logits": lambda t: SampledPredictive.from_logits(t, validate=False),
    "dirichlet_logits": lambda t: DirichletPredictive.from_logits(t, validate=False),
}


class PredictiveModelMixin:
    """Mixin for ``keras.Model`` subclasses that answer ``predictive``."""

    predictive_kind = "sampled_logits"
    default_num_samples = 1

    def predictive_parameters(self, x, num_samples, training=False):  # pragma: no cover
        raise NotImplementedError

    def _resolve_num_samples(self, num_samples):
        num_samples = self.default_num_samples if num_samples is None else int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        return num_samples

    def predictive_on_batch(self, x, num_samples=None, training=False):
        """Differentiable ``Predictive`` of one batch (graph-safe)."""
        num_samples = self._resolve_num_samples(num_samples)
        params = self.predictive_parameters(x, num_samples, training=training)
        return self.predictive_from_parameters(params)

    def predictive_from_parameters(self, params):
        """Wraps the output of ``predictive_parameters`` in its ``Predictive`` type (float32
        under mixed precision: the measures are computed in full precision)."""
        return _KINDS[self.predictive_kind](full_precision(params))

    def _predictive_jit_compile(self):
        """XLA for ``predictive``: the model's ``compile(jit_compile=...)`` setting (False
        for a model never compiled, and for Keras' "auto" on a CPU-only machine)."""
        setting = getattr(self, "_jit_compile", None)
        return bool(setting) if isinstance(setting, bool) else False

    def _prediction_parameters(self, x, num_samples):
        """What ``predictive`` computes per batch (inside its ``tf.function``): by default
        ``predictive_parameters``; a model may split it into cheaper compiled parts."""
        return self.predictive_parameters(x, num_samples, training=False)

    def _compiled_predictive_parameters(self, num_samples):
        jit_compile = self._predictive_jit_compile()
        cache = self.__dict__.setdefault("_uqmix_predict_fns", {})
        key = (num_samples, jit_compile)
        if key not in cache:
            cache[key] = tf.function(
                lambda x: self._prediction_parameters(x, num_samples),
                reduce_retracing=True,
                jit_compile=jit_compile,
            )
        return cache[key]

    def predictive(self, x, num_samples=None, batch_size=500, validate=True):
        """``Predictive`` of all of ``x``, computed in batches of ``batch_size``.

        Each batch is one ``tf.function`` call, compiled with XLA when the model was
        compiled with ``jit_compile=True``.

        x: array or tensor [N, ...] of inputs (images in [0, 1]).
        num_samples: S for stochastic models (ignored by closed-form ones).
        """
        num_samples = self._resolve_num_samples(num_samples)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if validate:
            x_np = x.numpy() if isinstance(x, tf.Tensor) else np.asarray(x)
            if x_np.ndim < 2:
                raise ValueError(f"x must have a batch axis and features, got shape {x_np.shape}.")
            if not np.all(np.isfinite(x_np)):
                raise ValueError("x contains NaN or Inf values.")
        fn = self._compiled_predictive_parameters(num_samples)
        total = int(x.shape[0])
        parts = []
        for start in range(0, total, batch_size):
            batch = tf.convert_to_tensor(x[start : start + batch_size], dtype=tf.float32)
            parts.append(fn(batch))
        if not parts:
            raise ValueError("x is empty.")
        axis = 1 if self.predictive_kind == "sampled_logits" else 0
        return self.predictive_from_parameters(tf.concat(parts, axis=axis))
