"""MixtureModel (any Keras network as an ML/VI mixture) and InfiniteMixture on replayed noise.

The noise of every MatrixNormalDense is replaced by a fixed pattern (``_pattern_noise``), so
the objective and one SGD step can be recomputed independently in float64.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_softmax, logsumexp

from uqmix import layers as uqmix_layers
from uqmix.layers import MatrixNormalDense
from uqmix.models import InfiniteMixture, MixtureModel
from uqmix.predictive import SampledPredictive

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 3


def _pattern_noise(shape, seed, dtype=tf.float32):
    """Replayable stand-in for N(0, 1) noise: sin(1 + 0.37 i) over the flattened shape."""
    size = tf.reduce_prod(shape)
    return tf.reshape(tf.sin(1.0 + 0.37 * tf.cast(tf.range(size), dtype)), shape)


@pytest.fixture
def replayed_noise(monkeypatch):
    monkeypatch.setattr(uqmix_layers, "_noise_generator", _pattern_noise)


def _closed_form_kl(layer, prior_variance=1.0):
    """DESIGN.md's closed-form KL of one layer, float64 NumPy."""
    mean = layer.mean.numpy().astype(np.float64)
    log_u = layer.log_row_variance.numpy().astype(np.float64)
    log_v = layer.log_column_variance.numpy().astype(np.float64)
    r, c = mean.shape
    return 0.5 * (
        np.exp(log_u).sum() * np.exp(log_v).sum() / prior_variance
        + (mean**2).sum() / prior_variance
        - r * c
        + r * c * np.log(prior_variance)
        - c * log_u.sum()
        - r * log_v.sum()
    )


def _objective(logits, labels, objective):
    """mean_b of DESIGN.md's per-example data term from logits [S, B, K] (float64 NumPy)."""
    ell = np.take_along_axis(log_softmax(logits, -1), labels[None, :, None], -1)[..., 0]
    if objective == "vi":
        return float(np.mean(-ell.mean(0)))
    return float(np.mean(-(logsumexp(ell, 0) - np.log(ell.shape[0]))))


def _randomise_variances(network, rng):
    for layer in network._flatten_layers():
        if isinstance(layer, MatrixNormalDense):
            for variable in (layer.log_row_variance, layer.log_column_variance):
                variable.assign(rng.uniform(-2.0, -0.5, variable.shape).astype("float32"))


def _convnet(input_shape=(6, 6, 1), dropout=0.0, regularizer=None):
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(
        4, 3, padding="same", activation="relu", kernel_regularizer=regularizer
    )(inputs)
    h = keras.layers.BatchNormalization()(h)
    r = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(keras.layers.Add()([h, r]))  # a residual connection
    if dropout:
        h = keras.layers.Dropout(dropout)(h)
    h = MatrixNormalDense(8, activation="relu")(h)
    return keras.Model(inputs, MatrixNormalDense(K)(h), name="convnet")


def _data(n=6, shape=(6, 6, 1), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + shape).astype("float32"), rng.integers(0, K, n).astype("int64")


