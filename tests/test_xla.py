"""Every custom train/test step, the predictive and the attack loops under XLA (jit_compile=True).

For each model the same weights are trained one step and evaluated once with
``compile(jit_compile=False)`` and with ``compile(jit_compile=True)``; logs and updated weights
must agree to float32 tolerance.  XLA's Philox maps counters to values differently from
TensorFlow's kernels, so the stochastic parts are put in their zero-noise limit (weight
variances e^-40, dropout rate 1e-7, FGSM step |N(0, 1e-7²)|) — the arithmetic of every step is
still all there.  ``_assert_xla`` proves that the step really compiles under XLA: it lowers the
step to HLO (``experimental_get_compiler_ir``), which fails on any op XLA cannot compile.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from uqmix import layers as uqmix_layers
from uqmix.adversarial_training import AdversarialPriorNetwork
from uqmix.attacks import (
    gradient_attacks,
    momentum_iterative_method,
    predictive_logits_fn,
    projected_gradient_descent,
)
from uqmix.layers import MatrixNormalDense
from uqmix.models import (
    DeepEnsemble,
    Deterministic,
    InfiniteMixture,
    MCDropout,
    MixtureModel,
    PriorNetwork,
)
from uqmix.models.backbones import mlp
from uqmix.studies import mixture_experiment, pn_experiment, synthetic_experiment

INPUT_SHAPE, K, B = (4, 3), 3, 6
RTOL, ATOL = 2e-5, 2e-6


@pytest.fixture(autouse=True)
def _no_op_determinism():
    """Keras drops jit_compile=True when op determinism is on (other tests enable it)."""
    was_enabled = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    yield
    if was_enabled:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def _batch(seed=0, n=B):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n,) + INPUT_SHAPE).astype(np.float32),
        rng.integers(0, K, n).astype(np.int32),
    )


def _silence_noise(model):
    """Zero-noise limit of every MatrixNormalDense: log u = log v = -40 (std ≈ e^-40)."""
    for layer in model._flatten_layers():
        if isinstance(layer, MatrixNormalDense):
            layer.log_row_variance.assign(tf.fill(layer.log_row_variance.shape, -40.0))
            layer.log_column_variance.assign(tf.fill(layer.log_column_variance.shape, -40.0))


def _mixture_network():
    inputs = keras.Input(INPUT_SHAPE)
    h = keras.layers.Flatten()(inputs)
    h = MatrixNormalDense(8, activation="relu", seed=3)(h)
    h = keras.layers.Dropout(1e-7)(h)
    return keras.Model(inputs, keras.layers.Dense(K)(h))


def _backbone():
    return mlp(INPUT_SHAPE, K, hidden_units=(8,), weight_decay=1e-3)


MODELS = {
    "infinite_mixture_ml": lambda: InfiniteMixture(
        K, hidden_units=(8, 8), objective="ml", num_train_samples=3, dataset_size=50, seed=1
    ),
    "infinite_mixture_vi_jit_sampling": lambda: InfiniteMixture(
        K,
        hidden_units=(8,),
        objective="vi",
        num_train_samples=3,
        dataset_size=50,
        seed=1,
        jit_sampling=True,
    ),
    "mixture_model": lambda: MixtureModel(
        _mixture_network(), "ml", num_train_samples=3, kl_weight=0.02
    ),
    "deterministic": lambda: Deterministic(INPUT_SHAPE, K, hidden_units=(8,), weight_decay=1e-3),
    "mc_dropout": lambda: MCDropout(INPUT_SHAPE, K, hidden_units=(8,), dropout_rate=1e-7),
    "deep_ensemble": lambda: DeepEnsemble(INPUT_SHAPE, K, hidden_units=(8,), num_members=2),
    "prior_network_rkl": lambda: PriorNetwork(_backbone(), K, loss="reverse_kl"),
    "prior_network_fkl": lambda: PriorNetwork(
        _backbone(), K, loss="forward_kl", normalize_by_target=True
    ),
    "prior_network_ce": lambda: PriorNetwork(_backbone(), K, loss="cross_entropy"),
    "adversarial_prior_network": lambda: AdversarialPriorNetwork(
        _backbone(), K, loss="reverse_kl", epsilon_stddev=1e-7, seed=5
    ),
    "dnn_adv": lambda: AdversarialPriorNetwork(
        _backbone(), K, loss="cross_entropy", epsilon_stddev=1e-7, seed=5
    ),
}
WITH_OOD = {
    "prior_network_rkl",
    "prior_network_fkl",
    "prior_network_ce",
    "adversarial_prior_network",
}


def _compiled(name, jit_compile, weights=None):
    keras.utils.set_random_seed(7)
    model = MODELS[name]()
    model.build((None,) + INPUT_SHAPE)
    if weights is not None:
        model.set_weights(weights)
    _silence_noise(model)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    return model


def _data(name):
    x, y = _batch(0)
    if name in WITH_OOD:
        return ((x, _batch(1)[0]), y)
    return (x, y)


def _assert_xla(step, data):
    """The step lowers to an XLA HLO module (raises if any op is not XLA-compilable)."""
    data = tf.nest.map_structure(tf.convert_to_tensor, data)
    hlo = tf.function(step, jit_compile=True).experimental_get_compiler_ir(data)(stage="hlo")
    assert "HloModule" in hlo


@pytest.mark.parametrize("name", sorted(MODELS))
def test_steps_compile_under_xla_and_match(name):
    plain = _compiled(name, jit_compile=False)
    xla = _compiled(name, jit_compile=True, weights=plain.get_weights())
    assert xla.jit_compile is True and plain.jit_compile is False
    initial = [w.numpy() for w in plain.trainable_weights]
    data = _data(name)
    for model in (plain, xla):
        model.train_on_batch(*data)  # builds the optimizer and runs one step
    logs_plain = plain.train_on_batch(*data, return_dict=True)
    logs_xla = xla.train_on_batch(*data, return_dict=True)
    assert set(logs_plain) == set(logs_xla) and logs_plain
    for key in logs_plain:
        np.testing.assert_allclose(
            logs_xla[key], logs_plain[key], rtol=RTOL, atol=ATOL, err_msg=key
        )
    moved = False
    for a, b, start in zip(plain.trainable_weights, xla.trainable_weights, initial):
        moved |= not np.allclose(a.numpy(), start)
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=RTOL, atol=ATOL, err_msg=a.path)
    assert moved, "the training steps changed no weight"
    test_plain = plain.test_on_batch(*data, return_dict=True)
    test_xla = xla.test_on_batch(*data, return_dict=True)
    for key in test_plain:
        np.testing.assert_allclose(
            test_xla[key], test_plain[key], rtol=RTOL, atol=ATOL, err_msg=key
        )
    _assert_xla(xla.train_step, data)
    _assert_xla(xla.test_step, data)


@pytest.mark.parametrize("name", ["infinite_mixture_ml", "mixture_model", "prior_network_rkl"])
def test_predictive_runs_under_xla_when_the_model_is_jit_compiled(name):
    plain = _compiled(name, jit_compile=False)
    xla = _compiled(name, jit_compile=True, weights=plain.get_weights())
    x = _batch(2, n=7)[0]
    expected = plain.predictive(x, num_samples=4, batch_size=3)
    got = xla.predictive(x, num_samples=4, batch_size=3)
    np.testing.assert_allclose(got.mean(), expected.mean(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        got.total_uncertainty(), expected.total_uncertainty(), rtol=1e-4, atol=1e-5
    )
    assert set(xla._uqmix_predict_fns) == {(4, True)}
    assert set(plain._uqmix_predict_fns) == {(4, False)}
    compiled = xla._uqmix_predict_fns[(4, True)]
    assert "HloModule" in compiled.experimental_get_compiler_ir(tf.constant(x[:3]))(stage="hlo")


@pytest.fixture
def attacks_under_xla():
    gradient_attacks.set_jit_compile(True)
    yield
    gradient_attacks.set_jit_compile(False)


def _attack_victim():
    model = _compiled("infinite_mixture_vi_jit_sampling", jit_compile=False)
    return predictive_logits_fn(model, num_samples=3)


@pytest.mark.parametrize("method", ["pgd", "mim"])
def test_attack_loops_under_xla_match(method, request):
    model_fn = _attack_victim()
    x = _batch(3, n=5)[0]
    attack = projected_gradient_descent if method == "pgd" else momentum_iterative_method
    extra = {"rand_init": False} if method == "pgd" else {}
    kwargs = dict(
        eps=0.2, eps_iter=0.05, nb_iter=6, norm=np.inf, clip_min=0.0, clip_max=1.0, **extra
    )
    expected = attack(model_fn, x, **kwargs).numpy()
    request.getfixturevalue("attacks_under_xla")
    xla_fn = (
        gradient_attacks._compiled_pgd_xla
        if method == "pgd"
        else (gradient_attacks._compiled_mim_xla)
    )
    traces = xla_fn.experimental_get_tracing_count()
    got = attack(model_fn, x, **kwargs).numpy()
    assert xla_fn.experimental_get_tracing_count() == traces + 1  # ran the XLA program
    assert np.abs(expected - x).max() > 0.1  # the attack moved
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_pgd_random_start_under_xla_stays_in_the_ball(attacks_under_xla):
    model_fn = _attack_victim()
    x = _batch(4, n=5)[0]
    adv = projected_gradient_descent(
        model_fn, x, 0.1, 0.03, 3, np.inf, clip_min=0.0, clip_max=1.0, rand_init=True, seed=3
    ).numpy()
    assert np.abs(adv - x).max() <= 0.1 + 1e-6 and adv.min() >= 0.0 and adv.max() <= 1.0
    assert np.abs(adv - x).max() > 0.05


def test_set_jit_compile_refuses_non_bools():
    with pytest.raises(ValueError, match="jit_compile must be True or False"):
        gradient_attacks.set_jit_compile("yes")


# -- the experiments' --jit_compile flag ------------------------------------------------------
EXPERIMENTS = {
    "mixture": mixture_experiment,
    "pn": pn_experiment,
    "synthetic": synthetic_experiment,
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_jit_compile_with_determinism_is_refused_naming_both_flags(experiment, tmp_path):
    module = EXPERIMENTS[experiment]
    with pytest.raises(ValueError, match="--jit_compile needs --nodeterministic"):
        module.validate_config({"jit_compile": True, "output_dir": str(tmp_path)})
    config = module.validate_config(
        {"jit_compile": True, "deterministic": False, "output_dir": str(tmp_path)}
    )
    assert config["jit_compile"] is True
    assert module.default_config()["jit_compile"] is False


@pytest.mark.parametrize("jit_compile", [False, True])
def test_experiments_compile_their_models_with_the_flag(jit_compile, tmp_path):
    common = {"jit_compile": jit_compile, "deterministic": False, "output_dir": str(tmp_path)}
    config = mixture_experiment.validate_config({**common, "hidden_units": ["4"]})
    assert mixture_experiment.build_model(config, (3, 3), 10).jit_compile is jit_compile
    config = synthetic_experiment.validate_config({**common, "hidden_units": ["4"]})
    assert synthetic_experiment.build_model("reverse_kl", config).jit_compile is jit_compile
    config = pn_experiment.validate_config(
        {
            **common,
            "backbone": "mlp",
            "hidden_units": ["4"],
            "augment": False,
            "normalize_inputs": False,
        }
    )
    model = pn_experiment.build_model(config, (3, 3, 1), 10, None, 0, 10)
    assert model.jit_compile is jit_compile


def test_experiments_refuse_a_model_keras_compiled_without_xla(tmp_path):
    config = mixture_experiment.validate_config(
        {
            "jit_compile": True,
            "deterministic": False,
            "output_dir": str(tmp_path),
            "hidden_units": ["4"],
        }
    )
    tf.config.experimental.enable_op_determinism()  # e.g. left on by an earlier run
    with pytest.raises(ValueError, match="--jit_compile: Keras would run this model without XLA"):
        mixture_experiment.build_model(config, (3, 3), 10)


# -- one noise draw for all layers (jit_sampling) ----------------------------------------------
def _pattern_noise(shape, seed, dtype=tf.float32):
    """Replayable stand-in for N(0, 1): sin(1 + 0.37 i) over the flattened shape."""
    size = tf.reduce_prod(shape)
    return tf.reshape(tf.sin(1.0 + 0.37 * tf.cast(tf.range(size), dtype)), shape)


def test_jit_sampling_draws_all_layers_noise_at_once_and_splits_it(monkeypatch):
    calls = []

    def recording(shape, seed, dtype=tf.float32):
        calls.append(int(tf.reduce_prod(shape)))
        return _pattern_noise(shape, seed, dtype)

    monkeypatch.setattr(uqmix_layers, "_xla_noise_generator", recording)
    model = InfiniteMixture(K, hidden_units=(8, 6), seed=1, jit_sampling=True)
    model.build((None,) + INPUT_SHAPE)
    x, num_samples = _batch(5)[0], 3
    logits = model(x, num_samples=num_samples).numpy()
    rows, widths = num_samples * B, (8, 6, K)
    assert calls == [rows * sum(widths)]  # one draw for the 3 layers
    z = np.sin(1.0 + np.float32(0.37) * np.arange(calls[0], dtype=np.float32)).astype(np.float64)
    h = x.reshape(B, -1).astype(np.float64)
    offset = 0
    for i, layer in enumerate(model.dense_layers):  # float64 NumPy forward pass
        m = layer.mean.numpy().astype(np.float64)
        u = np.exp(layer.log_row_variance.numpy().astype(np.float64))
        v = np.exp(layer.log_column_variance.numpy().astype(np.float64))
        mean = h @ m[:-1] + m[-1]
        std = np.sqrt(h**2 @ u[:-1] + u[-1] + 1e-8)[:, None] * np.sqrt(v)[None]
        noise = z[offset : offset + rows * widths[i]]
        offset += rows * widths[i]
        if i == 0:
            out = (mean[None] + std[None] * noise.reshape(num_samples, B, -1)).reshape(rows, -1)
        else:
            out = mean + std * noise.reshape(rows, -1)
        h = np.maximum(out, 0.0) if i < 2 else out
    np.testing.assert_allclose(logits, h.reshape(num_samples, B, K), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("objective", ["ml", "vi"])
def test_jit_sampling_step_draws_noise_outside_its_xla_gradient_program(objective, monkeypatch):
    """The graph step (noise kernel, then the forward/backward pass as a nested XLA program
    fed that noise) trains exactly like the eager step, whose layers draw the same noise
    (same seeds, same kernel) inside the forward pass."""
    drawn = []
    original = InfiniteMixture.step_noise

    def recording(self, x):
        noise = original(self, x)
        drawn.append(None if noise is None else tuple(noise.shape))
        return noise

    monkeypatch.setattr(InfiniteMixture, "step_noise", recording)

    def model(run_eagerly):
        net = InfiniteMixture(
            K,
            (8, 5),
            objective=objective,
            num_train_samples=3,
            dataset_size=50,
            seed=4,
            jit_sampling=True,
        )
        net.build((None,) + INPUT_SHAPE)
        net.compile(keras.optimizers.Adam(0.05), run_eagerly=run_eagerly)
        return net

    eager, graph = model(True), model(False)
    graph.set_weights(eager.get_weights())
    x, y = _batch(7, n=12)
    logs_eager = eager.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0).history
    assert drawn == []  # eager steps draw inside the forward pass
    logs_graph = graph.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0).history
    assert drawn and set(drawn) == {(3 * 6 * (8 + 5 + K),)}  # traced: the flat noise of S·B rows
    for key in logs_eager:
        np.testing.assert_allclose(logs_graph[key], logs_eager[key], rtol=1e-4, err_msg=key)
    for a, b in zip(eager.trainable_weights, graph.trainable_weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    assert not np.allclose(
        eager.dense_layers[0].mean.numpy(), model(True).dense_layers[0].mean.numpy()
    )


def test_noise_argument_needs_the_one_draw_mode():
    net = InfiniteMixture(K, (4,), seed=1, jit_sampling=False)
    x = _batch(1)[0]
    with pytest.raises(ValueError, match="jit_sampling=True and local_reparameterization"):
        net(x, num_samples=2, noise=tf.zeros([2 * B * (4 + K)]))


def test_jit_sampling_predictive_draws_noise_outside_its_xla_forward_program(monkeypatch):
    """``predictive`` (graph mode) = noise kernel + XLA forward fed that noise: the same
    logits as the eager forward pass drawing the same noise itself (same seeds)."""
    drawn = []
    original = InfiniteMixture._flat_noise

    def recording(self, batch_size, num_samples):
        noise = original(self, batch_size, num_samples)
        drawn.append(tf.executing_eagerly())
        return noise

    monkeypatch.setattr(InfiniteMixture, "_flat_noise", recording)

    def model():
        net = InfiniteMixture(
            K, (8, 5), num_train_samples=2, dataset_size=50, seed=6, jit_sampling=True
        )
        net.build((None,) + INPUT_SHAPE)
        return net

    graph, eager = model(), model()
    graph.set_weights(eager.get_weights())
    x = _batch(2, n=7)[0]
    got = np.asarray(graph.predictive(x, num_samples=4, batch_size=7).log_probs)
    assert drawn == [False]  # traced once, outside the XLA forward program
    expected = tf.nn.log_softmax(eager.predictive_parameters(tf.constant(x), 4)).numpy()
    assert got.shape == (4, 7, K)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
