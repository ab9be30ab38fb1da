"""Image augmentation for training (CIFAR-style): random crop with padding, horizontal flip.

``random_crop_and_flip(images, seed)`` pads each image of a batch [B, H, W, C]
with ``padding`` zero pixels on every side, cuts an H×W window at a random
offset (o_r, o_c), each uniform on {0, …, 2·padding}, and mirrors it left-right
with probability ½ — independently per example:

    out[b, i, j] = padded[b, o_r[b] + i, o_c[b] + j']    j' = W − 1 − j if flipped else j

The randomness is *stateless*: a pure function of ``seed`` (a pair of ints),
so ``augment_dataset`` gives batch k the seed (seed, k) and a pipeline rebuilt
from the same seed and advanced with ``skip(k)`` (as
``uqmix.training.fit_resumable`` does on resume) sees exactly the augmented
batches of an uninterrupted run.  Everything runs inside ``tf.data`` (no
Python per example).
"""

import tensorflow as tf


def _check_images(images):
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(f"images must be a batch [B, H, W, C], got shape {images.shape}.")
    return images


def _check_padding(padding):
    if isinstance(padding, bool) or int(padding) != padding or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}.")
    return int(padding)


def crop_and_flip(images, offsets, flips, padding):
    """The deterministic core: crop each zero-padded image at ``offsets`` and flip where ``flips``.

    images: [B, H, W, C]; offsets: int [B, 2] (row, column) in [0, 2·padding];
    flips: bool [B].  Returns [B, H, W, C] (formula in the module docstring).
    """
    images = _check_images(images)
    padding = _check_padding(padding)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    offsets = tf.cast(offsets, tf.int32)
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    rows = offsets[:, 0:1] + tf.range(height)[None, :]  # [B, H]
    cols = offsets[:, 1:2] + tf.range(width)[None, :]  # [B, W]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flips = tf.reshape(tf.cast(flips, tf.bool), [-1, 1, 1, 1])
    return tf.where(flips, tf.reverse(cropped, axis=[2]), cropped)


def random_crop_and_flip(images, seed, padding=4, flip=True):
    """Per-example random crop (zero padding ``padding``) and, if ``flip``, left-right flip.

    seed: a pair of ints (or int tensor [2]); the same seed gives the same
    offsets and flips.  padding = 0 and flip = False is the identity.
    """
    images = _check_images(images)
    padding = _check_padding(padding)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    batch = tf.shape(images)[0]
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed=seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32
    )
    if flip:
        flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        flips = tf.random.stateless_uniform([batch], seed=flip_seed) < 0.5
    else:
        flips = tf.zeros([batch], tf.bool)
    return crop_and_flip(images, offsets, flips, padding)


def augment_dataset(dataset, seed, padding=4, flip=True):
    """Augments every image batch of ``dataset`` with ``random_crop_and_flip``.

    Elements ``(x, y)`` or ``((x, x_ood), y)`` (in-domain + OOD batches, as
    made by ``uqmix.data.zip_in_and_ood``): batch k is augmented with seed
    (seed, 2k) and its OOD batch with (seed, 2k + 1).  Labels pass unchanged.
    """
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    padding = _check_padding(padding)
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"augment_dataset needs (x, y) or ((x, x_ood), y) elements, got {spec}.")
    paired = isinstance(spec[0], tuple)

    def augment(index, element):
        x, y = element
        base = tf.stack([tf.constant(seed, tf.int64), 2 * index])
        if paired:
            x_in, x_ood = x
            ood_seed = tf.stack([tf.constant(seed, tf.int64), 2 * index + 1])
            return (
                (
                    random_crop_and_flip(x_in, base, padding, flip),
                    random_crop_and_flip(x_ood, ood_seed, padding, flip),
                ),
                y,
            )
        return random_crop_and_flip(x, base, padding, flip), y

    return dataset.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