@pytest.mark.parametrize("objective", ["ml", "vi"])
def test_objective_equals_design_formula_on_fixed_batch_and_noise(objective, replayed_noise):
    network = _convnet(regularizer=keras.regularizers.L2(0.01))
    _randomise_variances(network, np.random.default_rng(0))
    model = MixtureModel(network, objective=objective, num_train_samples=4, kl_weight=0.05)
    x, y = _data()
    logs = model.test_step((x, y))
    # Independent: S·B rows in one inference call, grouped [S, B, K] by hand.
    rows = network(np.concatenate([x] * 4), training=False).numpy().astype(np.float64)
    logits = rows.reshape(4, len(x), K)
    kl = sum(
        _closed_form_kl(layer) for layer in network.layers if isinstance(layer, MatrixNormalDense)
    )
    l2 = 0.01 * float(np.sum(network.layers[1].kernel.numpy().astype(np.float64) ** 2))
    data_term = _objective(logits, y, objective)
    np.testing.assert_allclose(float(logs["nll"]), data_term, rtol=1e-5)
    np.testing.assert_allclose(float(logs["kl"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(logs["loss"]), data_term + 0.05 * kl + l2, rtol=1e-5)


def _reference_sgd_step(layers, x, y, num_samples, objective, kl_coefficient, learning_rate):
    """One SGD step of DESIGN.md's objective in float64, the noise replayed by ``_pattern_noise``.

    Every layer sees the S·B rows of the tiled batch (row s·B + b = x_b) and draws the noise
    pattern of shape [S·B, c]: b = aM + sqrt((a²u)v + 1e−8) ⊙ z (bias folded in as a last row).
    Returns the updated [mean, log u, log v] of every layer.
    """
    batch = len(x)
    params = [
        [
            tf.Variable(w.numpy().astype(np.float64))
            for w in (layer.mean, layer.log_row_variance, layer.log_column_variance)
        ]
        for layer in layers
    ]
    with tf.GradientTape() as tape:
        h = tf.constant(np.tile(x.reshape(batch, -1), (num_samples, 1)), tf.float64)
        kl = tf.constant(0.0, tf.float64)
        for i, (mean, log_u, log_v) in enumerate(params):
            u, v = tf.exp(log_u), tf.exp(log_v)
            rows = tf.concat([h, tf.ones([tf.shape(h)[0], 1], tf.float64)], 1)
            z = tf.cast(_pattern_noise([num_samples * batch, mean.shape[1]], None), tf.float64)
            variance = tf.linalg.matvec(tf.square(rows), u)[:, None] * v[None, :] + 1e-8
            h = rows @ mean + tf.sqrt(variance) * z
            if i < len(params) - 1:
                h = tf.nn.relu(h)
            r, c = mean.shape
            kl += 0.5 * (
                tf.reduce_sum(u) * tf.reduce_sum(v)
                + tf.reduce_sum(mean**2)
                - r * c
                - c * tf.reduce_sum(log_u)
                - r * tf.reduce_sum(log_v)
            )
        log_p = tf.nn.log_softmax(tf.reshape(h, [num_samples, batch, -1]), -1)
        ell = tf.reduce_sum(log_p * tf.one_hot(y, log_p.shape[-1], dtype=tf.float64)[None], -1)
        if objective == "vi":
            data = -tf.reduce_mean(ell, 0)
        else:
            data = -(tf.reduce_logsumexp(ell, 0) - np.log(num_samples))
        loss = tf.reduce_mean(data) + kl_coefficient * kl
    flat = [p for layer in params for p in layer]
    grads = tape.gradient(loss, flat)
    return [(p - learning_rate * g).numpy() for p, g in zip(flat, grads)]


def _mlp_network(input_shape=(3, 4)):
    inputs = keras.Input(input_shape)
    h = keras.layers.Flatten()(inputs)
    h = MatrixNormalDense(5, activation="relu")(h)
    return keras.Model(inputs, MatrixNormalDense(K)(h))


@pytest.mark.parametrize("objective", ["ml", "vi"])
def test_one_training_step_equals_float64_gradient_step(objective, replayed_noise):
    """InfiniteMixture and MixtureModel: model weights after one step = the float64 SGD step."""
    rng = np.random.default_rng(2)
    x, y = rng.random((6, 3, 4)).astype("float32"), rng.integers(0, K, 6)
    learning_rate, samples = 0.5, 3
    mixture = InfiniteMixture(
        num_classes=K,
        hidden_units=(5,),
        objective=objective,
        num_train_samples=samples,
        kl_weight=2.0,
        dataset_size=50,
        seed=1,
    )
    mixture.build((None, 3, 4))
    wrapped = MixtureModel(
        _mlp_network(), objective=objective, num_train_samples=samples, kl_weight=2.0 / 50
    )
    for model, dense in ((mixture, mixture.dense_layers), (wrapped, wrapped.stochastic_layers())):
        _randomise_variances(model, rng)

        def weights():
            return [
                w.numpy()
                for layer in dense
                for w in (layer.mean, layer.log_row_variance, layer.log_column_variance)
            ]

        before = weights()
        expected = _reference_sgd_step(dense, x, y, samples, objective, 2.0 / 50, learning_rate)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate))
        model.train_step((x, y))
        step = max(np.abs(e - w).max() for e, w in zip(expected, before))
        error = max(np.abs(a - e).max() for a, e in zip(weights(), expected))
        assert step > 1e-2, (model.name, step)  # the step moves the weights
        assert error < 1e-5, (model.name, error, step)


def test_samples_are_one_tiled_call_of_a_subclassed_network():
    class Net(keras.Model):
        calls = []

        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(6, activation="relu")
            self.dropout = keras.layers.Dropout(0.5)
            self.out = MatrixNormalDense(K)

        def call(self, x, training=None):
            self.calls.append(int(x.shape[0]))
            return self.out(self.dropout(self.hidden(x), training=training))

    x, y = _data(n=4, shape=(5,))
    model = MixtureModel(Net(), objective="ml", num_train_samples=5, kl_weight=0.01)
    model.compile(optimizer="adam")
    model(x)
    Net.calls.clear()
    model.train_step((x, y))
    assert Net.calls == [20]  # one call on the 5·4 tiled rows
    logits = model.predictive_parameters(x, 7).numpy()
    assert logits.shape == (7, 4, K)
    assert np.abs(logits[0] - logits[1]).max() > 0  # dropout and noise sample


