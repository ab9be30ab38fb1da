"""export_saved_model on a plain Keras classifier (S = 1), its ``predict`` endpoint, input_shape checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import softmax

from tests.test_export import _load_in_fresh_process
from uqmix.export import export_saved_model


def _classifier(activation=None):
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation=activation)(h), name="plain")


def test_plain_keras_classifier_exports_as_the_one_sample_mixture(tmp_path):
    model = _classifier()
    x = np.random.default_rng(0).random((5, 4, 4, 1)).astype(np.float32)
    path = export_saved_model(model, str(tmp_path / "plain"))  # input_shape from model
    served = _load_in_fresh_process(path, x, 9)  # S is ignored (S = 1)
    mean = softmax(model.predict(x, verbose=0).astype(np.float64), -1)
    np.testing.assert_allclose(served["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served["predicted_class"], mean.argmax(-1))
    np.testing.assert_allclose(served["mutual_information"], 0.0, atol=1e-6)
    np.testing.assert_allclose(
        served["total_uncertainty"], -(mean * np.log(mean)).sum(-1), rtol=1e-5
    )
    loaded = tf.saved_model.load(path)
    predicted = loaded.predict(images=tf.constant(x))  # default num_samples
    np.testing.assert_allclose(predicted["mean"].numpy(), mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "input_shape,message",
    [
        ((None, 4, 4, 1), "batch axis"),
        ((5, 4, 4, 1), "batch axis"),
        ((4, 4), "does not match"),
    ],
)
def test_bad_input_shapes_are_explained(tmp_path, input_shape, message):
    with pytest.raises(ValueError, match=message):
        export_saved_model(_classifier(), str(tmp_path / "x"), input_shape=input_shape)


def test_softmax_outputs_and_non_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="softmax"):
        export_saved_model(_classifier("softmax"), str(tmp_path / "x"))
    with pytest.raises(ValueError, match="Keras classifier"):
        export_saved_model(lambda x: x, str(tmp_path / "y"), input_shape=(4,))
