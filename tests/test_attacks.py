"""uqmix.attacks against a float64 NumPy implementation of cleverhans' rules.

The victim is a small fixed tanh MLP whose input gradient is written out by
hand in NumPy; the attacks run in float64 so the comparison is to round-off.
"""

import keras
import numpy as np
import pytest
import scipy.special as sp
import tensorflow as tf

from uqmix import attacks
from uqmix.attacks import gradient_attacks
from uqmix.models.base import PredictiveModelMixin
from uqmix.predictive import DirichletPredictive

# -- the fixed victim: logits = tanh(x W1 + b1) W2 + b2 --------------------------------
DIM, HIDDEN, K, BATCH = 6, 8, 4, 12
_rng = np.random.default_rng(7)
W1 = _rng.normal(0, 1.0, (DIM, HIDDEN))
B1 = _rng.normal(0, 0.3, HIDDEN)
W2 = _rng.normal(0, 1.0, (HIDDEN, K))
B2 = _rng.normal(0, 0.3, K)
X = _rng.uniform(0.05, 0.95, (BATCH, DIM))
# a few coordinates on the box faces, so clipping is exercised from the start
X[0, 0], X[1, 1], X[2, 2] = 0.0, 1.0, 0.0
EPS, EPS_ITER, NB_ITER = 0.3, 0.07, 8


def tf_mlp(x):
    hidden = tf.tanh(tf.matmul(x, tf.constant(W1, x.dtype)) + tf.constant(B1, x.dtype))
    return tf.matmul(hidden, tf.constant(W2, x.dtype)) + tf.constant(B2, x.dtype)


def np_mlp(x):
    return np.tanh(x @ W1 + B1) @ W2 + B2


def np_softmax(logits):
    return sp.softmax(logits, axis=-1)


def np_ce_logit_grad(labels, logits):
    """∂/∂logits of −log softmax(logits)_y."""
    return np_softmax(logits) - np.eye(K)[labels]


def np_input_grad(x, labels, logit_grad=np_ce_logit_grad):
    hidden = np.tanh(x @ W1 + B1)
    g_logits = logit_grad(labels, hidden @ W2 + B2)
    return ((g_logits @ W2.T) * (1.0 - hidden**2)) @ W1.T


# -- the cleverhans rules in NumPy -----------------------------------------------------
def np_optimize_linear(grad, eps, norm):
    if norm == np.inf:
        return eps * np.sign(grad)
    if norm == 1:
        abs_grad = np.abs(grad)
        tied = (abs_grad == abs_grad.max(axis=1, keepdims=True)).astype(float)
        return eps * np.sign(grad) * tied / tied.sum(axis=1, keepdims=True)
    return eps * grad / np.sqrt(np.maximum(1e-12, (grad**2).sum(axis=1, keepdims=True)))


def np_clip_eta(eta, norm, eps):
    if norm == np.inf:
        return np.clip(eta, -eps, eps)
    length = np.sqrt(np.maximum(1e-12, (eta**2).sum(axis=1, keepdims=True)))
    return eta * np.minimum(1.0, eps / length)


def np_clip(x, lo, hi):
    if lo is not None:
        x = np.maximum(x, lo)
    if hi is not None:
        x = np.minimum(x, hi)
    return x


def np_labels(x, y, targeted):
    return np.argmax(np_mlp(x), 1) if y is None else y


def np_grad(x, y, targeted, logit_grad=np_ce_logit_grad):
    return (-1.0 if targeted else 1.0) * np_input_grad(x, y, logit_grad)


def np_fgm(x, eps, norm, lo, hi, y, targeted, logit_grad=np_ce_logit_grad):
    y = np_labels(x, y, targeted)
    return np_clip(x + np_optimize_linear(np_grad(x, y, targeted, logit_grad), eps, norm), lo, hi)


def np_pgd(x, eps, eps_iter, nb_iter, norm, lo, hi, y, targeted, logit_grad=np_ce_logit_grad):
    y = np_labels(x, y, targeted)
    adv = x.copy()
    for _ in range(nb_iter):
        adv = np_clip(
            adv + np_optimize_linear(np_grad(adv, y, targeted, logit_grad), eps_iter, norm), lo, hi
        )
        adv = np_clip(x + np_clip_eta(adv - x, norm, eps), lo, hi)
    return adv


