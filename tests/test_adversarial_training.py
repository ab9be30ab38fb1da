"""Generalised adversarial training: draws, targeted FGSM, and one training step vs an oracle."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from uqmix.adversarial_training import (
    AdversarialPriorNetwork,
    random_other_classes,
    random_step_sizes,
    targeted_fgsm,
)
from uqmix.data import make_dataset, zip_in_and_ood
from uqmix.models.backbones import mlp

tfd = tfp.distributions


def test_random_other_classes_are_uniform_over_the_others():
    labels = np.repeat(np.arange(4), 6000)
    targets = random_other_classes(labels, 4, keras.random.SeedGenerator(1)).numpy()
    assert not np.any(targets == labels)
    for k in range(4):
        counts = np.bincount(targets[labels == k], minlength=4) / 6000.0
        expected = np.where(np.arange(4) == k, 0.0, 1.0 / 3.0)
        np.testing.assert_allclose(counts, expected, atol=0.025)


def test_random_step_sizes_are_half_normal():
    eps = random_step_sizes(200000, 0.3, keras.random.SeedGenerator(2)).numpy()
    assert eps.min() >= 0
    np.testing.assert_allclose(eps.mean(), 0.3 * np.sqrt(2 / np.pi), rtol=0.01)
    np.testing.assert_allclose(eps.std(), 0.3 * np.sqrt(1 - 2 / np.pi), rtol=0.01)


def test_targeted_fgsm_against_closed_form_gradient_of_a_linear_model():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3))
    x = rng.uniform(0.2, 0.8, size=(7, 5))
    targets = rng.integers(0, 3, 7)
    eps = rng.uniform(0.0, 0.3, 7)

    def cross_entropy(logits, t):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=t, logits=logits)

    out = targeted_fgsm(
        lambda v: tf.matmul(v, tf.constant(w)),
        cross_entropy,
        tf.constant(x),
        targets,
        eps,
        0.0,
        1.0,
    ).numpy()
    z = x @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[targets]) @ w.T  # d CE_t / dx for z = x W
    np.testing.assert_allclose(out, np.clip(x - eps[:, None] * np.sign(grad), 0, 1), rtol=1e-12)


def _mlp_forward(weights, x):
    """The MLP 6-5-3 of the test in float64, from its weight list (independent of Keras)."""
    w1, b1, w2, b2 = weights
    return tf.matmul(tf.nn.relu(tf.matmul(x, w1) + b1), w2) + b2


def _oracle_loss(loss, logits, labels, beta, c=1.0):
    """Per-example loss of the model (KL by TFP's Dirichlet, or cross-entropy), float64."""
    k = logits.shape[-1]
    if loss == "cross_entropy":
        if labels is None:
            return -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    target = c + (0.0 if labels is None else beta * tf.one_hot(labels, k, dtype=tf.float64))
    target = target + tf.zeros_like(logits)
    predicted = tfd.Dirichlet(tf.exp(logits))
    return predicted.kl_divergence(tfd.Dirichlet(target))


@pytest.mark.parametrize("loss,normalize", [("reverse_kl", True), ("cross_entropy", False)])
def test_training_step_matches_independent_computation(loss, normalize):
    keras.utils.set_random_seed(4)
    beta_in, beta_adv, gamma, gamma_adv, sigma = 10.0, 1.0, 0.5, 0.7, 0.1
    model = AdversarialPriorNetwork(
        mlp((6,), 3, hidden_units=(5,)),
        3,
        loss=loss,
        target_concentration=beta_in,
        ood_weight=gamma,
        normalize_by_target=normalize,
        epsilon_stddev=sigma,
        adversarial_weight=gamma_adv,
        adversarial_target_concentration=beta_adv,
        seed=11,
    )
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    rng = np.random.default_rng(5)
    x = rng.uniform(0.1, 0.9, (8, 6)).astype(np.float32)
    x_ood = rng.uniform(0.1, 0.9, (8, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    model.build((None, 6))
    weights = [tf.Variable(w.astype(np.float64)) for w in model.backbone.get_weights()]
    state = model.adversarial_seed_generator.state.numpy().copy()

    # Draw the step's targets and step sizes from the same generator state, in the same order.
    generator = keras.random.SeedGenerator(0)
    generator.state.assign(state)
    targets = random_other_classes(y, 3, generator)
    eps = random_step_sizes(8, sigma, generator).numpy().astype(np.float64)
    assert np.all(targets.numpy() != y)

    xd, x_oodd = tf.constant(x, tf.float64), tf.constant(x_ood, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(xd)
        attack = tf.reduce_sum(_oracle_loss(loss, _mlp_forward(weights, xd), targets, beta_in))
    grad_x = tape.gradient(attack, xd).numpy()
    x_adv = np.clip(x - eps[:, None] * np.sign(grad_x), 0.0, 1.0)
    scale = beta_in if normalize else 1.0
    with tf.GradientTape() as tape:
        clean = tf.reduce_mean(_oracle_loss(loss, _mlp_forward(weights, xd), y, beta_in)) / scale
        ood = tf.reduce_mean(_oracle_loss(loss, _mlp_forward(weights, x_oodd), None, 0.0)) / scale
        adv = (
            gamma_adv
            * tf.reduce_mean(
                _oracle_loss(loss, _mlp_forward(weights, tf.constant(x_adv)), y, beta_adv)
            )
            / scale
        )
        total = clean + gamma * ood + adv
    expected_weights = [w - g for w, g in zip(weights, tape.gradient(total, weights))]

    logs = model.train_step(((tf.constant(x), tf.constant(x_ood)), tf.constant(y)))
    np.testing.assert_allclose(float(logs["loss"]), float(total), rtol=2e-5)
    np.testing.assert_allclose(float(logs["adversarial_loss"]), float(adv), rtol=2e-5)
    for got, want in zip(model.backbone.get_weights(), expected_weights):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_fit_with_ood_batches_reports_the_term_and_round_trips(tmp_path):
    keras.utils.set_random_seed(6)
    model = AdversarialPriorNetwork(
        mlp((4, 4, 1), 3, hidden_units=(8,)), 3, seed=3, epsilon_stddev=0.05
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 4, 4, 1), np.float32), rng.integers(0, 3, 32)
    data = zip_in_and_ood(
        make_dataset(x, y, batch_size=8, seed=0),
        make_dataset(rng.random((16, 4, 4, 1), np.float32), batch_size=8, seed=1),
    )
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["adversarial_loss"][0])
    state_paths = [v.path for v in model.variables]
    assert any("seed_generator" in p for p in state_paths)  # checkpointed with the model
    path = str(tmp_path / "adv.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, AdversarialPriorNetwork)
    assert loaded.get_config()["epsilon_stddev"] == 0.05 and loaded.seed == 3
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_bad_arguments():
    backbone = mlp((4,), 3, hidden_units=(4,))
    with pytest.raises(ValueError, match="epsilon_stddev"):
        AdversarialPriorNetwork(backbone, 3, epsilon_stddev=0.0)
    with pytest.raises(ValueError, match="adversarial_weight"):
        AdversarialPriorNetwork(backbone, 3, adversarial_weight=-1.0)
    with pytest.raises(ValueError, match="clip_min"):
        AdversarialPriorNetwork(backbone, 3, clip_min=1.0, clip_max=0.0)
