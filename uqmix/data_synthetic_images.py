"""Generated image sets for smoke tests: no files, no download, a few hundred images.

* ``synthetic_images``: 32×32×3 images of 10 classes.  Class k is a sinusoidal
  grating at orientation θ_k = kπ/10 with a class colour, at a random phase
  and contrast, plus Gaussian pixel noise (σ = 0.1):
      x = clip(0.5 + a·sin(2π f ⟨(i, j), (cos θ_k, sin θ_k)⟩ / 32 + φ) · colour_k + n, 0, 1),
  a ~ U(0.25, 0.45), f = 3, φ ~ U(0, 2π).  A small convnet learns it in a few
  hundred steps.
* ``synthetic_images_ood``: 32×32×3 out-of-distribution images: smooth random
  blobs (a sum of 3 Gaussian bumps of random colour, centre and width) plus the
  same pixel noise; labels −1 (``NO_LABEL``).

Splits ``train`` (600 images) and ``test`` (200), each generated from its own
fixed seed, so every call returns the same arrays.  Same contract as
``uqmix.data.load_arrays``: float32 [N, 32, 32, 3] in [0, 1], int64 labels [N].
"""

import numpy as np

from uqmix.data import NO_LABEL

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
SPLIT_SIZES = {"train": 600, "test": 200}
_SPLIT_SEEDS = {"train": 1, "test": 2}
_NOISE = 0.1
NAMES = ("synthetic_images", "synthetic_images_ood")


def _class_colours():
    rng = np.random.default_rng(0)
    return rng.uniform(0.3, 1.0, size=(NUM_CLASSES, 3))


def _gratings(labels, rng):
    size = IMAGE_SHAPE[0]
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    theta = labels * np.pi / NUM_CLASSES
    projection = (
        rows[None] * np.cos(theta)[:, None, None] + cols[None] * np.sin(theta)[:, None, None]
    )
    phase = rng.uniform(0, 2 * np.pi, size=(labels.size, 1, 1))
    amplitude = rng.uniform(0.25, 0.45, size=(labels.size, 1, 1, 1))
    wave = np.sin(2 * np.pi * 3.0 * projection / size + phase)[..., None]
    return 0.5 + amplitude * wave * _class_colours()[labels][:, None, None, :]


def _blobs(count, rng):
    size = IMAGE_SHAPE[0]
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.full((count, size, size, 3), 0.2)
    for _ in range(3):
        centre = rng.uniform(0, size, size=(count, 2))
        width = rng.uniform(3, 10, size=(count, 1, 1))
        colour = rng.uniform(0, 0.8, size=(count, 3))
        bump = np.exp(
            -(
                (rows[None] - centre[:, 0, None, None]) ** 2
                + (cols[None] - centre[:, 1, None, None]) ** 2
            )
            / (2 * width**2)
        )
        images += bump[..., None] * colour[:, None, None, :]
    return images


def load(name, split):
    """(x float32 [N, 32, 32, 3] in [0, 1], y int64 [N]) of a generated set (module doc)."""
    if name not in NAMES:
        raise ValueError(f"Unknown generated image set {name!r}; known: {', '.join(NAMES)}.")
    if split not in SPLIT_SIZES:
        raise ValueError(f"{name} has splits {', '.join(SPLIT_SIZES)}; got {split!r}.")
    count = SPLIT_SIZES[split]
    rng = np.random.default_rng([_SPLIT_SEEDS[split], NAMES.index(name)])
    if name == "synthetic_images":
        labels = np.arange(count, dtype=np.int64) % NUM_CLASSES
        rng.shuffle(labels)
        images = _gratings(labels, rng)
    else:
        labels = np.full(count, NO_LABEL, np.int64)
        images = _blobs(count, rng)
    images = images + rng.normal(0.0, _NOISE, size=images.shape)
    return np.clip(images, 0.0, 1.0).astype(np.float32), labels
