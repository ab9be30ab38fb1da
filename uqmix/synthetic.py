"""``synthetic3``: three overlapping 2-D Gaussian classes and a thin shell of OOD points.

Generative model (``Synthetic3Config``; defaults in brackets):
* class k ∈ {0, 1, 2} with probability 1/3, x | k ~ N(μ_k, σ² I), σ = ``std`` [1],
  μ_k = r·(cos φ_k, sin φ_k), φ_k = 90° + 120°·k, r = ``mean_radius`` [2]: the
  means sit on a triangle, 2√3·σ ≈ 3.5σ apart, so the classes overlap and the
  Bayes error is about 7.4 % (real data uncertainty);
* OOD points uniform in area on the annulus ``ood_inner_radius`` ≤ ‖x‖ ≤
  ``ood_outer_radius`` [6, 7] around the origin, outside the data (an in-domain
  point lies beyond radius 6 with probability about 6·10⁻⁵).

The points are raw 2-D coordinates, **not** images and **not** scaled to
[0, 1]: in-domain x lies in about [−5.5, 5.5]², OOD points have norm in
[6, 7].  Arrays are float32 [N, 2] (images elsewhere in uqmix are
[N, H, W, C]); labels int64 [N]; OOD points have no label (``NO_LABEL`` = −1
where a label array is needed).

``class_posterior`` is the exact Bayes posterior p(k | x) of this model.
"""

import dataclasses

import numpy as np

NUM_CLASSES = 3
NO_LABEL = -1
# load_arrays("synthetic3" / "synthetic3_ood", split): fixed seeds and sizes per split.
SPLIT_SEEDS = {"train": 0, "test": 1}
SPLIT_NUM_PER_CLASS = {"train": 500, "test": 500}


@dataclasses.dataclass(frozen=True)
class Synthetic3Config:
    """Geometry of ``synthetic3``; see the module docstring."""

    mean_radius: float = 2.0
    std: float = 1.0
    ood_inner_radius: float = 6.0
    ood_outer_radius: float = 7.0

    def __post_init__(self):
        if not self.std > 0 or not self.mean_radius >= 0:
            raise ValueError(f"std must be > 0 and mean_radius >= 0, got {self}.")
        if not 0 <= self.ood_inner_radius < self.ood_outer_radius:
            raise ValueError(
                "need 0 <= ood_inner_radius < ood_outer_radius, got "
                f"{self.ood_inner_radius}, {self.ood_outer_radius}."
            )


DEFAULT_CONFIG = Synthetic3Config()


def class_means(config=DEFAULT_CONFIG):
    """float64 [3, 2]: μ_k = r (cos φ_k, sin φ_k), φ_k = π/2 + 2πk/3."""
    angles = np.pi / 2 + 2 * np.pi * np.arange(NUM_CLASSES) / NUM_CLASSES
    return config.mean_radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _check_count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def synthetic3(num_per_class=500, seed=0, num_ood=None, config=DEFAULT_CONFIG):
    """(x float32 [3n, 2], y int64 [3n], x_ood float32 [m, 2]) drawn from ``seed``.

    n = num_per_class points per class, in shuffled order; m = num_ood OOD
    points (default 3n, as many as in-domain points): radius ρ with ρ² uniform
    on [r_in², r_out²] and angle uniform, i.e. uniform in area on the annulus.
    """
    _check_count(num_per_class, "num_per_class", 1)
    _check_count(seed, "seed", 0)
    num_ood = 3 * num_per_class if num_ood is None else num_ood
    _check_count(num_ood, "num_ood", 0)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), num_per_class))
    x = class_means(config)[y] + config.std * rng.standard_normal((y.shape[0], 2))
    radius = np.sqrt(rng.uniform(config.ood_inner_radius**2, config.ood_outer_radius**2, num_ood))
    angle = rng.uniform(0.0, 2 * np.pi, num_ood)
    x_ood = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return x.astype(np.float32), y, x_ood.astype(np.float32)


def class_posterior(x, config=DEFAULT_CONFIG):
    """Exact p(k | x), float64 [N, 3]: softmax_k(−‖x − μ_k‖² / (2σ²)).

    (Equal class priors and one shared isotropic σ, so the normalisers cancel.)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape [N, 2], got {x.shape}.")
    squared_distance = np.sum((x[:, None, :] - class_means(config)[None]) ** 2, axis=-1)
    logits = -squared_distance / (2 * config.std**2)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def load_split(split, ood=False):
    """The fixed ``split`` ("train" seed 0, "test" seed 1; 500 per class) as (x, y).

    ood=True: the split's OOD shell, labels ``NO_LABEL`` (−1).
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"synthetic3 has splits {sorted(SPLIT_SEEDS)}, got {split!r}.")
    x, y, x_ood = synthetic3(SPLIT_NUM_PER_CLASS[split], SPLIT_SEEDS[split])
    if ood:
        return x_ood, np.full(x_ood.shape[0], NO_LABEL, np.int64)
    return x, y