def np_mim(
    x, eps, eps_iter, nb_iter, norm, lo, hi, y, targeted, decay=1.0, logit_grad=np_ce_logit_grad
):
    y = np_labels(x, y, targeted)
    adv, momentum = x.copy(), np.zeros_like(x)
    for _ in range(nb_iter):
        grad = np_grad(adv, y, targeted, logit_grad)
        grad = grad / np.maximum(1e-12, np.abs(grad).mean(axis=1, keepdims=True))
        momentum = decay * momentum + grad
        adv = adv + np_optimize_linear(momentum, eps_iter, norm)
        adv = np_clip(x + np_clip_eta(adv - x, norm, eps), lo, hi)
    return adv


def assert_constraints(adv, x, eps, norm, lo, hi):
    delta = adv - x
    size = np.abs(delta).max(axis=1) if norm == np.inf else np.sqrt((delta**2).sum(axis=1))
    assert np.all(size <= eps + 1e-9), size.max()
    if lo is not None:
        assert np.all(adv >= lo)
    if hi is not None:
        assert np.all(adv <= hi)


CLIPS = {"none": (None, None), "box": (0.0, 1.0), "min_only": (0.0, None), "max_only": (None, 1.0)}
MODES = {  # name: (y, targeted)
    "untargeted": (None, False),
    "given_y": (np.arange(BATCH) % K, False),
    "targeted": ((np.arange(BATCH) + 1) % K, True),
}


def _run(attack, norm, mode, clip):
    y, targeted = MODES[mode]
    lo, hi = CLIPS[clip]
    kwargs = dict(clip_min=lo, clip_max=hi, y=y, targeted=targeted)
    if attack == "fgm":
        adv = attacks.fast_gradient_method(tf_mlp, X, EPS, norm, **kwargs)
        expected = np_fgm(X, EPS, norm, lo, hi, y, targeted)
    elif attack == "pgd":
        adv = attacks.projected_gradient_descent(
            tf_mlp, X, EPS, EPS_ITER, NB_ITER, norm, rand_init=False, **kwargs
        )
        expected = np_pgd(X, EPS, EPS_ITER, NB_ITER, norm, lo, hi, y, targeted)
    else:
        adv = attacks.momentum_iterative_method(
            tf_mlp, X, EPS, EPS_ITER, NB_ITER, norm, decay_factor=0.8, **kwargs
        )
        expected = np_mim(X, EPS, EPS_ITER, NB_ITER, norm, lo, hi, y, targeted, decay=0.8)
    return adv, expected, lo, hi


@pytest.mark.parametrize("attack", ["fgm", "pgd", "mim"])
@pytest.mark.parametrize("norm", [np.inf, 2])
@pytest.mark.parametrize("mode", list(MODES))
def test_attacks_match_numpy_reference(attack, norm, mode):
    clips = ["none", "box"] if mode != "untargeted" else list(CLIPS)
    for clip in clips:
        adv, expected, lo, hi = _run(attack, norm, mode, clip)
        assert adv.dtype == tf.float64
        np.testing.assert_allclose(
            adv.numpy(), expected, rtol=0, atol=1e-10, err_msg=f"{attack} {norm} {mode} {clip}"
        )
        assert_constraints(adv.numpy(), X, EPS, norm, lo, hi)
        assert np.abs(adv.numpy() - X).max() > 0.5 * EPS_ITER  # the attack moved


@pytest.mark.parametrize("norm", [np.inf, 2])
def test_update_without_xla_fusion_gives_the_same_results(norm, monkeypatch):
    fused = [_run(attack, norm, "targeted", "box")[0].numpy() for attack in ("pgd", "mim")]
    monkeypatch.setattr(gradient_attacks, "XLA_FUSED_UPDATE", False)
    for attack, expected in zip(("pgd", "mim"), fused):
        adv, reference, _, _ = _run(attack, norm, "targeted", "box")
        np.testing.assert_allclose(adv.numpy(), expected, rtol=0, atol=1e-13)
        np.testing.assert_allclose(adv.numpy(), reference, rtol=0, atol=1e-10)


def test_fgm_l1_matches_numpy_reference():
    adv = attacks.fast_gradient_method(tf_mlp, X, EPS, 1, clip_min=0.0, clip_max=1.0)
    np.testing.assert_allclose(adv.numpy(), np_fgm(X, EPS, 1, 0.0, 1.0, None, False), atol=1e-12)


