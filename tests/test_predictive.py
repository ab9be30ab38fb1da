"""Predictive types and uncertainty measures against independent computations.

Oracles: float64 NumPy/SciPy formulas written out here from the definitions,
and Monte-Carlo estimates from sampling the Dirichlet.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special

from uqmix import uncertainty
from uqmix.predictive import DirichletPredictive, SampledPredictive


def _random_probs(rng, s, b, k, sharp=1.0):
    logits = rng.normal(size=(s, b, k)) * sharp
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _np_sampled_measures(p):
    """Definitions, float64, straight from DESIGN.md."""
    mean = p.mean(0)
    total = -(mean * np.log(mean)).sum(-1)
    expected = (-(p * np.log(p)).sum(-1)).mean(0)
    class_var = (p**2).mean(0) - mean**2
    s = p.shape[0]
    # EPKL by brute force over all ordered pairs (s, s'), s = s' included.
    epkl = np.zeros(p.shape[1])
    for i in range(s):
        for j in range(s):
            epkl += (p[i] * (np.log(p[i]) - np.log(p[j]))).sum(-1)
    epkl /= s * s
    return {
        "total_uncertainty": total,
        "expected_data_uncertainty": expected,
        "mutual_information": total - expected,
        "predictive_variance": class_var.max(-1),
        "class_variance": class_var,
        "epkl": epkl,
        "max_probability": mean.max(-1),
        "mean": mean,
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sampled_measures_match_float64_definitions(dtype):
    rng = np.random.default_rng(0)
    p = _random_probs(rng, 7, 11, 5, sharp=2.0)
    expected = _np_sampled_measures(p)
    pred = SampledPredictive(p.astype(dtype))
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for name in (
        "total_uncertainty",
        "expected_data_uncertainty",
        "mutual_information",
        "predictive_variance",
        "epkl",
        "max_probability",
    ):
        got = getattr(pred, name)()
        assert got.shape == (11,)
        assert got.dtype == tf.as_dtype(dtype)
        np.testing.assert_allclose(got.numpy(), expected[name], atol=tol, rtol=tol, err_msg=name)
    np.testing.assert_allclose(pred.class_variance().numpy(), expected["class_variance"], atol=tol)
    np.testing.assert_allclose(pred.mean().numpy(), expected["mean"], atol=tol)
    np.testing.assert_allclose(pred.log_mean().numpy(), np.log(expected["mean"]), atol=10 * tol)
    assert set(pred.measures()) == set(SampledPredictive.measure_names)


def test_sampled_from_logits_is_stable_and_matches_probs():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 6, 3)) * 3
    probs = special.softmax(logits, axis=-1)
    a = SampledPredictive.from_logits(logits)
    b = SampledPredictive(probs)
    for name in SampledPredictive.measure_names:
        np.testing.assert_allclose(
            getattr(a, name)().numpy(), getattr(b, name)().numpy(), atol=1e-9, err_msg=name
        )
    # Extreme logits: the mean's log stays finite and exact where probs underflow.
    extreme = np.array([[[0.0, -1000.0]], [[-1000.0, 0.0]]])
    pred = SampledPredictive.from_logits(extreme)
    np.testing.assert_allclose(pred.log_mean().numpy(), np.log([[0.5, 0.5]]), atol=1e-12)
    x = tf.constant(extreme, dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = SampledPredictive.from_logits(x).log_mean()[0, 0]
    assert np.all(np.isfinite(tape.gradient(value, x).numpy()))


def test_deterministic_case_has_zero_knowledge_uncertainty():
    p = _random_probs(np.random.default_rng(2), 1, 5, 4)
    pred = SampledPredictive(p)
    np.testing.assert_allclose(pred.mutual_information().numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(pred.predictive_variance().numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(pred.epkl().numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        pred.total_uncertainty().numpy(), pred.expected_data_uncertainty().numpy(), atol=1e-12
    )


def _np_dirichlet(alpha):
    a0 = alpha.sum(-1)
    p = alpha / a0[:, None]
    total = -(p * np.log(p)).sum(-1)
    expected = -(p * (special.digamma(alpha + 1) - special.digamma(a0 + 1)[:, None])).sum(-1)
    diff_ent = (
        special.gammaln(alpha).sum(-1)
        - special.gammaln(a0)
        - ((alpha - 1) * (special.digamma(alpha) - special.digamma(a0)[:, None])).sum(-1)
    )
    return {
        "total_uncertainty": total,
        "expected_data_uncertainty": expected,
        "mutual_information": total - expected,
        "epkl": (alpha.shape[-1] - 1) / a0,
        "precision": a0,
        "differential_entropy": diff_ent,
        "class_variance": p * (1 - p) / (a0[:, None] + 1),
        "max_probability": p.max(-1),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dirichlet_measures_match_closed_forms(dtype):
    rng = np.random.default_rng(3)
    alpha = rng.gamma(2.0, 2.0, size=(9, 4)) + 0.05
    expected = _np_dirichlet(alpha)
    pred = DirichletPredictive(alpha.astype(dtype))
    tol = 2e-4 if dtype == np.float32 else 1e-10
    for name in (
        "total_uncertainty",
        "expected_data_uncertainty",
        "mutual_information",
        "epkl",
        "precision",
        "differential_entropy",
        "max_probability",
    ):
        np.testing.assert_allclose(
            getattr(pred, name)().numpy(), expected[name], rtol=tol, atol=tol, err_msg=name
        )
    np.testing.assert_allclose(pred.class_variance().numpy(), expected["class_variance"], rtol=tol)
    np.testing.assert_allclose(
        pred.predictive_variance().numpy(), expected["class_variance"].max(-1), rtol=tol
    )
    assert set(pred.measures()) == set(DirichletPredictive.measure_names)


def test_dirichlet_measures_match_monte_carlo_of_sampled_categoricals():
    """Dir(α) sampled → SampledPredictive: MC estimates converge to the closed forms."""
    rng = np.random.default_rng(4)
    alpha = np.array([[2.0, 3.0, 5.0], [0.5, 0.7, 0.9], [20.0, 1.0, 1.0]])
    samples = np.stack([rng.dirichlet(a, size=200_000) for a in alpha], axis=1)  # [S, B, K]
    samples = np.clip(samples, 1e-300, None)
    samples /= samples.sum(-1, keepdims=True)
    mc = SampledPredictive(samples)
    closed = DirichletPredictive(alpha)
    np.testing.assert_allclose(
        mc.expected_data_uncertainty().numpy(),
        closed.expected_data_uncertainty().numpy(),
        rtol=0.01,
    )
    np.testing.assert_allclose(
        mc.mutual_information().numpy(), closed.mutual_information().numpy(), rtol=0.03
    )
    np.testing.assert_allclose(
        mc.class_variance().numpy(), closed.class_variance().numpy(), rtol=0.02
    )
    # Differential entropy: MC average of −log Dir(π; α).
    log_norm = special.gammaln(alpha.sum(-1)) - special.gammaln(alpha).sum(-1)
    log_pdf = log_norm + ((alpha - 1)[None] * np.log(samples)).sum(-1)
    np.testing.assert_allclose(
        -log_pdf.mean(0), closed.differential_entropy().numpy(), rtol=0.01, atol=0.01
    )


def test_dirichlet_from_logits_guards_extremes():
    z = tf.constant([[100.0, -100.0, 0.0], [-100.0, -100.0, -100.0], [1.0, 2.0, 3.0]])
    pred = DirichletPredictive.from_logits(z)
    for name, value in pred.measures().items():
        assert np.all(np.isfinite(value.numpy())), name
    np.testing.assert_allclose(pred.mean().numpy()[2], special.softmax([1.0, 2.0, 3.0]), rtol=1e-6)
    np.testing.assert_allclose(pred.alpha.numpy()[2], np.exp([1.0, 2.0, 3.0]), rtol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(z)
        total = sum(
            tf.reduce_sum(v) for v in DirichletPredictive.from_logits(z).measures().values()
        )
    assert np.all(np.isfinite(tape.gradient(total, z).numpy()))


def test_concatenate_and_take():
    p = _random_probs(np.random.default_rng(5), 3, 8, 4)
    whole = SampledPredictive(p)
    joined = SampledPredictive.concatenate(
        [SampledPredictive(p[:, :3]), SampledPredictive(p[:, 3:])]
    )
    np.testing.assert_allclose(joined.mean().numpy(), whole.mean().numpy(), atol=1e-12)
    np.testing.assert_allclose(whole.take([1, 5]).epkl().numpy(), whole.epkl().numpy()[[1, 5]])
    alpha = np.random.default_rng(6).gamma(2.0, size=(6, 3)) + 0.1
    d = DirichletPredictive.concatenate(
        [DirichletPredictive(alpha[:2]), DirichletPredictive(alpha[2:])]
    )
    np.testing.assert_allclose(d.alpha.numpy(), alpha, rtol=1e-12)
    np.testing.assert_allclose(d.take([4]).precision().numpy(), alpha[4:5].sum(-1), rtol=1e-12)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SampledPredictive(np.full((2, 3), 0.5)), "rank 3"),
        (lambda: SampledPredictive(np.array([[[0.7, 0.7]]])), "sum to 1"),
        (lambda: SampledPredictive(np.array([[[1.2, -0.2]]])), "negative"),
        (lambda: SampledPredictive(np.array([[[np.nan, 1.0]]])), "NaN"),
        (lambda: SampledPredictive(np.array([[["a", "b"]]])), "numeric"),
        (lambda: SampledPredictive.from_logits(np.array([[[np.inf, 0.0]]])), "NaN or Inf"),
        (lambda: DirichletPredictive(np.array([[1.0, 0.0]])), "positive"),
        (lambda: DirichletPredictive(np.array([[1.0, -2.0]])), "positive"),
        (lambda: DirichletPredictive(np.array([1.0, 2.0])), "rank 2"),
        (lambda: DirichletPredictive(np.array([[1.0, np.inf]])), "NaN or Inf"),
        (lambda: DirichletPredictive(np.array([[1.0]])), "at least 2 classes"),
    ],
)
def test_bad_input_raises_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_validation_inside_tf_function_raises():
    @tf.function
    def build(p):
        return SampledPredictive(p).mean()

    with pytest.raises(tf.errors.InvalidArgumentError, match="sum to 1"):
        build(tf.constant([[[0.7, 0.7]]]))
    np.testing.assert_allclose(build(tf.constant([[[0.3, 0.7]]])).numpy(), [[0.3, 0.7]], rtol=1e-6)


def test_score_signs_cover_every_measure():
    assert set(DirichletPredictive.measure_names) <= set(uncertainty.SCORE_SIGN)
    pred = DirichletPredictive(np.array([[1.0, 1.0], [50.0, 1.0]]))
    scores = pred.scores()
    # The flat Dirichlet is the more suspicious one under every measure.
    for name, value in scores.items():
        assert value.numpy()[0] > value.numpy()[1], name


@pytest.mark.parametrize("top", [0.0, 8.0, 12.0, 15.0, 20.0])
def test_dirichlet_measures_keep_float32_precision_for_confident_predictions(top):
    """Confident Prior Networks (α_top up to 5e8): float32 measures equal float64 definitions.

    The textbook forms cancel terms of size α ln α (differential entropy) or subtract two
    nearly equal entropies (mutual information) and lose every digit in float32 here.
    """
    rng = np.random.default_rng(int(top))
    z = rng.normal(size=(4, 10))
    z[:, 0] = top
    alpha = np.exp(z)
    alpha0 = alpha.sum(-1)
    p = alpha / alpha0[:, None]
    total = -(p * np.log(p)).sum(-1)
    expected = -(p * (special.digamma(alpha + 1) - special.digamma(alpha0 + 1)[:, None])).sum(-1)
    entropy = (
        special.gammaln(alpha).sum(-1)
        - special.gammaln(alpha0)
        - ((alpha - 1) * (special.digamma(alpha) - special.digamma(alpha0)[:, None])).sum(-1)
    )
    pred = DirichletPredictive.from_logits(z.astype(np.float32))
    np.testing.assert_allclose(pred.mutual_information().numpy(), total - expected, rtol=2e-5)
    np.testing.assert_allclose(
        pred.expected_data_uncertainty().numpy(), expected, rtol=2e-5, atol=1e-6
    )
    np.testing.assert_allclose(pred.differential_entropy().numpy(), entropy, rtol=2e-5)


def test_dirichlet_stable_helpers_match_float64_across_the_threshold():
    from uqmix import dirichlet

    a = np.array([1e-6, 0.3, 1.0, 9.999, 10.0, 10.001, 123.0, 1e4, 1e8], np.float64)
    np.testing.assert_allclose(
        dirichlet.log_minus_digamma_of_next(tf.constant(a)).numpy(),
        np.log(a) - special.digamma(a + 1),
        rtol=1e-9,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        dirichlet.lgamma_minus_a_digamma_plus_a(tf.constant(a[:-1])).numpy(),
        special.gammaln(a[:-1]) - a[:-1] * special.digamma(a[:-1]) + a[:-1],
        rtol=1e-9,
    )
