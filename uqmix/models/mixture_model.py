"""``MixtureModel``: any Keras classifier with uqmix layers and/or dropout, trained by ML or VI.

``MixtureModel(network, objective, num_train_samples=S, kl_weight=λ/N)`` wraps a Keras 3
model (Sequential, functional — conv, residual, branching —, or subclassed) from inputs to
logits whose randomness comes from ``MatrixNormalDense`` layers (local reparameterisation)
and/or dropout.  Per mini-batch of B examples (DESIGN.md, "Mixture objectives"):

* ``objective="vi"`` (ELBO):  loss = mean_b[−(1/S) Σ_s ℓ_bs] + w·KL + Σ network.losses
* ``objective="ml"``:         loss = mean_b[−logsumexp_s ℓ_bs + log S] + w·KL + Σ network.losses

with ℓ_bs = log p(y_b | x_b, θ_s), KL = Σ over the network's ``MatrixNormalDense`` layers of
KL(q ‖ p), w = ``kl_weight`` (λ/N; 1/N is exact VI), and ``network.losses`` any other
regularisation (e.g. Keras kernel regularizers).  The S samples are vectorised by tiling the
batch: one network call on [S·B] rows, reshaped to [S, B, K] (``tiled_logits``).

Modes: ``fit`` calls the network with ``training=True`` (dropout samples, batch norm uses
and updates batch statistics — of the tiled batch, which equal the batch's);  ``evaluate``
and ``predictive(x, num_samples)`` call it in inference mode with the dropout layers still
sampling (``uqmix.models.sampled_networks.dropout_sampling``).

The objective is shared with ``InfiniteMixture`` through ``MixtureObjectiveMixin`` (one
implementation: ``uqmix.objectives.mixture_losses``); the step is written for
``tf.distribute`` (``uqmix.models.sampled_training``).
"""

import math

import keras
import tensorflow as tf

from uqmix.layers import MatrixNormalDense
from uqmix.models.base import PredictiveModelMixin
from uqmix.models.sampled_networks import dropout_layers, sublayers, tiled_logits
from uqmix.models.sampled_training import SampledTrainingMixin
from uqmix.objectives import mixture_losses


def check_num_train_samples(num_train_samples):
    if int(num_train_samples) != num_train_samples or num_train_samples < 1:
        raise ValueError(f"num_train_samples (S) must be an integer >= 1, got {num_train_samples}.")
    return int(num_train_samples)


