"""``stochastic_model_fn``: frozen / redraw noise and log_mean / mean_loss against NumPy.

A tiny ``InfiniteMixture`` (6-5-4); with ``frozen`` noise and batch scope its
S weight draws are reconstructed from the layers' parameters and the frozen
seeds, and the attack is compared with PGD / FGM written out in NumPy on
those explicit networks (gradients by hand).
"""

import numpy as np
import pytest
import scipy.special as sp
import tensorflow as tf

from uqmix import attacks, layers
from uqmix.models import InfiniteMixture, MCDropout

DIM, K, B = 6, 4, 10
_rng = np.random.default_rng(11)
X = _rng.uniform(0.1, 0.9, (B, DIM)).astype(np.float32)
Y = np.arange(B) % K


def _mixture(seed=3):
    model = InfiniteMixture(num_classes=K, hidden_units=(5,), seed=seed, dataset_size=100)
    model.build((None, DIM))
    for layer in model.dense_layers:  # visible noise
        layer.log_row_variance.assign(np.full(layer.log_row_variance.shape, -0.5, np.float32))
    return model


def _frozen_weights(model, fn):
    """The S weight draws [S, d + 1, c] per layer that ``fn`` holds (same sampler, same seeds)."""
    draws = []
    for layer, frozen in zip(model.dense_layers, fn._frozen):
        seed = frozen.value()
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        draws.append(
            layers._weight_draws(
                layer.mean,
                layer.log_row_variance,
                layer.log_column_variance,
                fn.num_samples,
                seed,
                layers._noise_generator,
            )
            .numpy()
            .astype(np.float64)
        )
    return draws


def np_forward(x, weights):
    (w1, w2) = weights
    pre = np.einsum("bd,sdc->sbc", x, w1[:, :-1]) + w1[:, -1][:, None]
    hidden = np.maximum(pre, 0)
    logits = np.einsum("sbh,shc->sbc", hidden, w2[:, :-1]) + w2[:, -1][:, None]
    return pre, logits


def np_sample_grads(x, y, weights):
    """∂(−log p_s,y)/∂x for every sample s, [S, B, d], and p_s [S, B, K]."""
    (w1, w2) = weights
    pre, logits = np_forward(x, weights)
    probs = sp.softmax(logits, axis=-1)
    g_logits = probs - np.eye(K)[y][None]
    g_hidden = np.einsum("sbc,shc->sbh", g_logits, w2[:, :-1]) * (pre > 0)
    return np.einsum("sbh,sdh->sbd", g_hidden, w1[:, :-1]), probs


def np_grad(x, y, weights, combine):
    grads, probs = np_sample_grads(x, y, weights)
    if combine == "mean_loss":
        return grads.mean(0)
    p_y = probs[:, np.arange(len(x)), y]  # ∂(−log p̄_y) = Σ_s p_sy ∂(−log p_sy) / Σ_s p_sy
    return (p_y[..., None] * grads).sum(0) / p_y.sum(0)[:, None]


def np_pgd(x, y, weights, combine, eps, step, iterations):
    adv = x.astype(np.float64)
    for _ in range(iterations):
        adv = np.clip(adv + step * np.sign(np_grad(adv, y, weights, combine)), 0, 1)
        adv = np.clip(x + np.clip(adv - x, -eps, eps), 0, 1)
    return adv


@pytest.mark.parametrize(
    "num_samples, combine", [(1, "log_mean"), (3, "log_mean"), (3, "mean_loss")]
)
def test_frozen_noise_is_attacking_the_fixed_draws(num_samples, combine):
    model = _mixture()
    fn = attacks.stochastic_model_fn(model, num_samples, noise="frozen", combine=combine, seed=4)
    assert fn.options == {
        "gradient_samples": num_samples,
        "noise": "frozen",
        "combine": combine,
        "frozen_scope": "batch",
        "noise_seed": 4,
    }
    weights = _frozen_weights(model, fn)
    first, again = fn(tf.constant(X)).numpy(), fn(tf.constant(X)).numpy()
    np.testing.assert_array_equal(first, again)  # constant over evaluations
    _, logits = np_forward(X.astype(np.float64), weights)
    expected = (
        np.log(sp.softmax(logits, -1))
        if combine == "mean_loss"
        else np.log(sp.softmax(logits, -1).mean(0))
    )
    np.testing.assert_allclose(first, expected, atol=2e-5)
    states = [g.state.numpy() for g in fn.generators]
    adv = attacks.projected_gradient_descent(
        fn, X, 0.2, 0.05, 6, np.inf, fn.loss(), 0.0, 1.0, Y
    ).numpy()
    reference = np_pgd(X, Y, weights, combine, 0.2, 0.05, 6)
    assert np.mean(np.abs(adv - reference) < 1e-5) > 0.99  # (float32: a rare sign flip)
    assert np.abs(adv - X).max() > 0.1
    # the model's own random stream is untouched: the evaluation after the attack is as without it
    for generator, state in zip(fn.generators, states):
        np.testing.assert_array_equal(generator.state.numpy(), state)


