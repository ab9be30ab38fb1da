"""DiagonalMatrixNormal and its registered closed-form KL against TFP's generic routes and MC."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from uqmix import distributions
from uqmix.distributions import (
    DiagonalMatrixNormal,
    diagonal_matrix_normal_kl,
    isotropic_matrix_normal_prior,
)

tfd = tfp.distributions


def _random_params(rng, batch, rows, cols):
    return (
        rng.normal(size=batch + (rows, cols)),
        rng.normal(scale=0.7, size=batch + (rows,)),
        rng.normal(scale=0.7, size=batch + (cols,)),
    )


def _dense_mvn(loc, log_u, log_v):
    """The same law as a generic MVN on vec(W) (row-major) with a dense Kronecker covariance."""
    cov = np.einsum("...i,...j->...ij", np.exp(log_u), np.exp(log_v))
    cov = cov.reshape(cov.shape[:-2] + (-1,))
    scale = np.sqrt(cov)[..., :, None] * np.eye(cov.shape[-1])  # chol of a diagonal, densified
    return tfd.MultivariateNormalTriL(loc=loc.reshape(loc.shape[:-2] + (-1,)), scale_tril=scale)


def _tfp_matrix_normal(loc, log_u, log_v):
    """TFP's MatrixNormalLinearOperator with dense (full-matrix) scales: TFP's own KL route."""
    dense_diag = np.vectorize(np.diag, signature="(n)->(n,n)")
    return tfd.MatrixNormalLinearOperator(
        loc,
        tf.linalg.LinearOperatorFullMatrix(dense_diag(np.exp(0.5 * log_u))),
        tf.linalg.LinearOperatorFullMatrix(dense_diag(np.exp(0.5 * log_v))),
    )


def _numpy_kl(m1, lu1, lv1, m2, lu2, lv2):
    """Float64 elementwise KL of independent normals N(m1, u1 v1) ‖ N(m2, u2 v2), summed."""
    var1 = np.exp(lu1)[..., :, None] * np.exp(lv1)[..., None, :]
    var2 = np.exp(lu2)[..., :, None] * np.exp(lv2)[..., None, :]
    kl = 0.5 * (var1 / var2 + (m1 - m2) ** 2 / var2 - 1.0 + np.log(var2 / var1))
    return kl.sum(axis=(-2, -1))


@pytest.mark.parametrize("batch", [(), (2,)])
def test_kl_matches_tfp_generic_routes_and_numpy(batch):
    rng = np.random.default_rng(0)
    params_q, params_p = _random_params(rng, batch, 3, 4), _random_params(rng, batch, 3, 4)
    q, p = DiagonalMatrixNormal(*params_q), DiagonalMatrixNormal(*params_p)
    ours = tfd.kl_divergence(q, p).numpy()
    assert ours.shape == batch
    generic_mvn = tfd.kl_divergence(_dense_mvn(*params_q), _dense_mvn(*params_p)).numpy()
    tfp_matrix_normal = tfd.kl_divergence(
        _tfp_matrix_normal(*params_q), _tfp_matrix_normal(*params_p)
    ).numpy()
    np.testing.assert_allclose(ours, generic_mvn, rtol=1e-10)
    np.testing.assert_allclose(ours, tfp_matrix_normal, rtol=1e-10)
    np.testing.assert_allclose(ours, _numpy_kl(*params_q, *params_p), rtol=1e-10)


def test_kl_to_isotropic_prior_is_design_formula():
    rng = np.random.default_rng(1)
    rows, cols, sigma2 = 5, 3, 1.7
    m, lu, lv = _random_params(rng, (), rows, cols)
    kl = tfd.kl_divergence(
        DiagonalMatrixNormal(m, lu, lv),
        isotropic_matrix_normal_prior(rows, cols, sigma2, tf.float64),
    ).numpy()
    u, v = np.exp(lu), np.exp(lv)
    design = 0.5 * (
        u.sum() * v.sum() / sigma2
        + (m**2).sum() / sigma2
        - rows * cols
        + rows * cols * np.log(sigma2)
        - cols * lu.sum()
        - rows * lv.sum()
    )
    np.testing.assert_allclose(kl, design, rtol=1e-12)
    # The static shortcut for a constant prior agrees with the general (matvec) path.
    prior_as_variables = DiagonalMatrixNormal(
        tf.Variable(np.zeros((rows, cols))),
        tf.Variable(np.full(rows, np.log(sigma2))),
        tf.Variable(np.zeros(cols)),
    )
    general = diagonal_matrix_normal_kl(DiagonalMatrixNormal(m, lu, lv), prior_as_variables)
    np.testing.assert_allclose(general.numpy(), design, rtol=1e-12)


def test_kl_matches_monte_carlo():
    rng = np.random.default_rng(2)
    params_q, params_p = _random_params(rng, (), 3, 2), _random_params(rng, (), 3, 2)
    q_mvn, p_mvn = _dense_mvn(*params_q), _dense_mvn(*params_p)
    samples = q_mvn.sample(40000, seed=7)
    log_ratio = (q_mvn.log_prob(samples) - p_mvn.log_prob(samples)).numpy()
    exact = tfd.kl_divergence(DiagonalMatrixNormal(*params_q), DiagonalMatrixNormal(*params_p))
    standard_error = log_ratio.std() / np.sqrt(log_ratio.size)
    assert abs(log_ratio.mean() - exact.numpy()) < 4 * standard_error


def test_log_prob_sample_and_variance_match_tfp_parent():
    rng = np.random.default_rng(3)
    params = _random_params(rng, (), 4, 3)
    ours, parent = DiagonalMatrixNormal(*params), _tfp_matrix_normal(*params)
    x = rng.normal(size=(5, 4, 3))
    np.testing.assert_allclose(ours.log_prob(x).numpy(), parent.log_prob(x).numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.variance().numpy(), parent.variance().numpy(), rtol=1e-10)
    draws = ours.sample(20000, seed=11).numpy()
    assert draws.shape == (20000, 4, 3)
    sd = np.sqrt(ours.variance().numpy())
    np.testing.assert_array_less(np.abs(draws.mean(0) - params[0]), 5 * sd / np.sqrt(20000))
    np.testing.assert_allclose(draws.var(0), sd**2, rtol=0.06)


def test_kl_for_a_785_by_128_layer_is_cheap_and_exact():
    # tfd.kl_divergence dispatches to the registered closed form, not TFP's dense routes.
    from tensorflow_probability.python.distributions import kullback_leibler

    assert (
        kullback_leibler._registered_kl(DiagonalMatrixNormal, DiagonalMatrixNormal)
        is distributions._kl_diagonal_matrix_normal
    )
    rng = np.random.default_rng(4)
    m, lu, lv = (
        rng.normal(size=(785, 128)).astype(np.float32) * 0.05,
        np.full(785, -3.0, np.float32),
        np.full(128, -3.0, np.float32),
    )
    kl = tfd.kl_divergence(
        DiagonalMatrixNormal(m, lu, lv), isotropic_matrix_normal_prior(785, 128, 1.0)
    ).numpy()
    expected = _numpy_kl(
        m.astype(np.float64),
        lu.astype(np.float64),
        lv.astype(np.float64),
        np.zeros((785, 128)),
        np.zeros(785),
        np.zeros(128),
    )
    np.testing.assert_allclose(kl, expected, rtol=1e-5)


def test_bad_shapes_and_prior_raise():
    with pytest.raises(ValueError, match="log_row_variance has length 2"):
        DiagonalMatrixNormal(np.zeros((3, 4)), np.zeros(2), np.zeros(4))
    with pytest.raises(ValueError, match="log_column_variance has length 5"):
        DiagonalMatrixNormal(np.zeros((3, 4)), np.zeros(3), np.zeros(5))
    with pytest.raises(ValueError, match="matrix"):
        DiagonalMatrixNormal(np.zeros(3), np.zeros(3), np.zeros(1))
    with pytest.raises(ValueError, match="variance must be > 0"):
        isotropic_matrix_normal_prior(3, 4, 0.0)
