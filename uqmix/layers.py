"""``MatrixNormalDense``: a dense layer whose weights are matrix-normal.

Weights W, r × c with r = d + 1: the bias is folded in as the last row (its
input is the constant 1), so it is part of the matrix-normal and of the KL:

    q(W) = MN(M, diag u, diag v),   i.e.  W_ij ~ N(M_ij, u_i · v_j)  independently,
    p(W) = MN(0, σ² I_r, I_c)       (σ² = ``prior_variance``).

Stored: ``mean`` M [d + 1, c] (first d rows He/Glorot normal, bias row
zeros), ``log_row_variance`` log u [d + 1] (the last entry is the bias
row's) and ``log_column_variance`` log v [c], both initialised to −3.

Sampling modes (``sampling=``):

* ``"local_reparameterization"`` (default): for an input row a (with the
  folded 1) the pre-activation is sampled directly,

      b_j = a·M_:j + sqrt(s) · sqrt(v_j) · ε_j,   s = a²·u + 1e−8,   ε ~ N(0, I),

  one ε per example and unit.  This is exactly the distribution of a·W for
  W ~ q: Var[b_j] = Σ_i a_i² u_i v_j is the rank-1 product s·v_j (one
  matrix-vector product a²·u, no second matmul).  DESIGN.md writes the guard
  as sqrt((a²u)v + 1e−8); it is added to the row factor s instead, which
  keeps the standard deviation the outer product sqrt(s)·sqrt(v) (the two
  differ by 1e−8·(v_j − 1) in the variance, below float32 resolution of any
  variance this layer produces, and s ≥ u_bias > 0 anyway).
* ``"shared_weights"``: S weight matrices W_s ~ q are drawn, each shared by
  the whole batch (the literal S-component mixture).

Shapes: ``layer(a)`` with a [..., d] returns one sample [..., c] (a fresh
draw per row with local reparameterisation; one W for the batch with shared
weights).  ``layer(a, num_samples=S)`` with a shared input a [B, d] returns
S samples [S, B, c]: with local reparameterisation a·M and a²·u are computed
once and only the noise is drawn per sample, so the S samples of an input
layer cost one matmul, and every (s, b) still has exactly the distribution
of an independent weight draw.  A rank-3 input [S, B, d] holds per-sample
inputs (the outputs of an earlier sampled layer): local reparameterisation
treats every row independently; shared weights draw one W_s per leading
index s.

KL in any Keras model (the TFP / edward2 convention): with ``kl_weight=w``
every call adds w · KL(q ‖ p) to ``layer.losses``, so a Sequential /
functional / subclassed model trained with ``compile`` + ``fit`` minimises
the one-sample ELBO (w = λ/N: 1/N is exact VI for N training examples).
Without ``kl_weight`` the KL must be accounted for by a model that owns the
objective (``uqmix.models.MixtureModel`` / ``InfiniteMixture``, which call
``mark_kl_accounted``); a training call (``training=True``) of a layer whose
KL nobody accounts for raises ``UnaccountedKLError`` naming both fixes, so
such a network never trains silently without its KL term.

Noise: Box–Muller on Philox uniforms (ThreeFry inside the XLA kernel of ``jit_sampling``)
(``uqmix.gaussian_noise``) seeded from the layer's own
``keras.random.SeedGenerator``; the generator's state is saved with the
weights, so a reloaded layer continues the same stream.
"""

import math
import random

import keras
import tensorflow as tf

from uqmix.distributions import DiagonalMatrixNormal, isotropic_matrix_normal_prior, tfd
from uqmix.gaussian_noise import box_muller, standard_normal_xla, stateless_seed

SAMPLING_MODES = ("local_reparameterization", "shared_weights")
VARIANCE_FLOOR = 1e-8  # added to the row factor a²·u of the local-reparameterisation variance
_SEED_STATE_KEY = "seed_generator_state"


class UnaccountedKLError(ValueError):
    """A ``MatrixNormalDense`` trains while no objective includes its KL term."""


_UNACCOUNTED_KL_MESSAGE = (
    "MatrixNormalDense layer {name!r} is being trained (training=True) but no objective "
    "includes its KL(q || p) term, so neither the ML nor the VI objective would be trained. "
    "Fix: either construct the layer with kl_weight=w (e.g. w = 1/N for N training examples; "
    "it then adds w * KL to layer.losses, which compile/fit minimise), or wrap the network in "
    "uqmix.models.MixtureModel(network, objective='ml' or 'vi', kl_weight=lambda/N), which "
    "trains the mixture objective with the KL term."
)