def test_new_draw_changes_the_frozen_draw_reproducibly():
    model = _mixture()
    fn = attacks.stochastic_model_fn(model, 1, noise="frozen", seed=4)
    fn.new_draw(0)
    zero = fn(tf.constant(X)).numpy()
    fn.new_draw(1)
    one = fn(tf.constant(X)).numpy()
    fn.new_draw(0)
    np.testing.assert_array_equal(fn(tf.constant(X)).numpy(), zero)
    assert np.abs(one - zero).max() > 1e-3


def test_redraw_differs_per_evaluation_and_from_frozen():
    model = _mixture()
    fn = attacks.stochastic_model_fn(model, 2)
    assert fn.options["noise"] == "redraw" and fn.options["frozen_scope"] is None
    assert np.abs(fn(tf.constant(X)).numpy() - fn(tf.constant(X)).numpy()).max() > 1e-3
    assert attacks.stochastic_model_fn(model, 2) is fn  # cached: the attack's trace is reused
    frozen = attacks.stochastic_model_fn(model, 2, noise="frozen", seed=1)
    kwargs = dict(clip_min=0.0, clip_max=1.0, y=Y)
    a = attacks.projected_gradient_descent(fn, X, 0.2, 0.05, 5, np.inf, **kwargs).numpy()
    b = attacks.projected_gradient_descent(fn, X, 0.2, 0.05, 5, np.inf, **kwargs).numpy()
    c = attacks.projected_gradient_descent(frozen, X, 0.2, 0.05, 5, np.inf, **kwargs).numpy()
    d = attacks.projected_gradient_descent(frozen, X, 0.2, 0.05, 5, np.inf, **kwargs).numpy()
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_array_equal(c, d)


def test_frozen_dropout_masks_per_example():
    model = MCDropout(input_shape=(DIM,), num_classes=K, hidden_units=(16,))
    fn = attacks.stochastic_model_fn(model, 1, noise="frozen", seed=2)
    assert fn.frozen_scope == "example"
    np.testing.assert_array_equal(fn(tf.constant(X)).numpy(), fn(tf.constant(X)).numpy())
    redraw = attacks.stochastic_model_fn(model, 1)
    assert np.abs(redraw(tf.constant(X)).numpy() - redraw(tf.constant(X)).numpy()).max() > 1e-4
    with pytest.raises(ValueError, match="frozen_scope='example'"):
        attacks.stochastic_model_fn(model, 1, noise="frozen", frozen_scope="batch")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(noise="fixed"), "noise must be one of"),
        (dict(combine="mean"), "combine must be"),
        (dict(num_samples=0), "num_samples must be"),
        (dict(frozen_scope="x"), "frozen_scope"),
        (dict(seed=1.5), "seed must be"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        attacks.stochastic_model_fn(_mixture(), **kwargs)


def test_new_draws_and_batches_do_not_retrace():
    from uqmix.attacks import gradient_attacks

    model = _mixture()
    fn = attacks.stochastic_model_fn(model, 2, noise="frozen", combine="mean_loss", seed=3)

    def run(x):
        return attacks.projected_gradient_descent(
            fn, x, 0.1, 0.05, 2, np.inf, fn.loss(), 0.0, 1.0, Y[: len(x)]
        )

    run(X)
    before = gradient_attacks._compiled_pgd.experimental_get_tracing_count()
    for key in (1, 2):
        fn.new_draw(key)
        run(X[::-1].copy())
    assert gradient_attacks._compiled_pgd.experimental_get_tracing_count() == before
