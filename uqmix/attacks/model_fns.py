"""``model_fn``s for the attacks from uqmix models (``PredictiveModelMixin``).

* ``predictive_logits_fn(model, S)``: x ↦ log p̄(x) = log (1/S) Σ_s p_s(x),
  [B, K] — the logits of the S-sample mixture prediction
  (``model.predictive_on_batch(x, S).log_mean()``).  All S samples come from
  one vectorised model call.  The attack's gradient is ∇ log p̄ ("S gradient
  samples"); S = 1 is one stochastic forward pass.
* ``sample_logits_fn(model, S)``: x ↦ log p_s(x), [S, B, K], the per-sample
  log-probabilities, for expectation-over-transformation losses
  (``uqmix.attacks.expectation_over_samples``).
* ``stochastic_model_fn(model, S, noise, combine, seed)``: the same with every
  protocol choice for sampled models named (redraw / frozen noise, log of the
  mean probability / mean of the per-sample losses); see its docstring.
* ``dirichlet_logits_fn(model)``: x ↦ z(x), [B, K], a Prior Network's
  Dirichlet logits (α = exp z), which the KL-DIR criterion needs.

The functions are cached per (model, S): asking again returns the same
callable, so the attacks' compiled loop is not traced again.
"""

import tensorflow as tf

from uqmix.predictive import DirichletPredictive, SampledPredictive


def _cached(model, key, build):
    if not hasattr(model, "predictive_on_batch"):
        raise ValueError(
            f"{type(model).__name__} is not a uqmix model (no predictive_on_batch); a plain "
            "Keras classifier that returns logits is itself a model_fn."
        )
    cache = model.__dict__.setdefault("_uqmix_attack_model_fns", {})
    if key not in cache:
        cache[key] = build()
    return cache[key]


def _num_samples(num_samples):
    if num_samples is None:
        return None
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}.")
    return int(num_samples)


def predictive_logits_fn(model, num_samples=None):
    """x ↦ ``model.predictive_on_batch(x, num_samples).log_mean()``, [B, K] (see module doc)."""
    num_samples = _num_samples(num_samples)

    def build():
        def logits_fn(x):
            return model.predictive_on_batch(x, num_samples).log_mean()

        logits_fn.__name__ = f"predictive_logits_{num_samples}"
        return logits_fn

    return _cached(model, ("log_mean", num_samples), build)


def sample_logits_fn(model, num_samples):
    """x ↦ per-sample log-probabilities [S, B, K] of a sampled model (for EOT losses)."""
    num_samples = _num_samples(num_samples)
    if num_samples is None:
        raise ValueError("sample_logits_fn needs num_samples.")

    def build():
        def logits_fn(x):
            predictive = model.predictive_on_batch(x, num_samples)
            if not isinstance(predictive, SampledPredictive):
                raise ValueError(
                    f"sample_logits_fn needs a sampled model, got {type(predictive).__name__}."
                )
            return predictive.log_probs

        logits_fn.__name__ = f"sample_logits_{num_samples}"
        return logits_fn

    return _cached(model, ("samples", num_samples), build)


def dirichlet_logits_fn(model):
    """x ↦ z(x) [B, K] of a Prior Network (α = exp z), e.g. for ``kl_dir_loss``."""

    def build():
        def logits_fn(x):
            predictive = model.predictive_on_batch(x)
            if not isinstance(predictive, DirichletPredictive):
                raise ValueError(
                    f"dirichlet_logits_fn needs a Prior Network, got {type(predictive).__name__}."
                )
            return predictive.logits

        return logits_fn

    return _cached(model, ("dirichlet",), build)


# -- stochastic models: the attack's noise and combination, named options ------------------
NOISE_MODES = ("redraw", "frozen")
COMBINE_MODES = ("log_mean", "mean_loss")
FROZEN_SCOPES = ("auto", "batch", "example")


