"""PriorNetwork: its train/test steps against independently computed losses and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from uqmix.data import make_dataset, zip_in_and_ood
from uqmix.models import PriorNetwork
from uqmix.models.backbones import mlp
from uqmix.predictive import DirichletPredictive
from uqmix.synthetic import synthetic3

tfd = tfp.distributions


def _data(num_per_class=100, seed=0):
    return synthetic3(num_per_class=num_per_class, seed=seed)


def _network(loss="reverse_kl", weight_decay=0.0, **kwargs):
    backbone = mlp((2,), 3, hidden_units=(16, 16), weight_decay=weight_decay)
    return PriorNetwork(backbone, 3, loss=loss, **kwargs)


def _oracle_terms(model, x, y, x_ood, loss):
    """Per-example in-domain / OOD terms from the backbone's logits, via TFP / NumPy."""
    z_in = tf.cast(model.backbone(x), tf.float64)
    z_ood = tf.cast(model.backbone(x_ood), tf.float64)
    if loss == "cross_entropy":
        in_terms = -tf.gather(tf.nn.log_softmax(z_in), y, axis=1, batch_dims=1)
        ood_terms = -tf.reduce_mean(tf.nn.log_softmax(z_ood), axis=-1)
        return in_terms, ood_terms
    target_in = 1.0 + 100.0 * tf.one_hot(y, 3, dtype=tf.float64)
    target_ood = tf.ones_like(z_ood)
    model_in, model_ood = tfd.Dirichlet(tf.exp(z_in)), tfd.Dirichlet(tf.exp(z_ood))
    if loss == "reverse_kl":
        return (
            tfd.kl_divergence(model_in, tfd.Dirichlet(target_in)),
            tfd.kl_divergence(model_ood, tfd.Dirichlet(target_ood)),
        )
    return (
        tfd.kl_divergence(tfd.Dirichlet(target_in), model_in),
        tfd.kl_divergence(tfd.Dirichlet(target_ood), model_ood),
    )


