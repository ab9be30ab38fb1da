"""SavedModel export with a serving signature that returns uncertainty.

``export_saved_model(model, path, input_shape)`` writes a SavedModel, loadable
with TensorFlow alone (``tf.saved_model.load``; uqmix need not be installed),
whose ``serving_default`` signature takes

* ``images``: float32 [batch, *input_shape], pixel values in [0, 1]
* ``num_samples``: int32 scalar, S for sampled models (ignored by Prior Networks)

A second endpoint, ``predict(images)``, takes the images only and uses
``export_saved_model``'s ``num_samples`` (default: the model's ``default_num_samples``).
Both return a dict of tensors: ``mean`` [B, K] (mean prediction), ``log_mean``
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


def _as_predictive_model(model):
    """``model`` if it answers ``predictive``; a plain Keras classifier as the S = 1 mixture."""
    if hasattr(model, "predictive_on_batch"):
        return model
    if not isinstance(model, keras.Model):
        raise ValueError(
            "export_saved_model needs a uqmix model (PredictiveModelMixin) or a "
            f"Keras classifier, got {type(model).__name__}."
        )
    activation = getattr(model.layers[-1], "activation", None) if model.layers else None
    if activation is keras.activations.softmax:
        raise ValueError(
            f"export_saved_model: the last layer of {model.name!r} applies softmax; a plain Keras "
            "classifier is exported from its logits. Remove the softmax (activation=None)."
        )
    from uqmix.models.sampled_networks import ensemble

    return ensemble([model], name=f"{model.name}_as_mixture")


def _known_input_shape(model):
    """The input shape without the batch axis of ``model`` or of the network it wraps, or None."""
    try:
        shape = model.input_shape
        if isinstance(shape, tuple) and shape and (shape[0] is None or isinstance(shape[0], int)):
            return tuple(shape)[1:]
    except (AttributeError, ValueError, TypeError):
        pass
    for name in ("network", "backbone"):
        if isinstance(getattr(model, name, None), keras.Model):
            return _known_input_shape(getattr(model, name))
    networks = getattr(model, "networks", None)
    if networks and isinstance(networks[0], keras.Model):
        return _known_input_shape(networks[0])
    return None


def _input_shape(model, input_shape):
    """The shape of one input (no batch axis): ``input_shape`` checked, or the model's own."""
    model_shape = _known_input_shape(model)
    if input_shape is None:
        if model_shape is None or any(d is None for d in model_shape):
            raise ValueError(
                "export_saved_model: the model does not know its input shape; pass input_shape, "
                "the shape of ONE input without the batch axis, e.g. (28, 28, 1) for MNIST."
            )
        return model_shape
    input_shape = tuple(input_shape)
    if any(d is None for d in input_shape) or (
        model_shape is not None
        and len(input_shape) == len(model_shape) + 1
        and input_shape[1:] == tuple(model_shape)
    ):
        raise ValueError(
            f"export_saved_model: input_shape={input_shape} seems to include the batch axis; "
            "pass the shape of ONE input without it (the signature adds the batch axis), e.g. "
            f"{input_shape[1:]}."
        )
    mismatch = model_shape is not None and (
        len(model_shape) != len(input_shape)
        or any(m is not None and m != d for m, d in zip(model_shape, input_shape))
    )
    if mismatch:
        raise ValueError(
            f"export_saved_model: input_shape={input_shape} does not match the "
            f"model's input shape {model_shape} (without the batch axis)."
        )
    return input_shape


def export_saved_model(model, path, input_shape=None, num_samples=None):
    """Writes ``model`` as a SavedModel at ``path``; returns ``path``.

    model: a uqmix model (``PredictiveModelMixin``: mixtures, ``MixtureModel``, Prior
      Networks, ``mc_dropout`` / ``ensemble``), or a plain Keras classifier returning
      logits, exported as the deterministic S = 1 mixture.
    input_shape: the shape of ONE input, without the batch axis (e.g. (28, 28, 1)): the
      signature's ``images`` are [batch, *input_shape]; a shape that starts with None or the
      model's own batch-inclusive ``input_shape`` is refused.  Default: the model's own.
    num_samples: S of the ``predict`` endpoint (images only); default the model's
      ``default_num_samples`` (100 for ``InfiniteMixture`` / ``MixtureModel`` /
      ``mc_dropout``, the members for ``ensemble``, 1 for deterministic models).
      ``serving_default`` takes S as its ``num_samples`` input.
    """
    model = _as_predictive_model(model)
    input_shape = _input_shape(model, input_shape)
    default_samples = model._resolve_num_samples(num_samples)

    def serve(images, num_samples):
        tf.debugging.assert_all_finite(images, "images contain NaN or Inf values.")
        tf.debugging.assert_positive(num_samples, "num_samples must be >= 1.")
        params = model.predictive_parameters(images, num_samples, training=False)
        predictive = model.predictive_from_parameters(params)
        return serving_outputs(predictive)

    images_spec = tf.TensorSpec([None, *input_shape], tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[images_spec, tf.TensorSpec([], tf.int32, name="num_samples")],
    )
    archive.add_endpoint(
        name="predict",
        fn=lambda images: serve(images, tf.constant(default_samples, tf.int32)),
        input_signature=[images_spec],
    )
    archive.write_out(path, verbose=False)
    return path
