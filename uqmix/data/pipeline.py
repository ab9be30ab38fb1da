"""``tf.data`` input pipelines: seeded, resumable batching and in-domain + OOD zipping.

Order of ``make_dataset``: epoch e visits the examples in the permutation
``stateless_shuffle(range(N), seed=(seed, e))`` (Philox).  It is a pure
function of (seed, e): independent of TF's global seed, of other datasets
and of how far an iterator has run, so a dataset rebuilt from the same seed
and advanced with ``skip(k)`` yields exactly the batches k, k+1, … of the
original (what ``uqmix.training.fit_resumable`` relies on).  Batches gather
rows of the in-memory arrays by index; nothing is copied per epoch.
"""

import numpy as np
import tensorflow as tf

_SHUFFLE_ALG = "philox"


def _as_tensor(array, name):
    if isinstance(array, (tf.Tensor, tf.Variable)):
        tensor = tf.convert_to_tensor(array)
    else:
        array = np.asarray(array)
        if array.dtype == object:
            raise ValueError(f"{name} must be a numeric array, got dtype object.")
        tensor = tf.convert_to_tensor(array)
    if tensor.shape.rank is None or tensor.shape.rank < 1 or tensor.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty array [N, ...], got shape {tensor.shape}.")
    if tensor.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(tensor))):
        raise ValueError(f"{name} contains NaN or Inf values.")
    return tensor


def _check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def make_dataset(
    x,
    y=None,
    *,
    batch_size,
    shuffle=True,
    repeat=False,
    seed=None,
    drop_remainder=False,
    prefetch=True,
):
    """A ``tf.data.Dataset`` of batches ``(x, y)`` (or ``x`` when ``y`` is None).

    shuffle: visit each epoch in a seeded random order (else in index order).
    repeat: endless epochs 0, 1, 2, …, each reshuffled with its own
      permutation, cut into batches that may straddle epoch boundaries (every
      batch then has ``batch_size`` examples, static shape); otherwise one
      epoch whose last batch is short unless ``drop_remainder``.  The length
      (``cardinality``) is known: infinite, or the number of batches.
    seed: non-negative int; same seed → same batches in the same order, in
      every epoch.  None draws one from NumPy's global generator (seeded by
      ``keras.utils.set_random_seed``).
    prefetch: overlap input and training (``prefetch(AUTOTUNE)``).
    """
    _check_positive_int(batch_size, "batch_size")
    x_t = _as_tensor(x, "x")
    num_examples = int(x_t.shape[0])
    y_t = None
    if y is not None:
        y_t = _as_tensor(y, "y")
        if int(y_t.shape[0]) != num_examples:
            raise ValueError(f"x has {num_examples} examples but y has {int(y_t.shape[0])}.")
    if drop_remainder and not repeat and num_examples < batch_size:
        raise ValueError(
            f"drop_remainder with {num_examples} examples < batch_size {batch_size} "
            "leaves no batch."
        )
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    _check_positive_int(seed, "seed", minimum=0)

    def epoch_order(epoch):
        order = tf.range(num_examples, dtype=tf.int64)
        if not shuffle:
            return order
        return tf.random.experimental.stateless_shuffle(
            order, seed=tf.stack([tf.constant(seed, tf.int64), epoch]), alg=_SHUFFLE_ALG
        )

    if repeat:
        # Endless stream of epochs; every batch is full, so its static shape is known.
        indices = (
            tf.data.Dataset.counter().map(epoch_order).rebatch(batch_size, drop_remainder=True)
        )
        num_batches = tf.data.INFINITE_CARDINALITY
    else:
        indices = (
            tf.data.Dataset.range(1)
            .map(epoch_order)
            .rebatch(batch_size, drop_remainder=drop_remainder)
        )
        num_batches = (
            num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)
        )
    # ``rebatch`` slices whole index vectors (no per-example work) but loses the length.
    indices = indices.apply(tf.data.experimental.assert_cardinality(num_batches))
    if y_t is None:
        gather = lambda i: tf.gather(x_t, i)  # noqa: E731
    else:
        gather = lambda i: (tf.gather(x_t, i), tf.gather(y_t, i))  # noqa: E731
    dataset = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset


