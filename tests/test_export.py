"""SavedModel export: loads with TensorFlow alone and reproduces the model's outputs."""

import json
import subprocess
import sys
import textwrap

import numpy as np

from tests.test_model_base import _Dirichlet, _NoisyLinear
from uqmix.export import export_saved_model, serving_outputs

# Loads the SavedModel in a fresh interpreter where importing uqmix (or keras) fails.
_LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.modules["uqmix"] = None
    sys.modules["keras"] = None
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    x = np.array(json.loads(sys.argv[2]), np.float32)
    out = loaded.signatures["serving_default"](images=tf.constant(x),
                                                num_samples=tf.constant(int(sys.argv[3])))
    print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
""")


def _load_in_fresh_process(path, x, num_samples):
    result = subprocess.run(
        [sys.executable, "-c", _LOADER, path, json.dumps(x.tolist()), str(num_samples)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {k: np.array(v) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def test_export_sampled_and_dirichlet_models(tmp_path):
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    for model_cls, samples in ((_NoisyLinear, 3), (_Dirichlet, 1)):
        model = model_cls()
        model(x[:1])
        path = str(tmp_path / model_cls.__name__)
        export_saved_model(model, path, input_shape=(4,))
        served = _load_in_fresh_process(path, x, samples)
        expected = serving_outputs(model.predictive_on_batch(x, num_samples=samples))
        assert set(served) == set(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(
                served[name], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=name
            )


def test_export_of_trained_infinite_mixture_and_prior_network(tmp_path):
    """Real uqmix models: the served outputs equal the model's own, noise included (same seed state)."""
    import keras

    from uqmix.models import InfiniteMixture, PriorNetwork
    from uqmix.models.backbones import mlp

    rng = np.random.default_rng(1)
    x_train = rng.random((64, 4, 4, 1)).astype(np.float32)
    y_train = (x_train.reshape(64, -1).mean(-1) > 0.5).astype(np.int64) + (
        x_train[:, 0, 0, 0] > 0.5
    )
    x = x_train[:6]
    mixture = InfiniteMixture(
        num_classes=3,
        hidden_units=(8,),
        objective="ml",
        dataset_size=64,
        seed=3,
        jit_sampling=False,
    )
    network = PriorNetwork(mlp((4, 4, 1), 3, hidden_units=(8,)), 3)
    for model in (mixture, network):
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(x_train, y_train, batch_size=16, epochs=2, verbose=0)
    for model, samples in ((mixture, 7), (network, 1)):
        path = str(tmp_path / model.name)
        export_saved_model(model, path, input_shape=(4, 4, 1))
        served = _load_in_fresh_process(path, x, samples)
        # The export holds the seed generator's state as it is now, so the model's next
        # predictive draws the same noise as the fresh process's first call.
        expected = serving_outputs(model.predictive_on_batch(x, num_samples=samples))
        assert set(served) == set(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(
                served[name], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{model.name}: {name}"
            )
    assert served["alpha"].shape == (6, 3)
