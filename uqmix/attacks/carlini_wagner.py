"""Carlini–Wagner L2 (Carlini & Wagner 2017), compiled, with an adaptive-criterion variant.

Arguments and defaults are cleverhans 4.0's ``carlini_wagner_l2(model_fn, x,
**kwargs)``; the algorithm is that of Carlini & Wagner's reference
``l2_attack.py`` (carlini/nn_robust_attacks).  Per example b, with the box
[lo, hi] and s = hi − lo:

    w_0 = artanh(0.999999 · (2 (x − lo)/s − 1))        (tanh change of variables)
    x'(δ) = (tanh(δ + w_0) + 1)/2 · s + lo              (always inside the box)
    x̃ = x'(0)                                          (x after the round trip)
    L(δ) = Σ_b ‖x'_b − x̃_b‖² + c_b · f_b(z(x'_b))
    f = max(0, max_{j≠t} z_j − z_t + κ)                 (targeted, target t)
    f = max(0, z_y − max_{j≠y} z_j + κ)                 (untargeted, label y)

For each of ``binary_search_steps`` outer steps, δ and Adam's moments are
reset to 0 and Adam (β = 0.9, 0.999, ε̂ = 1e-8: TF1's AdamOptimizer of the
reference) runs ``max_iterations`` steps on L.  Every step, *before* its
update is applied, x'(δ) is recorded as the best example of b if it succeeds
(margin criterion below) with a smaller ‖x' − x̃‖² than any earlier one.
Abort early: every max(1, max_iterations // 10) steps the batch loss L is
compared with the previous check; the inner loop stops (before that step's
bookkeeping) when L > 0.9999 · previous.  After each outer step, per example:
success → upper = min(upper, c), c = (lower + upper)/2 if upper < 1e9;
failure → lower = max(lower, c), c = (lower + upper)/2 if upper < 1e9 else
10 c.  With ≥ 10 outer steps the last one uses c = upper (the reference's
"repeat").  Examples never made adversarial come back unchanged (cleverhans'
rule; the reference returns zeros).

Success ("margin criterion", consistent with f): targeted z_t > max_{j≠t}
z_j + κ; untargeted max_{j≠y} z_j > z_y + κ.  (The reference subtracts κ
from the label's logit before an argmax for both modes, so its untargeted
criterion is looser than its loss; cleverhans 4.0 shifts *all* logits by κ,
which makes κ a no-op in the criterion.)

Why not cleverhans 4.0's TF2 ``CarliniWagnerL2`` as the oracle: under Keras 3
it fails (``self.optimizer.variables()`` is a list, not a method); its
constant ``c`` has the shape of x and its success mask is reshaped to
[B, 1, 1, 1], so non-image inputs break and per-example constants broadcast
over the wrong axes; it sets ``targeted = y is not None`` whatever
``targeted`` says.  Here ``targeted=None`` keeps that rule (a cleverhans
call gives the same mode) while an explicit ``targeted`` is honoured.

A ``model_fn`` returning per-sample log-probabilities [S, B, K] (EOT,
``stochastic_model_fn(..., combine="mean_loss")``) is decided on, and gives
the margin loss of, the mean prediction log p̄; a ``loss_fn`` sees [S, B, K].

Adaptive variant: ``loss_fn(labels, logits) -> [B]`` (e.g. ``kl_pmf_loss`` /
``kl_dir_loss`` at the second most likely class, targeted) replaces f; the
bookkeeping still records an example only where the margin criterion holds
(the target is the prediction by κ).

The whole attack of a batch — both loops, Adam, bookkeeping — is one
``tf.function`` call (nested ``tf.while_loop``s); budgets, constants and the
learning rate enter as tensors (no retracing when they change).
"""

import typing

import numpy as np
import tensorflow as tf

from uqmix.attacks import checks, losses

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8
TANH_SHRINK = 0.999999
NO_SUCCESS_L2 = 1e10
UPPER_BOUND_INIT = 1e10


