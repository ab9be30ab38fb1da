"""Optimisers from flags: step decay, Nesterov SGD, global-norm clipping, decoupled decay."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from uqmix.optim import SGD, Adam, make_learning_rate, make_optimizer


def test_step_decay_schedule_values():
    schedule = make_learning_rate(0.1, "step", decay_every_steps=3, decay_rate=0.5)
    for step in range(10):
        np.testing.assert_allclose(float(schedule(step)), 0.1 * 0.5 ** (step // 3), rtol=1e-6)
    assert make_learning_rate(0.1) == 0.1


def _one_step(optimizer, grad, value):
    var = keras.Variable(np.array(value, np.float32))
    optimizer.apply_gradients([(tf.constant(np.array(grad, np.float32)), var)])
    return var.numpy().astype(np.float64)


def test_sgd_nesterov_first_step_and_global_norm_clipping():
    g, w = [3.0, 4.0], [1.0, 1.0]  # ‖g‖ = 5
    lr, mu = 0.1, 0.9
    # Keras's Nesterov SGD, first step: v = -lr g; w += mu v - lr g.
    plain = _one_step(make_optimizer("sgd", lr, momentum=mu), g, w)
    np.testing.assert_allclose(plain, np.array(w) - lr * (1 + mu) * np.array(g), rtol=1e-6)
    clipped = _one_step(make_optimizer("sgd", lr, momentum=0.0, clip_norm=1.0), g, w)
    np.testing.assert_allclose(clipped, np.array(w) - lr * np.array(g) / 5.0, rtol=1e-6)
    not_clipped = _one_step(make_optimizer("sgd", lr, momentum=0.0, clip_norm=10.0), g, w)
    np.testing.assert_allclose(not_clipped, np.array(w) - lr * np.array(g), rtol=1e-6)


def test_decoupled_weight_decay_and_adam():
    out = _one_step(
        make_optimizer("sgd", 0.1, momentum=0.0, decoupled_weight_decay=0.5),
        [0.0, 0.0],
        [2.0, -2.0],
    )
    np.testing.assert_allclose(out, [2.0 * (1 - 0.1 * 0.5), -2.0 * (1 - 0.1 * 0.5)], rtol=1e-6)
    adam = make_optimizer("adam", 0.01)
    assert isinstance(adam, Adam) and isinstance(make_optimizer("sgd", 0.01), SGD)
    # Adam's first step moves each coordinate by ≈ lr·sign(g).
    np.testing.assert_allclose(_one_step(adam, [0.3, -2.0], [0.0, 0.0]), [-0.01, 0.01], rtol=1e-4)


def test_bad_flags():
    with pytest.raises(ValueError, match="Unknown optimizer"):
        make_optimizer("rmsprop", 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer("sgd", 0.0)
    with pytest.raises(ValueError, match="momentum"):
        make_optimizer("sgd", 0.1, momentum=1.0)
    with pytest.raises(ValueError, match="decay_every_steps"):
        make_learning_rate(0.1, "step")
    with pytest.raises(ValueError, match="Unknown schedule"):
        make_learning_rate(0.1, "cosine")
    with pytest.raises(ValueError, match="clip_norm"):
        make_optimizer("adam", 0.1, clip_norm=-1.0)
