"""FGM, PGD and MIM with cleverhans 4.0's TF2 signatures and rules, compiled end to end.

Drop-in replacements for ``cleverhans.tf2.attacks``: same names, arguments
and results (``model_fn(x)`` returns logits; ``loss_fn(labels, logits)``
returns one loss per example; untargeted attacks ascend the loss of y,
targeted ones descend the loss of the target; y defaults to the model's
clean prediction argmax_k logits, avoiding label leaking).  One step, with
``optimize_linear`` / ``clip_eta`` of ``uqmix.attacks.norms``:

* FGM:  x' = clip(x + optimize_linear(∇, eps))
* PGD:  x'_0 = clip(x + clip_eta(η_0, eps)), η_0 uniform in the rand_minmax
        ball (or 0); then nb_iter times
        a = clip(x'_i + optimize_linear(∇(x'_i), eps_iter));
        x'_{i+1} = clip(x + clip_eta(a − x, eps))
* MIM:  g ← decay_factor·g + ∇ / max(1e-12, mean|∇|)  (mean over each example);
        x'_{i+1} = clip(x + clip_eta(x'_i + optimize_linear(g, eps_iter) − x, eps))

with ∇ the gradient of the per-example loss (negated when targeted) and
clip the box [clip_min, clip_max].  The whole attack — default labels, random
start, every iteration — is one ``tf.function`` call (a ``tf.while_loop``),
batched, with no host round trip; ε, step, iteration count, bounds, labels
and the seed enter as tensors, so it is traced again only when shapes,
``model_fn``, ``loss_fn`` or the static options (norm, targeted, which
bounds are set) change.  Inputs are validated eagerly before the loop.  The
per-iteration update (step, projection, clipping: a chain of elementwise
ops) is fused by XLA; the model's forward/backward pass runs on TensorFlow's
own kernels, so the results equal cleverhans' bit for bit (see
``XLA_FUSED_UPDATE``).

Signatures: cleverhans 4.0's TF2 positional parameters in cleverhans' order
with cleverhans' defaults, ``sanity_checks`` included (FGM and PGD default
False, MIM True, as in cleverhans); uqmix's extras (``seed`` for PGD,
``loss_fn`` for MIM) are keyword-only after them.  A positional cleverhans
call, or one with only cleverhans' required arguments, returns what
cleverhans returns (PGD: ``rand_init=None`` means no random start, as in
cleverhans; any truthy value starts at a random point of the ``rand_minmax``
ball, default radius eps).

Where this differs from cleverhans 4.0 (stricter, never silently different):
* one-sided clipping works (cleverhans asserts or ignores it);
* ``targeted=True`` without ``y`` raises ValueError (cleverhans silently
  targets the predicted class);
* MIM accepts ``loss_fn`` (keyword-only; cleverhans' MIM has none);
* PGD's random start is stateless with a ``seed`` (reproducible);
* bad input (eps < 0, eps_iter > eps, NaN/Inf in x, x outside the clip
  range, wrongly shaped labels, labels out of range, unsupported norm)
  raises ValueError whenever the attack is called eagerly, whatever
  ``sanity_checks`` says (cleverhans asserts only with sanity_checks);
  inside someone else's ``tf.function`` the value checks of x (NaN, box)
  become in-graph assertions only with ``sanity_checks=True``;
* float64 inputs stay float64 (cleverhans casts to float32); eps and
  eps_iter may be one value per example ([B]).
"""

import typing

import numpy as np
import tensorflow as tf

from uqmix.attacks import checks, losses
from uqmix.attacks.norms import (
    AVOID_ZERO_DIV,
    canonical_norm,
    clip_eta,
    optimize_linear,
    random_lp_vector,
)


