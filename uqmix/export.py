"""SavedModel export with a serving signature that returns uncertainty.

``export_saved_model(model, path, input_shape)`` writes a SavedModel, loadable
with TensorFlow alone (``tf.saved_model.load``; uqmix need not be installed),
whose ``serving_default`` signature takes

* ``images``: float32 [batch, *input_shape], pixel values in [0, 1]
* ``num_samples``: int32 scalar, S for sampled models (ignored by Prior Networks)

and returns a dict of tensors: ``mean`` [B, K] (mean prediction), ``log_mean``
[B, K], ``predicted_class`` [B], every uncertainty measure of the model's
``Predictive`` ([B] each), ``class_variance`` [B, K], and for Prior Networks
``alpha`` [B, K].

The model's layers must accept a tensor ``num_samples`` (uqmix models do).
Stochastic layers draw their noise from their SeedGenerator state, which is
saved with the model: two calls give different samples, as the model does.
"""

import keras
import tensorflow as tf


def serving_outputs(predictive):
    """The dict the serving signature returns, from a ``Predictive``."""
    outputs = dict(predictive.measures())
    outputs["mean"] = predictive.mean()
    outputs["log_mean"] = predictive.log_mean()
    outputs["class_variance"] = predictive.class_variance()
    outputs["predicted_class"] = predictive.predicted_class()
    if hasattr(predictive, "alpha"):
        outputs["alpha"] = predictive.alpha
    return outputs


def export_saved_model(model, path, input_shape):
    """Writes ``model`` (a uqmix ``PredictiveModelMixin`` model) as a SavedModel at ``path``.

    input_shape: the shape of one input without the batch axis, e.g. (28, 28, 1).
    Returns ``path``.
    """
    if not hasattr(model, "predictive_on_batch"):
        raise ValueError("export_saved_model needs a uqmix model (PredictiveModelMixin).")

    def serve(images, num_samples):
        tf.debugging.assert_all_finite(images, "images contain NaN or Inf values.")
        tf.debugging.assert_positive(num_samples, "num_samples must be >= 1.")
        params = model.predictive_parameters(images, num_samples, training=False)
        predictive = model.predictive_from_parameters(params)
        return serving_outputs(predictive)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[
            tf.TensorSpec([None, *input_shape], tf.float32, name="images"),
            tf.TensorSpec([], tf.int32, name="num_samples"),
        ],
    )
    archive.write_out(path, verbose=False)
    return path
