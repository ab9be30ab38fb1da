"""Deterministic / MC dropout / deep ensemble: objectives vs NumPy, predictives, saving, tf.distribute."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_softmax

from uqmix.models import DeepEnsemble, Deterministic, MCDropout
from uqmix.models.backbones import mlp

INPUT_SHAPE, K, HIDDEN = (3, 4), 3, (8, 8)


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n,) + INPUT_SHAPE).astype(np.float32),
        rng.integers(0, K, n).astype(np.int32),
    )


def _numpy_logits(network, x):
    """Forward pass of a (dropout-free) mlp in float64 from its weights."""
    h = x.reshape(len(x), -1).astype(np.float64)
    dense = [layer for layer in network.layers if isinstance(layer, keras.layers.Dense)]
    for i, layer in enumerate(dense):
        kernel, bias = (w.numpy().astype(np.float64) for w in layer.weights)
        h = h @ kernel + bias
        if i < len(dense) - 1:
            h = np.maximum(h, 0.0)
    return h


def _cross_entropy(logits, y):
    return -np.take_along_axis(log_softmax(logits, -1), y[:, None], -1)[:, 0]


def _l2(network, weight_decay):
    return weight_decay * sum(
        (layer.kernel.numpy().astype(np.float64) ** 2).sum()
        for layer in network.layers
        if isinstance(layer, keras.layers.Dense)
    )


def test_deterministic_objective_and_predictive_match_numpy():
    model = Deterministic(
        input_shape=INPUT_SHAPE, num_classes=K, hidden_units=HIDDEN, weight_decay=0.01
    )
    model.compile(optimizer="sgd")
    x, y = _batch()
    logits = _numpy_logits(model.network, x)
    logs = model.test_step((x, y))
    nll, penalty = _cross_entropy(logits, y).mean(), _l2(model.network, 0.01)
    np.testing.assert_allclose(float(logs["nll"]), nll, rtol=1e-5)
    np.testing.assert_allclose(float(logs["weight_decay"]), penalty, rtol=1e-5)
    np.testing.assert_allclose(float(logs["loss"]), nll + penalty, rtol=1e-5)
    pred = model.predictive(x, num_samples=100)
    assert pred.log_probs.shape == (1, 6, K)
    np.testing.assert_allclose(pred.log_mean().numpy(), log_softmax(logits, -1), atol=1e-5)
    assert Deterministic().weight_decay == pytest.approx(1 / 60000)


def test_mc_dropout_predictive_has_the_law_of_full_dropout_passes():
    """The shared-first-layer, tiled predictive vs calling the whole net with training=True."""
    keras.utils.set_random_seed(0)
    model = MCDropout(input_shape=INPUT_SHAPE, num_classes=K, hidden_units=HIDDEN)
    x, _ = _batch(n=2)
    samples = 4000
    ours = model.predictive_parameters(tf.constant(x), samples).numpy()  # [S, 2, K]
    tiled = np.broadcast_to(x, (samples,) + x.shape).reshape((-1,) + INPUT_SHAPE)
    naive = model.network(tiled, training=True).numpy().reshape(samples, 2, K)
    assert ours.shape == naive.shape
    assert np.all(ours.std(0) > 0)  # dropout is on at test time
    se = np.sqrt((ours.var(0) + naive.var(0)) / samples)
    np.testing.assert_array_less(np.abs(ours.mean(0) - naive.mean(0)), 5 * se)
    np.testing.assert_allclose(ours.var(0), naive.var(0), rtol=0.15)
    deterministic_logits = model.network(x, training=False).numpy()
    assert not np.allclose(ours[0], deterministic_logits)
    with pytest.raises(ValueError, match="dropout_rate"):
        MCDropout(dropout_rate=0.0)


def test_ensemble_members_are_independent_and_each_gets_its_own_gradient():
    model = DeepEnsemble(
        input_shape=INPUT_SHAPE,
        num_classes=K,
        hidden_units=HIDDEN,
        num_members=3,
        weight_decay=0.001,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    first_kernels = [m.layers[2].kernel.numpy() for m in model.members]
    assert not np.allclose(first_kernels[0], first_kernels[1])
    x, y = _batch()
    pred = model.predictive(x, num_samples=100)
    assert pred.log_probs.shape == (3, 6, K)
    np.testing.assert_allclose(
        pred.log_probs.numpy()[1], log_softmax(_numpy_logits(model.members[1], x), -1), atol=1e-5
    )
    # One ensemble step == one SGD step of a member alone on CE + its own L2 term.
    alone = mlp(INPUT_SHAPE, K, hidden_units=HIDDEN, weight_decay=0.001)
    alone.set_weights(model.members[1].get_weights())
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, alone(x), from_logits=True)
        ) + tf.add_n(alone.losses)
    grads = tape.gradient(loss, alone.trainable_variables)
    expected = [w.numpy() - 0.5 * g.numpy() for w, g in zip(alone.trainable_variables, grads)]
    summed_ce = sum(_cross_entropy(_numpy_logits(m, x), y).mean() for m in model.members)
    summed_l2 = sum(_l2(m, 0.001) for m in model.members)
    logs = model.train_step((x, y))
    for w, e in zip(model.members[1].trainable_variables, expected):
        np.testing.assert_allclose(w.numpy(), e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(logs["nll"]), summed_ce, rtol=1e-5)
    np.testing.assert_allclose(float(logs["loss"]), summed_ce + summed_l2, rtol=1e-5)


@pytest.mark.parametrize("cls", [Deterministic, MCDropout, DeepEnsemble])
def test_keras_round_trip(cls, tmp_path):
    model = cls(input_shape=INPUT_SHAPE, num_classes=K, hidden_units=HIDDEN)
    x, _ = _batch()
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is cls and loaded.get_config() == model.get_config()
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    if cls is not MCDropout:
        np.testing.assert_array_equal(
            loaded.predictive(x).log_probs.numpy(), model.predictive(x).log_probs.numpy()
        )


_DISTRIBUTED_SCRIPT = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from uqmix.models import Deterministic, InfiniteMixture

    rng = np.random.default_rng(0)
    x, y = rng.random((8, 6)).astype("float32"), rng.integers(0, 3, 8)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def train(strategy, make):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            model = make()
            model.compile(optimizer=keras.optimizers.SGD(0.1))
            model.build((None, 6))
        return model, model.fit(data, epochs=1, verbose=0).history

    make = lambda: Deterministic(input_shape=(6,), num_classes=3, hidden_units=(5,),
                                 weight_decay=0.01)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single, _ = train(tf.distribute.get_strategy(), make)
    replicated, _ = train(mirrored, make)
    print("MAXDIFF", max(float(np.abs(a.numpy() - b.numpy()).max())
                         for a, b in zip(single.weights, replicated.weights)))
    _, logs = train(
        mirrored,
        lambda: InfiniteMixture(num_classes=3, hidden_units=(5,), seed=1, jit_sampling=True),
    )
    print("MIXTURE_LOSS", logs["loss"][0])
""")


def test_train_step_scales_correctly_under_mirrored_strategy():
    """Two replicas: per-example losses / global batch + regularizer / replicas == one device."""
    result = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(
        line.split()
        for line in result.stdout.splitlines()
        if line.startswith(("MAXDIFF", "MIXTURE_LOSS"))
    )
    assert float(lines["MAXDIFF"]) < 1e-6
    assert np.isfinite(float(lines["MIXTURE_LOSS"]))