class CarliniWagnerResult(typing.NamedTuple):
    """adversarial: x' [N, ...] (x where not found); l2_squared: ‖x' − x̃‖² [N] (NaN where not
    found); success: [N] bool; const: the final constants c [N]."""

    adversarial: np.ndarray
    l2_squared: np.ndarray
    success: np.ndarray
    const: np.ndarray


def _decision_logits(logits):
    """[B, K] logits, or per-sample log-probabilities [S, B, K] → log of the mean prediction."""
    if logits.shape.rank == 3:
        return tf.reduce_logsumexp(tf.nn.log_softmax(logits, axis=-1), axis=0) - tf.math.log(
            tf.cast(tf.shape(logits)[0], logits.dtype)
        )
    return logits


def _margins(labels, logits):
    """(z_label, max_{j≠label} z_j), each [B]."""
    onehot = tf.equal(tf.range(tf.shape(logits)[-1])[None, :], labels[:, None])
    real = tf.reduce_sum(tf.where(onehot, logits, tf.zeros_like(logits)), axis=-1)
    other = tf.reduce_max(
        tf.where(onehot, tf.fill(tf.shape(logits), logits.dtype.min), logits), axis=-1
    )
    return real, other


def _margin_success(labels, logits, confidence, targeted):
    real, other = _margins(labels, logits)
    return real > other + confidence if targeted else other > real + confidence


def _misclassification(labels, logits, confidence, targeted):
    """C&W's f: max(0, other − real + κ) (targeted) or max(0, real − other + κ), [B]."""
    real, other = _margins(labels, logits)
    margin = other - real if targeted else real - other
    return tf.maximum(tf.zeros_like(margin), margin + confidence)