LOW_PRECISION = (tf.float16, tf.bfloat16)


def full_precision(tensor):
    """``tensor`` cast to float32 when it is float16 / bfloat16 (mixed precision), else as is.

    Variances, noise, KL, losses and uncertainty measures are computed in full precision;
    only the matmuls run in the policy's low-precision compute dtype.
    """
    tensor = tf.convert_to_tensor(tensor)
    return tf.cast(tensor, tf.float32) if tensor.dtype in LOW_PRECISION else tensor


# The layers' noise generators, plain TF ops or one XLA kernel (module globals
# so that bench/mixture_step.py can swap them to attribute the step's time).
_noise_generator = box_muller
_xla_noise_generator = standard_normal_xla


def _local_reparameterization_sample(
    mean, inputs, log_row_variance, log_column_variance, noise_shape, seed, noise_generator
):
    """mean + sqrt(a²·u + δ) ⊗ sqrt(v) ⊙ z, z ~ N(0, I) of ``noise_shape``.

    mean: a·M [N, c]; inputs: a [N, d] (without the folded 1); noise_shape:
    [N, c], or [S, N, c] for S samples sharing the input (mean and the
    standard deviation broadcast over S).
    """
    u = tf.exp(log_row_variance)
    row_factor = tf.sqrt(tf.linalg.matvec(tf.square(inputs), u[:-1]) + (u[-1] + VARIANCE_FLOOR))
    std = row_factor[:, None] * tf.exp(0.5 * log_column_variance)[None, :]
    return mean + std * noise_generator(noise_shape, seed, mean.dtype)


def convert_inputs_only(layer, inputs):
    """The inputs as Keras' ``__call__`` would convert them (tensor, compute dtype under mixed
    precision), for layers that set ``_convert_input_args = False`` so that Keras leaves their
    float keyword arguments (``noise=``) in full precision."""
    return layer.dtype_policy.convert_input(inputs, layer.autocast, layer.input_dtype)


def _given_noise(noise):
    """A noise generator (shape, seed, dtype) ↦ the given values reshaped to ``shape``."""

    def generator(shape, seed, dtype):
        return tf.reshape(tf.cast(noise, dtype), shape)

    return generator


def _weight_draws(mean, log_row_variance, log_column_variance, num_draws, seed, noise_generator):
    """S weight matrices W_s = M + sqrt(u) ⊗ sqrt(v) ⊙ Z_s, [S, d + 1, c]."""
    std = tf.exp(0.5 * (log_row_variance[:, None] + log_column_variance[None, :]))
    shape = tf.concat([tf.reshape(num_draws, [1]), tf.shape(mean)], axis=0)
    return mean + std * noise_generator(shape, seed, mean.dtype)


def _check_sampling(sampling):
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}.")
    return sampling


def _check_num_samples(num_samples):
    if num_samples is None or isinstance(num_samples, (tf.Tensor, tf.Variable)):
        return num_samples
    if int(num_samples) != num_samples or int(num_samples) < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}.")
    return int(num_samples)


class _FoldedMeanInitializer:
    """M's initial value: ``kernel_initializer`` for the d weight rows, zeros for the bias row."""

    def __init__(self, kernel_initializer):
        self.kernel_initializer = kernel_initializer

    def __call__(self, shape, dtype=None):
        kernel = self.kernel_initializer((shape[0] - 1, shape[1]), dtype=dtype)
        return tf.concat([kernel, tf.zeros((1, shape[1]), dtype=kernel.dtype)], axis=0)