def _seed_generators(model):
    """Every ``keras.random.SeedGenerator`` of the model's layers (its noise sources)."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", []):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


def _choice(value, allowed, name):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    return value


class StochasticModelFn:
    """The ``model_fn`` of ``stochastic_model_fn`` (see there); also carries its options.

    Attributes: ``options`` (dict, to record with results), ``per_sample``
    (True when it returns [S, B, K]); methods ``loss(loss_fn)`` (the loss the
    attack must use with it) and ``new_draw(key)`` (frozen noise: draw the
    weights/masks held for the next attack).
    """

    def __init__(self, model, num_samples, noise, combine, seed, frozen_scope):
        self.model = model
        self.num_samples = num_samples
        self.noise = noise
        self.combine = combine
        self.seed = seed
        self.per_sample = combine == "mean_loss"
        self.generators = _seed_generators(model)
        shared = hasattr(model, "predictive_sampling")
        if frozen_scope == "auto":
            frozen_scope = "batch" if shared else "example"
        if noise == "frozen" and frozen_scope == "batch" and not shared:
            raise ValueError(
                f"frozen_scope='batch' needs a model that samples whole weight matrices "
                f"(uqmix InfiniteMixture); {type(model).__name__} draws its noise per example: "
                "use frozen_scope='example'."
            )
        self.frozen_scope = frozen_scope if noise == "frozen" else None
        self._frozen = (
            [tf.Variable(g.state.value, trainable=False) for g in self.generators]
            if noise == "frozen"
            else []
        )
        self.__name__ = f"stochastic_{noise}_{combine}_{num_samples}"
        self.new_draw(0)

    @property
    def options(self):
        """The options that define this attack model (JSON-ready)."""
        return {
            "gradient_samples": self.num_samples,
            "noise": self.noise,
            "combine": self.combine,
            "frozen_scope": self.frozen_scope,
            "noise_seed": self.seed,
        }

    def new_draw(self, key=0):
        """Frozen noise: choose the draw held for the next attack (no-op with ``redraw``).

        seed None: the model's current noise state (its generators then advance
        by one, so the next draw differs); seed s: the draw (s, key), reproducible.
        """
        for index, (generator, frozen) in enumerate(zip(self.generators, self._frozen)):
            if self.seed is None:
                frozen.assign(generator.state.value)
                generator.next()
            else:
                frozen.assign(tf.constant([int(self.seed) * 7919 + index, int(key)], frozen.dtype))

    def _sample_logits(self, x):
        """Per-sample log-probabilities [S, B, K] of one forward pass."""
        if self.frozen_scope == "batch":  # S weight draws, each shared by the whole batch
            logits = self.model(x, num_samples=self.num_samples, sampling="shared_weights")
            return tf.nn.log_softmax(logits, axis=-1)
        predictive = self.model.predictive_on_batch(x, self.num_samples)
        if not isinstance(predictive, SampledPredictive):
            raise ValueError(
                f"stochastic_model_fn needs a sampled model, got {type(predictive).__name__}."
            )
        return predictive.log_probs

    def __call__(self, x):
        saved = []
        for generator, frozen in zip(self.generators, self._frozen):
            saved.append(tf.identity(generator.state.value))
            generator.state.assign(frozen)
        log_probs = self._sample_logits(x)
        for generator, state in zip(self.generators, saved):
            generator.state.assign(state)
        if self.per_sample:
            return log_probs
        return tf.reduce_logsumexp(log_probs, axis=0) - tf.math.log(
            tf.cast(tf.shape(log_probs)[0], log_probs.dtype)
        )

    def loss(self, loss_fn=None):
        """The attack's loss: ``loss_fn`` (log_mean) or its EOT average (mean_loss)."""
        from uqmix.attacks.losses import expectation_over_samples

        return expectation_over_samples(loss_fn) if self.per_sample else loss_fn


def stochastic_model_fn(
    model, num_samples=1, noise="redraw", combine="log_mean", seed=None, frozen_scope="auto"
):
    """The attack's ``model_fn`` for a sampled uqmix model, every protocol choice named.

    num_samples: S samples (weight draws / dropout masks) per gradient evaluation.
    noise:
      * "redraw" — fresh samples at every gradient evaluation (the strong
        default: the attack sees the model's randomness as it is);
      * "frozen" — one set of S samples, drawn by ``new_draw`` and held for
        every gradient evaluation of the attack: the attack targets a fixed
        S-component mixture (S = 1: one frozen network).  ``frozen_scope``:
        "batch" — S weight matrices each shared by the whole batch (the literal
        mixture components; InfiniteMixture through ``shared_weights``
        sampling), "example" — the model's own per-example noise (local
        reparameterisation, dropout masks) held fixed per example; "auto" —
        "batch" where the model samples weight matrices, else "example".
        The model's own random stream is saved and restored around every call,
        so the evaluation that follows is not affected.
    combine:
      * "log_mean" — logits log p̄ = log (1/S) Σ_s p_s, [B, K] (the mixture's
        prediction; ``predictive_logits_fn``);
      * "mean_loss" — per-sample log-probabilities [S, B, K]; the attack must
        average the per-sample losses, ``fn.loss(loss_fn)`` (expectation over
        transformation).
    seed: frozen draws (seed, key) reproducible through ``new_draw(key)``;
      None: drawn from the model's own generators.
    Cached per (model, options): asking again returns the same object (and
    the attacks' compiled traces); deterministic models ignore ``noise``.
    """
    num_samples = _num_samples(num_samples)
    if num_samples is None:
        raise ValueError("num_samples must be an integer >= 1, got None.")
    _choice(noise, NOISE_MODES, "noise")
    _choice(combine, COMBINE_MODES, "combine")
    _choice(frozen_scope, FROZEN_SCOPES, "frozen_scope")
    if seed is not None and (isinstance(seed, bool) or int(seed) != seed):
        raise ValueError(f"seed must be an integer or None, got {seed!r}.")
    key = ("stochastic", num_samples, noise, combine, seed, frozen_scope)
    return _cached(
        model,
        key,
        lambda: StochasticModelFn(model, num_samples, noise, combine, seed, frozen_scope),
    )