def _cw_batch(
    model_fn,
    loss_fn,
    loss_context,
    x,
    labels,
    clip_min,
    clip_max,
    initial_const,
    binary_search_steps,
    max_iterations,
    learning_rate,
    confidence,
    *,
    targeted,
    abort_early,
    custom_loss,
):
    """One batch of C&W L2 (see module doc) → (x', ‖x' − x̃‖², success, c)."""
    dtype = x.dtype
    batch = tf.shape(x)[0]
    axes = list(range(1, x.shape.rank))
    expand = [-1] + [1] * (x.shape.rank - 1)
    scale = clip_max - clip_min
    criterion = losses.bind(loss_fn, loss_context) if custom_loss else None
    w0 = tf.atanh(
        (tf.clip_by_value((x - clip_min) / scale, 0.0, 1.0) * 2.0 - 1.0)
        * tf.cast(TANH_SHRINK, dtype)
    )

    def to_box(w):
        return (tf.tanh(w) + 1.0) / 2.0 * scale + clip_min

    x_ref = to_box(w0)
    period = tf.maximum(max_iterations // 10, 1)
    big = tf.cast(NO_SUCCESS_L2, dtype)

    def objective(modifier, const):
        with tf.GradientTape() as tape:
            tape.watch(modifier)
            x_new = to_box(modifier + w0)
            logits = model_fn(x_new)
            decision = _decision_logits(logits)
            l2 = tf.reduce_sum(tf.square(x_new - x_ref), axes)
            if custom_loss:
                f = losses.per_example_loss(criterion, labels, logits)
            else:
                f = _misclassification(labels, decision, confidence, targeted)
            total = tf.reduce_sum(l2 + const * f)
        return x_new, decision, l2, total, tape.gradient(total, modifier)

    def outer_body(step, const, lower, upper, best_l2, best_x, found):
        repeat = tf.logical_and(binary_search_steps >= 10, step == binary_search_steps - 1)
        const = tf.where(repeat, upper, const)
        zeros = tf.zeros_like(x)

        def inner_body(it, modifier, m, v, prev, stop, step_l2, step_found, best_l2, best_x, found):
            x_new, logits, l2, total, grad = objective(modifier, const)
            t = tf.cast(it + 1, dtype)
            m = ADAM_BETA_1 * m + (1.0 - ADAM_BETA_1) * grad
            v = ADAM_BETA_2 * v + (1.0 - ADAM_BETA_2) * tf.square(grad)
            rate = learning_rate * tf.sqrt(1.0 - ADAM_BETA_2**t) / (1.0 - ADAM_BETA_1**t)
            modifier = modifier - rate * m / (tf.sqrt(v) + ADAM_EPSILON)
            check = tf.logical_and(abort_early, it % period == 0)
            stop = tf.logical_and(check, total > prev * 0.9999)
            prev = tf.where(check, total, prev)
            ok = tf.logical_and(
                _margin_success(labels, logits, confidence, targeted), tf.logical_not(stop)
            )
            better = tf.logical_and(ok, l2 < step_l2)
            step_l2 = tf.where(better, l2, step_l2)
            step_found = tf.logical_or(step_found, better)
            better = tf.logical_and(ok, l2 < best_l2)
            best_l2 = tf.where(better, l2, best_l2)
            best_x = tf.where(tf.reshape(better, expand), x_new, best_x)
            found = tf.logical_or(found, better)
            return (it + 1, modifier, m, v, prev, stop, step_l2, step_found, best_l2, best_x, found)

        def inner_cond(it, *state):
            return tf.logical_and(it < max_iterations, tf.logical_not(state[4]))

        state = (
            tf.constant(0),
            zeros,
            zeros,
            zeros,
            tf.constant(np.inf, dtype),
            tf.constant(False),
            tf.fill([batch], big),
            tf.zeros([batch], tf.bool),
            best_l2,
            best_x,
            found,
        )
        state = tf.while_loop(inner_cond, inner_body, state, parallel_iterations=1)
        step_found, best_l2, best_x, found = state[7:]
        upper = tf.where(step_found, tf.minimum(upper, const), upper)
        lower = tf.where(step_found, lower, tf.maximum(lower, const))
        const = tf.where(
            upper < 1e9, (lower + upper) / 2.0, tf.where(step_found, const, const * 10.0)
        )
        return step + 1, const, lower, upper, best_l2, best_x, found

    state = (
        tf.constant(0),
        tf.fill([batch], initial_const),
        tf.zeros([batch], dtype),
        tf.fill([batch], tf.cast(UPPER_BOUND_INIT, dtype)),
        tf.fill([batch], big),
        x,
        tf.zeros([batch], tf.bool),
    )
    _, const, _, _, best_l2, best_x, found = tf.while_loop(
        lambda step, *_: step < binary_search_steps, outer_body, state, parallel_iterations=1
    )
    return best_x, best_l2, found, const


_compiled_cw_batch = tf.function(_cw_batch)


def _cw_labels(model_fn, x, y, targeted, custom_loss):
    """Integer labels [B] (one-hot accepted, as cleverhans takes them); None → prediction."""
    if y is None:
        if targeted:
            raise ValueError("targeted=True needs y, the target class of every example.")
        return tf.argmax(_decision_logits(model_fn(x)), axis=-1, output_type=tf.int32)
    labels = tf.convert_to_tensor(y)
    if labels.shape.rank == 2:  # cleverhans' one-hot labels
        labels = tf.argmax(labels, axis=-1, output_type=tf.int32)
    labels = checks.as_labels(labels, x, targeted, default_loss=True)
    return tf.cast(labels, tf.int32)


def carlini_wagner_l2_run(
    model_fn,
    x,
    *,
    y=None,
    targeted=None,
    batch_size=128,
    clip_min=0.0,
    clip_max=1.0,
    binary_search_steps=5,
    max_iterations=1000,
    abort_early=True,
    confidence=0.0,
    initial_const=1e-2,
    learning_rate=5e-3,
    loss_fn=None,
    verbose=False,
    compiled=True,
):
    """C&W L2 with its bookkeeping: a ``CarliniWagnerResult`` (see ``carlini_wagner_l2``).

    compiled=False runs the same algorithm eagerly, op by op (for benchmarks).
    """
    if not callable(model_fn):
        raise ValueError(f"model_fn must be callable (x -> logits), got {model_fn!r}.")
    targeted = (y is not None) if targeted is None else targeted
    if not isinstance(targeted, (bool, np.bool_)):
        raise ValueError(f"targeted must be True, False or None, got {targeted!r}.")
    targeted = bool(targeted)
    if loss_fn is not None and not targeted:
        raise ValueError("loss_fn (an adaptive criterion) needs targeted=True and y = the targets.")
    static_loss, context = losses.split_loss(loss_fn)
    x = checks.as_input(x)
    validation = checks.Checks()
    if clip_min is None or clip_max is None:
        raise ValueError("carlini_wagner_l2 needs both clip_min and clip_max (the tanh box).")
    lo = checks.as_clip_bound(clip_min, x, "clip_min")
    hi = checks.as_clip_bound(clip_max, x, "clip_max")
    if not np.all(hi.numpy() > lo.numpy()):
        raise ValueError(f"clip_max must be > clip_min, got {clip_min!r}, {clip_max!r}.")
    checks.check_input_values(x, lo, hi, validation)
    steps = checks.check_count(binary_search_steps, "binary_search_steps", minimum=1)
    iterations = checks.check_count(max_iterations, "max_iterations", minimum=1)
    size = int(checks.check_count(batch_size, "batch_size", minimum=1))
    numbers = {}
    for name, value, positive in (
        ("confidence", confidence, False),
        ("initial_const", initial_const, True),
        ("learning_rate", learning_rate, True),
    ):
        if (
            isinstance(value, bool)
            or not np.isscalar(value)
            or not np.isfinite(value)
            or (value <= 0 if positive else value < 0)
        ):
            raise ValueError(
                f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}."
            )
        numbers[name] = tf.constant(value, x.dtype)
    labels = _cw_labels(model_fn, x, y, targeted, loss_fn is None)
    with checks.reraise_label_errors():
        checks.assert_class_labels(labels, int(model_fn(x[:1]).shape[-1]))
    run = _compiled_cw_batch if compiled else _cw_batch
    parts = []
    bar = None
    if verbose:
        import keras

        bar = keras.utils.Progbar(int(np.ceil(int(x.shape[0]) / size)), unit_name="batch")
    for start in range(0, int(x.shape[0]), size):
        part = slice(start, start + size)
        with checks.reraise_label_errors():
            parts.append(
                run(
                    model_fn,
                    static_loss,
                    context,
                    x[part],
                    labels[part],
                    lo,
                    hi,
                    numbers["initial_const"],
                    steps,
                    iterations,
                    numbers["learning_rate"],
                    numbers["confidence"],
                    targeted=targeted,
                    abort_early=bool(abort_early),
                    custom_loss=loss_fn is not None,
                )
            )
        if bar is not None:
            bar.add(1)
    adv, l2, found, const = (np.concatenate([p[i].numpy() for p in parts]) for i in range(4))
    return CarliniWagnerResult(
        adversarial=adv, l2_squared=np.where(found, l2, np.nan), success=found, const=const
    )


def carlini_wagner_l2(model_fn, x, **kwargs):
    """Carlini–Wagner L2; cleverhans 4.0's call ``carlini_wagner_l2(model_fn, x, **kwargs)``.

    Keywords (cleverhans' names and defaults): y=None (labels [B] or one-hot
    [B, K]; targets when targeted; None → the model's prediction),
    targeted=None (None: targeted iff y is given, as cleverhans), batch_size=128,
    clip_min=0.0, clip_max=1.0, binary_search_steps=5, max_iterations=1000,
    abort_early=True, confidence=0.0, initial_const=1e-2, learning_rate=5e-3;
    uqmix's: loss_fn (adaptive criterion replacing f, targeted only),
    verbose (progress per batch).  Returns x' as a NumPy array (float32 unless
    x is float64); see the module docstring for the algorithm and
    ``carlini_wagner_l2_run`` for the L2 distances and success flags.
    """
    return carlini_wagner_l2_run(model_fn, x, **kwargs).adversarial
