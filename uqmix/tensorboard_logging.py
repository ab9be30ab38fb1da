"""TensorBoard events of the experiment binaries, all on one axis: the global step.

The global step is the optimizer's ``iterations`` (restored with the
checkpoint, so a resumed run continues the axis).  Layout of a run's
``tensorboard/<name>/`` folder:

* ``train/``: every training metric of ``fit`` at each epoch end as
  ``epoch_<metric>`` (Keras's tag names), ``epoch_learning_rate``, and the
  histograms a binary asks for (α0, weight variances) — at the same step;
* ``validation/``: the ``val_<metric>`` logs of that epoch as ``epoch_<metric>``
  (so TensorBoard overlays training and validation curves);
* ``evaluation/``: the final metrics as scalars (``flatten_metrics``: nested
  keys joined by "/", points of a curve labelled by their x value) and the
  figures as images, at the global step the model was trained to.

Writing is plain functions and one callback so a multi-worker run can call
them on the chief only.
"""

import math
import os

import keras
import numpy as np
import tensorflow as tf

TRAIN_DIR = "train"
VALIDATION_DIR = "validation"
EVALUATION_DIR = "evaluation"
# Keys whose list gives the x values of the sibling lists (a curve's points).
AXIS_KEYS = {"epsilons": "eps", "iterations": "iter"}


def global_step(model):
    """The optimizer's step counter (int); 0 for a model without optimizer."""
    optimizer = getattr(model, "optimizer", None)
    return 0 if optimizer is None else int(keras.ops.convert_to_numpy(optimizer.iterations))


def _learning_rate(model):
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if optimizer is None or not hasattr(optimizer, "learning_rate"):
        return None
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochSummaries(keras.callbacks.Callback):
    """Epoch-end scalars (train and validation) and histograms at step = global step.

    log_dir: the model's TensorBoard folder (``train/`` and ``validation/`` inside).
    histograms: optional ``model -> {tag: values}``; written to ``train/`` at the
      same step as the scalars (log10 α0, log10 weight variances, ...).
    """

    def __init__(self, log_dir, histograms=None):
        super().__init__()
        self.log_dir = log_dir
        self.histograms = histograms
        self._writers = {}

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        step = global_step(self.model)
        train, validation = {}, {}
        for key, value in (logs or {}).items():
            target = validation if key.startswith("val_") else train
            target[key[4:] if key.startswith("val_") else key] = value
        rate = _learning_rate(self.model)
        if rate is not None:
            train.setdefault("learning_rate", rate)
        with self._writer(TRAIN_DIR).as_default(step=step):
            for key, value in train.items():
                tf.summary.scalar(f"epoch_{key}", float(value))
            for tag, values in (self.histograms(self.model) if self.histograms else {}).items():
                tf.summary.histogram(tag, values)
        if validation:
            with self._writer(VALIDATION_DIR).as_default(step=step):
                for key, value in validation.items():
                    tf.summary.scalar(f"epoch_{key}", float(value))
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def _number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def flatten_metrics(metrics, prefix="", axis=None):
    """{tag: float} of every number in a nested metrics dict.

    Nested keys join with "/"; a list of numbers is a curve when its dict (or an
    enclosing one) holds an x-axis list of the same length (``AXIS_KEYS``:
    ``epsilons``, ``iterations``): point i becomes ``<tag>/<eps|iter>=<x_i>``.
    Other lists (histogram counts, file names), strings, booleans, None and
    non-finite numbers are left out.
    """
    scalars = {}
    for key, name in AXIS_KEYS.items():
        if isinstance(metrics.get(key), list) and all(_number(v) for v in metrics[key]):
            axis = (name, metrics[key])
    for key, value in metrics.items():
        tag = f"{prefix}{key}"
        if key in AXIS_KEYS:
            continue
        if isinstance(value, dict):
            scalars.update(flatten_metrics(value, f"{tag}/", axis))
        elif isinstance(value, list) and axis and len(value) == len(axis[1]):
            for x, point in zip(axis[1], value):
                if _number(point) and math.isfinite(point):
                    scalars[f"{tag}/{axis[0]}={x:g}"] = float(point)
        elif _number(value) and math.isfinite(value):
            scalars[tag] = float(value)
    return scalars


def log_evaluation(log_dir, metrics, step, figures=(), prefix="evaluation/"):
    """Writes ``flatten_metrics(metrics)`` as scalars and each PNG in ``figures`` as an
    image (tag ``figures/<file name>``) to ``<log_dir>/evaluation`` at ``step``.

    Returns the scalar tags written.
    """
    scalars = flatten_metrics(metrics)
    writer = tf.summary.create_file_writer(os.path.join(log_dir, EVALUATION_DIR))
    with writer.as_default(step=int(step)):
        for tag, value in scalars.items():
            tf.summary.scalar(f"{prefix}{tag}", value)
        for path in figures:
            with open(path, "rb") as handle:
                image = tf.io.decode_png(handle.read(), channels=4)
            name = os.path.splitext(os.path.basename(path))[0]
            tf.summary.image(f"figures/{name}", image[None], step=int(step))
    writer.close()
    return [f"{prefix}{tag}" for tag in scalars]


def read_events(folder):
    """{(subfolder, tag): [(step, value)]} of every event file under ``folder`` (scalars as
    floats, histograms and images as their tensor), for tests and quick looks."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            if not name.startswith("events.out"):
                continue
            where = os.path.relpath(root, folder)
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    array = tf.make_ndarray(value.tensor)
                    kind = value.metadata.plugin_data.plugin_name
                    item = float(array) if kind == "scalars" else array
                    found.setdefault((where, value.tag), []).append((int(event.step), item))
    return found