def test_attacks_reach_their_goal():
    """Targeted PGD makes the target the prediction; untargeted PGD changes the prediction."""
    clean = np.argmax(np_mlp(X), 1)
    target = (clean + 1) % K
    adv = attacks.projected_gradient_descent(
        tf_mlp, X, 2.0, 0.1, 100, np.inf, y=target, targeted=True, rand_init=False
    ).numpy()
    assert np.mean(np.argmax(np_mlp(adv), 1) == target) > 0.9
    adv = attacks.projected_gradient_descent(
        tf_mlp, X, 2.0, 0.1, 100, np.inf, rand_init=False
    ).numpy()
    assert np.mean(np.argmax(np_mlp(adv), 1) != clean) > 0.9


def test_per_example_eps_equals_separate_runs():
    eps = np.linspace(0.05, 0.4, BATCH)
    adv = attacks.projected_gradient_descent(
        tf_mlp, X, eps, eps / 4, 5, 2, rand_init=False, clip_min=0.0, clip_max=1.0
    ).numpy()
    for i in (0, 5, BATCH - 1):
        single = attacks.projected_gradient_descent(
            tf_mlp,
            X[i : i + 1],
            eps[i],
            eps[i] / 4,
            5,
            2,
            rand_init=False,
            clip_min=0.0,
            clip_max=1.0,
        ).numpy()
        np.testing.assert_allclose(adv[i : i + 1], single, atol=1e-12)


# -- random start ------------------------------------------------------------------------
@pytest.mark.parametrize("norm", [np.inf, 2])
def test_random_start_is_seeded_and_inside_the_ball(norm):
    kwargs = dict(clip_min=0.0, clip_max=1.0, rand_init=True)
    first = attacks.projected_gradient_descent(tf_mlp, X, EPS, EPS_ITER, 3, norm, seed=5, **kwargs)
    again = attacks.projected_gradient_descent(tf_mlp, X, EPS, EPS_ITER, 3, norm, seed=5, **kwargs)
    other = attacks.projected_gradient_descent(tf_mlp, X, EPS, EPS_ITER, 3, norm, seed=6, **kwargs)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert np.abs(first.numpy() - other.numpy()).max() > 1e-3
    assert_constraints(first.numpy(), X, EPS, norm, 0.0, 1.0)
    # zero iterations return the start itself: inside the ball, not at x
    start = attacks.projected_gradient_descent(tf_mlp, X, EPS, EPS_ITER, 0, norm, seed=5, **kwargs)
    assert_constraints(start.numpy(), X, EPS, norm, 0.0, 1.0)
    assert np.abs(start.numpy() - X).max() > 0.05


def test_random_start_is_uniform_in_the_ball():
    """L2 in 2-D: P(‖η‖ ≤ r) = (r/ε)²; L∞: each coordinate U(−ε, ε) (mean 0, var ε²/3)."""
    x = np.zeros((20000, 2))
    l2 = attacks.random_lp_vector(x.shape, 2, 1.0, tf.constant([3, 4], tf.int64), tf.float64)
    radius = np.sqrt((l2.numpy() ** 2).sum(1))
    assert radius.max() <= 1.0 + 1e-12
    for r in (0.3, 0.5, 0.8):
        assert abs(np.mean(radius <= r) - r**2) < 0.015
    angle = np.arctan2(l2.numpy()[:, 1], l2.numpy()[:, 0])
    assert abs(np.mean(angle > 0) - 0.5) < 0.015
    linf = attacks.random_lp_vector(x.shape, np.inf, 0.5, tf.constant([3, 4], tf.int64), tf.float64)
    values = linf.numpy().ravel()
    assert np.abs(values).max() <= 0.5
    assert abs(values.mean()) < 0.01 and abs(values.var() - 0.25 / 3) < 0.003


def test_rand_minmax_larger_than_eps_is_projected():
    start = attacks.projected_gradient_descent(
        tf_mlp, X, 0.1, 0.05, 0, np.inf, rand_init=True, rand_minmax=1.0, seed=1
    )
    assert np.isclose(np.abs(start.numpy() - X).max(), 0.1)


