"""Process-level set-up shared by the experiment binaries: seeds, determinism, strategies."""

import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def set_seed(seed, deterministic=True):
    """Seeds Python, NumPy, TF and Keras from ``seed``; optionally op determinism.

    With ``deterministic`` (``tf.config.experimental.enable_op_determinism``)
    the same seed and flags give identical results on the same machine/CPU.
    """
    if seed is None or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_strategy(name="default", tpu_address=None):
    """A ``tf.distribute`` strategy by name: default | mirrored | multi_worker | tpu.

    * default: the default (no-op) strategy, one device.
    * mirrored: ``MirroredStrategy`` over all local GPUs (or the logical CPU
      devices, as in the tests).
    * multi_worker: ``MultiWorkerMirroredStrategy``; reads ``TF_CONFIG`` (checked by
      ``check_tf_config``).  It must be created before any other TensorFlow op of the
      process ("Collective ops must be configured at program startup"), so the experiments
      create it first.  Installs ``uqmix.distributed.install_keras_multi_worker_fixes``.
    * tpu: ``TPUStrategy`` on the resolver for ``tpu_address`` (or the
      environment's default TPU).
    The custom ``train_step``s of uqmix compute per-example losses and divide
    by the *global* batch size, so gradients summed over replicas are right.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        from uqmix import distributed

        check_tf_config(os.environ.get("TF_CONFIG"))
        distributed.install_keras_multi_worker_fixes()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


def check_tf_config(text):
    """Raises ``ValueError`` unless ``text`` (the ``TF_CONFIG`` environment variable) names a
    cluster with workers and this process's task in it, e.g.
    ``{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker",
    "index": 0}}``; the same on every worker except ``task.index``."""
    fix = (
        'set TF_CONFIG to \'{"cluster": {"worker": ["host0:port", "host1:port"]}, '
        '"task": {"type": "worker", "index": i}}\' on worker i (README, '
        "'On several machines')"
    )
    if not text:
        raise ValueError(
            f"--strategy=multi_worker needs the TF_CONFIG environment variable: {fix}."
        )
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        members = cluster[task["type"]]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG is not a valid cluster description ({error!r}): {fix}."
        ) from None
    if not 0 <= index < len(members):
        raise ValueError(
            f"TF_CONFIG task index {index} is not in cluster[{task['type']!r}] "
            f"({len(members)} tasks): {fix}."
        )
