"""Mixed precision (``mixed_bfloat16``) for the mixtures and Prior Networks, on CPU.

The same weights (and, for the mixtures, the same noise: the noise is drawn in float32 from the
same seeds under both policies) give losses within ``LOSS_RTOL`` of the float32 model's.  Stated
tolerance: bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2 %) per matmul input
and output, so a loss of a few matmul layers agrees to a few per cent; 5 % is asserted.  At
logits ±100 nothing becomes NaN/Inf (losses, gradients, uncertainty measures).  Variables,
variances, KL, losses and measures stay float32; only the layers compute in bfloat16.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from uqmix.adversarial_training import AdversarialPriorNetwork
from uqmix.layers import MatrixNormalDense
from uqmix.models import InfiniteMixture, MixtureModel, PriorNetwork
from uqmix.models.backbones import mlp

INPUT_SHAPE, K, B = (5, 4), 3, 8
LOSS_RTOL = 0.05


@pytest.fixture
def bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _batch(seed=0, n=B):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n,) + INPUT_SHAPE).astype(np.float32),
        rng.integers(0, K, n).astype(np.int32),
    )


def _mixture_network():
    inputs = keras.Input(INPUT_SHAPE)
    h = keras.layers.Flatten()(inputs)
    h = MatrixNormalDense(16, activation="relu", seed=3)(h)
    return keras.Model(inputs, MatrixNormalDense(K, seed=4, name="logits")(h))


MODELS = {
    "infinite_mixture_ml": lambda: InfiniteMixture(
        K, hidden_units=(16, 16), objective="ml", num_train_samples=4, dataset_size=50, seed=1
    ),
    "infinite_mixture_vi_shared_weights": lambda: InfiniteMixture(
        K,
        hidden_units=(16,),
        objective="vi",
        num_train_samples=4,
        dataset_size=50,
        seed=1,
        sampling="shared_weights",
    ),
    "mixture_model": lambda: MixtureModel(
        _mixture_network(), "ml", num_train_samples=4, kl_weight=0.02
    ),
    "prior_network_rkl": lambda: PriorNetwork(mlp(INPUT_SHAPE, K, (16,)), K),
    "prior_network_fkl": lambda: PriorNetwork(mlp(INPUT_SHAPE, K, (16,)), K, loss="forward_kl"),
    "adversarial_prior_network": lambda: AdversarialPriorNetwork(
        mlp(INPUT_SHAPE, K, (16,)), K, epsilon_stddev=1e-7, seed=2
    ),
}
PRIOR_NETWORKS = {"prior_network_rkl", "prior_network_fkl", "adversarial_prior_network"}


def _model(name, weights=None):
    keras.utils.set_random_seed(5)
    model = MODELS[name]()
    model.build((None,) + INPUT_SHAPE)
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def _data(name):
    x, y = _batch(0)
    return ((x, _batch(1)[0]), y) if name in PRIOR_NETWORKS else (x, y)


def _matmul_layers(model):
    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, (keras.layers.Dense, MatrixNormalDense))
    ]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bfloat16_losses_match_float32(name, request):
    reference = _model(name)
    weights = reference.get_weights()
    data = _data(name)
    expected = reference.test_on_batch(*data, return_dict=True)
    request.getfixturevalue("bfloat16_policy")
    model = _model(name, weights)
    layers = _matmul_layers(model)
    assert layers and all(layer.compute_dtype == "bfloat16" for layer in layers)
    assert all(v.dtype == "float32" for v in model.weights if v.dtype.startswith("float"))
    got = model.test_on_batch(*data, return_dict=True)
    for key in ("loss", "nll", "kl", "in_domain_loss", "ood_loss"):
        if key in expected:
            assert got[key] != expected[key] or key == "kl"  # bfloat16 really ran
            np.testing.assert_allclose(got[key], expected[key], rtol=LOSS_RTOL, err_msg=key)
    if "kl" in expected:  # the KL of float32 variables is computed in float32
        np.testing.assert_allclose(got["kl"], expected["kl"], rtol=1e-6)
    logs = model.train_on_batch(*data, return_dict=True)
    assert all(np.isfinite(value) for value in logs.values())
    predictive = model.predictive(data[0][0] if name in PRIOR_NETWORKS else data[0], num_samples=4)
    assert predictive.mean().dtype == tf.float32


def _saturate(layer, value):
    """Output layer with kernel 0 and bias (value, −value, 0): logits ±value for every input."""
    bias = np.array([value, -value, 0.0], np.float32)
    if isinstance(layer, MatrixNormalDense):
        mean = np.zeros(layer.mean.shape, np.float32)
        mean[-1] = bias
        layer.mean.assign(mean)
        layer.log_row_variance.assign(tf.fill(layer.log_row_variance.shape, -20.0))
    else:
        layer.kernel.assign(tf.zeros_like(layer.kernel))
        layer.bias.assign(bias)


@pytest.mark.parametrize(
    "name",
    ["infinite_mixture_ml", "prior_network_rkl", "prior_network_fkl", "adversarial_prior_network"],
)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_bfloat16_is_finite_at_logits_100(name, sign, bfloat16_policy):
    model = _model(name)
    _saturate(
        next(layer for layer in _matmul_layers(model) if layer.name == "logits"), 100.0 * sign
    )
    data = _data(name)
    x = data[0][0] if name in PRIOR_NETWORKS else data[0]
    logits = model.predictive_parameters(x, 2)
    np.testing.assert_allclose(
        np.abs(np.asarray(tf.cast(logits, tf.float32)))[..., :2], 100.0, rtol=1e-2
    )
    logs = model.test_on_batch(*data, return_dict=True)
    assert all(np.isfinite(value) for value in logs.values()), logs
    with tf.GradientTape() as tape:
        if name in PRIOR_NETWORKS:
            loss = model._loss_terms(data[0][0], data[1], data[0][1], training=True)[0]
        else:
            loss = model._objective_terms(x, data[1], training=True)[-1]
    gradients = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients if g is not None)
    predictive = model.predictive(x, num_samples=3)
    for measure, values in predictive.measures().items():
        assert np.all(np.isfinite(np.asarray(values))), measure


@pytest.mark.parametrize("sampling", ["local_reparameterization", "shared_weights"])
def test_noise_and_variances_are_drawn_in_float32(sampling, bfloat16_policy, monkeypatch):
    from uqmix import layers as uqmix_layers

    requested = []

    def recording_noise(shape, seed, dtype=tf.float32):
        requested.append(tf.as_dtype(dtype))
        return uqmix_layers.box_muller(shape, seed, dtype)

    monkeypatch.setattr(uqmix_layers, "_noise_generator", recording_noise)
    layer = MatrixNormalDense(4, sampling=sampling, seed=1, kl_weight=0.0)
    out = layer(tf.ones([3, 5]), num_samples=2)
    assert requested == [tf.float32] and out.dtype == tf.bfloat16


@pytest.fixture
def float16_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_float16_trained_down_variances_keep_finite_gradients(float16_policy):
    """Var = e^-20 underflows float16 (and so does the 1e-8 floor): computed in float16, the
    standard deviation would be sqrt(0) with an infinite gradient; in float32 all is finite."""
    model = _model("infinite_mixture_ml")
    for layer in model.dense_layers:
        layer.log_row_variance.assign(tf.fill(layer.log_row_variance.shape, -20.0))
        layer.log_column_variance.assign(tf.fill(layer.log_column_variance.shape, -20.0))
    x, y = _batch(0)
    with tf.GradientTape() as tape:
        loss = model._objective_terms(x, y, training=True)[-1]
    gradients = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients)
    logs = model.train_on_batch(x, y, return_dict=True)  # with Keras' loss scaling
    assert all(np.isfinite(value) for value in logs.values()), logs


@pytest.mark.parametrize("split", [False, True])
def test_jit_sampling_noise_reaches_the_layers_in_float32(split, bfloat16_policy, monkeypatch):
    """Keras would cast a float noise= argument to bfloat16; the layers must see float32 noise
    both when they draw it inside the forward pass and when the split step / predictive hands
    it in (``InfiniteMixture(noise=...)``)."""
    from uqmix import layers as uqmix_layers

    seen = []
    original = uqmix_layers._given_noise

    def recording(noise):
        seen.append(tf.as_dtype(noise.dtype))
        return original(noise)

    monkeypatch.setattr(uqmix_layers, "_given_noise", recording)
    model = InfiniteMixture(3, (4,), num_train_samples=2, seed=1, jit_sampling=True)
    x = tf.ones([5, 6])
    model.build((None, 6))
    if split:
        noise = model._flat_noise(5, 2)
        assert noise.dtype == tf.float32
        logits = model(x, num_samples=2, noise=noise)
    else:
        logits = model(x, num_samples=2)
    assert seen == [tf.float32, tf.float32] and logits.dtype == tf.bfloat16
