"""The PredictiveModelMixin: batched predictive equals the one-batch predictive."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from uqmix.models.base import PredictiveModelMixin
from uqmix.predictive import DirichletPredictive, SampledPredictive


class _NoisyLinear(keras.Model, PredictiveModelMixin):
    """logits_s = xW + s·c: S distinct, deterministic components."""

    def __init__(self):
        super().__init__(name="noisy_linear")
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x)

    def predictive_parameters(self, x, num_samples, training=False):
        base = self.dense(x)
        offsets = tf.range(num_samples, dtype=base.dtype)[:, None, None] * tf.constant(
            [1.0, 0.0, -1.0]
        )
        return base[None] + offsets


class _Dirichlet(_NoisyLinear):
    predictive_kind = "dirichlet_logits"

    def predictive_parameters(self, x, num_samples, training=False):
        return self.dense(x)


def test_batched_predictive_equals_single_batch():
    model = _NoisyLinear()
    x = np.random.default_rng(0).random((23, 4)).astype(np.float32)
    model(x[:1])
    whole = model.predictive_on_batch(tf.constant(x), num_samples=5)
    batched = model.predictive(x, num_samples=5, batch_size=7)
    assert isinstance(batched, SampledPredictive)
    assert batched.log_probs.shape == (5, 23, 3)
    for name, value in whole.measures().items():
        np.testing.assert_allclose(
            batched.measures()[name].numpy(), value.numpy(), rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_dirichlet_kind_and_errors():
    model = _Dirichlet()
    x = np.random.default_rng(1).random((10, 4)).astype(np.float32)
    pred = model.predictive(x, batch_size=3)
    assert isinstance(pred, DirichletPredictive)
    np.testing.assert_allclose(pred.logits.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        model.predictive(np.full((2, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="num_samples"):
        model.predictive(x, num_samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.predictive(x, batch_size=0)
