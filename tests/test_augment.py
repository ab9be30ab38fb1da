"""Augmentation: per-example crop + flip against NumPy, seeding, and dataset resumability."""

import numpy as np
import pytest
import tensorflow as tf

from uqmix.augment import augment_dataset, crop_and_flip, random_crop_and_flip


def _numpy_crop_and_flip(images, offsets, flips, padding):
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    height, width = images.shape[1:3]
    out = np.empty_like(images)
    for b in range(len(images)):
        r, c = offsets[b]
        window = padded[b, r : r + height, c : c + width]
        out[b] = window[:, ::-1] if flips[b] else window
    return out


def test_crop_and_flip_matches_numpy_per_example():
    rng = np.random.default_rng(0)
    images = rng.random((6, 5, 7, 3)).astype(np.float32)
    offsets = rng.integers(0, 5, size=(6, 2))
    flips = rng.random(6) < 0.5
    out = crop_and_flip(images, offsets, flips, padding=2).numpy()
    np.testing.assert_array_equal(out, _numpy_crop_and_flip(images, offsets, flips, 2))


def test_random_crop_and_flip_is_seeded_and_per_example():
    images = np.random.default_rng(1).random((64, 8, 8, 1)).astype(np.float32)
    a = random_crop_and_flip(images, seed=[3, 4]).numpy()
    np.testing.assert_array_equal(a, random_crop_and_flip(images, seed=[3, 4]).numpy())
    assert not np.array_equal(a, random_crop_and_flip(images, seed=[3, 5]).numpy())
    # Recover each example's (offset, flip) by brute force: all 9x9x2 candidates.
    found = set()
    for b in range(len(images)):
        matches = [
            (r, c, f)
            for r in range(9)
            for c in range(9)
            for f in (False, True)
            if np.array_equal(_numpy_crop_and_flip(images[b : b + 1], [(r, c)], [f], 4)[0], a[b])
        ]
        assert matches, f"example {b} is not a padded crop (+flip) of its input"
        found.add(matches[0])
    assert len(found) > 20  # independent draws per example, not one crop for the batch
    assert {f for _, _, f in found} == {False, True}


def test_identity_without_padding_or_flip():
    images = np.random.default_rng(2).random((3, 4, 4, 2)).astype(np.float32)
    out = random_crop_and_flip(images, seed=[0, 0], padding=0, flip=False).numpy()
    np.testing.assert_array_equal(out, images)


def test_augment_dataset_pairs_and_resumes_with_skip():
    x = np.random.default_rng(3).random((10, 6, 6, 3)).astype(np.float32)
    y = np.arange(10)
    x_ood = np.random.default_rng(4).random((10, 6, 6, 3)).astype(np.float32)

    def make():
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2).repeat()
        ood = tf.data.Dataset.from_tensor_slices(x_ood).batch(2).repeat()
        paired = tf.data.Dataset.zip(ds, ood).map(lambda a, o: ((a[0], o), a[1]))
        return augment_dataset(paired, seed=7, padding=1)

    full = [e for e in make().take(6)]
    resumed = [e for e in make().skip(3).take(3)]
    for (xa, ya), (xb, yb) in zip(full[3:], resumed):
        np.testing.assert_array_equal(xa[0].numpy(), xb[0].numpy())
        np.testing.assert_array_equal(xa[1].numpy(), xb[1].numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    (x0, o0), y0 = full[0]
    np.testing.assert_array_equal(y0.numpy(), [0, 1])
    assert x0.shape == (2, 6, 6, 3) and o0.shape == (2, 6, 6, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="padding"):
        random_crop_and_flip(np.zeros((1, 4, 4, 1), np.float32), [0, 0], padding=-1)
    with pytest.raises(ValueError, match="batch"):
        random_crop_and_flip(np.zeros((4, 4, 1), np.float32), [0, 0])
    with pytest.raises(ValueError, match="elements"):
        augment_dataset(tf.data.Dataset.from_tensor_slices(np.zeros((2, 4, 4, 1))), seed=0)
