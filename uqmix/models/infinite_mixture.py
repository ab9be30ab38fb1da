"""``InfiniteMixture``: an MLP of ``MatrixNormalDense`` layers trained by ML or VI.

The weights θ of every layer follow q(θ) = MN(M, diag u, diag v); the model is
the infinite mixture p(y | x) = ∫ p(y | x, θ) q(θ) dθ.  Per mini-batch of B
examples with S = ``num_train_samples`` weight samples (DESIGN.md):

* ``objective="vi"`` (ELBO):  loss = mean_b[−(1/S) Σ_s ℓ_bs] + (λ/N)·KL
* ``objective="ml"``:         loss = mean_b[−logsumexp_s ℓ_bs + log S] + (λ/N)·KL

with ℓ_bs = log p(y_b | x_b, θ_s), KL = Σ_layers KL(q ‖ MN(0, σ²I, I)),
λ = ``kl_weight``, N = ``dataset_size``.  ``fit`` reports ``loss``, ``nll``
(the data term), ``kl`` (Σ_layers KL, unweighted) and ``accuracy`` of the
S-sample mean prediction; the step is written for ``tf.distribute`` (see
``uqmix.models.sampled_training``).

``predictive(x, num_samples=100)`` returns a ``SampledPredictive`` of S
weight samples, vectorised: the input layer computes a·M and a²·u once per
example and draws only noise per sample (local reparameterisation).
"""

import math

import keras
import tensorflow as tf

from uqmix import layers as uqmix_layers
from uqmix.gaussian_noise import stateless_seed
from uqmix.layers import SAMPLING_MODES, MatrixNormalDense
from uqmix.models.base import PredictiveModelMixin
from uqmix.models.mixture_model import MixtureObjectiveMixin, check_num_train_samples
from uqmix.objectives import mixture_losses


def _xla_noise(shape, seed):
    """The layers' XLA noise generator (looked up at call time, so benchmarks can swap it)."""
    return uqmix_layers._xla_noise_generator(shape, seed, tf.float32)


