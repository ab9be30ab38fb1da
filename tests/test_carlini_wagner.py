"""Carlini–Wagner L2 against a float64 NumPy implementation of the reference ``l2_attack.py``.

The oracle follows Carlini & Wagner's reference loop literally (Python loops
over steps and examples, Adam written out, gradients of the small tanh MLP of
``test_attacks`` by hand), with the documented uqmix choices: per-example
constants, the margin success criterion, the input returned where no example
was found, abort-early compared with the previous check (no 1e6 start).
"""

import numpy as np
import pytest

from tests.test_attacks import BATCH, K, X, np_input_grad, np_mlp, tf_mlp
from uqmix import attacks
from uqmix.attacks import carlini_wagner


def np_carlini_wagner_l2(
    x,
    labels,
    targeted,
    lo=0.0,
    hi=1.0,
    steps=5,
    iterations=1000,
    abort_early=True,
    confidence=0.0,
    initial_const=1e-2,
    lr=5e-3,
    criterion=None,
):
    """Reference algorithm; criterion = (f(labels, logits) [B], ∂f/∂logits [B, K]) or None."""
    scale = hi - lo
    w0 = np.arctanh((np.clip((x - lo) / scale, 0, 1) * 2 - 1) * 0.999999)
    to_box = lambda w: (np.tanh(w) + 1) / 2 * scale + lo  # noqa: E731
    x_ref = to_box(w0)
    n = len(x)
    rows = np.arange(n)

    def margins(z):
        masked = z.copy()
        masked[rows, labels] = -np.inf
        return z[rows, labels], masked.max(1), masked.argmax(1)

    def f_and_grad(z):
        if criterion is not None:
            return criterion(labels, z)
        real, other, j = margins(z)
        margin = (other - real if targeted else real - other) + confidence
        g = np.zeros_like(z)
        sign = 1.0 if targeted else -1.0
        g[rows, j] = sign * (margin > 0)
        g[rows, labels] = -sign * (margin > 0)
        return np.maximum(0, margin), g

    def success(z):
        real, other, _ = margins(z)
        return real > other + confidence if targeted else other > real + confidence

    lower, upper = np.zeros(n), np.full(n, 1e10)
    const = np.full(n, initial_const)
    o_best_l2, o_best = np.full(n, 1e10), x.copy()
    o_found = np.zeros(n, bool)
    period = max(iterations // 10, 1)
    for step in range(steps):
        if steps >= 10 and step == steps - 1:
            const = upper.copy()
        modifier, m, v = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
        best_l2, found = np.full(n, 1e10), np.zeros(n, bool)
        prev = None
        for it in range(iterations):
            x_new = to_box(modifier + w0)
            z = np_mlp(x_new)
            l2 = ((x_new - x_ref) ** 2).sum(1)
            f, f_logit_grad = f_and_grad(z)
            loss = (l2 + const * f).sum()
            d_xnew = 2 * (x_new - x_ref) + const[:, None] * np_input_grad(
                x_new, labels, lambda _, __: f_logit_grad
            )
            grad = d_xnew * (1 - np.tanh(modifier + w0) ** 2) / 2 * scale
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad**2
            rate = lr * np.sqrt(1 - 0.999 ** (it + 1)) / (1 - 0.9 ** (it + 1))
            modifier = modifier - rate * m / (np.sqrt(v) + 1e-8)
            if abort_early and it % period == 0:
                if prev is not None and loss > prev * 0.9999:
                    break
                prev = loss
            ok = success(z)
            for e in range(n):
                if ok[e] and l2[e] < best_l2[e]:
                    best_l2[e], found[e] = l2[e], True
                if ok[e] and l2[e] < o_best_l2[e]:
                    o_best_l2[e], o_best[e], o_found[e] = l2[e], x_new[e], True
        for e in range(n):
            if found[e]:
                upper[e] = min(upper[e], const[e])
                if upper[e] < 1e9:
                    const[e] = (lower[e] + upper[e]) / 2
            else:
                lower[e] = max(lower[e], const[e])
                const[e] = (lower[e] + upper[e]) / 2 if upper[e] < 1e9 else const[e] * 10
    return o_best, np.where(o_found, o_best_l2, np.nan), o_found, const


CLEAN = np.argmax(np_mlp(X), 1)
TARGETS = np.argsort(np_mlp(X), axis=1)[:, -2]  # (class 0 dominates the fixture)


@pytest.mark.parametrize(
    "targeted, steps, abort, confidence",
    [(False, 4, True, 0.0), (True, 3, False, 0.5), (True, 10, True, 0.0)],
)
def test_matches_numpy_reference(targeted, steps, abort, confidence):
    labels = TARGETS if targeted else CLEAN
    kwargs = dict(
        binary_search_steps=steps,
        max_iterations=60,
        abort_early=abort,
        confidence=confidence,
        initial_const=0.1,
        learning_rate=0.05,
    )
    result = attacks.carlini_wagner_l2_run(
        tf_mlp, X, y=labels if targeted else None, batch_size=5, **kwargs
    )
    chunks = [
        np_carlini_wagner_l2(  # abort-early looks at the loss of a whole batch
            X[i : i + 5],
            labels[i : i + 5],
            targeted,
            steps=steps,
            iterations=60,
            abort_early=abort,
            confidence=confidence,
            initial_const=0.1,
            lr=0.05,
        )
        for i in range(0, BATCH, 5)
    ]
    adv, l2, found, const = (np.concatenate([c[j] for c in chunks]) for j in range(4))
    assert 0 < found.sum()  # the fixture is non-trivial: some succeed …
    if not abort:
        assert found.sum() < BATCH or steps > 3  # … (and the bookkeeping is exercised)
    np.testing.assert_array_equal(result.success, found)
    np.testing.assert_allclose(result.adversarial, adv, rtol=0, atol=1e-6)  # Adam: round-off
    np.testing.assert_allclose(result.l2_squared, l2, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result.const, const, rtol=1e-12)


def test_properties_box_success_and_more_search_steps():
    """Box constraints; success exactly where the margin criterion holds; x unchanged elsewhere;
    more binary-search steps never give a larger distance."""
    kwargs = dict(
        clip_min=0.0, clip_max=1.0, max_iterations=80, learning_rate=0.05, initial_const=0.01
    )
    short = attacks.carlini_wagner_l2_run(tf_mlp, X, binary_search_steps=2, **kwargs)
    long = attacks.carlini_wagner_l2_run(tf_mlp, X, binary_search_steps=6, **kwargs)
    for result in (short, long):
        adv = result.adversarial
        assert np.all(adv >= 0.0) and np.all(adv <= 1.0)
        z = np_mlp(adv)
        masked = z.copy()
        masked[np.arange(BATCH), CLEAN] = -np.inf
        margin_holds = masked.max(1) > z[np.arange(BATCH), CLEAN]
        np.testing.assert_array_equal(result.success, margin_holds)
        np.testing.assert_array_equal(adv[~result.success], X[~result.success])
    assert short.success.sum() < long.success.sum()
    both = short.success & long.success
    assert both.any() and np.all(long.l2_squared[both] <= short.l2_squared[both] + 1e-12)


def test_adaptive_criterion_replaces_the_margin_loss():
    """KL-PMF at the second most likely class: the oracle with f = KL and ∂f/∂z = softmax − π."""
    from scipy.special import softmax

    probs = softmax(np_mlp(X), axis=1)
    target = np.argsort(probs, axis=1)[:, -2]
    swapped = attacks.swap_top_and_target(probs, target).numpy()

    def kl(labels, z):
        q = softmax(z, axis=1)
        return (swapped * np.log(swapped / q)).sum(1), q - swapped

    result = attacks.carlini_wagner_l2_run(
        tf_mlp,
        X,
        y=target,
        targeted=True,
        loss_fn=attacks.kl_pmf_loss(probs),
        binary_search_steps=3,
        max_iterations=50,
        learning_rate=0.05,
        initial_const=1.0,
    )
    adv, l2, found, _ = np_carlini_wagner_l2(
        X, target, True, steps=3, iterations=50, initial_const=1.0, lr=0.05, criterion=kl
    )
    assert found.any()
    np.testing.assert_array_equal(result.success, found)
    np.testing.assert_allclose(result.adversarial, adv, rtol=0, atol=1e-6)


def test_float32_eager_equals_compiled_and_no_retrace():
    x = X.astype(np.float32)
    kwargs = dict(binary_search_steps=2, max_iterations=20, learning_rate=0.05)
    compiled = attacks.carlini_wagner_l2_run(tf_mlp, x, **kwargs)
    before = carlini_wagner._compiled_cw_batch.experimental_get_tracing_count()
    attacks.carlini_wagner_l2_run(
        tf_mlp,
        x[::-1].copy(),
        binary_search_steps=3,
        max_iterations=25,
        learning_rate=0.01,
        initial_const=0.5,
    )
    assert carlini_wagner._compiled_cw_batch.experimental_get_tracing_count() == before
    eager = attacks.carlini_wagner_l2_run(tf_mlp, x, compiled=False, **kwargs)
    assert compiled.adversarial.dtype == np.float32
    np.testing.assert_allclose(eager.adversarial, compiled.adversarial, atol=1e-6)
    np.testing.assert_array_equal(eager.success, compiled.success)


def test_cleverhans_rules_for_y_and_targeted():
    """targeted=None: targeted iff y is given (cleverhans); one-hot y accepted."""
    kwargs = dict(binary_search_steps=1, max_iterations=10)
    implicit = attacks.carlini_wagner_l2(tf_mlp, X, y=np.eye(K)[TARGETS], **kwargs)
    explicit = attacks.carlini_wagner_l2(tf_mlp, X, y=TARGETS, targeted=True, **kwargs)
    np.testing.assert_array_equal(implicit, explicit)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(clip_max=None), "both clip_min and clip_max"),
        (dict(binary_search_steps=0), "binary_search_steps must be >= 1"),
        (dict(learning_rate=0.0), "learning_rate must be"),
        (dict(targeted=True), "targeted=True needs y"),
        (dict(loss_fn=lambda labels, logits: logits[:, 0]), "needs targeted=True"),
        (dict(y=np.full(BATCH, K)), "out of range"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        attacks.carlini_wagner_l2(tf_mlp, X, **kwargs)
    with pytest.raises(ValueError, match="above clip_max"):
        attacks.carlini_wagner_l2(tf_mlp, X + 1.0)