@pytest.mark.parametrize("method", ["pgd", "mim"])
def test_checkpoints_equal_separate_runs(method):
    kwargs = dict(eps=EPS, eps_iter=EPS_ITER, norm=np.inf, clip_min=0.0, clip_max=1.0)
    checkpoints = list(
        attacks.iterative_attack_checkpoints(
            method, tf_mlp, X, (0, 2, 5), seed=3, decay_factor=0.7, **kwargs
        )
    )
    assert [n for n, _ in checkpoints] == [0, 2, 5]
    for count, adv in checkpoints:
        if method == "pgd":
            single = attacks.projected_gradient_descent(tf_mlp, X, nb_iter=count, seed=3, **kwargs)
        else:
            single = attacks.momentum_iterative_method(
                tf_mlp, X, nb_iter=count, decay_factor=0.7, **kwargs
            )
        np.testing.assert_array_equal(adv.numpy(), single.numpy())
    with pytest.raises(ValueError, match="increasing"):
        attacks.iterative_attack_checkpoints(method, tf_mlp, X, (5, 2), **kwargs)


# -- compilation ------------------------------------------------------------------------
def test_new_budgets_and_batches_do_not_retrace():
    run = lambda x, eps, n: attacks.projected_gradient_descent(  # noqa: E731
        tf_mlp, x, eps, eps / 4, n, np.inf, clip_min=0.0, clip_max=1.0, rand_init=True, seed=n
    )
    run(X, 0.2, 3)
    before = gradient_attacks._compiled_pgd.experimental_get_tracing_count()
    run(X, 0.1, 7)
    run(X[::-1].copy(), 0.25, 2)
    assert gradient_attacks._compiled_pgd.experimental_get_tracing_count() == before
    probs = np_softmax(np_mlp(X))
    for scale in (1.0, 0.5):
        loss = attacks.kl_pmf_loss(probs * scale + (1 - scale) / K)
        attacks.momentum_iterative_method(
            tf_mlp,
            X,
            0.2,
            0.05,
            3,
            loss_fn=loss,
            y=attacks.second_most_likely_class(probs),
            targeted=True,
        )
        if scale == 1.0:
            before = gradient_attacks._compiled_mim.experimental_get_tracing_count()
    assert gradient_attacks._compiled_mim.experimental_get_tracing_count() == before


def test_attack_inside_a_user_tf_function():
    """Adversarial training calls FGM from a compiled train step."""
    labels = tf.constant(np.arange(BATCH) % K)

    @tf.function
    def step(x):
        return attacks.fast_gradient_method(
            tf_mlp, x, 0.1, np.inf, clip_min=0.0, clip_max=1.0, y=labels
        )

    np.testing.assert_allclose(
        step(tf.constant(X)).numpy(),
        np_fgm(X, 0.1, np.inf, 0.0, 1.0, labels.numpy(), False),
        atol=1e-12,
    )


# -- custom losses, multi-sample model_fns, adaptive criteria ----------------------------
def test_custom_loss_fn_matches_numpy_reference():
    """The KL-PMF criterion as loss_fn; ∂KL(π‖softmax z)/∂z = softmax(z) − π."""
    probs = np_softmax(np_mlp(X))
    target = np.argsort(probs, axis=1)[:, -2]
    swapped = probs.copy()
    top = probs.argmax(1)
    rows = np.arange(BATCH)
    swapped[rows, top], swapped[rows, target] = probs[rows, target], probs[rows, top]

    def kl_logit_grad(labels, logits):
        return np_softmax(logits) - swapped

    loss = attacks.kl_pmf_loss(probs)
    adv = attacks.projected_gradient_descent(
        tf_mlp,
        X,
        EPS,
        EPS_ITER,
        NB_ITER,
        2,
        loss_fn=loss,
        y=target,
        targeted=True,
        rand_init=False,
        clip_min=0.0,
        clip_max=1.0,
    )
    expected = np_pgd(X, EPS, EPS_ITER, NB_ITER, 2, 0.0, 1.0, target, True, kl_logit_grad)
    np.testing.assert_allclose(adv.numpy(), expected, atol=1e-10)
    adv = attacks.momentum_iterative_method(
        tf_mlp, X, EPS, EPS_ITER, NB_ITER, np.inf, loss_fn=loss, y=target, targeted=True
    )
    expected = np_mim(
        X, EPS, EPS_ITER, NB_ITER, np.inf, None, None, target, True, logit_grad=kl_logit_grad
    )
    np.testing.assert_allclose(adv.numpy(), expected, atol=1e-10)
    before = loss(labels=tf.constant(target), logits=tf_mlp(tf.constant(X))).numpy()
    after = loss(labels=tf.constant(target), logits=tf_mlp(adv)).numpy()
    assert np.mean(after) < np.mean(before)


