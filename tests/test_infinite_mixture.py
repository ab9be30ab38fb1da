"""Mixture objectives vs float64 NumPy; InfiniteMixture steps, ML = VI at S = 1, predictive, saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_softmax, logsumexp

from uqmix.models import InfiniteMixture
from uqmix.objectives import mixture_losses
from uqmix.predictive import SampledPredictive

INPUT_SHAPE, K = (3, 4), 3


def _model(seed=1, **kwargs):
    kwargs.setdefault("hidden_units", (8, 8))
    kwargs.setdefault("dataset_size", 100)
    model = InfiniteMixture(num_classes=K, seed=seed, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.build((None,) + INPUT_SHAPE)
    return model


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n,) + INPUT_SHAPE).astype(np.float32),
        rng.integers(0, K, n).astype(np.int32),
    )


def _seed_states(model):
    return [layer.seed_generator.state.numpy() for layer in model.dense_layers]


def _restore_seed_states(model, states):
    for layer, state in zip(model.dense_layers, states):
        layer.seed_generator.state.assign(state)


@pytest.mark.parametrize("objective", ["ml", "vi"])
def test_objectives_match_float64_numpy(objective):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(4, 5, K))
    labels = rng.integers(0, K, 5)
    kl, kl_weight, n = 123.4, 0.1, 1000
    ell = np.take_along_axis(log_softmax(logits, -1), labels[None, :, None], -1)[..., 0]  # [S, B]
    if objective == "vi":
        per_example = -ell.mean(0)
    else:
        per_example = -(logsumexp(ell, axis=0) - np.log(4))
    expected = per_example.mean() + kl_weight / n * kl
    ours_ell = mixture_losses.sample_log_likelihoods(labels, tf.constant(logits))
    np.testing.assert_allclose(ours_ell.numpy(), ell, rtol=1e-12)
    np.testing.assert_allclose(
        mixture_losses.per_example_nll(ours_ell, objective).numpy(), per_example, rtol=1e-12
    )
    loss = mixture_losses.mixture_loss(
        ours_ell, tf.constant(kl, tf.float64), objective, kl_weight, n
    )
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)


def test_ml_and_vi_coincide_at_one_sample():
    ell = tf.constant(np.random.default_rng(2).normal(size=(1, 7)) - 2.0, tf.float32)
    np.testing.assert_array_equal(
        mixture_losses.per_example_nll(ell, "ml").numpy(),
        mixture_losses.per_example_nll(ell, "vi").numpy(),
    )
    x, y = _batch()
    ml, vi = (
        _model(objective="ml", num_train_samples=1),
        _model(objective="vi", num_train_samples=1),
    )
    vi.set_weights(ml.get_weights())
    ml_logs, vi_logs = ml.train_step((x, y)), vi.train_step((x, y))
    for name in ("loss", "nll", "kl", "accuracy"):
        assert float(ml_logs[name]) == float(vi_logs[name]), name
    for a, b in zip(ml.weights, vi.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("objective", ["ml", "vi"])
def test_step_metrics_match_numpy_on_the_same_samples(objective):
    """Replays the step's noise (saved seed states) and recomputes its metrics in float64."""
    model = _model(objective=objective, num_train_samples=5, kl_weight=0.5)
    x, y = _batch()
    states = _seed_states(model)
    logs = model.test_step((x, y))
    _restore_seed_states(model, states)
    logits = model(x, num_samples=5).numpy().astype(np.float64)  # the same draws
    ell = np.take_along_axis(log_softmax(logits, -1), y[None, :, None], -1)[..., 0]
    nll = (-ell.mean(0) if objective == "vi" else -(logsumexp(ell, 0) - np.log(5))).mean()
    kl = sum(layer.kl_divergence().numpy() for layer in model.dense_layers)
    mean_probs = np.exp(log_softmax(logits, -1)).mean(0)
    np.testing.assert_allclose(float(logs["nll"]), nll, rtol=1e-5)
    np.testing.assert_allclose(float(logs["kl"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(logs["loss"]), nll + 0.5 / 100 * kl, rtol=1e-5)
    np.testing.assert_allclose(float(logs["accuracy"]), np.mean(mean_probs.argmax(-1) == y))


def test_fit_learns_a_separable_problem():
    rng = np.random.default_rng(3)
    y = rng.integers(0, K, 300).astype(np.int32)
    centers = rng.normal(scale=3.0, size=(K,) + INPUT_SHAPE).astype(np.float32)
    x = centers[y] + rng.normal(scale=0.5, size=(300,) + INPUT_SHAPE).astype(np.float32)
    model = _model(objective="ml", kl_weight=1.0, dataset_size=300)
    model.compile(optimizer=keras.optimizers.Adam(0.03))
    history = model.fit(x, y, batch_size=100, epochs=6, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert model.predictive(x, num_samples=20).predicted_class().numpy().__eq__(y).mean() > 0.9


@pytest.mark.parametrize("sampling", ["local_reparameterization", "shared_weights"])
def test_predictive_is_vectorised_batched_and_reproducible(sampling):
    model = _model(predictive_sampling=sampling)
    x, _ = _batch(n=11)
    states = _seed_states(model)
    pred = model.predictive(x, num_samples=30, batch_size=4)
    assert isinstance(pred, SampledPredictive) and pred.log_probs.shape == (30, 11, K)
    samples = pred.probs.numpy()
    assert np.all(np.std(samples, axis=0) > 0)  # the 30 components differ
    _restore_seed_states(model, states)
    again = model.predictive(x, num_samples=30, batch_size=4)
    np.testing.assert_array_equal(again.log_probs.numpy(), pred.log_probs.numpy())
    twin = _model(predictive_sampling=sampling)  # same seed, same initial weights and noise
    twin.set_weights(model.get_weights())
    _restore_seed_states(twin, states)
    np.testing.assert_array_equal(
        twin.predictive(x, num_samples=30, batch_size=4).log_probs.numpy(), pred.log_probs.numpy()
    )
    # Graph-safe with a tensor sample count (as the SavedModel signature passes it).
    fn = tf.function(lambda t, s: model.predictive_parameters(t, s))
    assert fn(tf.constant(x), tf.constant(7)).shape == (7, 11, K)


def test_keras_round_trip_reproduces_predictions(tmp_path):
    model = _model(objective="vi", kl_weight=0.1, prior_variance=0.5)
    x, _ = _batch()
    rng = np.random.default_rng(5)
    for weight in model.weights:  # "trained" weights, and a seed state that has moved on
        weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    model(x, num_samples=2)
    path = os.path.join(tmp_path, "mixture.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, InfiniteMixture)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(
        loaded.predictive(x, num_samples=9).log_probs.numpy(),
        model.predictive(x, num_samples=9).log_probs.numpy(),
    )
    assert set(loaded.weight_variances()) == {"hidden_0", "hidden_1", "logits"}
    assert loaded.weight_variances()["hidden_0"].shape == (13, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kl_weight=-1.0), "kl_weight"),
        (dict(prior_variance=0.0), "prior_variance"),
        (dict(num_train_samples=0), "num_train_samples"),
        (dict(objective="map"), "objective"),
        (dict(dataset_size=0), "dataset_size"),
        (dict(sampling="flipout"), "sampling"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InfiniteMixture(**kwargs)


def test_non_integer_float_labels_are_refused_not_truncated():
    logits = tf.zeros([2, 3, 4])
    np.testing.assert_allclose(  # whole-number floats are class indices
        mixture_losses.sample_log_likelihoods(np.array([1.0, 0.0, 3.0]), logits).numpy(),
        np.full((2, 3), -np.log(4.0)),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="integer class indices"):
        mixture_losses.sample_log_likelihoods(np.array([2.7, 0.2, 1.0]), logits)
    graph = tf.function(mixture_losses.sample_log_likelihoods)
    with pytest.raises(tf.errors.InvalidArgumentError, match="integer class indices"):
        graph(tf.constant([2.7, 0.2, 1.0]), logits)
