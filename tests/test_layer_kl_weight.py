"""MatrixNormalDense(kl_weight=w) inside plain Keras models; an unaccounted KL never trains."""

import keras
import numpy as np
import pytest

from uqmix.layers import MatrixNormalDense, UnaccountedKLError


def _closed_form_kl(mean, log_u, log_v, prior_variance):
    """DESIGN.md: ½[Σu·Σv/σ² + ‖M‖²/σ² − rc + rc·log σ² − c·Σ log u − r·Σ log v], float64."""
    mean, log_u, log_v = (np.asarray(a, np.float64) for a in (mean, log_u, log_v))
    r, c = mean.shape
    s2 = prior_variance
    return 0.5 * (
        np.exp(log_u).sum() * np.exp(log_v).sum() / s2
        + (mean**2).sum() / s2
        - r * c
        + r * c * np.log(s2)
        - c * log_u.sum()
        - r * log_v.sum()
    )


def _randomised(layer, rng):
    for variable in layer.weights:
        if variable.dtype == "float32" and variable.trainable:
            variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.5)


def test_layer_loss_is_weight_times_closed_form_kl():
    rng = np.random.default_rng(0)
    layer = MatrixNormalDense(4, prior_variance=0.7, kl_weight=0.01)
    layer(np.zeros((2, 3), np.float32))
    _randomised(layer, rng)
    layer(rng.random((5, 3)).astype("float32"))
    expected = 0.01 * _closed_form_kl(
        layer.mean.numpy(), layer.log_row_variance.numpy(), layer.log_column_variance.numpy(), 0.7
    )
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-5)


def _sequential(kl_weight):
    return keras.Sequential(
        [
            keras.Input((6,)),
            MatrixNormalDense(8, activation="relu", kl_weight=kl_weight),
            MatrixNormalDense(3, kl_weight=kl_weight),
        ]
    )


def test_sequential_with_kl_weight_trains_the_one_sample_elbo():
    rng = np.random.default_rng(1)
    x, y = rng.random((16, 6)).astype("float32"), rng.integers(0, 3, 16)
    model = _sequential(1.0 / 16)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model(x)
    kl = sum(
        _closed_form_kl(
            layer.mean.numpy(),
            layer.log_row_variance.numpy(),
            layer.log_column_variance.numpy(),
            1.0,
        )
        for layer in model.layers
    )
    np.testing.assert_allclose(sum(float(v) for v in model.losses), kl / 16, rtol=1e-5)
    # lr = 0: the reported loss is CE + Σ w·KL; the CE part is at least 0 and, for these
    # random logits, well below the KL part, so the KL term must be inside the loss.
    loss = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
    cross_entropy = loss - kl / 16
    assert 0.0 < cross_entropy < 10.0, (loss, kl / 16)


def test_unaccounted_kl_fails_fit_naming_both_fixes():
    x, y = np.zeros((4, 6), np.float32), np.zeros(4, np.int64)
    model = _sequential(None)
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    with pytest.raises(UnaccountedKLError, match="kl_weight") as info:
        model.fit(x, y, verbose=0)
    assert "MixtureModel" in str(info.value)
    model.predict(x, verbose=0)  # inference needs no KL


def test_kl_weight_validation_double_count_and_config():
    with pytest.raises(ValueError, match="kl_weight"):
        MatrixNormalDense(3, kl_weight=-1.0)
    layer = MatrixNormalDense(3, kl_weight=0.5)
    with pytest.raises(ValueError, match="count twice"):
        layer.mark_kl_accounted("wrapper")
    assert MatrixNormalDense.from_config(layer.get_config()).kl_weight == 0.5