class ScaledLinearMixture(keras.Model, PredictiveModelMixin):
    """A deterministic 'stochastic' model: sample s has logits c_s (x V + a), c_s = 0.5 + s/S."""

    predictive_kind = "sampled_logits"

    def __init__(self, weights, bias):
        super().__init__()
        self.v = tf.constant(weights)
        self.a = tf.constant(bias)
        self.calls = 0

    def predictive_parameters(self, x, num_samples, training=False):
        self.calls += 1
        scales = 0.5 + tf.range(num_samples, dtype=x.dtype) / num_samples
        return scales[:, None, None] * (tf.matmul(x, self.v) + self.a)[None]


def _mixture_reference(x, v, a, num_samples):
    scales = 0.5 + np.arange(num_samples) / num_samples
    logits = scales[:, None, None] * (x @ v + a)[None]
    return scales, sp.softmax(logits, axis=-1)


@pytest.mark.parametrize("num_samples", [1, 5])
def test_multi_sample_model_fn_equals_explicit_average(num_samples):
    v, a = _rng.normal(size=(DIM, K)), _rng.normal(size=K)
    model = ScaledLinearMixture(v, a)
    logits_fn = attacks.predictive_logits_fn(model, num_samples)
    assert attacks.predictive_logits_fn(model, num_samples) is logits_fn  # cached
    model.calls = 0
    log_mean = logits_fn(tf.constant(X)).numpy()
    assert model.calls == 1  # all samples from one vectorised call
    scales, probs = _mixture_reference(X, v, a, num_samples)
    np.testing.assert_allclose(log_mean, np.log(probs.mean(0)), atol=1e-12)
    y = np.arange(BATCH) % K
    onehot = np.eye(K)[y]

    # gradient of −log p̄_y: −Σ_s p_sy c_s V(e_y − p_s) / Σ_s p_sy
    p_y = probs[:, np.arange(BATCH), y]  # [S, B]
    per_sample = np.einsum("s,sbk,jk->sbj", scales, onehot[None] - probs, v)
    grad_mixture = -(p_y[..., None] * per_sample).sum(0) / p_y.sum(0)[:, None]
    adv = attacks.fast_gradient_method(logits_fn, X, 0.1, 2, y=y)
    np.testing.assert_allclose(
        adv.numpy(), X + np_optimize_linear(grad_mixture, 0.1, 2), atol=1e-12
    )

    # EOT: gradient of (1/S) Σ_s −log p_sy = −(1/S) Σ_s c_s V(e_y − p_s)
    grad_eot = -per_sample.mean(0)
    adv_eot = attacks.fast_gradient_method(
        attacks.sample_logits_fn(model, num_samples),
        X,
        0.1,
        2,
        loss_fn=attacks.expectation_over_samples(),
        y=y,
    )
    np.testing.assert_allclose(
        adv_eot.numpy(), X + np_optimize_linear(grad_eot, 0.1, 2), atol=1e-12
    )
    if num_samples == 1:
        np.testing.assert_allclose(adv_eot.numpy(), adv.numpy(), atol=1e-12)
    else:
        assert np.abs(adv_eot.numpy() - adv.numpy()).max() > 1e-4
    # EOT's default label is the argmax of the mean prediction
    adv_default = attacks.fast_gradient_method(
        attacks.sample_logits_fn(model, num_samples),
        X,
        0.1,
        2,
        loss_fn=attacks.expectation_over_samples(),
    )
    adv_mean_label = attacks.fast_gradient_method(
        attacks.sample_logits_fn(model, num_samples),
        X,
        0.1,
        2,
        y=probs.mean(0).argmax(1),
        loss_fn=attacks.expectation_over_samples(),
    )
    np.testing.assert_allclose(adv_default.numpy(), adv_mean_label.numpy(), atol=1e-12)


