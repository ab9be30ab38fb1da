"""Backbones: shapes, the normalisation layer, weight decay, dropout, batch norm, serialisation."""

import keras
import numpy as np
import pytest

from uqmix.models.backbones import (
    BACKBONES,
    VGG16_LAYERS,
    build_backbone,
    input_normalization,
    mlp,
    small_convnet,
    vgg16,
)


def _rng_images(shape, n=4, seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def test_small_convnet_shapes_and_structure():
    model = small_convnet((28, 28, 1), 10, filters=(8, 16), dense_units=(32,), batchnorm=True)
    assert model(_rng_images((28, 28, 1))).shape == (4, 10)
    assert len(_layers_of(model, keras.layers.Conv2D)) == 4
    assert len(_layers_of(model, keras.layers.BatchNormalization)) == 4
    assert len(_layers_of(model, keras.layers.MaxPooling2D)) == 2
    plain = small_convnet((28, 28, 1), 10, filters=(8, 16))
    assert not _layers_of(plain, keras.layers.BatchNormalization)


def test_vgg16_has_thirteen_convs_five_pools_and_scaled_widths():
    model = vgg16((32, 32, 3), 100, width_multiplier=0.125)
    convs = _layers_of(model, keras.layers.Conv2D)
    widths = [max(1, round(c * 0.125)) for c in VGG16_LAYERS if c != "M"]
    assert [c.filters for c in convs] == widths and len(convs) == 13
    assert len(_layers_of(model, keras.layers.MaxPooling2D)) == 5
    assert all(bn.synchronized for bn in _layers_of(model, keras.layers.BatchNormalization))
    assert model(_rng_images((32, 32, 3))).shape == (4, 100)


def test_normalization_layer_is_x_minus_mean_over_std_inside_the_model():
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    keras.utils.set_random_seed(3)
    with_norm = vgg16(
        (32, 32, 3), 10, width_multiplier=0.0625, normalization=(mean, std), batchnorm=False
    )
    keras.utils.set_random_seed(3)
    without = vgg16((32, 32, 3), 10, width_multiplier=0.0625, batchnorm=False)
    without.set_weights(_weights_without_normalization(with_norm))
    x = _rng_images((32, 32, 3), n=3)
    expected_input = (x.astype(np.float64) - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(
        without(expected_input.astype(np.float32)).numpy(),
        with_norm(x).numpy(),
        rtol=1e-4,
        atol=1e-5,
    )


def _weights_without_normalization(model):
    weights = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Normalization):
            weights.extend(layer.get_weights())
    return weights


def test_input_normalization_validates_and_broadcasts():
    layer = input_normalization((0.5, 0.25), channels=3)
    out = layer(np.full((1, 2, 2, 3), 1.0, np.float32)).numpy()
    np.testing.assert_allclose(out, 2.0, rtol=1e-6)
    assert input_normalization(None, 3) is None
    with pytest.raises(ValueError, match="std > 0"):
        input_normalization(([0.5] * 3, [0.2, 0.0, 0.2]), 3)


def test_weight_decay_adds_l2_of_every_kernel():
    w = 1e-3
    model = small_convnet((28, 28, 1), 10, filters=(4,), dense_units=(8,), weight_decay=w)
    model(_rng_images((28, 28, 1)))
    kernels = [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]
    expected = w * sum(float(np.sum(k.astype(np.float64) ** 2)) for k in kernels)
    assert len(kernels) == 4  # 2 convs, hidden dense, logits
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)


def test_dropout_samples_in_training_and_not_in_inference():
    model = small_convnet((28, 28, 1), 10, filters=(4,), dense_units=(32,), dropout_rate=0.5)
    x = _rng_images((28, 28, 1))
    np.testing.assert_array_equal(model(x, training=False).numpy(), model(x).numpy())
    assert not np.allclose(model(x, training=True).numpy(), model(x, training=True).numpy())


def test_build_backbone_by_name_and_errors():
    for name, shape in (
        ("mlp", (28, 28, 1)),
        ("small_convnet", (28, 28, 1)),
        ("vgg16", (32, 32, 3)),
    ):
        model = build_backbone(name, shape, 10, width_multiplier=0.0625, hidden_units=(16,))
        assert model.output_shape == (None, 10) and name in BACKBONES
    assert _layers_of(
        build_backbone("vgg16", (32, 32, 3), 10, width_multiplier=0.0625),
        keras.layers.BatchNormalization,
    )
    assert not _layers_of(
        build_backbone("vgg16", (32, 32, 3), 10, width_multiplier=0.0625, batchnorm=False),
        keras.layers.BatchNormalization,
    )
    with pytest.raises(ValueError, match="Unknown backbone 'resnet'"):
        build_backbone("resnet", (32, 32, 3), 10)
    with pytest.raises(ValueError, match="at least 32x32"):
        vgg16((28, 28, 1), 10)
    with pytest.raises(ValueError, match="dropout_rate"):
        small_convnet((28, 28, 1), 10, dropout_rate=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        vgg16((32, 32, 3), 1)
    with pytest.raises(ValueError, match="image inputs"):
        small_convnet((784,), 10)


def test_mlp_is_unchanged_and_flattens_images():
    model = mlp((28, 28, 1), 10, hidden_units=(16, 16))
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [
        "hidden_0",
        "hidden_1",
        "logits",
    ]


def test_vgg16_with_normalization_saves_and_loads(tmp_path):
    model = vgg16(
        (32, 32, 3), 10, width_multiplier=0.0625, normalization=(0.5, 0.3), dropout_rate=0.2
    )
    x = _rng_images((32, 32, 3))
    path = str(tmp_path / "vgg.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
