"""Resumable, divergence-safe training under ``model.fit``.

``fit_resumable`` trains for a fixed number of *steps*, in "epochs" of
``steps_per_epoch`` steps over an infinite, seeded dataset, and checkpoints
(model weights, optimizer state, the models' random-generator states and the
epoch counter) with ``tf.train.Checkpoint`` at the end of every epoch.  After
a crash the same call restores the newest checkpoint and continues: the input
pipeline is rebuilt from the same seed and the batches already consumed are
skipped, so a resumed run sees exactly the batches an uninterrupted run sees
and (on CPU, with op determinism) ends with identical weights.

A non-finite loss stops training with ``TrainingDivergedError``; the last
checkpoint, written after the last finite epoch, is kept.

Several replicas (``uqmix.distributed``): the batches of ``make_dataset`` are *global*
batches; replica r of n trains on slice r of each (the split ``MirroredStrategy`` makes on
one machine), on one machine or several.  Under ``MultiWorkerMirroredStrategy`` every
worker saves checkpoints (TensorFlow's multi-worker guide), the chief into
``output_dir/checkpoints``, the others into a temporary folder removed after each save;
every worker restores from the chief's folder, so a restarted worker continues with the
others.  ``chief_callbacks`` (TensorBoard and other writers) run on the chief only.
"""

import math
import os
import time

import keras
import tensorflow as tf

from uqmix import distributed, runs

CHECKPOINT_SUBDIR = "checkpoints"


class TrainingDivergedError(RuntimeError):
    """Training diverged: a NaN/Inf loss, or non-finite weights at the end of an epoch."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops ``fit`` at the first batch whose loss is NaN/Inf and remembers where.

    Also checks the trainable weights at every epoch end, before the epoch's checkpoint is
    written: a loss can stay finite while weights overflow (a ReLU may map NaN to 0, by the
    CPU's max instruction; the Dirichlet losses clip the logits), and such weights must not
    reach a checkpoint.
    """

    def __init__(self):
        super().__init__()
        self.diverged_at = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = (self.epoch, batch, float(loss))
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged_at is not None:
            return
        bad = [
            v.path
            for v in self.model.trainable_variables
            if not bool(tf.reduce_all(tf.math.is_finite(v)))
        ]
        if bad:
            self.diverged_at = (
                epoch,
                "end",
                f"a finite loss, but non-finite weights in {', '.join(bad[:3])}",
            )
            self.model.stop_training = True


def check_outputs_finite(model, x, num_samples=None):
    """Raises ``TrainingDivergedError`` unless the trained ``model``'s predictive parameters
    (``predictive_parameters``: the logits of every sample, or the Dirichlet logits) on the
    images ``x`` are all finite.

    ``StopOnNonFiniteLoss`` sees losses and weights; both can stay finite while the forward
    pass overflows (weights grown to ~1e10 by a learning rate too high for the network give
    inf - inf = NaN logits), and the evaluation would then fail on NaN logits or report NaN
    metrics.  The experiments call this after training, before the model is saved, cached,
    evaluated or exported.
    """
    num_samples = model._resolve_num_samples(num_samples)
    params = model.predictive_parameters(tf.convert_to_tensor(x), num_samples, training=False)
    if not bool(tf.reduce_all(tf.math.is_finite(params))):
        raise TrainingDivergedError(
            f"training ended with finite losses and weights, but the network's outputs on "
            f"{len(x)} test images are NaN/Inf (its activations overflow): training diverged. "
            "The run's checkpoints hold these weights: run again with --overwrite and a lower "
            "--learning_rate (or --optimizer=adam)."
        )


_clock = time.perf_counter  # the wall clock of the epoch timing (tests replace it)


class _EpochCheckpoint(keras.callbacks.Callback):
    """Saves the checkpoint at every epoch end (unless training diverged); on a non-chief
    worker into its temporary folder, which is removed right after (``uqmix.distributed``).

    With ``timing`` = (folder, key) the chief then adds the wall seconds since the previous
    epoch end (or the start of ``fit``) to ``runs.add_seconds(folder, key, ·)``: the total
    is the time of every epoch in the checkpoint, whichever invocation trained it."""

    def __init__(self, manager, epoch_var, guard, strategy, ckpt_dir, timing=None):
        super().__init__()
        self.manager = manager
        self.epoch_var = epoch_var
        self.guard = guard
        self.strategy = strategy
        self.ckpt_dir = ckpt_dir
        self.timing = timing if distributed.is_chief(strategy) else None
        self._since = None

    def on_train_begin(self, logs=None):
        self._since = _clock()

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.diverged_at is not None:
            return
        self.epoch_var.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        distributed.remove_worker_path(self.ckpt_dir, self.strategy)
        if self.timing is not None:
            now = _clock()
            runs.add_seconds(*self.timing, now - self._since)
            self._since = now
        _test_hook_exit_after_epoch(epoch + 1, self.strategy)


def _test_hook_exit_after_epoch(epoch, strategy):
    """Test-only: ``UQMIX_TEST_EXIT_AFTER_EPOCH=<epoch>:<task id>`` makes that worker die
    (``os._exit(75)``, no clean-up, as a killed process) right after that epoch's checkpoint."""
    hook = os.environ.get("UQMIX_TEST_EXIT_AFTER_EPOCH")
    if not hook:
        return
    at_epoch, task = (int(v) for v in hook.split(":"))
    if epoch == at_epoch and (distributed.task_of(strategy)[1] or 0) == task:
        os._exit(75)


def _strategy_of(model):
    """The ``tf.distribute`` strategy the model was built under."""
    return getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()