# -- the compiled core ------------------------------------------------------------------
def _default_labels(logits):
    """argmax of the prediction: logits [B, K], or per-sample logits [S, B, K] (mean predictive)."""
    if logits.shape.rank == 2:
        return tf.argmax(logits, 1)
    if logits.shape.rank == 3:
        log_mean = tf.reduce_logsumexp(tf.nn.log_softmax(logits, axis=-1), axis=0)
        return tf.argmax(log_mean, 1)
    raise ValueError(
        f"model_fn must return logits [batch, classes] (or [samples, batch, classes]), "
        f"got shape {logits.shape}."
    )


def _clip(values, clip_min, clip_max):
    """The box constraint; either bound may be None (cleverhans: both or neither)."""
    if clip_min is not None and clip_max is not None:
        return tf.clip_by_value(values, clip_min, clip_max)
    if clip_min is not None:
        return tf.maximum(values, clip_min)
    if clip_max is not None:
        return tf.minimum(values, clip_max)
    return values


def _loss_gradient(model_fn, loss_fn, x, labels, targeted):
    """∇_x of Σ_b loss_b (−loss when targeted), as cleverhans' compute_gradient."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = losses.per_example_loss(loss_fn, labels, model_fn(x))
        if targeted:
            loss = -loss
    return tape.gradient(loss, x)


def _labels_or_prediction(model_fn, x, y):
    return _default_labels(model_fn(x)) if y is None else y


def _fgm_step(model_fn, loss_fn, x, y, eps, clip_min, clip_max, norm, targeted):
    grad = _loss_gradient(model_fn, loss_fn, x, y, targeted)
    return _clip(x + optimize_linear(grad, eps, norm), clip_min, clip_max)


def _pgd_update(adv_x, grad, x, eps, eps_iter, clip_min, clip_max, norm):
    """FGM step of size eps_iter from adv_x, then projection into the ε-ball and the box."""
    adv_x = _clip(adv_x + optimize_linear(grad, eps_iter, norm), clip_min, clip_max)
    return _clip(x + clip_eta(adv_x - x, norm, eps), clip_min, clip_max)


def _mim_update(
    adv_x, momentum, grad, grad_scale, x, eps, eps_iter, decay_factor, clip_min, clip_max, norm
):
    """Momentum accumulation, step of size eps_iter, projection (grad_scale = max(1e-12, mean|∇|))."""
    momentum = decay_factor * momentum + grad / grad_scale
    adv_x = adv_x + optimize_linear(momentum, eps_iter, norm)
    return _clip(x + clip_eta(adv_x - x, norm, eps), clip_min, clip_max), momentum


# The per-iteration update is a chain of ~8 elementwise passes over input-sized
# tensors; as separate TensorFlow kernels they cost about as much memory
# traffic as the model's matmuls on MNIST.  XLA fuses them into one pass.  Only
# the update is compiled with XLA: the model's forward/backward stays on
# TensorFlow's kernels, so the arithmetic — and the adversarial examples —
# stay identical to cleverhans' (the fused ops are exact IEEE operations; L2
# norms may differ in the last bit through the reduction order).  Set
# ``XLA_FUSED_UPDATE = False`` on a platform without XLA.
XLA_FUSED_UPDATE = True
_pgd_update_xla = tf.function(_pgd_update, jit_compile=True)
_mim_update_xla = tf.function(_mim_update, jit_compile=True)


@tf.function
def _compiled_fgm(
    model_fn, loss_fn, loss_context, x, y, eps, clip_min, clip_max, *, norm, targeted
):
    loss = losses.bind(loss_fn, loss_context)
    y = _labels_or_prediction(model_fn, x, y)
    return _fgm_step(model_fn, loss, x, y, eps, clip_min, clip_max, norm, targeted)


@tf.function
def _compiled_pgd(
    model_fn,
    loss_fn,
    loss_context,
    x,
    y,
    start,
    eps,
    eps_iter,
    nb_iter,
    clip_min,
    clip_max,
    rand_minmax,
    seed,
    *,
    norm,
    targeted,
    rand_init,
    fused,
):
    """nb_iter PGD iterations from ``start`` (None: the random or zero start) → (x', y)."""
    loss = losses.bind(loss_fn, loss_context)
    update = _pgd_update_xla if fused else _pgd_update
    if start is not None:
        adv_x = start
    else:
        if rand_init:
            eta = random_lp_vector(tf.shape(x), norm, rand_minmax, seed, dtype=x.dtype)
        else:
            eta = tf.zeros_like(x)
        adv_x = _clip(x + clip_eta(eta, norm, eps), clip_min, clip_max)
    y = _labels_or_prediction(model_fn, x, y)

    def body(i, adv_x):
        grad = _loss_gradient(model_fn, loss, adv_x, y, targeted)
        return i + 1, update(adv_x, grad, x, eps, eps_iter, clip_min, clip_max, norm)

    _, adv_x = tf.while_loop(
        lambda i, _: i < nb_iter, body, (tf.constant(0), adv_x), parallel_iterations=1
    )
    return adv_x, y


@tf.function
def _compiled_mim(
    model_fn,
    loss_fn,
    loss_context,
    x,
    y,
    start,
    momentum,
    eps,
    eps_iter,
    nb_iter,
    clip_min,
    clip_max,
    decay_factor,
    *,
    norm,
    targeted,
    fused,
):
    """nb_iter MIM iterations from (start, momentum) (None: x and 0) → (x', momentum, y)."""
    loss = losses.bind(loss_fn, loss_context)
    update = _mim_update_xla if fused else _mim_update
    y = _labels_or_prediction(model_fn, x, y)
    axes = list(range(1, x.shape.rank))
    avoid_zero_div = tf.cast(AVOID_ZERO_DIV, x.dtype)
    if start is None:
        start, momentum = x, tf.zeros_like(x)

    def body(i, adv_x, momentum):
        grad = _loss_gradient(model_fn, loss, adv_x, y, targeted)
        grad_scale = tf.maximum(avoid_zero_div, tf.reduce_mean(tf.abs(grad), axes, keepdims=True))
        adv_x, momentum = update(
            adv_x,
            momentum,
            grad,
            grad_scale,
            x,
            eps,
            eps_iter,
            decay_factor,
            clip_min,
            clip_max,
            norm,
        )
        return i + 1, adv_x, momentum

    _, adv_x, momentum = tf.while_loop(
        lambda i, *_: i < nb_iter, body, (tf.constant(0), start, momentum), parallel_iterations=1
    )
    return adv_x, momentum, y


# Whole attacks under XLA: the model's forward/backward passes and the update of every
# iteration fused into one XLA program (``jit_compile=True``), the form that runs fast on a
# GPU.  Off by default (results then equal cleverhans' bit for bit); ``set_jit_compile(True)``
# (the experiments' ``--jit_compile``) turns it on.  Under XLA the iterates agree with the
# TensorFlow kernels' to float rounding, except PGD's random start: XLA maps the stateless
# Philox counters to other numbers, so the same seed gives another (equally uniform) start.
JIT_COMPILE = False
_compiled_fgm_xla = tf.function(_compiled_fgm.python_function, jit_compile=True)
_compiled_pgd_xla = tf.function(_compiled_pgd.python_function, jit_compile=True)
_compiled_mim_xla = tf.function(_compiled_mim.python_function, jit_compile=True)


def set_jit_compile(enabled):
    """Runs every later FGM / PGD / MIM call as one XLA program (True) or not (False)."""
    global JIT_COMPILE
    if not isinstance(enabled, (bool, np.bool_)):
        raise ValueError(f"jit_compile must be True or False, got {enabled!r}.")
    JIT_COMPILE = bool(enabled)


def _loop(plain, xla):
    return xla if JIT_COMPILE else plain


# -- argument handling shared by the three attacks ------------------------------------------
class _Arguments(typing.NamedTuple):
    """Validated arguments: tensors for the compiled function plus the static options."""

    norm: float
    targeted: bool
    static_loss: typing.Callable
    context: tuple
    x: tf.Tensor
    eps: tf.Tensor
    clip_min: typing.Optional[tf.Tensor]
    clip_max: typing.Optional[tf.Tensor]
    labels: typing.Optional[tf.Tensor]
    validation: checks.Checks


def _prepare(
    model_fn,
    x,
    eps,
    norm,
    loss_fn,
    clip_min,
    clip_max,
    y,
    targeted,
    allowed_norms,
    attack,
    sanity_checks,
):
    if not callable(model_fn):
        raise ValueError(f"model_fn must be callable (x -> logits), got {model_fn!r}.")
    norm = canonical_norm(norm, allowed=allowed_norms, attack=attack)
    if not isinstance(targeted, (bool, np.bool_)):
        raise ValueError(f"targeted must be True or False, got {targeted!r}.")
    static_loss, context = losses.split_loss(loss_fn)
    validation = checks.Checks()
    x = checks.as_input(x)
    eps = checks.as_budget(eps, x, "eps", validation)
    clip_min = checks.as_clip_bound(clip_min, x, "clip_min")
    clip_max = checks.as_clip_bound(clip_max, x, "clip_max")
    if sanity_checks or tf.executing_eagerly():
        checks.check_input_values(x, clip_min, clip_max, validation)
    labels = checks.as_labels(y, x, bool(targeted), default_loss=loss_fn is None)
    return _Arguments(
        norm=norm,
        targeted=bool(targeted),
        static_loss=static_loss,
        context=context,
        x=x,
        eps=eps,
        clip_min=clip_min,
        clip_max=clip_max,
        labels=labels,
        validation=validation,
    )


def _check_step(eps_iter, eps, p, attack, must_not_exceed_eps):
    step = checks.as_budget(eps_iter, p.x, "eps_iter", p.validation)
    if must_not_exceed_eps:
        p.validation.require(
            lambda s, e: np.all(s <= e),
            lambda s, e: tf.reduce_all(s <= e),
            f"eps_iter must be <= eps for {attack} (got eps_iter={eps_iter!r}, eps={eps!r}).",
            step,
            p.eps,
        )
    return step


# -- public API -------------------------------------------------------------------------
def fast_gradient_method(
    model_fn,
    x,
    eps,
    norm,
    loss_fn=None,
    clip_min=None,
    clip_max=None,
    y=None,
    targeted=False,
    sanity_checks=False,
):
    """Fast Gradient Method (Goodfellow et al. 2015), cleverhans 4.0 semantics.

    x' = clip(x + optimize_linear(∇_x L(y, model_fn(x)), eps, norm)), with the
    loss negated when targeted (see the module docstring for the rules and
    the differences from cleverhans).

    model_fn: x -> logits [B, K] (or [S, B, K] with an ``expectation_over_samples`` loss).
    x: inputs [B, ...]; eps: step size (scalar or [B]); norm: np.inf, 1 or 2.
    loss_fn: loss_fn(labels, logits) -> [B]; default sparse softmax cross-entropy.
    clip_min, clip_max: optional box (either may be given alone).
    y: labels [B] (targets when ``targeted``); default: argmax of model_fn(x).
    Returns the adversarial examples, a tensor like x (float32 unless x is float64).
    """
    p = _prepare(
        model_fn,
        x,
        eps,
        norm,
        loss_fn,
        clip_min,
        clip_max,
        y,
        targeted,
        (np.inf, 1, 2),
        "fast_gradient_method",
        sanity_checks,
    )
    x = p.validation.guard(p.x)
    with checks.reraise_label_errors():
        attack = _loop(_compiled_fgm, _compiled_fgm_xla)
        return attack(
            model_fn,
            p.static_loss,
            p.context,
            x,
            p.labels,
            p.eps,
            p.clip_min,
            p.clip_max,
            norm=p.norm,
            targeted=p.targeted,
        )


def projected_gradient_descent(
    model_fn,
    x,
    eps,
    eps_iter,
    nb_iter,
    norm,
    loss_fn=None,
    clip_min=None,
    clip_max=None,
    y=None,
    targeted=False,
    rand_init=None,
    rand_minmax=None,
    sanity_checks=False,
    *,
    seed=None,
):
    """Projected Gradient Descent (Madry et al. 2018; BIM without random start), cleverhans 4.0.

    x'_0 = clip(x + clip_eta(η_0, eps)) with η_0 uniform in the ``rand_minmax``
    ball (default radius eps) when ``rand_init`` is truthy, else (default None,
    as cleverhans) x'_0 = x; then nb_iter
    FGM steps of size eps_iter, each followed by the projection
    x' = clip(x + clip_eta(x' − x, eps)).

    eps_iter must be <= eps; norm: np.inf or 2.  ``seed`` (int, or int tensor
    [2]) makes the random start reproducible (stateless RNG); None draws a
    seed from TensorFlow's global generator (``tf.random.set_seed`` controls it).
    Other arguments as ``fast_gradient_method``.  The loop is one compiled
    ``tf.while_loop``.
    """
    run = _pgd_runner(
        model_fn,
        x,
        eps,
        eps_iter,
        norm,
        loss_fn,
        clip_min,
        clip_max,
        y,
        targeted,
        rand_init,
        rand_minmax,
        seed,
        sanity_checks,
    )
    return run(checks.check_count(nb_iter, "nb_iter"))[0]


def momentum_iterative_method(
    model_fn,
    x,
    eps=0.3,
    eps_iter=0.06,
    nb_iter=10,
    norm=np.inf,
    clip_min=None,
    clip_max=None,
    y=None,
    targeted=False,
    decay_factor=1.0,
    sanity_checks=True,
    *,
    loss_fn=None,
):
    """Momentum Iterative Method (Dong et al. 2018), cleverhans 4.0 semantics.

    g_0 = 0, x'_0 = x; nb_iter times:
    g ← decay_factor·g + ∇ / max(1e-12, mean|∇|);
    x' ← clip(x + clip_eta(x' + optimize_linear(g, eps_iter) − x, eps)).
    norm: np.inf or 2; decay_factor >= 0.  Unlike cleverhans, ``loss_fn`` is
    accepted (keyword-only, after cleverhans' parameters) and one-sided
    clipping works.  Other arguments as ``fast_gradient_method``.
    """
    run = _mim_runner(
        model_fn,
        x,
        eps,
        eps_iter,
        norm,
        loss_fn,
        clip_min,
        clip_max,
        y,
        targeted,
        decay_factor,
        sanity_checks,
    )
    return run(checks.check_count(nb_iter, "nb_iter"))[0]


def iterative_attack_checkpoints(
    method,
    model_fn,
    x,
    checkpoints,
    eps,
    eps_iter,
    norm=np.inf,
    loss_fn=None,
    clip_min=None,
    clip_max=None,
    y=None,
    targeted=False,
    rand_init=None,
    rand_minmax=None,
    seed=None,
    decay_factor=1.0,
    *,
    sanity_checks=True,
):
    """The adversarial examples of one PGD or MIM run after each of ``checkpoints`` iterations.

    method: "pgd" or "mim"; checkpoints: increasing iteration counts, e.g.
    (10, 100, 1000).  Returns a generator of (iterations, x') pairs; x' after
    n iterations is exactly what ``projected_gradient_descent`` /
    ``momentum_iterative_method`` return with nb_iter = n (same seed), but the
    run continues from the previous checkpoint (its iterate, momentum and
    labels), so the total cost is max(checkpoints) iterations.  Arguments are
    validated before the generator is returned.  PGD-only arguments (rand_*,
    seed) and MIM-only ones (decay_factor) are ignored by the other method.
    """
    counts = checks.check_increasing_counts(checkpoints, "checkpoints")
    run = iterative_attack_run(
        method,
        model_fn,
        x,
        eps,
        eps_iter,
        norm,
        loss_fn,
        clip_min,
        clip_max,
        y,
        targeted,
        rand_init,
        rand_minmax,
        seed,
        decay_factor,
        sanity_checks=sanity_checks,
    )

    def generate():
        for count in counts:
            yield count, run.advance(count - run.iterations)

    return generate()


class IterativeAttackRun:
    """One PGD or MIM run advanced piece by piece (``iterative_attack_run`` builds it).

    ``advance(n)`` runs n more iterations (one compiled call) and returns x'
    after ``iterations`` in all; each piece continues the previous one's
    iterate, momentum and labels, so x' after N iterations is the same however
    N is split (and the same as ``projected_gradient_descent`` /
    ``momentum_iterative_method`` with nb_iter = N).  ``state()`` gives that
    continuation as NumPy arrays and ``restore(iterations, arrays)`` resumes
    from them, e.g. in another process (``uqmix.attack_backup``).
    """

    def __init__(self, run):
        self._run = run
        self._state = None
        self.iterations = 0

    def advance(self, nb_iter):
        """Runs ``nb_iter`` more iterations (one compiled call); returns x' after
        ``iterations`` in all."""
        nb_iter = int(checks.check_count(nb_iter, "nb_iter", minimum=0))
        self._state = self._run(tf.constant(nb_iter, tf.int32), self._state)
        self.iterations += nb_iter
        return self._state[0]

    def state(self):
        """The continuation after ``iterations`` (x', [momentum,] labels) as NumPy arrays;
        empty before the first ``advance``."""
        return [] if self._state is None else [np.asarray(t) for t in self._state]

    def restore(self, iterations, arrays):
        """Continue from ``state()``'s arrays saved after ``iterations`` iterations."""
        arrays = list(arrays)
        if not arrays:
            if iterations:
                raise ValueError(f"no attack state to resume after {iterations} iterations.")
            self._state, self.iterations = None, 0
            return
        self._state = tuple(tf.convert_to_tensor(a) for a in arrays)
        self.iterations = int(checks.check_count(iterations, "iterations", minimum=1))


def iterative_attack_run(
    method,
    model_fn,
    x,
    eps,
    eps_iter,
    norm=np.inf,
    loss_fn=None,
    clip_min=None,
    clip_max=None,
    y=None,
    targeted=False,
    rand_init=None,
    rand_minmax=None,
    seed=None,
    decay_factor=1.0,
    *,
    sanity_checks=True,
):
    """A PGD ("pgd") or MIM ("mim") ``IterativeAttackRun`` at 0 iterations; arguments as
    ``iterative_attack_checkpoints`` (validated here)."""
    if method == "pgd":
        run = _pgd_runner(
            model_fn,
            x,
            eps,
            eps_iter,
            norm,
            loss_fn,
            clip_min,
            clip_max,
            y,
            targeted,
            rand_init,
            rand_minmax,
            seed,
            sanity_checks,
        )
    elif method == "mim":
        run = _mim_runner(
            model_fn,
            x,
            eps,
            eps_iter,
            norm,
            loss_fn,
            clip_min,
            clip_max,
            y,
            targeted,
            decay_factor,
            sanity_checks,
        )
    else:
        raise ValueError(f"method must be 'pgd' or 'mim', got {method!r}.")
    return IterativeAttackRun(run)


def _pgd_runner(
    model_fn,
    x,
    eps,
    eps_iter,
    norm,
    loss_fn,
    clip_min,
    clip_max,
    y,
    targeted,
    rand_init,
    rand_minmax,
    seed,
    sanity_checks,
):
    """Validates PGD's arguments; returns run(nb_iter, state=None) -> (x', y)."""
    p = _prepare(
        model_fn,
        x,
        eps,
        norm,
        loss_fn,
        clip_min,
        clip_max,
        y,
        targeted,
        (np.inf, 2),
        "projected_gradient_descent",
        sanity_checks,
    )
    eps_iter = _check_step(eps_iter, eps, p, "projected_gradient_descent", True)
    if isinstance(rand_init, (tf.Tensor, tf.Variable)):
        raise ValueError("rand_init must be a Python bool (it selects the compiled program).")
    rand_init = bool(rand_init)  # cleverhans: None / 0 → no random start, truthy → random
    if rand_minmax is None:
        rand_minmax = p.eps
    else:
        rand_minmax = checks.as_budget(rand_minmax, p.x, "rand_minmax", p.validation)
    seed = _seed_tensor(seed) if rand_init or seed is not None else tf.zeros([2], tf.int64)
    x = p.validation.guard(p.x)

    def run(nb_iter, state=None):
        start, labels = (None, p.labels) if state is None else state
        with checks.reraise_label_errors():
            attack = _loop(_compiled_pgd, _compiled_pgd_xla)
            return attack(
                model_fn,
                p.static_loss,
                p.context,
                x,
                labels,
                start,
                p.eps,
                eps_iter,
                nb_iter,
                p.clip_min,
                p.clip_max,
                rand_minmax,
                seed,
                norm=p.norm,
                targeted=p.targeted,
                rand_init=rand_init,
                fused=XLA_FUSED_UPDATE,
            )

    return run


def _mim_runner(
    model_fn,
    x,
    eps,
    eps_iter,
    norm,
    loss_fn,
    clip_min,
    clip_max,
    y,
    targeted,
    decay_factor,
    sanity_checks,
):
    """Validates MIM's arguments; returns run(nb_iter, state=None) -> (x', momentum, y)."""
    p = _prepare(
        model_fn,
        x,
        eps,
        norm,
        loss_fn,
        clip_min,
        clip_max,
        y,
        targeted,
        (np.inf, 2),
        "momentum_iterative_method",
        sanity_checks,
    )
    eps_iter = _check_step(eps_iter, eps, p, "momentum_iterative_method", False)
    decay = checks.as_budget(decay_factor, p.x, "decay_factor", p.validation)
    x = p.validation.guard(p.x)

    def run(nb_iter, state=None):
        start, momentum, labels = (None, None, p.labels) if state is None else state
        with checks.reraise_label_errors():
            attack = _loop(_compiled_mim, _compiled_mim_xla)
            return attack(
                model_fn,
                p.static_loss,
                p.context,
                x,
                labels,
                start,
                momentum,
                p.eps,
                eps_iter,
                nb_iter,
                p.clip_min,
                p.clip_max,
                decay,
                norm=p.norm,
                targeted=p.targeted,
                fused=XLA_FUSED_UPDATE,
            )

    return run


def compile_options():
    """The module switches that change an attack's numbers: ``JIT_COMPILE`` (XLA loops,
    another random start and rounding) and ``XLA_FUSED_UPDATE``; for records and keys."""
    return {"jit_compile": JIT_COMPILE, "xla_fused_update": XLA_FUSED_UPDATE}


def _seed_tensor(seed):
    """[2] int64 seed for the stateless RNG; None → drawn from TF's global generator."""
    if seed is None:
        return tf.random.uniform([2], minval=0, maxval=2**62, dtype=tf.int64)
    if isinstance(seed, (tf.Tensor, tf.Variable)):
        seed = tf.cast(seed, tf.int64)
        return tf.stack([seed, tf.zeros_like(seed)]) if seed.shape.rank == 0 else seed
    array = np.asarray(seed)
    if not np.issubdtype(array.dtype, np.integer) or array.shape not in ((), (2,)):
        raise ValueError(f"seed must be an int or a pair of ints, got {seed!r}.")
    pair = [int(array), 0] if array.shape == () else [int(v) for v in array]
    return tf.constant(pair, tf.int64)
