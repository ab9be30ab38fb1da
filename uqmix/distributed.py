"""Multi-worker runs: who writes what, explicit data sharding, Keras 3 work-arounds.

Under ``MultiWorkerMirroredStrategy`` every worker runs the *same* program (the same training
steps, the same evaluation), because every training step is a collective all-reduce and any
call that differs between workers would hang the others.  Only what is written differs,
following TensorFlow's multi-worker guide (``tf.distribute`` "Multi-worker training with
Keras", sections "Model saving and loading" and "Checkpoint saving and restoring"):

* the **chief** (task ``chief``, or ``worker`` 0 when the cluster has no chief) alone creates
  and validates the run folder (``config.json``) and writes results: ``metrics.json``,
  figures, TensorBoard events, ``model.keras`` and exports go to the real paths;
* every other worker writes what must be written by all workers (checkpoints, model files:
  saving may involve collectives) to its own temporary sibling ``.workertemp_<task>_<name>``
  of the real path (``write_path``), removed right after (``remove_worker_path``), and reads
  (restores) from the chief's real path; it writes nothing else.

Data (``distribute_dataset``): every worker builds the same seeded stream of *global* batches
and keeps its own slice of every batch: replica r of the n in sync takes rows
[r·B/n, (r+1)·B/n) of the global batch B (and of every other batched component, e.g. the OOD
batch).  This is the split ``MirroredStrategy`` makes of a global batch on one machine, so a
run on 2 workers × 1 device sees exactly the per-replica batches of a run on 1 machine × 2
devices.  ``--batch_size`` therefore always means the **global** batch (per-replica batch ×
replicas); it must be divisible by the number of replicas.
"""

import contextlib
import json
import os
import shutil

import tensorflow as tf

WORKER_TEMP_PREFIX = ".workertemp_"


def task_of(strategy):
    """(task_type, task_id) of this process in a multi-worker cluster, (None, None) otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, None
    return resolver.task_type, int(resolver.task_id or 0)


def is_multi_worker(strategy):
    """True for a ``MultiWorkerMirroredStrategy`` whose cluster has more than one task."""
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def is_chief(strategy):
    """The process that writes results: task ``chief``, or ``worker`` 0 without a chief, or
    any single-process run (TF's multi-worker guide, ``_is_chief``)."""
    if not is_multi_worker(strategy):
        return True
    task_type, task_id = task_of(strategy)
    if task_type == "chief":
        return True
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in spec


def write_path(path, strategy):
    """Where this process writes a file or folder that every worker must write (checkpoints,
    model files): ``path`` itself on the chief, the sibling ``.workertemp_<type>_<id>_<name>``
    on the other workers (TF's multi-worker guide, ``write_filepath``)."""
    if is_chief(strategy):
        return path
    task_type, task_id = task_of(strategy)
    parent, name = os.path.split(os.path.normpath(path))
    return os.path.join(parent, f"{WORKER_TEMP_PREFIX}{task_type}_{task_id}_{name}")


def remove_worker_path(path, strategy):
    """Removes a non-chief worker's temporary copy ``write_path(path)``; no-op on the chief."""
    if is_chief(strategy):
        return
    temp = write_path(path, strategy)
    if os.path.isdir(temp):
        shutil.rmtree(temp, ignore_errors=True)
    elif os.path.exists(temp):
        os.unlink(temp)


@contextlib.contextmanager
def writing(path, strategy):
    """``with writing(path, strategy) as target:`` write the file or folder ``target``
    (``write_path``); a non-chief worker's temporary copy is removed on exit."""
    try:
        yield write_path(path, strategy)
    finally:
        remove_worker_path(path, strategy)


def agree(strategy, ok):
    """All-reduce of a flag: True when ``ok`` is True on every replica of every worker.

    A barrier as well: no worker returns before all have called it.  Single-process
    strategies return ``ok`` (no communication).
    """
    if not is_multi_worker(strategy):
        return bool(ok)
    value = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant(1 if ok else 0, tf.int32)
    )
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
    return int(total) == strategy.num_replicas_in_sync


def prepare_output_dir(config, strategy, prepare):
    """Creates and validates the run folder on the chief only; the other workers wait for it
    and check that the chief's ``config.json`` is their own configuration.

    prepare: ``(output_dir, config, resume, overwrite) -> bool`` (``uqmix.runs.prepare_output_dir``);
      called by the chief only.  Every worker raises the same kind of error when the chief
      refused the folder (the chief raises the original one), so no worker is left hanging.
    Returns what ``prepare`` returned (on the other workers: whether a config was there).
    """
    from uqmix import runs

    error, result = None, None
    chief = is_chief(strategy)
    if chief:
        try:
            result = prepare(
                config["output_dir"], config, resume=config["resume"], overwrite=config["overwrite"]
            )
        except (ValueError, OSError) as caught:
            error = caught
    if not agree(strategy, error is None):  # the barrier: the chief has written config.json
        if error is not None:
            raise error
        raise runs.ConfigMismatchError(
            f"The chief refused --output_dir={config['output_dir']} (see its log); this worker "
            "stops too."
        )
    if not chief:
        check_same_config(config)
        result = True
    return result