def test_eot_of_a_bound_loss_averages_it_per_sample():
    v, a = _rng.normal(size=(DIM, K)), _rng.normal(size=K)
    model = ScaledLinearMixture(v, a)
    clean = np_softmax(np_mlp(X))
    target = np.argsort(clean, axis=1)[:, -2]
    loss = attacks.expectation_over_samples(attacks.kl_pmf_loss(clean))
    sample_logits = attacks.sample_logits_fn(model, 3)(tf.constant(X))
    value = loss(labels=tf.constant(target), logits=sample_logits).numpy()
    single = attacks.kl_pmf_loss(clean)
    expected = np.mean(
        [single(labels=tf.constant(target), logits=sample_logits[s]).numpy() for s in range(3)],
        axis=0,
    )
    np.testing.assert_allclose(value, expected, atol=1e-12)


def _np_dirichlet_kl(p, q):
    p0, q0 = p.sum(-1), q.sum(-1)
    return (
        sp.gammaln(p0)
        - sp.gammaln(q0)
        - (sp.gammaln(p) - sp.gammaln(q)).sum(-1)
        + ((p - q) * (sp.digamma(p) - sp.digamma(p0)[:, None])).sum(-1)
    )


def test_swap_and_second_most_likely():
    values = _rng.uniform(size=(BATCH, K))
    target = attacks.second_most_likely_class(values).numpy()
    np.testing.assert_array_equal(target, np.argsort(values, axis=1)[:, -2])
    swapped = attacks.swap_top_and_target(values, target).numpy()
    rows, top = np.arange(BATCH), values.argmax(1)
    expected = values.copy()
    expected[rows, top], expected[rows, target] = values[rows, target], values[rows, top]
    np.testing.assert_array_equal(swapped, expected)
    same = attacks.swap_top_and_target(values, top).numpy()  # target = top: unchanged
    np.testing.assert_array_equal(same, values)


def test_adaptive_criteria_zero_at_the_permuted_target_and_positive_elsewhere():
    logits = np_mlp(X)
    probs = np_softmax(logits)
    target = np.argsort(probs, axis=1)[:, -2]
    swapped_probs = attacks.swap_top_and_target(probs, target).numpy()
    pmf = attacks.kl_pmf_loss(probs)
    labels = tf.constant(target)
    at_target = pmf(labels=labels, logits=tf.constant(np.log(swapped_probs))).numpy()
    np.testing.assert_allclose(at_target, 0.0, atol=1e-12)
    for other in (logits, logits + _rng.normal(size=logits.shape)):
        value = pmf(labels=labels, logits=tf.constant(other)).numpy()
        q = np_softmax(other)
        np.testing.assert_allclose(
            value, (swapped_probs * np.log(swapped_probs / q)).sum(1), rtol=1e-10
        )
        assert np.all(value > 0)

    alpha = np.exp(logits) * 3.0
    swapped_alpha = attacks.swap_top_and_target(alpha, target).numpy()
    kl_dir = attacks.kl_dir_loss(DirichletPredictive(alpha))
    np.testing.assert_allclose(
        kl_dir(labels=labels, logits=tf.constant(np.log(swapped_alpha))).numpy(), 0.0, atol=1e-9
    )
    for other in (np.log(alpha), np.log(alpha) + 0.5, np.log(swapped_alpha) * 1.1):
        value = kl_dir(labels=labels, logits=tf.constant(other)).numpy()
        np.testing.assert_allclose(value, _np_dirichlet_kl(swapped_alpha, np.exp(other)), rtol=1e-8)
        assert np.all(value > 0)


def test_targeted_kl_dir_attack_moves_towards_the_target():
    alpha_fn = lambda x: tf_mlp(x)  # noqa: E731  (z = logits, α = exp z)
    alpha = np.exp(np_mlp(X))
    target = np.argsort(alpha, axis=1)[:, -2]
    loss = attacks.kl_dir_loss(alpha)
    adv = attacks.projected_gradient_descent(
        alpha_fn, X, 1.0, 0.05, 60, np.inf, loss_fn=loss, y=target, targeted=True, rand_init=False
    )
    before = loss(labels=tf.constant(target), logits=tf_mlp(tf.constant(X))).numpy()
    after = loss(labels=tf.constant(target), logits=tf_mlp(adv)).numpy()
    assert np.all(after < 0.5 * before)
    rows = np.arange(BATCH)
    target_before = np_softmax(np_mlp(X))[rows, target]
    target_after = np_softmax(np_mlp(adv.numpy()))[rows, target]
    assert np.all(target_after > target_before)


