"""The one output type of every uqmix model: a distribution over categoricals.

* ``SampledPredictive(probs[S, B, K])`` — a mixture of S categorical
  distributions per example (matrix-normal BNN samples, MC-dropout masks,
  ensemble members; a deterministic network is S = 1).
* ``DirichletPredictive(alpha[B, K])`` — a Prior Network's Dir(α), closed form.

Both give ``mean()`` / ``log_mean()`` ([B, K]; ``log_mean`` is the numerically
stable log of the mean prediction, the logits an attack differentiates), the
uncertainty measures of ``uqmix.uncertainty`` as [B] tensors, and
``measures()``, a dict of all of them keyed by name.  Evaluation, detection
metrics, attacks and plots are written once against this type.

Inputs may be NumPy arrays or tensors, float32 or float64 (the dtype is
kept).  With ``validate=True`` (the default) bad input raises ``ValueError``
in eager mode (wrong rank, NaN/Inf, non-positive α, probabilities that are
negative or do not sum to 1 within ``sum_tolerance``); inside a
``tf.function`` the same checks are ``tf.debugging`` assertions.
"""

import numpy as np
import tensorflow as tf

from uqmix import dirichlet, uncertainty

SAMPLED_MEASURES = (
    "total_uncertainty",
    "expected_data_uncertainty",
    "mutual_information",
    "predictive_variance",
    "epkl",
    "max_probability",
)
DIRICHLET_MEASURES = SAMPLED_MEASURES + ("precision", "differential_entropy")


def _as_float_tensor(value, name):
    if isinstance(value, (tf.Tensor, tf.Variable)):
        tensor = tf.convert_to_tensor(value)
    else:
        array = np.asarray(value)
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}.")
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        tensor = tf.convert_to_tensor(array)
    if tensor.dtype in (tf.float16, tf.bfloat16):
        tensor = tf.cast(tensor, tf.float32)
    if tensor.dtype not in (tf.float32, tf.float64):
        raise ValueError(f"{name} must be float32 or float64, got {tensor.dtype.name}.")
    return tensor


def _check_rank(tensor, rank, name, layout):
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(f"{name} must have rank {rank} ({layout}), got shape {tensor.shape}.")
    if tensor.shape.rank is not None and tensor.shape[-1] is not None and tensor.shape[-1] < 2:
        raise ValueError(f"{name} needs at least 2 classes in its last axis, got {tensor.shape}.")


def _check_finite(tensor, name):
    if tf.executing_eagerly():
        if not np.all(np.isfinite(tensor.numpy())):
            raise ValueError(f"{name} contains NaN or Inf values.")
        return tensor
    return tf.debugging.assert_all_finite(tensor, f"{name} contains NaN or Inf values.")


def _samples_first(tensor, sample_axis, name):
    """``tensor`` [.., S at ``sample_axis``, ..] of rank 3 → samples-first [S, B, K].

    sample_axis: 0 (uqmix's [S, B, K], the default) or 1 (Keras' batch-first [B, S, K]);
    −3 and −2 name the same axes.
    """
    if sample_axis not in (0, 1, -3, -2):
        raise ValueError(
            f"sample_axis must be 0 ([num_samples, batch, num_classes]) or 1 "
            f"([batch, num_samples, num_classes]), got {sample_axis!r}."
        )
    _check_rank(
        tensor,
        3,
        name,
        "[num_samples, batch, num_classes] or, with sample_axis=1, "
        "[batch, num_samples, num_classes]",
    )
    return tensor if sample_axis in (0, -3) else tf.transpose(tensor, [1, 0, 2])


class Predictive:
    """Base class: what every predictive distribution answers.

    Subclasses implement ``mean``, ``log_mean``, ``class_variance``,
    ``total_uncertainty``, ``expected_data_uncertainty``, ``epkl`` and the
    batching helpers; the rest is derived here.
    """

    measure_names = SAMPLED_MEASURES

    # -- derived measures -------------------------------------------------
    def mutual_information(self):
        """Knowledge uncertainty: total − expected data uncertainty (≥ 0)."""
        mi = self.total_uncertainty() - self.expected_data_uncertainty()
        return tf.maximum(mi, tf.zeros_like(mi))

    def predictive_variance(self):
        """max_k of ``class_variance()`` (variance between components per class)."""
        return tf.reduce_max(self.class_variance(), axis=-1)

    def max_probability(self):
        return tf.reduce_max(self.mean(), axis=-1)

    def predicted_class(self):
        """argmax_k p̄_k as int64 [B]."""
        return tf.argmax(self.mean(), axis=-1)

    def measures(self):
        """All uncertainty measures as a dict name → [B] tensor."""
        return {name: getattr(self, name)() for name in self.measure_names}

    def scores(self):
        """``measures()`` signed so that higher = more suspicious (see SCORE_SIGN)."""
        return {
            name: value * uncertainty.SCORE_SIGN[name] for name, value in self.measures().items()
        }

    @property
    def num_classes(self):
        return self.mean().shape[-1]

    @property
    def dtype(self):
        return self.mean().dtype

    def __len__(self):
        return int(self.batch_size)