def _comparable(config):
    """The configuration as JSON would store it, without the keys that may differ."""
    from uqmix import runs

    text = json.dumps(runs.jsonable(config), sort_keys=True)
    return {k: v for k, v in json.loads(text).items() if k not in runs.VOLATILE_KEYS}


def check_same_config(config):
    """Raises ``ConfigMismatchError`` unless ``output_dir/config.json`` (written by the chief)
    holds ``config`` up to the volatile keys: every worker runs the validated configuration."""
    from uqmix import runs

    path = os.path.join(config["output_dir"], runs.CONFIG_FILE)
    if not os.path.exists(path):
        raise runs.ConfigMismatchError(
            f"{path} is missing on this worker after the chief wrote it: every worker must see "
            "the same --output_dir (a shared file system)."
        )
    chief, own = _comparable(runs.read_json(path)), _comparable(config)
    if chief != own:
        changed = sorted(k for k in set(chief) | set(own) if chief.get(k) != own.get(k))
        raise runs.ConfigMismatchError(
            f"This worker's flags differ from the chief's in: {', '.join(changed)}. Start every "
            "worker with the same command (only TF_CONFIG differs)."
        )


# -- data ------------------------------------------------------------------------------------------
def _check_divisible(element_spec, count):
    """Every batched component of a global batch must split evenly over ``count`` replicas."""
    for spec in tf.nest.flatten(element_spec):
        size = spec.shape[0] if spec.shape.rank else None
        if size is None:
            raise ValueError(
                "Training batches need a static batch size to be split over "
                f"replicas (got {spec}); batch with drop_remainder."
            )
        if size % count:
            raise ValueError(
                f"A global batch of {size} examples cannot be split evenly over "
                f"{count} replicas: choose --batch_size (and --ood_batch_size) "
                f"divisible by {count}."
            )


def _replica_slice(batch, index, count):
    """Rows [index·B/count, (index+1)·B/count) of every tensor of a global batch."""

    def piece(tensor):
        per = tensor.shape[0] // count
        return tensor[index * per : (index + 1) * per]

    return tf.nest.map_structure(piece, batch)


def distribute_dataset(dataset, strategy):
    """``dataset`` of global batches as a ``DistributedDataset`` with explicit sharding (module
    doc): replica r gets slice r of every global batch.  Returned unchanged for one replica
    and for strategies other than (MultiWorker)Mirrored (Keras distributes those itself).

    Each worker's input function keeps the slices of its local replicas, in order, as
    consecutive elements (``distribute_datasets_from_function`` hands consecutive elements
    to the local replicas).  Raises ``ValueError`` when a batch does not split evenly.
    """
    count = strategy.num_replicas_in_sync
    if count == 1 or not isinstance(
        strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    ):
        return dataset
    spec = dataset.element_spec
    _check_divisible(spec, count)

    def per_worker(context):
        local = count // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def split(*args):
            element = args if isinstance(spec, tuple) else args[0]
            slices = [_replica_slice(element, first + r, count) for r in range(local)]
            return tf.data.Dataset.from_tensor_slices(
                tf.nest.map_structure(lambda *parts: tf.stack(parts), *slices)
            )

        options = tf.data.Options()
        # Sharded by hand (split): no automatic sharding on top.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options).flat_map(split).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(per_worker)


# -- Keras 3 under MultiWorkerMirroredStrategy ------------------------------------------------------
_PATCHED = []


def install_keras_multi_worker_fixes():
    """Works around two Keras 3 bugs that make ``fit`` fail at once on several workers
    (keras-team/keras#20585, tensorflow/tensorflow#72388); idempotent.

    1. ``reduce_per_replica`` averages scalar logs with ``strategy.reduce(..., axis=0)``
       ("Invalid reduction dimension 0"): scalars are averaged over all replicas
       (``axis=None``), what ``MirroredStrategy`` does on one machine.  Every worker then
       logs the same global loss, so ``StopOnNonFiniteLoss`` stops all of them alike.
    2. ``_maybe_symbolic_build`` all-reduces the first *data batch* (a nest, which the
       collective reduce cannot take) only to get shapes for building unbuilt layers, metrics
       or optimizer: the build is made from the dataset's per-replica element spec instead.
    """
    if _PATCHED:
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        # With one local replica the values are plain tensors, yet they are this worker's
        # only: every value is averaged over the workers (as Keras's own code meant to).
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not is_multi_worker(self.distribute_strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        # Build from the per-replica element spec instead of an all-reduced data batch.
        spec = tf.nest.map_structure(
            lambda s: s._value_specs[0] if hasattr(s, "_value_specs") else s,
            iterator._distributed_dataset.element_spec,
        )
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=spec)
        return None

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _PATCHED.append((original_reduce, original_build))
