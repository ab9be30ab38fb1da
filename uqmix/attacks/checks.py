"""Input validation of the attacks, done before the compiled loop starts.

Eagerly every check is a NumPy test that raises one ``ValueError`` naming the
problem.  When an attack is called inside someone else's ``tf.function``
(e.g. adversarial training in a ``train_step``) the value checks become
``tf.debugging`` assertions, the static ones (shapes, norms, flags) still
raise ``ValueError`` at trace time.

Class labels are checked inside the compiled function (only there is the
number of classes K known); ``reraise_label_errors`` turns that failure into a
``ValueError`` for eager callers.
"""

import contextlib
import re

import numpy as np
import tensorflow as tf

LABEL_ERROR_TAG = "uqmix.attacks: class labels out of range"


def _is_symbolic(value):
    return isinstance(value, (tf.Tensor, tf.Variable)) and not tf.executing_eagerly()


def _numpy(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


class Checks:
    """Collects graph-mode assertions; raises immediately in eager mode."""

    def __init__(self):
        self.assertions = []

    def require(self, condition_fn, symbolic_condition_fn, message, *values):
        """condition_fn(*numpy values) -> bool eagerly; symbolic_condition_fn(*tensors) -> bool tensor."""
        if any(_is_symbolic(v) for v in values):
            self.assertions.append(tf.debugging.Assert(symbolic_condition_fn(*values), [message]))
            return
        if not condition_fn(*[_numpy(v) for v in values]):
            raise ValueError(message)

    def guard(self, tensor):
        """``tensor`` with the collected assertions as control dependencies."""
        if not self.assertions:
            return tensor
        with tf.control_dependencies(self.assertions):
            return tf.identity(tensor)


def _as_float(value, dtype):
    """Python/NumPy numbers converted straight to ``dtype`` (no float32 detour); tensors cast."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return tf.cast(value, dtype)
    return tf.convert_to_tensor(np.asarray(value, dtype=dtype.as_numpy_dtype))


def as_input(x):
    """x as a float tensor: float64 stays float64, everything else becomes float32."""
    if isinstance(x, (tf.Tensor, tf.Variable)):
        x = tf.convert_to_tensor(x)
        dtype = x.dtype
    else:
        array = np.asarray(x)
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise ValueError(f"x must be a numeric array, got dtype {array.dtype}.")
        dtype = tf.float64 if array.dtype == np.float64 else tf.float32
        x = tf.convert_to_tensor(array)
    if not (dtype.is_floating or dtype.is_integer):
        raise ValueError(f"x must be numeric, got dtype {dtype.name}.")
    dtype = tf.float64 if dtype == tf.float64 else tf.float32
    x = tf.cast(x, dtype)
    if x.shape.rank is None or x.shape.rank < 2:
        raise ValueError(
            f"x must be a batch [B, ...] with at least one feature axis, got shape {x.shape}."
        )
    return x


def as_budget(value, x, name, checks, allow_none=False):
    """A non-negative step/radius: a scalar, or one value per example ([B] → [B, 1, …, 1])."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must be given.")
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    try:
        tensor = _as_float(value, x.dtype)
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
        raise ValueError(f"{name} must be a number or a [batch] array, got {value!r}.") from error
    if tensor.shape.rank == 1:
        batch = x.shape[0]
        if batch is not None and tensor.shape[0] is not None and tensor.shape[0] != batch:
            raise ValueError(f"{name} has {tensor.shape[0]} values for a batch of {batch}.")
        tensor = tf.reshape(tensor, [-1] + [1] * (x.shape.rank - 1))
    elif tensor.shape.rank != 0:
        raise ValueError(f"{name} must be a scalar or have shape [batch], got {tensor.shape}.")
    checks.require(
        lambda v: np.all(np.isfinite(v)) and np.all(v >= 0),
        lambda v: tf.reduce_all(tf.logical_and(tf.math.is_finite(v), v >= 0)),
        f"{name} must be finite and >= 0, got {value!r}.",
        tensor,
    )
    return tensor