class MixtureObjectiveMixin(SampledTrainingMixin):
    """The ML / VI objective of an infinite mixture, for models with logits [S, B, K].

    A model implements ``stochastic_layers()`` (its ``MatrixNormalDense`` layers),
    ``kl_coefficient()`` (the factor w of the KL: λ/N) and ``training_logits``; it sets
    ``self.objective``.  Per step: data term ``mixture_losses.per_example_nll`` per example,
    regularizer w·KL + Σ self.losses, reported regularizer the unweighted KL.
    """

    regularizer_metric_name = "kl"

    def stochastic_layers(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def kl_coefficient(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _account_for_kl(self):
        """Tells every stochastic layer that this model adds its KL (see ``MatrixNormalDense``)."""
        for layer in self.stochastic_layers():
            layer.mark_kl_accounted(self.name)

    def kl_divergence(self):
        """Σ over the stochastic layers of KL(q(W) ‖ p(W)) (closed form); 0 without any."""
        layers = self.stochastic_layers()
        if not layers:
            return tf.constant(0.0)
        return tf.add_n([layer.kl_divergence() for layer in layers])

    def per_example_data_loss(self, labels, logits):
        log_likelihoods = mixture_losses.sample_log_likelihoods(labels, logits)
        return mixture_losses.per_example_nll(log_likelihoods, self.objective)

    def regularization_loss(self):
        kl = self.kl_divergence()
        term = self.kl_coefficient() * kl
        if self.losses:
            term = term + tf.add_n([tf.cast(loss, term.dtype) for loss in self.losses])
        return term, kl


@keras.saving.register_keras_serializable(package="uqmix")
class MixtureModel(MixtureObjectiveMixin, PredictiveModelMixin, keras.Model):
    """A Keras network trained as an infinite mixture with the ML or VI objective.

    network: a Keras model from inputs to logits [B, K] with ``MatrixNormalDense`` layers
      (``sampling="local_reparameterization"``, ``kl_weight`` unset) and/or dropout.
    objective: "ml" or "vi".
    num_train_samples: S samples per training / evaluation step (5).
    kl_weight: w = λ/N, the factor of the KL (required when the network has
      ``MatrixNormalDense`` layers; 1/N is exact VI for N training examples).
    default_num_samples: S of ``predictive`` when not given (100).
    """

    def __init__(
        self,
        network,
        objective="ml",
        num_train_samples=5,
        kl_weight=None,
        default_num_samples=100,
        **kwargs,
    ):
        kwargs.setdefault("name", "mixture_model")
        super().__init__(**kwargs)
        if not isinstance(network, keras.Model):
            raise ValueError(
                "MixtureModel(network): network must be a Keras model from inputs "
                f"to logits, got {type(network).__name__}."
            )
        self.network = network
        self.objective = mixture_losses.check_objective(objective)
        self.num_train_samples = check_num_train_samples(num_train_samples)
        self.default_num_samples = check_num_train_samples(default_num_samples)
        layers = self.stochastic_layers()
        if kl_weight is None and layers:
            raise ValueError(
                f"MixtureModel: network {network.name!r} has {len(layers)} MatrixNormalDense "
                "layer(s); pass kl_weight = lambda/N (e.g. 1/N for exact VI with N training "
                "examples, 0 to train without the KL)."
            )
        if kl_weight is not None and not (
            isinstance(kl_weight, (int, float)) and math.isfinite(kl_weight) and kl_weight >= 0
        ):
            raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight}.")
        shared = [layer.name for layer in layers if layer.sampling != "local_reparameterization"]
        if shared:
            raise ValueError(
                f"MixtureModel tiles the batch, which needs independent noise per row: layers "
                f"{shared} use sampling='shared_weights'; construct them with "
                "sampling='local_reparameterization' (the default)."
            )
        if not layers and not dropout_layers(network):
            raise ValueError(
                f"MixtureModel: network {network.name!r} has no randomness (no MatrixNormalDense "
                "and no dropout layer), so its S samples would be identical; add one, or use "
                "uqmix.models.ensemble([network]) for a deterministic predictive."
            )
        self.kl_weight = 0.0 if kl_weight is None else float(kl_weight)
        self._account_for_kl()
        self._make_trackers()
        self.built = network.built

    def build(self, input_shape):
        if not self.network.built:
            self.network.build(input_shape)
        self.built = True

    # -- the mixture objective ----------------------------------------------
    def stochastic_layers(self):
        return [layer for layer in sublayers(self.network) if isinstance(layer, MatrixNormalDense)]

    def kl_coefficient(self):
        return self.kl_weight

    def call(self, inputs, training=None):
        """One sample: the network's logits [B, K] (dropout samples only when training)."""
        return self.network(inputs, training=training)

    def sampled_logits(self, x, num_samples, training=False):
        """Logits [S, B, K] of S samples, one network call on the tiled batch.

        training=True: the network's training mode (``fit``); False: inference mode with the
        dropout layers sampling (``evaluate``, ``predictive``).
        """
        return tiled_logits(
            self.network, x, num_samples, training=training, sample_dropout=not training
        )

    def training_logits(self, x, training):
        return self.sampled_logits(x, self.num_train_samples, training=training)

    def predictive_parameters(self, x, num_samples, training=False):
        """Logits [S, B, K] of S samples per example (one vectorised call)."""
        return self.sampled_logits(x, num_samples, training=False)

    def get_config(self):
        config = super().get_config()
        config.update(
            network=keras.saving.serialize_keras_object(self.network),
            objective=self.objective,
            num_train_samples=self.num_train_samples,
            kl_weight=self.kl_weight,
            default_num_samples=self.default_num_samples,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
