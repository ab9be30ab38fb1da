"""Dirichlet KL and Prior Network losses vs TFP, Monte-Carlo and float64 NumPy oracles."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import digamma, gammaln, log_softmax, polygamma

from uqmix.objectives import (
    cross_entropy_loss,
    dirichlet_kl,
    forward_kl_loss,
    reverse_kl_loss,
    target_concentrations,
)

tfd = tfp.distributions


def _tfp_kl(a, b):
    return tfd.kl_divergence(tfd.Dirichlet(a), tfd.Dirichlet(b)).numpy()


def _random_alpha(rng, shape, low=-2.0, high=3.0):
    return np.exp(rng.uniform(low, high, size=shape))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dirichlet_kl_matches_tfp(dtype):
    rng = np.random.default_rng(0)
    a = _random_alpha(rng, (64, 5)).astype(dtype)
    b = _random_alpha(rng, (64, 5)).astype(dtype)
    ours = dirichlet_kl(a, b).numpy()
    assert ours.shape == (64,) and ours.dtype == dtype
    rtol, atol = (1e-10, 1e-10) if dtype == np.float64 else (2e-4, 1e-3)
    np.testing.assert_allclose(ours, _tfp_kl(a, b), rtol=rtol, atol=atol)
    np.testing.assert_allclose(dirichlet_kl(a, a).numpy(), 0.0, atol=atol)


def _log_dirichlet_pdf(x, alpha):
    return gammaln(alpha.sum(-1)) - gammaln(alpha).sum(-1) + ((alpha - 1.0) * np.log(x)).sum(-1)


def test_dirichlet_kl_matches_monte_carlo():
    rng = np.random.default_rng(1)
    p = np.array([[2.0, 0.7, 4.5], [30.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    q = np.array([[1.0, 1.0, 1.0], [1.5, 3.0, 0.8], [101.0, 1.0, 1.0]])
    ours = dirichlet_kl(p, q).numpy()
    for i in range(len(p)):
        samples = rng.dirichlet(p[i], size=200_000)
        samples = np.clip(samples, 1e-300, None)
        log_ratio = _log_dirichlet_pdf(samples, p[i]) - _log_dirichlet_pdf(samples, q[i])
        estimate = log_ratio.mean()
        standard_error = log_ratio.std() / np.sqrt(len(log_ratio))
        assert abs(ours[i] - estimate) < 5 * standard_error + 1e-3, (i, ours[i], estimate)


def test_target_concentrations():
    labels = np.array([0, 2, 1, 2])
    got = target_concentrations(labels, 3, target_concentration=100.0, concentration=1.0).numpy()
    expected = np.ones((4, 3)) + 100.0 * np.eye(3)[labels]
    np.testing.assert_array_equal(got, expected)
    flat = target_concentrations(None, 4, 100.0, concentration=2.0, batch_size=3).numpy()
    np.testing.assert_array_equal(flat, np.full((3, 4), 2.0))


@pytest.mark.parametrize("labels", [np.array([0, 1, 3, 2, 3]), None])
def test_losses_match_tfp_oracle(labels):
    rng = np.random.default_rng(2)
    logits = rng.uniform(-4, 6, size=(5, 4))
    beta, c = 100.0, 1.0
    alpha = np.exp(logits)
    target = np.full((5, 4), c)
    if labels is not None:
        target[np.arange(5), labels] += beta
    reverse = reverse_kl_loss(logits, labels, beta, c).numpy()
    forward = forward_kl_loss(logits, labels, beta, c).numpy()
    np.testing.assert_allclose(reverse, _tfp_kl(alpha, target), rtol=1e-9)
    np.testing.assert_allclose(forward, _tfp_kl(target, alpha), rtol=1e-9)
    scaled = reverse_kl_loss(logits, labels, beta, c, normalize_by_target=True).numpy()
    np.testing.assert_allclose(scaled, reverse / beta, rtol=1e-12)


@pytest.mark.parametrize("loss_fn", [reverse_kl_loss, forward_kl_loss])
def test_losses_vanish_at_target(loss_fn):
    labels = np.array([0, 2])
    target = target_concentrations(labels, 3, 100.0, 1.0, dtype=tf.float64).numpy()
    np.testing.assert_allclose(loss_fn(np.log(target), labels, 100.0).numpy(), 0.0, atol=1e-9)
    # and are positive away from it
    assert np.all(loss_fn(np.log(target) + [[1.0, 0.0, -1.0]], labels, 100.0).numpy() > 1e-3)


@pytest.mark.parametrize("loss_fn", [reverse_kl_loss, forward_kl_loss])
@pytest.mark.parametrize("labels", [np.array([0, 1, 2, 0, 1, 2, 0, 1]), None])
def test_values_and_gradients_finite_for_extreme_logits(loss_fn, labels):
    rng = np.random.default_rng(3)
    extremes = np.array(
        [
            [100, -100, 0],
            [-100, -100, -100],
            [100, 100, 100],
            [-100, 100, 100],
            [0, 0, 0],
            [100, -100, -100],
            [-100, -100, 100],
            [50, -50, 30],
        ]
    )
    for logits in (extremes, rng.uniform(-100, 100, size=(8, 3))):
        z = tf.Variable(logits.astype(np.float32))
        for normalize in (False, True):
            with tf.GradientTape() as tape:
                loss = loss_fn(z, labels, 100.0, 1.0, normalize_by_target=normalize)
                total = tf.reduce_sum(loss)
            grad = tape.gradient(total, z)
            assert np.all(np.isfinite(loss.numpy())), loss.numpy()
            assert np.all(np.isfinite(grad.numpy())), grad.numpy()
            assert np.all(loss.numpy() > -1e-3)


def _kl64(a, b):
    """Textbook closed form in float64 (SciPy)."""
    a0, b0 = a.sum(-1), b.sum(-1)
    return (
        gammaln(a0)
        - gammaln(b0)
        - (gammaln(a) - gammaln(b)).sum(-1)
        + ((a - b) * (digamma(a) - digamma(a0)[:, None])).sum(-1)
    )


def _extreme_problem():
    rng = np.random.default_rng(5)
    logits = np.concatenate(
        [
            rng.uniform(-100, 100, (200, 3)),
            [
                [100, -100, 0],
                [-100, -100, -100],
                [100, 100, 100],
                [60, -60, 0],
                [29, 31, -5],
                [9, 11, 10],
            ],
        ]
    )
    labels = rng.integers(0, 3, len(logits))
    alpha = np.exp(np.clip(logits, -30, 30))  # the documented guard of uqmix.dirichlet
    target = np.ones_like(alpha)
    target[np.arange(len(logits)), labels] += 100.0
    return logits, labels, alpha, target


def test_float32_losses_accurate_at_extreme_logits():
    """Against float64 SciPy (itself only ~1e-3 accurate when α ≈ 1e13) and mpmath if present."""
    logits, labels, alpha, target = _extreme_problem()
    z = logits.astype(np.float32)
    reverse = reverse_kl_loss(z, labels, 100.0).numpy()
    forward = forward_kl_loss(z, labels, 100.0).numpy()
    for ours, oracle in ((reverse, _kl64(alpha, target)), (forward, _kl64(target, alpha))):
        np.testing.assert_allclose(ours, oracle, rtol=5e-3, atol=0.5)
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40

    def kl_mp(a, b):
        a, b = [mp.mpf(float(v)) for v in a], [mp.mpf(float(v)) for v in b]
        a0, b0 = sum(a), sum(b)
        return float(
            mp.loggamma(a0)
            - mp.loggamma(b0)
            - sum(mp.loggamma(x) - mp.loggamma(y) for x, y in zip(a, b))
            + sum((x - y) * (mp.digamma(x) - mp.digamma(a0)) for x, y in zip(a, b))
        )

    exact = np.array([kl_mp(a, t) for a, t in zip(alpha[::5], target[::5])])
    np.testing.assert_allclose(reverse[::5], exact, rtol=2e-5, atol=1e-3)


def test_float32_gradients_match_float64_closed_form():
    """d/dz_k of the losses: reverse α_k[(α_k − α̂_k)ψ'(α_k) − (α0 − α̂0)ψ'(α0)],
    forward α_k[ψ(α_k) − ψ(α0) − ψ(α̂_k) + ψ(α̂0)] (through the straight-through clip).
    """
    logits, labels, alpha, target = _extreme_problem()
    a0, t0 = alpha.sum(-1, keepdims=True), target.sum(-1, keepdims=True)
    expected = {
        reverse_kl_loss: alpha
        * ((alpha - target) * polygamma(1, alpha) - (a0 - t0) * polygamma(1, a0)),
        forward_kl_loss: alpha * (digamma(alpha) - digamma(a0) - digamma(target) + digamma(t0)),
    }
    for loss_fn, oracle in expected.items():
        z = tf.Variable(logits.astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(z, labels, 100.0))
        grad = tape.gradient(loss, z).numpy()
        scale = np.abs(oracle).max(axis=1, keepdims=True)
        assert np.all(np.abs(grad - oracle) <= 2e-3 * np.abs(oracle) + 1e-5 * scale + 1e-6), (
            loss_fn.__name__
        )


def test_gradient_points_towards_target():
    """Gradient descent on the reverse KL moves α towards α̂ (the clip is straight-through)."""
    labels = np.array([1])
    z = tf.Variable([[60.0, -60.0, 0.0]])
    with tf.GradientTape() as tape:
        loss = reverse_kl_loss(z, labels, 100.0)
    grad = tape.gradient(loss, z).numpy()[0]
    assert grad[0] > 0 and grad[1] < 0


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 5)) * 3
    labels = rng.integers(0, 5, size=6)
    expected = -log_softmax(logits, axis=-1)[np.arange(6), labels]
    np.testing.assert_allclose(cross_entropy_loss(logits, labels).numpy(), expected, rtol=1e-10)
    uniform = -log_softmax(logits, axis=-1).mean(-1)
    np.testing.assert_allclose(cross_entropy_loss(logits, None).numpy(), uniform, rtol=1e-10)


def test_bad_input_is_a_clear_error():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="labels must be in"):
        reverse_kl_loss(logits, np.array([0, 4, 1]), 100.0)
    with pytest.raises(ValueError, match="labels must be in"):
        forward_kl_loss(logits, np.array([0, -1, 1]), 100.0)
    with pytest.raises(ValueError, match="shape"):
        reverse_kl_loss(logits, np.array([[0], [1], [1]]), 100.0)
    with pytest.raises(ValueError, match="non-integer"):
        reverse_kl_loss(logits, np.array([0.5, 1.0, 1.0]), 100.0)
    with pytest.raises(ValueError, match="target_concentration"):
        reverse_kl_loss(logits, np.array([0, 1, 1]), -1.0)
    with pytest.raises(ValueError, match="concentration"):
        reverse_kl_loss(logits, None, 100.0, concentration=0.0)
    with pytest.raises(ValueError, match="logits must have shape"):
        reverse_kl_loss(np.zeros(4, np.float32), None, 100.0)
    with pytest.raises(ValueError, match="normalize_by_target"):
        reverse_kl_loss(logits, None, 0.0, normalize_by_target=True)
    with pytest.raises(ValueError, match="labels must be in"):
        cross_entropy_loss(logits, np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="alpha_q must be finite and positive"):
        dirichlet_kl(np.ones((2, 3)), np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="alpha_p must be finite and positive"):
        dirichlet_kl(np.array([[1.0, np.nan, 1.0]]), np.ones((1, 3)))


def test_out_of_range_labels_fail_inside_tf_function():
    @tf.function
    def loss(z, y):
        return reverse_kl_loss(z, y, 100.0)

    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        loss(tf.zeros((2, 3)), tf.constant([0, 3]))