class SampledPredictive(Predictive):
    """A finite mixture of categoricals per example: probs [S, B, K].

    Internally the log-probabilities are kept, so ``from_logits`` gives a
    ``log_mean`` = logsumexp_s log p_s − log S that is exact and has finite
    gradients even where some probabilities underflow to zero.
    """

    measure_names = SAMPLED_MEASURES

    def __init__(self, probs, validate=True, sum_tolerance=1e-3, _log_probs=None):
        samples = (_log_probs if _log_probs is not None else tf.convert_to_tensor(probs)).shape
        if samples.rank and samples[0] == 0:
            raise ValueError(
                "a SampledPredictive needs at least one sample (probs of shape "
                f"[num_samples >= 1, batch, num_classes]), got shape {samples}."
            )
        if _log_probs is not None:
            self._log_probs = _log_probs
            self._probs = None
            return
        probs = _as_float_tensor(probs, "probs")
        _check_rank(probs, 3, "probs", "[num_samples, batch, num_classes]")
        if validate:
            probs = self._validate_probs(probs, sum_tolerance)
        self._probs = probs
        self._log_probs = tf.math.log(probs)

    @staticmethod
    def _validate_probs(probs, sum_tolerance):
        total = tf.reduce_sum(probs, axis=-1)
        if tf.executing_eagerly():
            values = probs.numpy()
            if not np.all(np.isfinite(values)):
                raise ValueError("probs contains NaN or Inf values.")
            if np.any(values < 0):
                raise ValueError("probs contains negative values.")
            worst = np.max(np.abs(total.numpy() - 1.0)) if values.size else 0.0
            if worst > sum_tolerance:
                raise ValueError(
                    f"probs must sum to 1 over the last axis (within {sum_tolerance}); "
                    f"the worst row is off by {worst:.3g}. Pass softmax outputs, not logits "
                    "(or use SampledPredictive.from_logits)."
                )
            return probs
        checks = [
            tf.debugging.assert_all_finite(probs, "probs contains NaN or Inf values."),
            tf.debugging.assert_non_negative(probs, message="probs contains negative values."),
            tf.debugging.assert_near(
                total,
                tf.ones_like(total),
                atol=sum_tolerance,
                rtol=0.0,
                message="probs must sum to 1 over the last axis.",
            ),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(probs)

    @classmethod
    def from_logits(cls, logits, validate=True, sample_axis=0):
        """From unnormalised logits: log p_s = log_softmax(logits_s).

        logits: [S, B, K] with ``sample_axis=0`` (the default); Keras-style batch-first
        [B, S, K] with ``sample_axis=1``.
        """
        logits = _samples_first(_as_float_tensor(logits, "logits"), sample_axis, "logits")
        _check_rank(logits, 3, "logits", "[num_samples, batch, num_classes]")
        if validate:
            logits = _check_finite(logits, "logits")
        return cls(None, _log_probs=tf.nn.log_softmax(logits, axis=-1))

    @classmethod
    def from_probs(cls, probs, validate=True, sample_axis=0, sum_tolerance=1e-3):
        """From probabilities: [S, B, K] (``sample_axis=0``) or batch-first [B, S, K] (1)."""
        probs = _samples_first(_as_float_tensor(probs, "probs"), sample_axis, "probs")
        return cls(probs, validate=validate, sum_tolerance=sum_tolerance)

    @classmethod
    def from_log_probs(cls, log_probs):
        """From normalised log-probabilities [S, B, K] (no validation)."""
        log_probs = _as_float_tensor(log_probs, "log_probs")
        _check_rank(log_probs, 3, "log_probs", "[num_samples, batch, num_classes]")
        return cls(None, _log_probs=log_probs)

    @classmethod
    def concatenate(cls, parts):
        """Joins predictives of consecutive batches along the batch axis."""
        return cls(None, _log_probs=tf.concat([p.log_probs for p in parts], axis=1))

    def take(self, indices):
        """The predictive of the examples at ``indices`` (a batch-axis gather)."""
        return SampledPredictive(None, _log_probs=tf.gather(self._log_probs, indices, axis=1))

    # -- parameters --------------------------------------------------------
    @property
    def log_probs(self):
        return self._log_probs

    @property
    def probs(self):
        return self._probs if self._probs is not None else tf.exp(self._log_probs)

    @property
    def num_samples(self):
        return (
            tf.shape(self._log_probs)[0]
            if self._log_probs.shape[0] is None
            else self._log_probs.shape[0]
        )

    @property
    def batch_size(self):
        return (
            tf.shape(self._log_probs)[1]
            if self._log_probs.shape[1] is None
            else self._log_probs.shape[1]
        )

    # -- moments and measures ---------------------------------------------
    def mean(self):
        """p̄ = (1/S) Σ_s p_s, [B, K]."""
        return tf.reduce_mean(self.probs, axis=0)

    def log_mean(self):
        """log p̄ = logsumexp_s log p_s − log S, [B, K]."""
        return uncertainty.log_mean_probs(self._log_probs)

    def class_variance(self):
        """Var_s[p_sk] per class, [B, K]."""
        return uncertainty.sampled_class_variance(self._log_probs)

    def total_uncertainty(self):
        return uncertainty.entropy_from_log_probs(self.log_mean())

    def expected_data_uncertainty(self):
        return uncertainty.sampled_expected_data_uncertainty(self._log_probs)

    def epkl(self):
        return uncertainty.sampled_epkl(self._log_probs)


class DirichletPredictive(Predictive):
    """A Prior Network's Dir(α) over categoricals, alpha [B, K] (closed form)."""

    measure_names = DIRICHLET_MEASURES

    def __init__(self, alpha, validate=True, _logits=None):
        if _logits is not None:
            self._logits = _logits
            self._alpha = dirichlet.alpha_from_logits(_logits)
            return
        alpha = _as_float_tensor(alpha, "alpha")
        _check_rank(alpha, 2, "alpha", "[batch, num_classes]")
        if validate:
            alpha = self._validate_alpha(alpha)
        self._alpha = alpha
        self._logits = tf.math.log(alpha)

    @staticmethod
    def _validate_alpha(alpha):
        if tf.executing_eagerly():
            values = alpha.numpy()
            if not np.all(np.isfinite(values)):
                raise ValueError("alpha contains NaN or Inf values.")
            if np.any(values <= 0):
                raise ValueError(
                    f"alpha must be positive (Dirichlet concentrations); min is {values.min():.3g}."
                )
            return alpha
        checks = [
            tf.debugging.assert_all_finite(alpha, "alpha contains NaN or Inf values."),
            tf.debugging.assert_positive(alpha, message="alpha must be positive."),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(alpha)

    @classmethod
    def from_logits(cls, logits, validate=True):
        """α = exp(z), guarded (see ``uqmix.dirichlet``); mean = softmax(z) exactly."""
        logits = _as_float_tensor(logits, "logits")
        _check_rank(logits, 2, "logits", "[batch, num_classes]")
        if validate:
            logits = _check_finite(logits, "logits")
        return cls(None, _logits=logits)

    @classmethod
    def concatenate(cls, parts):
        return cls(None, _logits=tf.concat([p.logits for p in parts], axis=0))

    def take(self, indices):
        return DirichletPredictive(None, _logits=tf.gather(self._logits, indices, axis=0))

    # -- parameters --------------------------------------------------------
    @property
    def alpha(self):
        return self._alpha

    @property
    def logits(self):
        """z with α = exp(z) (up to the guard of ``uqmix.dirichlet``)."""
        return self._logits

    @property
    def batch_size(self):
        return tf.shape(self._alpha)[0] if self._alpha.shape[0] is None else self._alpha.shape[0]

    # -- moments and measures ---------------------------------------------
    def mean(self):
        """E[π] = α / α0 = softmax(z), [B, K]."""
        return tf.nn.softmax(self._logits, axis=-1)

    def log_mean(self):
        return tf.nn.log_softmax(self._logits, axis=-1)

    def precision(self):
        """α0 = Σ_k α_k."""
        return tf.reduce_sum(self._alpha, axis=-1)

    def class_variance(self):
        """Var[π_k] = p_k (1 − p_k) / (α0 + 1), [B, K]."""
        return uncertainty.dirichlet_class_variance(self._alpha)

    def total_uncertainty(self):
        return uncertainty.entropy_from_log_probs(self.log_mean())

    def expected_data_uncertainty(self):
        return uncertainty.dirichlet_expected_data_uncertainty(self._alpha)

    def mutual_information(self):
        """I[y, π] = g(α0) − Σ_k p_k g(α_k), g(a) = ln a − ψ(a + 1) (stable; ≥ 0)."""
        return uncertainty.dirichlet_mutual_information(self._alpha)

    def epkl(self):
        return uncertainty.dirichlet_epkl(self._alpha)

    def differential_entropy(self):
        return uncertainty.dirichlet_differential_entropy(self._alpha)