# -- bad input ---------------------------------------------------------------------------
def _pgd(**overrides):
    kwargs = dict(
        model_fn=tf_mlp,
        x=X,
        eps=0.3,
        eps_iter=0.1,
        nb_iter=3,
        norm=np.inf,
        clip_min=0.0,
        clip_max=1.0,
        rand_init=False,
    )
    kwargs.update(overrides)
    return attacks.projected_gradient_descent(**kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(eps=-0.1), "eps must be"),
        (dict(eps_iter=0.5), "eps_iter must be <= eps"),
        (dict(eps_iter=-0.01), "eps_iter must be"),
        (dict(x=np.where(np.arange(DIM) == 2, np.nan, X)), "NaN"),
        (dict(x=X + 0.5), "above clip_max"),
        (dict(x=X - 0.5), "below clip_min"),
        (dict(clip_min=1.0, clip_max=0.0, x=np.full_like(X, 0.5)), "clip_min must be <= clip_max"),
        (dict(y=np.zeros((BATCH, 1), np.int64)), "shape \\[batch\\]"),
        (dict(y=np.zeros(BATCH + 1, np.int64)), "entries for a batch"),
        (dict(y=np.full(BATCH, K, np.int64)), "out of range"),
        (dict(y=np.full(BATCH, 0.5)), "integer class indices"),
        (dict(targeted=True), "targeted=True needs y"),
        (dict(norm=3), "norm must be"),
        (dict(norm=1), "norm must be"),
        (dict(nb_iter=-1), "nb_iter must be >= 0"),
        (dict(nb_iter=2.5), "nb_iter must be an integer"),
        (dict(seed=1.5, rand_init=True), "seed must be"),
        (dict(loss_fn=0.0), "loss_fn must be a callable"),
        (dict(eps=np.full(BATCH + 2, 0.3)), "values for a batch"),
        (dict(x=X[0]), "at least one feature axis"),
    ],
)
def test_bad_input_raises_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        _pgd(**overrides)


def test_bad_input_raises_for_fgm_and_mim():
    with pytest.raises(ValueError, match="eps must be"):
        attacks.fast_gradient_method(tf_mlp, X, -1.0, np.inf)
    with pytest.raises(ValueError, match="norm must be"):
        attacks.fast_gradient_method(tf_mlp, X, 0.1, 0)
    with pytest.raises(ValueError, match="NaN"):
        attacks.momentum_iterative_method(tf_mlp, X * np.nan, 0.1)
    with pytest.raises(ValueError, match="targeted=True needs y"):
        attacks.momentum_iterative_method(tf_mlp, X, 0.1, targeted=True)
    with pytest.raises(ValueError, match="loss_fn must be a callable"):
        attacks.momentum_iterative_method(tf_mlp, X, 0.3, 0.06, 10, np.inf, loss_fn=0.0)
    with pytest.raises(TypeError):  # uqmix's extras are keyword-only
        attacks.projected_gradient_descent(
            tf_mlp, X, 0.3, 0.1, 3, np.inf, None, 0.0, 1.0, None, False, None, None, False, 5
        )
    with pytest.raises(ValueError, match="one loss per example"):
        attacks.fast_gradient_method(
            tf_mlp, X, 0.1, np.inf, loss_fn=lambda labels, logits: tf.reduce_sum(logits)
        )
    with pytest.raises(ValueError, match="probabilities"):
        attacks.kl_pmf_loss(np.ones((BATCH, K)))
    with pytest.raises(ValueError, match="positive"):
        attacks.kl_dir_loss(-np.ones((BATCH, K)))


