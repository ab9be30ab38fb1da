"""experiments.cifar_rkl under MirroredStrategy on two logical CPU devices equals one device."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT
from tests.metric_comparison import assert_same_metrics

# Logical devices must be configured before TensorFlow initialises, hence a fresh process.
_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from uqmix.studies import pn_experiment

    out = sys.argv[1]
    results = {}
    for strategy in ("default", "mirrored"):
        config = pn_experiment.default_config(
            dataset="synthetic_images", ood_train_dataset="synthetic_images_ood",
            ood_test_datasets=["synthetic_images_ood"], backbone="small_convnet",
            batchnorm="false", batch_size=32, epochs=1, steps_per_epoch=4, optimizer="sgd",
            learning_rate=0.01, momentum=0.9, normalize_by_target=True, lr_schedule="constant",
            augment=False, verbose=0,
            histogram_examples=0, test_examples=64, ood_test_examples=64, strategy=strategy,
            output_dir=os.path.join(out, strategy))
        results[strategy] = pn_experiment.run(config)
    print("RESULT " + json.dumps(results))
""")


def test_one_epoch_under_mirrored_strategy_matches_one_device(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(text for text in result.stdout.splitlines() if text.startswith("RESULT "))
    results = json.loads(line[len("RESULT ") :])
    single, mirrored = results["default"], results["mirrored"]
    assert single["num_replicas"] == 1 and mirrored["num_replicas"] == 2
    # Same global batch, same gradients (losses / global batch, summed over replicas): only
    # the summation order differs.
    compared, _ = assert_same_metrics(mirrored, single, rel_tol=1e-3, abs_tol=1e-4)
    assert compared > 10
    assert single["mean_alpha0_in"] != pytest.approx(1.0 * 10, rel=1e-6)  # trained, not initial
