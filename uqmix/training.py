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
"""

import math
import os

import keras
import tensorflow as tf

CHECKPOINT_SUBDIR = "checkpoints"


class TrainingDivergedError(RuntimeError):
    """Training diverged: a NaN/Inf loss, or non-finite weights at the end of an epoch."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops ``fit`` at the first batch whose loss is NaN/Inf and remembers where.

    Also checks the trainable weights at every epoch end, before the epoch's checkpoint is
    written: a loss can stay finite while weights overflow (a ReLU maps NaN to 0, the
    Dirichlet losses clip the logits), and such weights must not reach a checkpoint.
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
        bad = [v.path for v in self.model.trainable_variables
               if not bool(tf.reduce_all(tf.math.is_finite(v)))]
        if bad:
            self.diverged_at = (epoch, "end", f"a finite loss, but non-finite weights in "
                                              f"{', '.join(bad[:3])}")
            self.model.stop_training = True


class _EpochCheckpoint(keras.callbacks.Callback):
    def __init__(self, manager, epoch_var, guard):
        super().__init__()
        self.manager = manager
        self.epoch_var = epoch_var
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.diverged_at is not None:
            return
        self.epoch_var.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


def _build_optimizer(model):
    """Creates the optimizer's variables now (the checkpoint lists them), under the strategy
    the model was built in (a MirroredStrategy's slot variables must be mirrored too)."""
    if not model.optimizer.built:
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)


def make_checkpoint(model, **extra_trackables):
    """A ``tf.train.Checkpoint`` of model and optimizer variables, epoch counter and extras."""
    # Keras 3 models are not tracked as a whole by tf.train.Checkpoint, so the
    # variables are listed explicitly: all model variables (weights, and the
    # states of layer-owned SeedGenerators, so noise resumes where it stopped)
    # and all optimizer variables (iterations, moments).
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = tf.train.Checkpoint(model_variables=list(model.variables),
                               optimizer_variables=list(model.optimizer.variables),
                               epoch=epoch_var, **extra_trackables)
    return ckpt, epoch_var


def fit_resumable(model, make_dataset, total_steps, steps_per_epoch, output_dir,
                  callbacks=(), validation_data=None, verbose=1, max_to_keep=2,
                  extra_trackables=None):
    """Trains ``model`` for ``total_steps`` steps, resuming from ``output_dir``'s checkpoint.

    make_dataset: ``() -> tf.data.Dataset`` of batches, infinite (``repeat()``)
      and deterministic given its seed; rebuilt on resume and advanced past the
      batches already trained on.
    total_steps, steps_per_epoch: the run is ``ceil(total / per_epoch)`` epochs
      (the last one may be shorter: it trains exactly ``total_steps``).
    Returns the ``History`` of this call (``None`` if nothing was left to train).
    Raises ``TrainingDivergedError`` on a NaN/Inf loss (the last good
    checkpoint is kept).
    """
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError("total_steps and steps_per_epoch must be >= 1.")
    steps_per_epoch = min(steps_per_epoch, total_steps)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    _build_optimizer(model)
    ckpt, epoch_var = make_checkpoint(model, **(extra_trackables or {}))
    ckpt_dir = os.path.join(output_dir, CHECKPOINT_SUBDIR)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=max_to_keep)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    initial_epoch = int(epoch_var.numpy())
    if initial_epoch >= num_epochs:
        return None
    done_steps = initial_epoch * steps_per_epoch
    dataset = make_dataset()
    if done_steps:
        dataset = dataset.skip(done_steps)
    dataset = dataset.take(total_steps - done_steps)
    guard = StopOnNonFiniteLoss()
    all_callbacks = [guard, _EpochCheckpoint(manager, epoch_var, guard), *callbacks]
    last_epoch_steps = total_steps - (num_epochs - 1) * steps_per_epoch
    if last_epoch_steps != steps_per_epoch:
        # Keras needs one steps_per_epoch; train the short tail in a second call.
        history = None
        if initial_epoch < num_epochs - 1:
            history = model.fit(dataset, epochs=num_epochs - 1, initial_epoch=initial_epoch,
                                steps_per_epoch=steps_per_epoch, callbacks=all_callbacks,
                                validation_data=validation_data, verbose=verbose, shuffle=False)
            _raise_if_diverged(guard, manager)
            dataset = make_dataset().skip((num_epochs - 1) * steps_per_epoch)
        history = model.fit(dataset, epochs=num_epochs, initial_epoch=num_epochs - 1,
                            steps_per_epoch=last_epoch_steps, callbacks=all_callbacks,
                            validation_data=validation_data, verbose=verbose, shuffle=False)
    else:
        history = model.fit(dataset, epochs=num_epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=steps_per_epoch, callbacks=all_callbacks,
                            validation_data=validation_data, verbose=verbose, shuffle=False)
    _raise_if_diverged(guard, manager)
    return history


def _raise_if_diverged(guard, manager):
    if guard.diverged_at is not None:
        epoch, batch, loss = guard.diverged_at
        kept = manager.latest_checkpoint or "none (no epoch finished)"
        where = "the end" if batch == "end" else f"batch {batch + 1}"
        raise TrainingDivergedError(
            f"Training diverged (loss {loss}) at epoch {epoch + 1}, {where}; stopped. "
            f"Last good checkpoint: {kept}. Lower the learning rate or check the data."
        )