def _example_shape(source, name):
    """Per-example input shape of an array/tensor [N, ...] or of a dataset's first component."""
    if isinstance(source, tf.data.Dataset):
        spec = source.element_spec
        if isinstance(spec, (tuple, list)):
            spec = spec[0]
        if not isinstance(spec, tf.TensorSpec):
            raise ValueError(f"{name} dataset elements must be x or (x, ...) tensors, got {spec}.")
        return tuple(spec.shape[1:])
    shape = tuple(np.shape(source))
    if len(shape) < 2:
        raise ValueError(f"{name} inputs must have shape [N, ...], got {shape}.")
    return shape[1:]


def check_same_image_shape(first, second, first_name="in-domain", second_name="OOD"):
    """Raises ``ValueError`` unless the two sets' per-example shapes agree.

    Each of ``first`` / ``second`` is an array [N, H, W, C] (or [N, D]) or a
    batched ``tf.data.Dataset`` of x or (x, …).  Unknown (None) dimensions
    match anything.  Returns the common per-example shape.
    """
    shape_a = _example_shape(first, first_name)
    shape_b = _example_shape(second, second_name)
    compatible = len(shape_a) == len(shape_b) and all(
        a is None or b is None or a == b for a, b in zip(shape_a, shape_b)
    )
    if not compatible:
        raise ValueError(
            f"{first_name} inputs have shape {shape_a} per example but {second_name} inputs have "
            f"{shape_b}; they must agree (same size and channels; convert or resize one set)."
        )
    return shape_a


def zip_in_and_ood(in_ds, ood_ds):
    """Zips in-domain batches (x, y) with OOD batches: elements ``((x_in, x_ood), y_in)``.

    Keras's (x, y) convention with x the pair (in-domain batch, OOD batch), as a
    Prior Network's ``train_step`` consumes it.  OOD elements may be x or
    (x, labels); their labels are dropped.  The shorter dataset is repeated:
    the result has as many batches as the longer one (endless if either is).
    The image shapes must agree (``check_same_image_shape``).
    """
    in_spec = in_ds.element_spec
    if not (isinstance(in_spec, tuple) and len(in_spec) == 2):
        raise ValueError(f"in_ds must yield (x, y) batches, got elements {in_spec}.")
    check_same_image_shape(in_ds, ood_ds)
    if isinstance(ood_ds.element_spec, (tuple, list)):
        ood_ds = ood_ds.map(lambda x, *rest: x)
    sizes = {}
    for name, dataset in (("in_ds", in_ds), ("ood_ds", ood_ds)):
        size = int(dataset.cardinality())
        if size == tf.data.UNKNOWN_CARDINALITY:
            raise ValueError(
                f"{name} has unknown length; make it finite with known length or "
                "endless (.repeat()), e.g. with uqmix.data.make_dataset."
            )
        if size == 0:
            raise ValueError(f"{name} is empty.")
        sizes[name] = np.inf if size == tf.data.INFINITE_CARDINALITY else size
    if sizes["in_ds"] > sizes["ood_ds"]:
        ood_ds = ood_ds.repeat()
    elif sizes["ood_ds"] > sizes["in_ds"]:
        in_ds = in_ds.repeat()
    return tf.data.Dataset.zip(in_ds, ood_ds).map(
        lambda in_batch, x_ood: ((in_batch[0], x_ood), in_batch[1])
    )


def hold_out(x, y, count, name="count"):
    """Splits off the last ``count`` examples as a validation split.

    Returns (x_train, y_train, x_val, y_val): x[:-count], y[:-count], x[-count:],
    y[-count:]; with ``count`` 0 the arrays unchanged and None, None.  At least one
    training example must remain; ``name`` is the option named in the error.
    """
    count = int(count)
    if count < 0 or count >= len(x):
        raise ValueError(
            f"{name} must be in [0, {len(x) - 1}] (the training set has {len(x)} "
            f"examples), got {count}."
        )
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}.")
    if not count:
        return x, y, None, None
    return x[:-count], y[:-count], x[-count:], y[-count:]
