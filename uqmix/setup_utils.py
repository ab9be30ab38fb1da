"""Process-level set-up shared by the experiment binaries: seeds, determinism, strategies."""

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
    * multi_worker: ``MultiWorkerMirroredStrategy``; reads ``TF_CONFIG``.
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
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
