"""Any trained Keras classifier as a mixture: ``mc_dropout(network)`` and ``ensemble(networks)``.

Both return a ``SampledNetworks`` model that answers ``predictive(x, num_samples)`` with a
``SampledPredictive`` [S, B, K]:

* ``mc_dropout(network)``: the S components are S dropout masks.  The batch is tiled S
  times ([S·B] rows, one call of the network) and reshaped to [S, B, K]; the network's
  dropout layers (``DROPOUT_LAYERS``) sample while every other layer runs in inference
  mode, so batch normalisation uses its moving statistics.
* ``ensemble(networks)``: the M components are the M networks' logits (``num_samples`` is
  ignored; one network is the deterministic S = 1 case).

"Dropout on, everything else in inference mode" works for any Keras 3 model (Sequential,
functional with branches / residual connections, subclassed, nested): ``dropout_sampling``
makes every dropout layer inside ``network`` treat its call as ``training=True`` while
the network is called with ``training=False``.  It acts while the Python code runs, i.e. when
a ``tf.function`` traces it, so compiled predictives keep the dropout on.
"""

import contextlib

import keras
import tensorflow as tf

from uqmix.models.base import PredictiveModelMixin

DROPOUT_LAYERS = (keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.AlphaDropout)


def sublayers(network):
    """Every layer inside ``network`` (recursively, nested models included), excluding itself."""
    return list(network._flatten_layers(include_self=False, recursive=True))


def dropout_layers(network):
    """The dropout layers (``DROPOUT_LAYERS``) inside ``network``."""
    return [layer for layer in sublayers(network) if isinstance(layer, DROPOUT_LAYERS)]


@contextlib.contextmanager
def dropout_sampling(network):
    """Inside the context, every dropout layer of ``network`` samples whatever ``training`` says.

    Call ``network(x, training=False)`` inside it: dropout samples masks, every other layer
    (batch normalisation, uqmix layers' KL check) runs in inference mode.
    """
    layers = dropout_layers(network)
    saved = [layer.__dict__.get("call") for layer in layers]
    for layer in layers:
        original = type(layer).call.__get__(layer)
        layer.__dict__["call"] = lambda inputs, training=None, _call=original: _call(
            inputs, training=True
        )
    try:
        yield layers
    finally:
        for layer, call in zip(layers, saved):
            del layer.__dict__["call"]
            if call is not None:
                layer.__dict__["call"] = call


def tile_batch(x, num_samples):
    """x [B, ...] → [S·B, ...]: row s·B + b is x_b (sample-major, so a reshape gives [S, B, ...])."""
    x = tf.convert_to_tensor(x)
    multiples = tf.concat([tf.reshape(num_samples, [1]), tf.ones([tf.rank(x) - 1], tf.int32)], 0)
    return tf.tile(x, multiples)


def untile_logits(logits, num_samples, batch):
    """Logits [S·B, K] of a tiled batch → [S, B, K]."""
    num_classes = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
    return tf.reshape(logits, tf.stack([num_samples, batch, num_classes]))


def tiled_logits(network, x, num_samples, training=False, sample_dropout=True):
    """Logits [S, B, K] of S stochastic passes of ``network``, vectorised as one call.

    The batch is tiled S times (``tile_batch``); with ``sample_dropout`` (and training=False)
    the dropout layers sample inside ``dropout_sampling``.
    """
    x = tf.convert_to_tensor(x)
    batch = tf.shape(x)[0]
    tiled = tile_batch(x, num_samples)
    context = dropout_sampling(network) if sample_dropout else contextlib.nullcontext()
    with context:
        logits = network(tiled, training=training)
    return untile_logits(logits, num_samples, batch)


def _check_network(network, name):
    if not isinstance(network, keras.Model):
        raise ValueError(
            f"{name} must be a Keras model from inputs to logits, got {type(network).__name__}."
        )
    return network


@keras.saving.register_keras_serializable(package="uqmix")
class SampledNetworks(keras.Model, PredictiveModelMixin):
    """Trained classifiers as one mixture of categoricals, ``SampledPredictive`` [S, B, K].

    networks: Keras models from inputs to logits.  With ``mc_dropout`` (one network) the S
    components are S dropout masks (``tiled_logits``); otherwise they are the M networks (an
    ensemble; a single network is the deterministic S = 1 case).  Prefer the constructors
    ``mc_dropout`` and ``ensemble``.
    """

    predictive_kind = "sampled_logits"

    def __init__(self, networks, mc_dropout=False, default_num_samples=1, **kwargs):
        super().__init__(**kwargs)
        networks = list(networks)
        if not networks:
            raise ValueError("SampledNetworks needs at least one network.")
        for i, network in enumerate(networks):
            _check_network(network, f"networks[{i}]")
        if mc_dropout and len(networks) != 1:
            raise ValueError(
                "MC dropout samples one network; got "
                f"{len(networks)} (use ensemble(networks) for several)."
            )
        if mc_dropout and not dropout_layers(networks[0]):
            raise ValueError(
                f"mc_dropout: network {networks[0].name!r} has no dropout layer "
                f"({', '.join(t.__name__ for t in DROPOUT_LAYERS)}), so every "
                "sample would be the same; add dropout or use ensemble([network])."
            )
        if int(default_num_samples) != default_num_samples or default_num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {default_num_samples}.")
        self.networks = networks
        self.mc_dropout = bool(mc_dropout)
        self.default_num_samples = int(default_num_samples) if mc_dropout else len(networks)
        self.built = all(n.built for n in networks)

    def call(self, x, training=False):
        """The mean prediction p̄ [B, K] of ``default_num_samples`` components."""
        return tf.reduce_mean(
            tf.nn.softmax(self.predictive_parameters(x, self.default_num_samples), axis=-1), axis=0
        )

    def predictive_parameters(self, x, num_samples, training=False):
        """Logits [S, B, K]: S dropout masks (MC dropout) or the M networks (ensemble)."""
        if not self.mc_dropout:
            return tf.stack([network(x, training=False) for network in self.networks])
        return tiled_logits(self.networks[0], x, num_samples)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "networks": [keras.saving.serialize_keras_object(n) for n in self.networks],
                "mc_dropout": self.mc_dropout,
                "default_num_samples": self.default_num_samples,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["networks"] = [keras.saving.deserialize_keras_object(n) for n in config["networks"]]
        return cls(**config)


def mc_dropout(network, num_samples=100, **kwargs):
    """MC dropout of any trained Keras classifier (logits out) with dropout layers.

    ``predictive(x, num_samples)`` draws S masks per example (default ``num_samples``) with
    batch normalisation in inference mode; see the module doc.
    """
    return SampledNetworks([network], mc_dropout=True, default_num_samples=num_samples, **kwargs)


def ensemble(networks, **kwargs):
    """The M-component mixture of trained Keras classifiers (logits out), [M, B, K]."""
    return SampledNetworks(networks, mc_dropout=False, **kwargs)