@keras.saving.register_keras_serializable(package="uqmix")
class MatrixNormalDense(keras.layers.Layer):
    """Dense layer with q(W) = MN(M, diag u, diag v) and prior MN(0, σ²I, I).

    units: c, the number of outputs.
    prior_variance: σ² > 0 of the prior.
    sampling: default sampling mode, "local_reparameterization" or
      "shared_weights"; ``call(..., sampling=...)`` overrides it per call.
    activation: applied to the sampled pre-activations.
    kernel_initializer: for M's first d rows ("he_normal" suits ReLU layers,
      "glorot_normal" the output layer); the bias row starts at 0.
    initial_log_variance: initial log u_i and log v_j (−3).
    kl_weight: w ≥ 0: every call adds w · KL(q ‖ p) to ``layer.losses``
      (None: the KL is left to a wrapping model, see the module doc).
    seed: int seed of the layer's SeedGenerator (None: drawn from Python's
      RNG, so ``keras.utils.set_random_seed`` makes it reproducible).
    jit_sampling: generate the noise with one XLA kernel per call (about
      half the cost of the noise on CPU, see bench/mixture_step.py) instead of a
      few TF ops; XLA compiles it once per noise shape (about 1 s each on CPU),
      so it is off by default.  Same law either way, different numbers (the
      XLA kernel draws ThreeFry uniforms, the TF ops Philox).
    """

    def __init__(
        self,
        units,
        prior_variance=1.0,
        sampling="local_reparameterization",
        activation=None,
        kernel_initializer="he_normal",
        initial_log_variance=-3.0,
        seed=None,
        jit_sampling=False,
        kl_weight=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Keras casts every float argument of __call__, noise= included, to the compute dtype
        # (bfloat16 under mixed precision): only the inputs are converted (``__call__``), so
        # given noise stays in full precision.
        self._convert_input_args = False
        if kl_weight is not None and not (
            isinstance(kl_weight, (int, float)) and math.isfinite(kl_weight) and kl_weight >= 0
        ):
            raise ValueError(f"kl_weight must be None or a finite number >= 0, got {kl_weight}.")
        if int(units) != units or units < 1:
            raise ValueError(f"units must be a positive integer, got {units}.")
        if not (
            isinstance(prior_variance, (int, float))
            and math.isfinite(prior_variance)
            and prior_variance > 0
        ):
            raise ValueError(f"prior_variance must be a finite number > 0, got {prior_variance}.")
        if not math.isfinite(initial_log_variance):
            raise ValueError(f"initial_log_variance must be finite, got {initial_log_variance}.")
        self.units = int(units)
        self.prior_variance = float(prior_variance)
        self.sampling = _check_sampling(sampling)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.initial_log_variance = float(initial_log_variance)
        self.seed = random.randint(1, 2**30) if seed is None else int(seed)
        self.jit_sampling = bool(jit_sampling)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.kl_weight = None if kl_weight is None else float(kl_weight)
        self._kl_accounted_by = None

    def mark_kl_accounted(self, owner):
        """Declares that ``owner`` (a model's name) adds this layer's KL to its objective."""
        if self.kl_weight is not None:
            raise ValueError(
                f"MatrixNormalDense layer {self.name!r} has its own kl_weight={self.kl_weight} and "
                f"{owner!r} also adds its KL: the KL would count twice. Leave the layer's "
                "kl_weight unset (None) and give the KL weight to the wrapping model."
            )
        self._kl_accounted_by = owner

    @property
    def kl_accounted(self):
        """True when ``kl_weight`` is set or a wrapping model adds the KL to its objective."""
        return self.kl_weight is not None or self._kl_accounted_by is not None

    # -- state -------------------------------------------------------------
    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"The last input axis must be known, got input shape {input_shape}.")
        self.mean = self.add_weight(
            name="mean",
            shape=(input_dim + 1, self.units),
            initializer=_FoldedMeanInitializer(self.kernel_initializer),
        )
        log_var_init = keras.initializers.Constant(self.initial_log_variance)
        self.log_row_variance = self.add_weight(
            name="log_row_variance", shape=(input_dim + 1,), initializer=log_var_init
        )
        self.log_column_variance = self.add_weight(
            name="log_column_variance", shape=(self.units,), initializer=log_var_init
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[_SEED_STATE_KEY] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        weights = {k: store[k] for k in keys if k != _SEED_STATE_KEY}
        super().load_own_variables(weights)
        if _SEED_STATE_KEY in keys:
            self.seed_generator.state.assign(store[_SEED_STATE_KEY])

    # -- parameters and distributions ----------------------------------------
    @property
    def kernel_mean(self):
        """M's first d rows, [d, c]."""
        return self.mean[:-1]

    @property
    def bias_mean(self):
        """M's last row, [c]."""
        return self.mean[-1]

    def row_variance(self):
        """u, [d + 1] (the last entry belongs to the bias row)."""
        return tf.exp(self.log_row_variance)

    def column_variance(self):
        """v, [c]."""
        return tf.exp(self.log_column_variance)

    def weight_variance(self):
        """Var[W_ij] = u_i · v_j, [d + 1, c] (the last row: the biases)."""
        return tf.exp(self.log_row_variance[:, None] + self.log_column_variance[None, :])

    def posterior(self):
        """q(W) = MN(M, diag u, diag v) as a ``DiagonalMatrixNormal``."""
        return DiagonalMatrixNormal(self.mean, self.log_row_variance, self.log_column_variance)

    def prior(self):
        """p(W) = MN(0, σ² I, I)."""
        rows, cols = self.mean.shape
        return isotropic_matrix_normal_prior(rows, cols, self.prior_variance, dtype=self.mean.dtype)

    def kl_divergence(self):
        """KL(q ‖ p) = ``tfd.kl_divergence(posterior(), prior())`` (the registered closed form)."""
        return tfd.kl_divergence(self.posterior(), self.prior())

    # -- sampling ----------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(convert_inputs_only(self, inputs), *args, **kwargs)

    def call(self, inputs, num_samples=None, sampling=None, training=None, noise=None):
        """noise: optional N(0, 1) values for local reparameterisation, as many as the
        pre-activations drawn (any shape; ``InfiniteMixture`` draws all its layers' noise in
        one call and hands each layer its part); None: drawn from this layer's generator."""
        if training is True and not self.kl_accounted:
            raise UnaccountedKLError(_UNACCOUNTED_KL_MESSAGE.format(name=self.name))
        if self.kl_weight is not None:
            self.add_loss(self.kl_weight * self.kl_divergence())
        sampling = self.sampling if sampling is None else _check_sampling(sampling)
        num_samples = _check_num_samples(num_samples)
        rank = inputs.shape.rank
        if num_samples is not None and rank != 2:
            raise ValueError(
                "num_samples is for a shared input [batch, features]; got an input of shape "
                f"{inputs.shape} (a rank-3 input already holds one row per sample)."
            )
        if sampling == "shared_weights" and rank not in (2, 3):
            raise ValueError(
                f"shared_weights sampling takes [batch, d] or [samples, batch, d], got {inputs.shape}."
            )
        if noise is not None and sampling != "local_reparameterization":
            raise ValueError("noise= is for local_reparameterization sampling only.")
        if noise is not None:
            seed, generator = None, _given_noise(noise)
        else:
            seed, generator = stateless_seed(self.seed_generator), self._noise()
        if sampling == "local_reparameterization":
            outputs = self._local_reparameterization(inputs, num_samples, seed, generator)
        else:
            outputs = self._shared_weights(inputs, num_samples, seed)
        return self.activation(outputs) if self.activation is not None else outputs

    def _noise(self):
        return _xla_noise_generator if self.jit_sampling else _noise_generator

    def _local_reparameterization(self, inputs, num_samples, seed, noise_generator):
        """a·M in the compute dtype (low precision under mixed precision), the variance
        a²·u, its square root and the noise in full precision; outputs in the compute dtype."""
        dtype = inputs.dtype
        kernel, bias = tf.split(tf.cast(self.mean, dtype), [-1, 1], axis=0)
        flat = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])
        mean = tf.matmul(flat, kernel) + bias  # a·M, once
        noise_shape = (
            tf.shape(mean)
            if num_samples is None
            else tf.concat([tf.reshape(num_samples, [1]), tf.shape(mean)], axis=0)
        )
        work = full_precision(mean).dtype
        outputs = _local_reparameterization_sample(
            tf.cast(mean, work),
            tf.cast(flat, work),
            tf.cast(self.log_row_variance, work),
            tf.cast(self.log_column_variance, work),
            noise_shape,
            seed,
            noise_generator,
        )
        outputs = tf.cast(outputs, dtype)
        if num_samples is None:
            return tf.reshape(outputs, tf.concat([tf.shape(inputs)[:-1], [self.units]], 0))
        return outputs

    def _shared_weights(self, inputs, num_samples, seed):
        dtype = inputs.dtype
        work = full_precision(inputs).dtype  # W_s drawn in full precision
        per_sample_inputs = inputs.shape.rank == 3
        draws = (
            tf.shape(inputs)[0]
            if per_sample_inputs
            else (1 if num_samples is None else num_samples)
        )
        weights = tf.cast(
            _weight_draws(
                tf.cast(self.mean, work),
                tf.cast(self.log_row_variance, work),
                tf.cast(self.log_column_variance, work),
                tf.cast(draws, tf.int32),
                seed,
                self._noise(),
            ),
            dtype,
        )
        kernels, biases = tf.split(weights, [-1, 1], axis=1)  # W_s, [S, d+1, c]
        if per_sample_inputs:
            return tf.matmul(inputs, kernels) + biases
        outputs = tf.matmul(inputs[None], kernels) + biases  # [S, B, c]
        return outputs if num_samples is not None else outputs[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            prior_variance=self.prior_variance,
            sampling=self.sampling,
            activation=keras.activations.serialize(self.activation),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            initial_log_variance=self.initial_log_variance,
            seed=self.seed,
            jit_sampling=self.jit_sampling,
            kl_weight=self.kl_weight,
        )
        return config
