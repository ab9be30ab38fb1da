"""mc_dropout / ensemble of any Keras network vs explicit computations; BN stays in inference."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_softmax

from uqmix.models import SampledNetworks, ensemble, mc_dropout
from uqmix.studies.pn_experiment import evaluation_model

K = 3


def _mask_pattern(shape):
    """The replayable 'dropout mask' of ``_ReplayDropout``: keep where sin(1 + 0.37 i) > −0.2."""
    size = int(np.prod(shape))
    return (np.sin(1.0 + 0.37 * np.arange(size)) > -0.2).reshape(shape)


@keras.saving.register_keras_serializable(package="uqmix_tests")
class _ReplayDropout(keras.layers.Dropout):
    """Dropout with a fixed mask pattern over [rows, units] when training, identity otherwise."""

    def call(self, inputs, training=False):
        if not training:
            return inputs
        mask = tf.numpy_function(
            lambda s: _mask_pattern(tuple(s)).astype(np.float32), [tf.shape(inputs)], tf.float32
        )
        return inputs * tf.reshape(mask, tf.shape(inputs)) / (1.0 - self.rate)


def _residual_net(dropout_cls=_ReplayDropout, seed=0):
    """Dense → BN → [Dense + skip] → Dropout → Dense: a branching (residual) functional model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(6, name="stem")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    r = keras.layers.Dense(6, activation="relu", name="branch")(h)
    h = keras.layers.Add()([h, r])
    h = dropout_cls(0.5, name="dropout")(h)
    network = keras.Model(inputs, keras.layers.Dense(K, name="head")(h))
    rng = np.random.default_rng(seed)
    bn = network.get_layer("bn")
    bn.moving_mean.assign(rng.normal(size=6).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 3.0, 6).astype("float32"))
    bn.gamma.assign(rng.uniform(0.5, 1.5, 6).astype("float32"))
    bn.beta.assign(rng.normal(size=6).astype("float32"))
    return network


def _reference_mc_logits(network, x, num_samples):
    """Explicit float64 loop over samples: BN with its moving statistics, sample s's mask rows."""
    w = {
        name: [v.numpy().astype(np.float64) for v in network.get_layer(name).weights]
        for name in ("stem", "bn", "branch", "head")
    }
    batch = len(x)
    masks = _mask_pattern((num_samples * batch, 6))
    outputs = []
    for s in range(num_samples):
        h = x.astype(np.float64) @ w["stem"][0] + w["stem"][1]
        gamma, beta, moving_mean, moving_var = w["bn"]
        h = gamma * (h - moving_mean) / np.sqrt(moving_var + 1e-3) + beta
        h = h + np.maximum(h @ w["branch"][0] + w["branch"][1], 0.0)
        h = h * masks[s * batch : (s + 1) * batch] / 0.5
        outputs.append(h @ w["head"][0] + w["head"][1])
    return np.stack(outputs)


def test_mc_dropout_of_a_residual_net_equals_the_explicit_loop_with_bn_in_inference():
    network = _residual_net()
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    bn_stats = [v.numpy().copy() for v in network.get_layer("bn").weights]
    model = mc_dropout(network, num_samples=4)
    predictive = model.predictive(x)  # default S = 4
    expected = _reference_mc_logits(network, x, 4)
    np.testing.assert_allclose(
        predictive.log_probs.numpy(), log_softmax(expected, -1), rtol=1e-5, atol=1e-5
    )
    eager = model.predictive_parameters(tf.constant(x), 4).numpy()
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-5)
    for before, after in zip(bn_stats, network.get_layer("bn").weights):
        np.testing.assert_array_equal(before, after.numpy())  # inference: no BN update
    # Outside the predictive the network is untouched: inference mode drops no unit.
    no_dropout = network(x, training=False).numpy()
    np.testing.assert_allclose(no_dropout, network(x, training=False).numpy())
    assert "call" not in network.get_layer("dropout").__dict__


def test_mc_dropout_with_keras_dropout_samples_and_keeps_bn_frozen():
    network = _residual_net(keras.layers.Dropout)
    x = np.random.default_rng(2).normal(size=(3, 4)).astype("float32")
    logits = mc_dropout(network).predictive_parameters(tf.constant(x), 6).numpy()
    assert logits.shape == (6, 3, K)
    assert np.abs(logits[1:] - logits[:1]).max() > 1e-3  # masks differ between samples
    # The head is linear after the dropout and dropout is unbiased, so the mean logits over
    # many masks are the inference-mode logits -- only if BN used its moving statistics (its
    # batch statistics here are far from the moving ones set by _residual_net).
    many = mc_dropout(network).predictive_parameters(tf.constant(x), 4000).numpy()
    np.testing.assert_allclose(many.mean(0), network(x, training=False).numpy(), atol=0.15)


def test_ensemble_equals_the_loop_over_members():
    members = [_residual_net(keras.layers.Dropout, seed=s) for s in range(3)]
    x = np.random.default_rng(3).normal(size=(4, 4)).astype("float32")
    predictive = ensemble(members).predictive(x, num_samples=50)  # num_samples is ignored
    expected = np.stack(
        [log_softmax(m.predict(x, verbose=0).astype(np.float64), -1) for m in members]
    )
    np.testing.assert_allclose(predictive.log_probs.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_keras_round_trip(tmp_path):
    network = _residual_net(keras.layers.Dropout)
    for model in (mc_dropout(network, num_samples=5), ensemble([network, network])):
        path = str(tmp_path / f"{model.mc_dropout}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        assert isinstance(loaded, SampledNetworks)
        assert loaded.default_num_samples == model.default_num_samples


def test_bad_networks_are_refused():
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(K)])
    with pytest.raises(ValueError, match="no dropout layer"):
        mc_dropout(plain)
    with pytest.raises(ValueError, match="ensemble"):
        SampledNetworks([plain, plain], mc_dropout=True)
    with pytest.raises(ValueError, match="Keras model"):
        ensemble([lambda x: x])
    with pytest.raises(ValueError, match="at least one"):
        ensemble([])


def test_prior_network_study_uses_the_public_wrappers():
    networks = [
        types.SimpleNamespace(backbone=_residual_net(keras.layers.Dropout, seed=s))
        for s in range(2)
    ]
    config = {"model_kind": "mc_dropout", "loss": "cross_entropy", "eval_samples": 7}
    model = evaluation_model(config, networks[:1])
    assert model.mc_dropout and model.default_num_samples == 7
    model = evaluation_model(dict(config, model_kind="ensemble"), networks)
    assert not model.mc_dropout and model.default_num_samples == 2
