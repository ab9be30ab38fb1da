"""synthetic3 against the generative model it claims (SciPy distributions, grid integration)."""

import numpy as np
import pytest
from scipy import stats

from uqmix import data, synthetic


def test_shapes_dtypes_and_seed_determinism():
    x, y, x_ood = synthetic.synthetic3(num_per_class=40, seed=3)
    assert x.shape == (120, 2) and x.dtype == np.float32
    assert y.shape == (120,) and y.dtype == np.int64
    assert x_ood.shape == (120, 2) and x_ood.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(y), [40, 40, 40])
    assert len(set(y[:10])) > 1, "classes must be shuffled, not in blocks"
    again = synthetic.synthetic3(num_per_class=40, seed=3)
    for a, b in zip((x, y, x_ood), again):
        np.testing.assert_array_equal(a, b)
    other = synthetic.synthetic3(num_per_class=40, seed=4)
    assert not np.array_equal(other[0], x)
    assert synthetic.synthetic3(5, 0, num_ood=7)[2].shape == (7, 2)


def test_class_conditionals_are_the_stated_gaussians():
    config = synthetic.DEFAULT_CONFIG
    x, y, _ = synthetic.synthetic3(num_per_class=4000, seed=11)
    angles = np.deg2rad([90.0, 210.0, 330.0])
    means = config.mean_radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    np.testing.assert_allclose(synthetic.class_means(config), means, atol=1e-12)
    for k in range(3):
        residual = (x[y == k].astype(np.float64) - means[k]) / config.std
        for axis in range(2):
            assert stats.kstest(residual[:, axis], "norm").pvalue > 1e-3
        # Isotropic, uncorrelated: sample correlation within ~4 standard errors of 0.
        assert abs(np.corrcoef(residual.T)[0, 1]) < 4 / np.sqrt(len(residual))


def test_ood_shell_is_uniform_on_the_annulus_outside_the_data():
    config = synthetic.DEFAULT_CONFIG
    # Many OOD points: area-uniform vs radius-uniform differ by only ~0.02 in CDF here.
    x, _, x_ood = synthetic.synthetic3(num_per_class=2000, seed=5, num_ood=100000)
    radius = np.linalg.norm(x_ood.astype(np.float64), axis=1)
    assert radius.min() >= config.ood_inner_radius - 1e-5
    assert radius.max() <= config.ood_outer_radius + 1e-5
    r2 = (radius**2 - config.ood_inner_radius**2) / (
        config.ood_outer_radius**2 - config.ood_inner_radius**2
    )
    assert stats.kstest(r2, "uniform").pvalue > 1e-3  # uniform in area
    angle = np.mod(np.arctan2(x_ood[:, 1], x_ood[:, 0]), 2 * np.pi) / (2 * np.pi)
    assert stats.kstest(angle, "uniform").pvalue > 1e-3
    # Raw coordinates, not scaled to [0, 1]; in-domain points stay inside the shell:
    # P(||x|| > r_in) for one point is a Rice tail, tiny.
    assert np.abs(x).max() > 2.0
    tail = stats.rice(b=config.mean_radius / config.std).sf(config.ood_inner_radius / config.std)
    assert tail < 1e-4
    assert np.mean(np.linalg.norm(x, axis=1) > config.ood_inner_radius) <= 1e-3


def test_class_posterior_matches_scipy_densities_and_bayes_error():
    config = synthetic.DEFAULT_CONFIG
    means = synthetic.class_means(config)
    points = np.random.default_rng(0).normal(scale=4.0, size=(200, 2))
    densities = np.stack(
        [stats.multivariate_normal(m, config.std**2 * np.eye(2)).pdf(points) for m in means], axis=1
    )
    np.testing.assert_allclose(
        synthetic.class_posterior(points, config),
        densities / densities.sum(1, keepdims=True),
        rtol=1e-10,
        atol=1e-300,
    )
    # Bayes error by grid integration of 1 - ∫ max_k p(x, k) dx ...
    grid = np.linspace(-9.0, 9.0, 721)
    gx, gy = np.meshgrid(grid, grid)
    cells = np.stack([gx.ravel(), gy.ravel()], axis=1)
    joint = np.stack([stats.multivariate_normal(m, np.eye(2)).pdf(cells) for m in means], 1) / 3
    bayes_error = 1.0 - joint.max(axis=1).sum() * (grid[1] - grid[0]) ** 2
    # ... against the error rate of the Bayes classifier on generated data.
    x, y, _ = synthetic.synthetic3(num_per_class=10000, seed=2)
    empirical = np.mean(np.argmax(synthetic.class_posterior(x, config), axis=1) != y)
    standard_error = np.sqrt(bayes_error * (1 - bayes_error) / len(y))
    assert abs(empirical - bayes_error) < 4 * standard_error
    assert bayes_error > 0.05, "the classes must overlap (real data uncertainty)"


def test_registry_splits():
    x, y = data.load_arrays("synthetic3", "train")
    x_ref, y_ref, ood_ref = synthetic.synthetic3(500, synthetic.SPLIT_SEEDS["train"])
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    x_ood, y_ood = data.load_arrays("synthetic3_ood", "train")
    np.testing.assert_array_equal(x_ood, ood_ref)
    np.testing.assert_array_equal(y_ood, np.full(len(ood_ref), data.NO_LABEL))
    x_test, _ = data.load_arrays("synthetic3", "test")
    assert x_test.shape == (1500, 2) and not np.array_equal(x_test, x)
    with pytest.raises(ValueError, match="synthetic3 has splits train, test"):
        data.load_arrays("synthetic3", "extra")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_per_class=0), "num_per_class must be an integer >= 1"),
        (dict(num_per_class=2.5), "num_per_class must be an integer"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(num_ood=-3), "num_ood must be an integer >= 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.synthetic3(**kwargs)


def test_bad_config_and_posterior_input():
    with pytest.raises(ValueError, match="ood_inner_radius < ood_outer_radius"):
        synthetic.Synthetic3Config(ood_inner_radius=7.0, ood_outer_radius=6.0)
    with pytest.raises(ValueError, match="std must be > 0"):
        synthetic.Synthetic3Config(std=0.0)
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        synthetic.class_posterior(np.zeros((4, 3)))