# -- cleverhans drop-in: positional calls and defaults ----------------------------------
def test_positional_cleverhans_calls_and_defaults_match_numpy_reference():
    """cleverhans 4.0's parameter order and defaults: FGM (…, y, targeted, sanity_checks),
    PGD (…, targeted, rand_init=None → no random start, rand_minmax, sanity_checks), MIM
    (eps=0.3, eps_iter=0.06, nb_iter=10, norm=inf, clip_min, clip_max, y, targeted,
    decay_factor=1.0, sanity_checks)."""
    y = (np.arange(BATCH) + 1) % K
    fgm = attacks.fast_gradient_method(tf_mlp, X, 0.2, 2, None, 0.0, 1.0, y, True, True)
    np.testing.assert_allclose(fgm.numpy(), np_fgm(X, 0.2, 2, 0.0, 1.0, y, True), atol=1e-10)
    pgd = attacks.projected_gradient_descent(tf_mlp, X, EPS, EPS_ITER, NB_ITER, np.inf)
    np.testing.assert_allclose(
        pgd.numpy(), np_pgd(X, EPS, EPS_ITER, NB_ITER, np.inf, None, None, None, False), atol=1e-10
    )
    pgd = attacks.projected_gradient_descent(
        tf_mlp, X, EPS, EPS_ITER, NB_ITER, 2, None, 0.0, 1.0, y, True, None, None, True
    )
    np.testing.assert_allclose(
        pgd.numpy(), np_pgd(X, EPS, EPS_ITER, NB_ITER, 2, 0.0, 1.0, y, True), atol=1e-10
    )
    mim = attacks.momentum_iterative_method(tf_mlp, X)
    np.testing.assert_allclose(
        mim.numpy(), np_mim(X, 0.3, 0.06, 10, np.inf, None, None, None, False), atol=1e-10
    )
    mim = attacks.momentum_iterative_method(
        tf_mlp, X, EPS, EPS_ITER, NB_ITER, 2, 0.0, 1.0, y, True, 0.5, False
    )
    np.testing.assert_allclose(
        mim.numpy(), np_mim(X, EPS, EPS_ITER, NB_ITER, 2, 0.0, 1.0, y, True, decay=0.5), atol=1e-10
    )


# -- cleverhans itself (not a dependency: skipped when absent) ---------------------------
def test_identical_to_cleverhans():
    pytest.importorskip("cleverhans")
    from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method as ch_fgm
    from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method as ch_mim
    from cleverhans.tf2.attacks.projected_gradient_descent import (
        projected_gradient_descent as ch_pgd,
    )

    net = keras.Sequential(
        [keras.Input((DIM,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(K)]
    )
    x = X.astype(np.float32)
    box = dict(clip_min=0.0, clip_max=1.0)
    target = (np.arange(BATCH) + 2) % K
    for norm in (np.inf, 2):
        pairs = [
            (
                attacks.fast_gradient_method(net, x, 0.2, norm, **box),
                ch_fgm(net, x, 0.2, norm, **box),
            ),
            (
                attacks.projected_gradient_descent(
                    net, x, 0.3, 0.05, 10, norm, rand_init=False, y=target, targeted=True, **box
                ),
                ch_pgd(net, x, 0.3, 0.05, 10, norm, y=target, targeted=True, **box),
            ),
            (
                attacks.momentum_iterative_method(net, x, 0.3, 0.05, 10, norm, **box),
                ch_mim(net, x, 0.3, 0.05, 10, norm, **box),
            ),
        ]
        # positional calls in cleverhans' order, and calls with only the required arguments
        pairs += [
            (
                attacks.fast_gradient_method(net, x, 0.2, norm, None, 0.0, 1.0, target, True, True),
                ch_fgm(net, x, 0.2, norm, None, 0.0, 1.0, target, True, True),
            ),
            (
                attacks.projected_gradient_descent(net, x, 0.3, 0.05, 10, norm),
                ch_pgd(net, x, 0.3, 0.05, 10, norm),
            ),
            (
                attacks.projected_gradient_descent(
                    net, x, 0.3, 0.05, 10, norm, None, 0.0, 1.0, target, True, None, None, True
                ),
                # (cleverhans' PGD sanity check crashes under NumPy 2: np.all of a ragged list)
                ch_pgd(
                    net, x, 0.3, 0.05, 10, norm, None, 0.0, 1.0, target, True, None, None, False
                ),
            ),
            (attacks.momentum_iterative_method(net, x), ch_mim(net, x)),
            (
                attacks.momentum_iterative_method(
                    net, x, 0.3, 0.05, 10, norm, 0.0, 1.0, target, True, 0.5, True
                ),
                ch_mim(net, x, 0.3, 0.05, 10, norm, 0.0, 1.0, target, True, 0.5, True),
            ),
        ]
        for ours, theirs in pairs:
            assert ours.dtype == tf.float32
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=1e-6)