def as_clip_bound(value, x, name):
    """None, or a bound broadcastable to x (usually a scalar) in x's dtype."""
    if value is None:
        return None
    try:
        tensor = _as_float(value, x.dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number or an array, got {value!r}.") from error
    try:
        tf.broadcast_static_shape(tensor.shape, x.shape)
    except ValueError as error:
        raise ValueError(
            f"{name} of shape {tensor.shape} does not broadcast to x {x.shape}."
        ) from error
    return tensor


def check_input_values(x, clip_min, clip_max, checks):
    """x finite and inside [clip_min, clip_max] (each bound optional)."""
    checks.require(
        lambda v: np.all(np.isfinite(v)),
        lambda v: tf.reduce_all(tf.math.is_finite(v)),
        "x contains NaN or Inf values.",
        x,
    )
    if clip_min is not None and clip_max is not None:
        checks.require(
            lambda lo, hi: np.all(lo <= hi),
            lambda lo, hi: tf.reduce_all(lo <= hi),
            "clip_min must be <= clip_max.",
            clip_min,
            clip_max,
        )
    if clip_min is not None:
        checks.require(
            lambda v, lo: np.all(v >= lo),
            lambda v, lo: tf.reduce_all(v >= lo),
            "x has values below clip_min: the input must lie in [clip_min, clip_max].",
            x,
            clip_min,
        )
    if clip_max is not None:
        checks.require(
            lambda v, hi: np.all(v <= hi),
            lambda v, hi: tf.reduce_all(v <= hi),
            "x has values above clip_max: the input must lie in [clip_min, clip_max].",
            x,
            clip_max,
        )


def as_labels(y, x, targeted, default_loss):
    """None (→ the model's clean prediction) or labels with one entry per example.

    With the default cross-entropy loss the labels must be integer class
    indices of shape [B]; a custom loss may take any labels whose first axis
    is the batch (one-hot, soft targets, …).
    """
    if y is None:
        if targeted:
            raise ValueError("targeted=True needs y, the target class of every example.")
        return None
    labels = tf.convert_to_tensor(y)
    batch = x.shape[0]
    if default_loss:
        if not labels.dtype.is_integer:
            if labels.dtype.is_floating and not _is_symbolic(labels):
                values = labels.numpy()
                if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
                    labels = tf.cast(labels, tf.int64)
            if not labels.dtype.is_integer:
                raise ValueError(
                    f"y must hold integer class indices, got dtype {labels.dtype.name}."
                )
        if labels.shape.rank != 1:
            raise ValueError(f"y must have shape [batch] (class indices), got {labels.shape}.")
    elif labels.shape.rank is None or labels.shape.rank < 1:
        raise ValueError(f"y must have a batch axis, got shape {labels.shape}.")
    if batch is not None and labels.shape[0] is not None and labels.shape[0] != batch:
        raise ValueError(f"y has {labels.shape[0]} entries for a batch of {batch} inputs.")
    return labels


def assert_class_labels(labels, num_classes):
    """labels with an in-graph check 0 <= labels < num_classes (message tagged for reraise)."""
    in_range = tf.reduce_all(tf.logical_and(labels >= 0, labels < num_classes))
    message = f"{LABEL_ERROR_TAG}: labels must be in [0, {num_classes - 1}]."
    with tf.control_dependencies([tf.debugging.Assert(in_range, [message])]):
        return tf.identity(labels)


@contextlib.contextmanager
def reraise_label_errors():
    """Turns the tagged in-graph label assertion into a ValueError."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        match = re.search(
            re.escape(LABEL_ERROR_TAG) + r": (labels must be in \[0, \d+\])", str(error.message)
        )
        if match:
            raise ValueError(f"y holds class labels out of range: {match.group(1)}.") from None
        raise


def check_count(value, name, minimum=0):
    """A Python/NumPy integer >= minimum (an int tensor passes through inside graphs)."""
    if _is_symbolic(value):
        return tf.cast(value, tf.int32)
    number = _numpy(value)
    if number.shape != () or not (
        np.issubdtype(number.dtype, np.integer)
        or (np.issubdtype(number.dtype, np.floating) and float(number) == int(number))
    ):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if int(number) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(number)}.")
    return tf.constant(int(number), tf.int32)


def check_increasing_counts(values, name):
    """A non-empty, strictly increasing list of integers >= 0 (``check_count`` each), as ints."""
    counts = [int(check_count(c, name, minimum=0)) for c in values]
    if not counts or any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"{name} must be a non-empty increasing sequence, got {values!r}.")
    return counts
