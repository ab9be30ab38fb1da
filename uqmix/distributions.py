"""TFP distributions of uqmix: the diagonal matrix-normal and its closed-form KL.

``DiagonalMatrixNormal(loc, log_row_variance, log_column_variance)`` is the
matrix-normal MN(M, U, V) on r×c matrices with diagonal row and column
covariances U = diag(u), V = diag(v).  It *is* a
``tfd.MatrixNormalLinearOperator`` (with ``LinearOperatorDiag`` scales
diag(√u), diag(√v)), so every TFP method works, but sampling, ``log_prob``
and the variance use the elementwise form

    W_ij ~ N(M_ij, u_i · v_j)  independently,

which costs O(rc) instead of going through an rc-dimensional multivariate
normal.

The KL divergence between two of them is registered with
``tfd.RegisterKL``, so ``tfd.kl_divergence(q, p)`` is exact and O(rc):

    KL(MN(M₁, diag u₁, diag v₁) ‖ MN(M₂, diag u₂, diag v₂))
      = ½ [ Σ_i (u₁/u₂)_i · Σ_j (v₁/v₂)_j
            + Σ_ij (M₁ − M₂)²_ij / (u₂_i v₂_j)
            − rc
            + c·Σ_i log(u₂/u₁)_i + r·Σ_j log(v₂/v₁)_j ].

With the prior MN(0, σ²I, I) this is DESIGN.md's
½[Σu·Σv/σ² + ‖M‖²_F/σ² − rc + rc·log σ² − c·Σ log u − r·Σ log v].
TFP's own matrix-normal KL (for general scales) densifies the r×r and c×c
scales; the generic multivariate-normal route on vec(W) densifies rc×rc.
Both are used only as test oracles.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import dtype_util, parameter_properties, tensor_util

tfd = tfp.distributions

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def _diag_scale(log_variance):
    return tf.linalg.LinearOperatorDiag(
        tf.exp(0.5 * log_variance),
        is_non_singular=True,
        is_self_adjoint=True,
        is_positive_definite=True,
    )


class DiagonalMatrixNormal(tfd.MatrixNormalLinearOperator):
    """MN(M, diag u, diag v) on r×c matrices: W_ij ~ N(M_ij, u_i v_j) independently.

    loc: M, float tensor [..., r, c].
    log_row_variance: log u, [..., r].
    log_column_variance: log v, [..., c].
    The distribution is built from the values the arguments have when it is
    constructed (build it anew after the variables change, as
    ``MatrixNormalDense.posterior()`` does).
    """

    def __init__(
        self,
        loc,
        log_row_variance,
        log_column_variance,
        validate_args=False,
        allow_nan_stats=True,
        name="DiagonalMatrixNormal",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype(
                [loc, log_row_variance, log_column_variance], dtype_hint=tf.float32
            )
            loc = tensor_util.convert_nonref_to_tensor(loc, dtype=dtype, name="loc")
            log_row_variance = tf.convert_to_tensor(
                log_row_variance, dtype=dtype, name="log_row_variance"
            )
            log_column_variance = tf.convert_to_tensor(
                log_column_variance, dtype=dtype, name="log_column_variance"
            )
            _check_shapes(loc, log_row_variance, log_column_variance)
            self._log_row_variance = log_row_variance
            self._log_column_variance = log_column_variance
            super().__init__(
                loc=loc,
                scale_row=_diag_scale(log_row_variance),
                scale_column=_diag_scale(log_column_variance),
                validate_args=validate_args,
                allow_nan_stats=allow_nan_stats,
                name=name,
            )
        self._parameters = parameters

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            loc=parameter_properties.ParameterProperties(event_ndims=2),
            log_row_variance=parameter_properties.ParameterProperties(event_ndims=1),
            log_column_variance=parameter_properties.ParameterProperties(event_ndims=1),
        )

    @property
    def log_row_variance(self):
        """log u, [..., r]."""
        return self._log_row_variance

    @property
    def log_column_variance(self):
        """log v, [..., c]."""
        return self._log_column_variance

    def log_elementwise_variance(self):
        """log(u_i v_j), [..., r, c]."""
        return self._log_row_variance[..., :, None] + self._log_column_variance[..., None, :]

    def _variance(self):
        return tf.broadcast_to(tf.exp(self.log_elementwise_variance()), tf.shape(self._mean()))

    def _sample_n(self, n, seed=None):
        loc = tf.convert_to_tensor(self.loc)
        std = tf.exp(0.5 * self.log_elementwise_variance())
        shape = tf.concat([[n], tf.shape(loc + std)], axis=0)
        noise = tf.random.stateless_normal(
            shape, seed=tfp.random.sanitize_seed(seed), dtype=loc.dtype
        )
        return loc + std * noise

    def _log_prob(self, x):
        log_var = self.log_elementwise_variance()
        z2 = tf.square(x - self.loc) * tf.exp(-log_var)
        return -tf.reduce_sum(0.5 * z2 + 0.5 * log_var + _HALF_LOG_TWO_PI, axis=[-2, -1])


def _check_shapes(loc, log_row_variance, log_column_variance):
    if loc.shape.rank is not None and loc.shape.rank < 2:
        raise ValueError(f"loc must be a matrix [..., r, c], got shape {loc.shape}.")
    for name, tensor, axis in (
        ("log_row_variance", log_row_variance, -2),
        ("log_column_variance", log_column_variance, -1),
    ):
        if tensor.shape.rank is not None and tensor.shape.rank < 1:
            raise ValueError(f"{name} must be a vector [..., n], got a scalar.")
        size, expected = tensor.shape[-1], loc.shape[axis] if loc.shape.rank else None
        if size is not None and expected is not None and size != expected:
            raise ValueError(
                f"{name} has length {size} but loc has {expected} "
                f"{'rows' if axis == -2 else 'columns'} (loc shape {loc.shape})."
            )


def _static_constant(tensor):
    """The common value of a tensor whose entries are known at trace time and all equal, else None."""
    value = tf.get_static_value(tensor)
    if value is None or value.size == 0:
        return None
    first = value.flat[0]
    return float(first) if np.all(value == first) else None


def _mahalanobis(q, p):
    """Σ_ij (M₁ − M₂)²_ij / (u₂_i v₂_j), [...].

    O(rc) either way; when p's mean is a known zero and its variances are
    known constants (the isotropic prior) it is ‖M₁‖²_F / (u₂ v₂), which
    spares the training step a subtraction and a broadcast over r × c.
    """
    p_mean = _static_constant(p.loc)
    delta_sq = tf.square(q.loc if p_mean == 0.0 else q.loc - p.loc)
    log_u2, log_v2 = _static_constant(p.log_row_variance), _static_constant(p.log_column_variance)
    if log_u2 is not None and log_v2 is not None:
        return tf.reduce_sum(delta_sq, axis=[-2, -1]) * math.exp(-(log_u2 + log_v2))
    per_row = tf.linalg.matvec(delta_sq, tf.exp(-p.log_column_variance))
    return tf.reduce_sum(per_row * tf.exp(-p.log_row_variance), axis=-1)


def diagonal_matrix_normal_kl(q, p):
    """Closed-form KL(q ‖ p) of two ``DiagonalMatrixNormal``s (formula in the module doc)."""
    dtype = q.dtype
    rows = tf.cast(tf.shape(q.loc)[-2], dtype)
    cols = tf.cast(tf.shape(q.loc)[-1], dtype)
    row_log_ratio = q.log_row_variance - p.log_row_variance  # log(u₁/u₂)
    col_log_ratio = q.log_column_variance - p.log_column_variance  # log(v₁/v₂)
    trace = tf.reduce_sum(tf.exp(row_log_ratio), axis=-1) * tf.reduce_sum(
        tf.exp(col_log_ratio), axis=-1
    )
    log_det_ratio = cols * tf.reduce_sum(row_log_ratio, axis=-1) + rows * tf.reduce_sum(
        col_log_ratio, axis=-1
    )
    return 0.5 * (trace + _mahalanobis(q, p) - rows * cols - log_det_ratio)


@tfd.RegisterKL(DiagonalMatrixNormal, DiagonalMatrixNormal)
def _kl_diagonal_matrix_normal(q, p, name=None):
    with tf.name_scope(name or "kl_diagonal_matrix_normal"):
        return diagonal_matrix_normal_kl(q, p)


def isotropic_matrix_normal_prior(rows, columns, variance, dtype=tf.float32):
    """The prior MN(0, σ² I_r, I_c) as a ``DiagonalMatrixNormal``."""
    if not variance > 0:
        raise ValueError(f"prior variance must be > 0, got {variance}.")
    return DiagonalMatrixNormal(
        loc=tf.zeros([rows, columns], dtype),
        log_row_variance=tf.fill([rows], tf.constant(math.log(variance), dtype)),
        log_column_variance=tf.zeros([columns], dtype),
    )
