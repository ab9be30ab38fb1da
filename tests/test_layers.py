"""MatrixNormalDense: sampling moments vs analytic and brute-force weight draws; seeds; saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from uqmix.gaussian_noise import cos_two_pi, standard_normal
from uqmix.layers import MatrixNormalDense

D, C, DRAWS = 4, 3, 20000


def _layer(seed=5, sampling="local_reparameterization", jit_sampling=False):
    """A built layer with random, clearly non-trivial M, log u, log v (float64 copies returned)."""
    rng = np.random.default_rng(seed)
    layer = MatrixNormalDense(
        C, prior_variance=1.5, sampling=sampling, seed=seed, jit_sampling=jit_sampling
    )
    layer.build((None, D))
    params = (
        rng.normal(size=(D + 1, C)),
        rng.normal(-0.5, 0.4, size=D + 1),
        rng.normal(-0.3, 0.4, size=C),
    )
    for var, value in zip((layer.mean, layer.log_row_variance, layer.log_column_variance), params):
        var.assign(value.astype(np.float32))
    return layer, params


def _analytic_moments(a, params):
    m, lu, lv = params
    a1 = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
    return a1 @ m, (a1**2 @ np.exp(lu))[:, None] * np.exp(lv)[None, :]


def _inputs():
    return np.random.default_rng(9).normal(size=(2, D)).astype(np.float32)


def _assert_moments(samples, mean, var):
    """samples [S, B, C] against analytic mean/var, tolerances from the sampling error."""
    n = samples.shape[0]
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * np.sqrt(var / n))
    np.testing.assert_allclose(samples.var(0), var, rtol=5 * np.sqrt(2 / n))


@pytest.mark.parametrize(
    "sampling, jit_sampling",
    [
        ("local_reparameterization", False),
        ("shared_weights", False),
        ("local_reparameterization", True),
    ],
)
def test_sample_moments_match_analytic(sampling, jit_sampling):
    layer, params = _layer(sampling=sampling, jit_sampling=jit_sampling)
    a = _inputs()
    mean, var = _analytic_moments(a.astype(np.float64), params)
    shared_input = layer(a, num_samples=DRAWS).numpy()  # [S, B, C]
    per_sample_input = layer(np.broadcast_to(a, (DRAWS,) + a.shape)).numpy()
    assert shared_input.shape == per_sample_input.shape == (DRAWS, 2, C)
    _assert_moments(shared_input, mean, var)
    _assert_moments(per_sample_input, mean, var)


def test_cross_example_covariance_distinguishes_the_modes():
    """Shared weights: Cov(b_1j, b_2j) = (Σ_i a_1i a_2i u_i) v_j; local reparam: independent rows."""
    a = _inputs().astype(np.float64)
    a1 = np.concatenate([a, np.ones((2, 1))], axis=1)
    for sampling in ("shared_weights", "local_reparameterization"):
        layer, (m, lu, lv) = _layer(sampling=sampling)
        out = layer(a.astype(np.float32), num_samples=DRAWS).numpy()
        cov = ((out[:, 0] - out[:, 0].mean(0)) * (out[:, 1] - out[:, 1].mean(0))).mean(0)
        expected = (
            (a1[0] * a1[1] * np.exp(lu)).sum() * np.exp(lv)
            if sampling == "shared_weights"
            else np.zeros(C)
        )
        scale = np.sqrt(out[:, 0].var(0) * out[:, 1].var(0) / DRAWS)
        np.testing.assert_array_less(np.abs(cov - expected), 6 * scale)


def test_local_reparameterization_equals_independent_weight_draws():
    """Per example and sample, the local-reparameterisation output has the law of a·W, W ~ q."""
    layer, (m, lu, lv) = _layer()
    a = _inputs()
    ours = layer(a, num_samples=DRAWS).numpy()
    rng = np.random.default_rng(123)
    weights = m + np.sqrt(np.exp(lu)[:, None] * np.exp(lv)[None, :]) * rng.normal(
        size=(DRAWS, D + 1, C)
    )
    brute = np.einsum("bi,sij->sbj", np.concatenate([a, np.ones((2, 1))], axis=1), weights)
    for b in range(2):
        for j in range(C):
            assert stats.ks_2samp(ours[:, b, j], brute[:, b, j]).pvalue > 1e-3
    np.testing.assert_allclose(ours.var(0), brute.var(0), rtol=0.1)


def test_seed_generator_gives_fresh_noise_and_reproduces():
    layer_a, _ = _layer(seed=3)
    layer_b, _ = _layer(seed=3)
    x = _inputs()
    first, second = layer_a(x).numpy(), layer_a(x).numpy()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(layer_b(x).numpy(), first)
    np.testing.assert_array_equal(layer_b(x).numpy(), second)
    compiled = tf.function(lambda t: layer_a(t, num_samples=2))
    assert not np.allclose(compiled(x).numpy(), compiled(x).numpy())


def test_kl_and_weight_variance_accessors():
    layer, (m, lu, lv) = _layer()
    sigma2 = layer.prior_variance
    u, v = np.exp(lu), np.exp(lv)
    r, c = m.shape
    expected = 0.5 * (
        u.sum() * v.sum() / sigma2
        + (m**2).sum() / sigma2
        - r * c
        + r * c * np.log(sigma2)
        - c * lu.sum()
        - r * lv.sum()
    )
    np.testing.assert_allclose(layer.kl_divergence().numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(layer.weight_variance().numpy(), np.outer(u, v), rtol=1e-5)
    np.testing.assert_allclose(layer.kernel_mean.numpy(), m[:-1], rtol=1e-6)
    np.testing.assert_allclose(layer.bias_mean.numpy(), m[-1], rtol=1e-6)


def test_initialisation():
    layer = MatrixNormalDense(128, seed=1)
    layer.build((None, 784))
    np.testing.assert_array_equal(layer.bias_mean.numpy(), 0.0)
    np.testing.assert_allclose(layer.log_row_variance.numpy(), -3.0)
    np.testing.assert_allclose(layer.log_column_variance.numpy(), -3.0)
    assert abs(layer.kernel_mean.numpy().std() - np.sqrt(2 / 784)) < 0.005  # He normal


def test_config_and_keras_round_trip(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((D,)),
            MatrixNormalDense(
                C, prior_variance=0.5, activation="relu", sampling="shared_weights", seed=8
            ),
        ]
    )
    x = _inputs()
    model(x)  # advance the seed generator: the saved state must be the current one
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[-1]
    assert isinstance(layer, MatrixNormalDense)
    assert layer.get_config() == model.layers[-1].get_config()
    for w_a, w_b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(w_a.numpy(), w_b.numpy())
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    clone = MatrixNormalDense.from_config(model.layers[-1].get_config())
    assert clone.seed == 8 and clone.sampling == "shared_weights" and clone.prior_variance == 0.5
    config = dict(model.layers[-1].get_config(), jit_sampling=True)
    assert MatrixNormalDense.from_config(config).jit_sampling


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sampling"):
        MatrixNormalDense(3, sampling="flipout")
    with pytest.raises(ValueError, match="prior_variance"):
        MatrixNormalDense(3, prior_variance=0.0)
    with pytest.raises(ValueError, match="units"):
        MatrixNormalDense(0)
    layer, _ = _layer()
    with pytest.raises(ValueError, match="num_samples must be a positive"):
        layer(_inputs(), num_samples=0)
    with pytest.raises(ValueError, match="shared input"):
        layer(np.zeros((2, 5, D), np.float32), num_samples=3)
    with pytest.raises(ValueError):
        layer(np.zeros((2, D + 1), np.float32))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_standard_normal_statistics(jit_compile):
    z = standard_normal([1001, 999], tf.constant([5, 6], tf.int32), jit_compile=jit_compile).numpy()
    assert z.shape == (1001, 999) and z.dtype == np.float32
    z = z.ravel().astype(np.float64)
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    half = n // 2  # the two members of a Box–Muller pair sit half the array apart
    for x, y in ((z[:half], z[half : 2 * half]), (z[:-1], z[1:])):
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(half)
        assert abs(np.corrcoef(x**2, y**2)[0, 1]) < 5 / np.sqrt(half)
    z64 = standard_normal([7], tf.constant([1, 2], tf.int32), tf.float64, jit_compile=jit_compile)
    assert z64.dtype == tf.float64 and z64.shape == (7,) and np.all(np.isfinite(z64))
    other_seed = (
        standard_normal([1001, 999], tf.constant([5, 7], tf.int32), jit_compile=jit_compile)
        .numpy()
        .ravel()
    )
    assert abs(np.corrcoef(z, other_seed)[0, 1]) < 5 / np.sqrt(n)


def test_cos_two_pi_polynomial_matches_float64():
    t = np.linspace(-3.0, 3.0, 200001)
    np.testing.assert_allclose(
        cos_two_pi(tf.constant(t, tf.float32)).numpy(),
        np.cos(2 * np.pi * t.astype(np.float32).astype(np.float64)),
        atol=4e-7,
        rtol=0,
    )
