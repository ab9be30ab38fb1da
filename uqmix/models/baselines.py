"""Finite-mixture baselines on the mixture's backbone (``backbones.mlp``: 2×128 ReLU, K logits).

* ``Deterministic``: one network with L2 weight decay; its predictive is the
  S = 1 mixture (``num_samples`` is ignored).
* ``MCDropout``: dropout p = 0.5 after every hidden layer, kept on at test
  time; S masks per example, vectorised.
* ``DeepEnsemble``: M = 5 independently initialised networks, trained
  together (vectorised) on the same mini-batches; the predictive is the
  M-component mixture (``num_samples`` is ignored).

Weight decay convention (all three): ``weight_decay`` = w is Keras'
``L2(w)`` on every kernel (not on biases), i.e. the per-batch loss is

    mean_b CE_b + w · Σ_layers ‖W‖²_F,

so w = 1/N (1/60000 on MNIST, the default of ``Deterministic``) is MAP
estimation with a N(0, ½) prior on every weight: N·loss = −log p(y|x,W) +
Σ W² = −log p(y|x,W) − log N(W; 0, ½) + const.

Training (``fit``) reports ``loss``, ``nll`` (the data term), ``weight_decay``
(the L2 term) and ``accuracy`` of the mean prediction, with per-example
losses averaged over the global batch (``uqmix.models.sampled_training``).
"""

import keras
import tensorflow as tf

from uqmix.models.backbones import mlp
from uqmix.models.base import PredictiveModelMixin
from uqmix.models.sampled_training import SampledTrainingMixin

MNIST_WEIGHT_DECAY = 1.0 / 60000


def _check_positive_int(value, name):
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    return int(value)


def _per_example_cross_entropy(labels, logits):
    """Σ_s CE(y_b, logits_sb) per example, [B], from logits [S, B, K] (S networks or masks)."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = labels[:, 0]
    labels = tf.broadcast_to(tf.cast(labels, tf.int32)[None], tf.shape(logits)[:-1])
    return tf.reduce_sum(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), axis=0
    )


class _MLPBaseline(SampledTrainingMixin, PredictiveModelMixin, keras.Model):
    """Shared constructor/validation/config of the baselines (not registered itself)."""

    regularizer_metric_name = "weight_decay"

    def __init__(
        self,
        input_shape=(28, 28),
        num_classes=10,
        hidden_units=(128, 128),
        weight_decay=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.backbone_input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.hidden_units = tuple(int(h) for h in hidden_units)
        self.weight_decay = float(weight_decay)
        self._make_trackers()

    def _network(self, name, dropout_rate=0.0):
        return mlp(
            self.backbone_input_shape,
            self.num_classes,
            hidden_units=self.hidden_units,
            dropout_rate=dropout_rate,
            weight_decay=self.weight_decay,
            name=name,
        )

    def per_example_data_loss(self, labels, logits):
        return _per_example_cross_entropy(labels, logits)

    def regularization_loss(self):
        penalties = self.losses
        term = tf.add_n(penalties) if penalties else tf.constant(0.0)
        return term, term

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=list(self.backbone_input_shape),
            num_classes=self.num_classes,
            hidden_units=list(self.hidden_units),
            weight_decay=self.weight_decay,
        )
        return config


@keras.saving.register_keras_serializable(package="uqmix")
class Deterministic(_MLPBaseline):
    """One MLP, cross-entropy + L2 weight decay w (default 1/60000; see the module doc)."""

    def __init__(
        self,
        input_shape=(28, 28),
        num_classes=10,
        hidden_units=(128, 128),
        weight_decay=MNIST_WEIGHT_DECAY,
        **kwargs,
    ):
        kwargs.setdefault("name", "deterministic")
        super().__init__(input_shape, num_classes, hidden_units, weight_decay, **kwargs)
        self.network = self._network("network")
        self.built = True  # the functional network owns all weights

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def training_logits(self, x, training):
        return self(x, training=training)[None]

    def predictive_parameters(self, x, num_samples, training=False):
        """Logits [1, B, K]: a deterministic net is the one-component mixture."""
        return self(x, training=False)[None]


@keras.saving.register_keras_serializable(package="uqmix")
class MCDropout(_MLPBaseline):
    """MLP with dropout p after every hidden layer, kept on for ``predictive``.

    ``predictive(x, S)`` draws S dropout masks per example in one pass: the
    layers before the first dropout are deterministic, so they run once and
    their output is tiled S times (the batch becomes S·B rows).
    """

    default_num_samples = 100

    def __init__(
        self,
        input_shape=(28, 28),
        num_classes=10,
        hidden_units=(128, 128),
        dropout_rate=0.5,
        weight_decay=0.0,
        **kwargs,
    ):
        kwargs.setdefault("name", "mc_dropout")
        super().__init__(input_shape, num_classes, hidden_units, weight_decay, **kwargs)
        if not 0.0 < dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in (0, 1), got {dropout_rate}.")
        self.dropout_rate = float(dropout_rate)
        self.network = self._network("network", dropout_rate=self.dropout_rate)
        self.built = True

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def training_logits(self, x, training):
        return self(x, training=training)[None]

    def predictive_parameters(self, x, num_samples, training=False):
        """Logits [S, B, K] of S independent dropout masks per example."""
        layers = self.network.layers[1:]  # skip the InputLayer
        first_dropout = next(
            i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Dropout)
        )
        h = x
        for layer in layers[:first_dropout]:
            h = layer(h)
        batch = tf.shape(h)[0]
        h = tf.reshape(tf.tile(h[None], tf.stack([num_samples, 1, 1])), [-1, h.shape[-1]])
        for layer in layers[first_dropout:]:
            h = layer(h, training=True) if isinstance(layer, keras.layers.Dropout) else layer(h)
        return tf.reshape(h, tf.stack([num_samples, batch, self.num_classes]))

    def get_config(self):
        config = super().get_config()
        config.update(dropout_rate=self.dropout_rate)
        return config


@keras.saving.register_keras_serializable(package="uqmix")
class DeepEnsemble(_MLPBaseline):
    """M independently initialised MLPs trained side by side.

    Every step feeds the same mini-batch to all members and minimises
    Σ_m [mean_b CE_m,b + w Σ‖W_m‖²]: the members share no parameters, so each
    one receives exactly the gradient of its own loss (the same as training
    them one after another on the same batch sequence) while the step runs
    as one graph.  ``nll`` reports Σ_m of the members' mean cross-entropies.
    """

    def __init__(
        self,
        input_shape=(28, 28),
        num_classes=10,
        hidden_units=(128, 128),
        num_members=5,
        weight_decay=0.0,
        **kwargs,
    ):
        kwargs.setdefault("name", "deep_ensemble")
        super().__init__(input_shape, num_classes, hidden_units, weight_decay, **kwargs)
        self.num_members = _check_positive_int(num_members, "num_members")
        self.members = [self._network(f"member_{m}") for m in range(self.num_members)]
        self.built = True

    def call(self, inputs, training=None):
        """Logits of every member, [M, B, K]."""
        return tf.stack([member(inputs, training=training) for member in self.members])

    def training_logits(self, x, training):
        return self(x, training=training)

    def predictive_parameters(self, x, num_samples, training=False):
        """Logits [M, B, K]: the ensemble is the M-component mixture (num_samples is ignored)."""
        return self(x, training=False)

    def get_config(self):
        config = super().get_config()
        config.update(num_members=self.num_members)
        return config