@pytest.mark.parametrize("loss", ["reverse_kl", "forward_kl", "cross_entropy"])
def test_test_step_matches_oracle(loss):
    x, y, x_ood = _data(10)
    model = _network(loss, ood_weight=0.5)
    model.compile(optimizer="adam")
    logs = model.test_on_batch((x, x_ood), y, return_dict=True)
    in_terms, ood_terms = _oracle_terms(model, x, y, x_ood, loss)
    np.testing.assert_allclose(logs["in_domain_loss"], np.mean(in_terms), rtol=1e-4)
    np.testing.assert_allclose(logs["ood_loss"], np.mean(ood_terms), rtol=1e-4)
    np.testing.assert_allclose(
        logs["loss"], np.mean(in_terms) + 0.5 * np.mean(ood_terms), rtol=1e-4
    )
    z_in, z_ood = model.backbone(x).numpy(), model.backbone(x_ood).numpy()
    np.testing.assert_allclose(logs["mean_alpha0_in"], np.exp(z_in).sum(1).mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["mean_alpha0_ood"], np.exp(z_ood).sum(1).mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"], np.mean(z_in.argmax(1) == y), rtol=1e-6)


def test_normalize_by_target_divides_by_beta():
    x, y, x_ood = _data(10)
    model = _network(ood_weight=1.0)
    model.compile(optimizer="adam")
    plain = model.test_on_batch((x, x_ood), y, return_dict=True)["loss"]
    normalised = PriorNetwork(
        model.backbone, 3, target_concentration=100.0, normalize_by_target=True
    )
    normalised.compile(optimizer="adam")
    np.testing.assert_allclose(
        normalised.test_on_batch((x, x_ood), y, return_dict=True)["loss"], plain / 100.0, rtol=1e-5
    )


@pytest.mark.parametrize("loss", ["reverse_kl", "cross_entropy"])
def test_train_step_gradient_is_that_of_the_full_loss(loss):
    """One SGD step moves the weights by −lr·∇(mean_in + γ·mean_ood + weight decay)."""
    x, y, x_ood = _data(8)
    gamma, decay, lr = 0.7, 1e-2, 1e-3
    model = _network(loss, weight_decay=decay, ood_weight=gamma)
    model.compile(optimizer=keras.optimizers.SGD(lr))
    before = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        in_terms, ood_terms = _oracle_terms(model, x, y, x_ood, loss)
        penalty = decay * tf.add_n(
            [
                tf.reduce_sum(tf.cast(v, tf.float64) ** 2)
                for v in model.trainable_variables
                if "kernel" in v.path
            ]
        )
        total = tf.reduce_mean(in_terms) + gamma * tf.reduce_mean(ood_terms) + penalty
    grads = tape.gradient(total, model.trainable_variables)
    model.train_on_batch((x, x_ood), y)
    for old, grad, variable in zip(before, grads, model.trainable_variables):
        step = (old - variable.numpy()) / lr
        np.testing.assert_allclose(
            step,
            grad.numpy(),
            rtol=2e-3,
            atol=2e-3 * np.abs(grad.numpy()).max() + 1e-6,
            err_msg=variable.path,
        )


def test_trains_on_tiny_problem_with_zipped_ood_batches():
    x, y, x_ood = _data(100)
    in_ds = make_dataset(x, y, batch_size=100, repeat=True, seed=0)
    ood_ds = make_dataset(x_ood, batch_size=100, repeat=True, seed=1)
    model = PriorNetwork(mlp((2,), 3, hidden_units=(32, 32)), 3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=20)
    history = model.fit(zip_in_and_ood(in_ds, ood_ds), steps_per_epoch=100, epochs=4, verbose=0)
    losses, accuracy = history.history["loss"], history.history["accuracy"]
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy[-1] > 0.85 and accuracy[-1] > accuracy[0]
    assert history.history["ood_loss"][-1] < history.history["ood_loss"][0]
    # OOD training worked: the OOD shell gets a much flatter Dirichlet than the data
    predictive_in = model.predictive(x)
    predictive_ood = model.predictive(x_ood)
    assert isinstance(predictive_in, DirichletPredictive)
    precision_in = predictive_in.precision().numpy()
    precision_ood = predictive_ood.precision().numpy()
    assert np.median(precision_ood) < 0.2 * np.median(precision_in)
    assert np.median(predictive_ood.mutual_information().numpy()) > 2 * np.median(
        predictive_in.mutual_information().numpy()
    )


def test_extra_training_terms_hook():
    class WithPenalty(PriorNetwork):
        extra_term_names = ("logit_penalty",)

        def extra_training_terms(self, x, y):
            return {"logit_penalty": 0.1 * tf.reduce_sum(tf.square(self(x, training=True)), -1)}

    x, y, _ = _data(8)
    model = WithPenalty(mlp((2,), 3, hidden_units=(8,)), 3)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = model.train_on_batch(x, y, return_dict=True)
    expected = 0.1 * np.mean(np.sum(model.backbone(x).numpy() ** 2, -1))
    np.testing.assert_allclose(logs["logit_penalty"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], logs["in_domain_loss"] + expected, rtol=1e-5)
    assert "logit_penalty" not in model.test_on_batch(x, y, return_dict=True)


def test_keras_round_trip(tmp_path):
    x, y, x_ood = _data(20)
    model = _network(
        "forward_kl",
        target_concentration=50.0,
        concentration=2.0,
        ood_weight=0.3,
        normalize_by_target=True,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit((x, x_ood), y, batch_size=30, epochs=1, verbose=0)
    path = str(tmp_path / "prior_network.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, PriorNetwork)
    for key in (
        "loss",
        "target_concentration",
        "concentration",
        "ood_weight",
        "normalize_by_target",
        "num_classes",
    ):
        assert loaded.get_config()[key] == model.get_config()[key]
    np.testing.assert_array_equal(
        loaded.predictive(x).alpha.numpy(), model.predictive(x).alpha.numpy()
    )
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    logs_a = model.evaluate((x, x_ood), y, batch_size=60, return_dict=True, verbose=0)
    logs_b = loaded.evaluate((x, x_ood), y, batch_size=60, return_dict=True, verbose=0)
    assert logs_a == pytest.approx(logs_b)
    loaded.fit((x, x_ood), y, batch_size=30, epochs=1, verbose=0)  # still trainable


def test_bad_arguments_and_batches():
    backbone = mlp((2,), 3, hidden_units=(4,))
    with pytest.raises(ValueError, match="loss must be one of"):
        PriorNetwork(backbone, 3, loss="kl")
    with pytest.raises(ValueError, match="num_classes"):
        PriorNetwork(backbone, 4)
    with pytest.raises(ValueError, match="ood_weight"):
        PriorNetwork(backbone, 3, ood_weight=-1.0)
    with pytest.raises(ValueError, match="target_concentration"):
        PriorNetwork(backbone, 3, target_concentration=0.0)
    with pytest.raises(ValueError, match="concentration"):
        PriorNetwork(backbone, 3, concentration=0.0)
    with pytest.raises(ValueError, match="backbone"):
        PriorNetwork("mlp", 3)
    model = PriorNetwork(backbone, 3)
    model.compile(optimizer="adam")
    x, y, _ = _data(4)
    with pytest.raises(ValueError, match="sample weights"):
        model.train_on_batch(x, y, sample_weight=np.ones(len(y)))
    with pytest.raises(ValueError, match="labels must be in"):
        model.train_step((tf.constant(x), tf.constant(y + 3)))


def test_both_nested_batch_layouts_agree():
    """((x, x_ood), y) (zip_in_and_ood) and ((x, y), x_ood) are read the same way."""
    x, y, x_ood = _data(6)
    model = _network()
    model.compile(optimizer="adam")
    x, y, x_ood = tf.constant(x), tf.constant(y), tf.constant(x_ood)
    logs_a = {k: float(v) for k, v in model.test_step(((x, x_ood), y)).items()}
    model.reset_metrics()
    logs_b = {k: float(v) for k, v in model.test_step(((x, y), x_ood)).items()}
    assert "ood_loss" in logs_a and logs_a == pytest.approx(logs_b)