@keras.saving.register_keras_serializable(package="uqmix")
class InfiniteMixture(MixtureObjectiveMixin, PredictiveModelMixin, keras.Model):
    """Flatten → [MatrixNormalDense(h, ReLU)] × len(hidden_units) → MatrixNormalDense(K).

    num_classes: K (10).
    hidden_units: widths of the hidden layers ((128, 128)).
    objective: "ml" or "vi".
    num_train_samples: S weight samples per training / evaluation step (5).
    kl_weight: λ ≥ 0 (1 = exact VI).
    dataset_size: N, the number of training examples (60,000 for MNIST).
    prior_variance: σ² > 0 of the prior MN(0, σ²I, I) of every layer.
    sampling: sampling mode for training and ``evaluate``.
    predictive_sampling: sampling mode of ``predictive`` (default local
      reparameterisation, the faster one on CPU; see bench/predict.py).
    seed: int; layer i's SeedGenerator starts from seed + i (None: from
      Keras' global seed).
    jit_sampling: draw the noise of all layers (local reparameterisation) in
      one XLA kernel per call, split over the layers (with shared weights:
      one XLA kernel per layer, ``MatrixNormalDense``), and run each graph-mode
      training step as that noise kernel followed by the forward and backward
      pass as one XLA program fed the noise (``step_noise``): the fast setting
      for long training runs and large evaluations on CPU; off by default
      because each new input shape costs an XLA compilation.
    """

    default_num_samples = 100

    def __init__(
        self,
        num_classes=10,
        hidden_units=(128, 128),
        objective="ml",
        num_train_samples=5,
        kl_weight=1.0,
        dataset_size=60000,
        prior_variance=1.0,
        sampling="local_reparameterization",
        predictive_sampling="local_reparameterization",
        seed=None,
        jit_sampling=False,
        **kwargs,
    ):
        kwargs.setdefault("name", "infinite_mixture")
        super().__init__(**kwargs)
        self._convert_input_args = False  # noise= stays float32 (see MatrixNormalDense)
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}.")
        hidden_units = tuple(int(h) for h in hidden_units)
        if any(h < 1 for h in hidden_units):
            raise ValueError(f"hidden_units must be positive, got {hidden_units}.")
        check_num_train_samples(num_train_samples)
        mixture_losses.check_objective(objective)
        mixture_losses.check_kl_scale(kl_weight, dataset_size)
        if not (
            isinstance(prior_variance, (int, float))
            and math.isfinite(prior_variance)
            and prior_variance > 0
        ):
            raise ValueError(
                f"prior_variance (σ²) must be a finite number > 0, got {prior_variance}."
            )
        for name, mode in (("sampling", sampling), ("predictive_sampling", predictive_sampling)):
            if mode not in SAMPLING_MODES:
                raise ValueError(f"{name} must be one of {SAMPLING_MODES}, got {mode!r}.")
        self.num_classes = int(num_classes)
        self.hidden_units = hidden_units
        self.objective = objective
        self.num_train_samples = int(num_train_samples)
        self.kl_weight = float(kl_weight)
        self.dataset_size = int(dataset_size)
        self.prior_variance = float(prior_variance)
        self.sampling = sampling
        self.predictive_sampling = predictive_sampling
        self.seed = None if seed is None else int(seed)
        self.jit_sampling = bool(jit_sampling)
        widths = hidden_units + (self.num_classes,)
        self.flatten = keras.layers.Flatten()
        self.dense_layers = [
            MatrixNormalDense(
                units,
                prior_variance=self.prior_variance,
                sampling=sampling,
                activation="relu" if i < len(hidden_units) else None,
                kernel_initializer="he_normal" if i < len(hidden_units) else "glorot_normal",
                seed=None if seed is None else self.seed + i,
                jit_sampling=self.jit_sampling,
                name=f"hidden_{i}" if i < len(hidden_units) else "logits",
            )
            for i, units in enumerate(widths)
        ]
        self._account_for_kl()
        self._make_trackers()

    def build(self, input_shape):
        features = math.prod(input_shape[1:])
        shape = (None, features)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = (None, layer.units)

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(uqmix_layers.convert_inputs_only(self, inputs), *args, **kwargs)

    def call(self, inputs, num_samples=None, sampling=None, training=None, noise=None):
        """Logits: [B, K] for one sample per example, [S, B, K] with ``num_samples=S``.

        noise: optional N(0, 1) values of every layer's pre-activations, flat (local
        reparameterisation; ``step_noise``), split over the layers in order.
        """
        h = self.flatten(inputs)
        batch_size = tf.shape(h)[0]
        if noise is None and self._draws_one_noise(sampling):
            noise = self._flat_noise(batch_size, num_samples)
        if noise is None:  # each layer draws its own
            noise = [None] * len(self.dense_layers)
        else:
            noise = self._split_noise(noise, batch_size, num_samples, sampling)
        h = self.dense_layers[0](h, num_samples=num_samples, sampling=sampling, noise=noise[0])
        for layer, layer_noise in zip(self.dense_layers[1:], noise[1:]):
            h = layer(h, sampling=sampling, noise=layer_noise)
        return h

    def _draws_one_noise(self, sampling):
        mode = self.sampling if sampling is None else sampling
        return self.jit_sampling and mode == "local_reparameterization"

    def _noise_sizes(self, batch_size, num_samples):
        rows = batch_size if num_samples is None else batch_size * num_samples
        return [rows * layer.units for layer in self.dense_layers]

    def _flat_noise(self, batch_size, num_samples):
        """With ``jit_sampling`` and local reparameterisation: the N(0, 1) noise of every
        layer from ONE draw (one XLA kernel, seeded by the first layer's generator), flat;
        ``_split_noise`` cuts it into the layers' [rows · width] parts — inside a jit-compiled
        step one RNG call costs about a third of one per layer (bench/RESULTS.md, issue 16)."""
        size = tf.add_n(self._noise_sizes(batch_size, num_samples))
        return _xla_noise(
            tf.reshape(size, [1]), stateless_seed(self.dense_layers[0].seed_generator)
        )

    def _split_noise(self, noise, batch_size, num_samples, sampling):
        if not self._draws_one_noise(sampling):
            raise ValueError("noise= needs jit_sampling=True and local_reparameterization.")
        noise = tf.stop_gradient(tf.reshape(noise, [-1]))  # data: no gradient flows into it
        return tf.split(noise, self._noise_sizes(batch_size, num_samples))

    def step_noise(self, x):
        """With ``jit_sampling`` and local reparameterisation: a training step's noise, drawn
        as its own XLA kernel before the step's compiled forward/backward program
        (``SampledTrainingMixin``); otherwise None."""
        if not self._draws_one_noise(None):
            return None
        return self._flat_noise(tf.shape(x)[0], self.num_train_samples)

    # -- objective (``MixtureObjectiveMixin``, shared with ``MixtureModel``) ----
    def stochastic_layers(self):
        return list(self.dense_layers)

    def kl_coefficient(self):
        """λ/N."""
        return mixture_losses.kl_term(1.0, self.kl_weight, self.dataset_size)

    def weight_variances(self):
        """Per layer name, Var[W_ij] = u_i v_j, [d + 1, c] (last row: biases)."""
        return {layer.name: layer.weight_variance() for layer in self.dense_layers}

    def training_logits(self, x, training, noise=None):
        return self(x, num_samples=self.num_train_samples, training=training, noise=noise)

    # -- prediction --------------------------------------------------------
    def predictive_parameters(self, x, num_samples, training=False):
        """Logits [S, B, K] of S weight samples per example (one vectorised pass)."""
        return self(x, num_samples=num_samples, sampling=self.predictive_sampling)

    def _prediction_parameters(self, x, num_samples):
        """``predictive``'s batches: with ``jit_sampling`` and local reparameterisation, outside
        XLA, the noise as its own XLA kernel and then the forward pass as one XLA program fed
        that noise — the training step's split (``step_noise``), the same numbers as drawing
        inside the forward pass.  Not used by the attacks, which differentiate the forward pass
        (XLA cannot compile the gradient of a nested XLA call inside the XLA attack loops)."""
        sampling = self.predictive_sampling
        if not self._draws_one_noise(sampling) or self._predictive_jit_compile():
            return self.predictive_parameters(x, num_samples)
        noise = self._flat_noise(tf.shape(x)[0], num_samples)
        forward = tf.function(
            lambda x, noise: self(x, num_samples=num_samples, sampling=sampling, noise=noise),
            jit_compile=True,
        )
        return forward(x, noise)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            hidden_units=list(self.hidden_units),
            objective=self.objective,
            num_train_samples=self.num_train_samples,
            kl_weight=self.kl_weight,
            dataset_size=self.dataset_size,
            prior_variance=self.prior_variance,
            sampling=self.sampling,
            predictive_sampling=self.predictive_sampling,
            seed=self.seed,
            jit_sampling=self.jit_sampling,
        )
        return config