def _build_optimizer(model):
    """Creates the optimizer's variables now (the checkpoint lists them), under the strategy
    the model was built in (a MirroredStrategy's slot variables must be mirrored too)."""
    if not model.optimizer.built:
        with _strategy_of(model).scope():
            model.optimizer.build(model.trainable_variables)


def has_checkpoint(output_dir):
    """True when ``output_dir`` holds a training checkpoint (``fit_resumable`` would resume)."""
    return tf.train.latest_checkpoint(os.path.join(output_dir, CHECKPOINT_SUBDIR)) is not None


def make_checkpoint(model, **extra_trackables):
    """A ``tf.train.Checkpoint`` of model and optimizer variables, epoch counter and extras."""
    # Keras 3 models are not tracked as a whole by tf.train.Checkpoint, so the
    # variables are listed explicitly: all model variables (weights, and the
    # states of layer-owned SeedGenerators, so noise resumes where it stopped)
    # and all optimizer variables (iterations, moments).
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = tf.train.Checkpoint(
        model_variables=list(model.variables),
        optimizer_variables=list(model.optimizer.variables),
        epoch=epoch_var,
        **extra_trackables,
    )
    return ckpt, epoch_var


def fit_resumable(
    model,
    make_dataset,
    total_steps,
    steps_per_epoch,
    output_dir,
    callbacks=(),
    validation_data=None,
    verbose=1,
    max_to_keep=2,
    extra_trackables=None,
    chief_callbacks=(),
    timing=None,
):
    """Trains ``model`` for ``total_steps`` steps, resuming from ``output_dir``'s checkpoint.

    make_dataset: ``() -> tf.data.Dataset`` of global batches (static batch size),
      infinite (``repeat()``) and deterministic given its seed; rebuilt on resume
      and advanced past the batches already trained on.
    callbacks: run on every worker; chief_callbacks: on the chief only (writers).
    total_steps, steps_per_epoch: the run is ``ceil(total / per_epoch)`` epochs
      (the last one may be shorter: it trains exactly ``total_steps``).
    timing: (folder, key): after each epoch's checkpoint the chief adds the epoch's wall
      seconds to ``folder``/timing.json[key] (``runs.add_seconds``), so the total counts
      every invocation's finished epochs (a killed one loses only its unfinished epoch,
      which is trained again), not just the last invocation's.
    With ``verbose``, a restored checkpoint is reported in one line (how many epochs it holds,
    and whether any are left to train).
    Returns the ``History`` of this call (``None`` if nothing was left to train).
    Raises ``TrainingDivergedError`` on a NaN/Inf loss (the last good
    checkpoint is kept).
    """
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError("total_steps and steps_per_epoch must be >= 1.")
    steps_per_epoch = min(steps_per_epoch, total_steps)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    _build_optimizer(model)
    strategy = _strategy_of(model)
    ckpt, epoch_var = make_checkpoint(model, **(extra_trackables or {}))
    ckpt_dir = os.path.join(output_dir, CHECKPOINT_SUBDIR)
    # Every worker restores the chief's checkpoint; non-chief workers save to a temp folder.
    latest = tf.train.latest_checkpoint(ckpt_dir)
    manager = tf.train.CheckpointManager(
        ckpt, distributed.write_path(ckpt_dir, strategy), max_to_keep=max_to_keep
    )
    if latest:
        ckpt.restore(latest).assert_existing_objects_matched()
    initial_epoch = int(epoch_var.numpy())
    if latest and verbose:
        left = "nothing left to train" if initial_epoch >= num_epochs else "resuming"
        print(f"restored {latest}: {initial_epoch} of {num_epochs} epochs done, {left}", flush=True)
    if initial_epoch >= num_epochs:
        return None
    done_steps = initial_epoch * steps_per_epoch

    def batches(skip, take):
        return distributed.distribute_dataset(make_dataset().skip(skip).take(take), strategy)

    dataset = batches(done_steps, total_steps - done_steps)
    guard = StopOnNonFiniteLoss()
    writers = list(chief_callbacks) if distributed.is_chief(strategy) else []
    all_callbacks = [
        guard,
        _EpochCheckpoint(manager, epoch_var, guard, strategy, ckpt_dir, timing),
        *callbacks,
        *writers,
    ]

    def fit(dataset, epochs, initial_epoch, steps):
        return model.fit(
            dataset,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            callbacks=all_callbacks,
            validation_data=validation_data,
            verbose=verbose,
            shuffle=False,
        )

    last_epoch_steps = total_steps - (num_epochs - 1) * steps_per_epoch
    if last_epoch_steps == steps_per_epoch:
        history = fit(dataset, num_epochs, initial_epoch, steps_per_epoch)
    else:
        # Keras needs one steps_per_epoch; train the short tail in a second call.
        if initial_epoch < num_epochs - 1:
            fit(dataset, num_epochs - 1, initial_epoch, steps_per_epoch)
            _raise_if_diverged(guard, ckpt_dir)
            done_steps = (num_epochs - 1) * steps_per_epoch
            dataset = batches(done_steps, total_steps - done_steps)
        history = fit(dataset, num_epochs, num_epochs - 1, last_epoch_steps)
    _raise_if_diverged(guard, ckpt_dir)
    return history


def _raise_if_diverged(guard, ckpt_dir):
    if guard.diverged_at is not None:
        epoch, batch, loss = guard.diverged_at
        kept = tf.train.latest_checkpoint(ckpt_dir) or "none (no epoch finished)"
        where = "the end" if batch == "end" else f"batch {batch + 1}"
        raise TrainingDivergedError(
            f"Training diverged (loss {loss}) at epoch {epoch + 1}, {where}; stopped. "
            f"Last good checkpoint: {kept}. Lower the learning rate or check the data."
        )