def test_fit_evaluate_save_load_export_and_attack(tmp_path):
    from uqmix.attacks import fast_gradient_method, predictive_logits_fn
    from uqmix.export import export_saved_model

    x, y = _data(n=32)
    model = MixtureModel(
        _convnet(dropout=0.2), objective="ml", num_train_samples=3, kl_weight=1.0 / 32
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert set(history) == {"loss", "nll", "kl", "accuracy"}
    assert np.all(np.isfinite(history["loss"]))
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "nll", "kl", "accuracy"}
    predictive = model.predictive(x[:5], num_samples=9)
    assert isinstance(predictive, SampledPredictive)
    assert predictive.log_probs.shape == (9, 5, K)

    path = str(tmp_path / "mixture.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, MixtureModel) and loaded.objective == "ml"
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    export = export_saved_model(model, str(tmp_path / "export"), input_shape=(6, 6, 1))
    reloaded = tf.saved_model.load(export)
    served = reloaded.predict(images=tf.constant(x[:4]))
    assert served["mean"].shape == (4, K)  # S = default_num_samples = 100

    adversarial = fast_gradient_method(
        model_fn=predictive_logits_fn(model, 4),
        x=x[:4],
        eps=0.1,
        norm=np.inf,
        clip_min=0.0,
        clip_max=1.0,
    )
    assert adversarial.shape == x[:4].shape
    assert np.abs(adversarial.numpy() - x[:4]).max() <= 0.1 + 1e-6


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(objective="map"), "objective"),
        (dict(num_train_samples=0), "num_train_samples"),
        (dict(kl_weight=None), "kl_weight"),
        (dict(kl_weight=-1.0), "kl_weight"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    kwargs = {"kl_weight": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        MixtureModel(_mlp_network(), **kwargs)


def test_networks_the_tiling_cannot_sample_are_refused():
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(K)])
    with pytest.raises(ValueError, match="no randomness"):
        MixtureModel(plain)
    shared = keras.Sequential([keras.Input((4,)), MatrixNormalDense(K, sampling="shared_weights")])
    with pytest.raises(ValueError, match="local_reparameterization"):
        MixtureModel(shared, kl_weight=0.1)
    own = keras.Sequential([keras.Input((4,)), MatrixNormalDense(K, kl_weight=0.1)])
    with pytest.raises(ValueError, match="count twice"):
        MixtureModel(own, kl_weight=0.1)


_DISTRIBUTED_SCRIPT = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from uqmix import layers
    from uqmix.layers import MatrixNormalDense
    from uqmix.models import InfiniteMixture, MixtureModel

    # Replayed noise that does not depend on how the batch is split over replicas: a
    # pattern over the units, the same for every row.
    layers._noise_generator = lambda shape, seed, dtype=tf.float32: tf.broadcast_to(
        tf.sin(1.0 + tf.cast(tf.range(shape[-1]), dtype)), shape)
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 6)).astype("float32"), rng.integers(0, 3, 16)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def network():
        inputs = keras.Input((6,))
        h = MatrixNormalDense(5, activation="relu", seed=1)(inputs)
        return keras.Model(inputs, MatrixNormalDense(3, seed=2)(h))

    def train(strategy, make):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            model = make()
            model.compile(optimizer=keras.optimizers.SGD(0.5))
            model.build((None, 6))
            for v in model.trainable_weights:
                if "log_" in v.path:
                    v.assign(np.full(v.shape, -1.0, "float32"))
        initial = [w.numpy() for w in model.trainable_weights]
        model.fit(data, epochs=2, verbose=0)
        final = [w.numpy() for w in model.trainable_weights]
        print("MOVED", max(float(np.abs(a - b).max()) for a, b in zip(initial, final)))
        return final

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    makers = {
        "infinite_mixture": lambda: InfiniteMixture(num_classes=3, hidden_units=(5,), seed=1,
                                                    kl_weight=1.0, dataset_size=16),
        "mixture_model": lambda: MixtureModel(network(), objective="ml", kl_weight=1.0 / 16),
    }
    for name, make in makers.items():
        single, replicated = train(tf.distribute.get_strategy(), make), train(mirrored, make)
        moved = max(float(np.abs(a - b).max()) for a, b in zip(single, replicated))
        print("MAXDIFF", name, moved)
""")


def test_mirrored_strategy_weights_equal_single_device():
    result = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    diffs = {
        line.split()[1]: float(line.split()[2])
        for line in result.stdout.splitlines()
        if line.startswith("MAXDIFF")
    }
    assert set(diffs) == {"infinite_mixture", "mixture_model"}
    moved = [
        float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("MOVED")
    ]
    assert len(moved) == 4 and min(moved) > 1e-2, moved  # training changed the weights
    for name, diff in diffs.items():
        assert diff < 1e-5, (name, diff)
