"""``model_fn``s for the attacks from uqmix models (``PredictiveModelMixin``).

* ``predictive_logits_fn(model, S)``: x ↦ log p̄(x) = log (1/S) Σ_s p_s(x),
  [B, K] — the logits of the S-sample mixture prediction
  (``model.predictive_on_batch(x, S).log_mean()``).  All S samples come from
  one vectorised model call.  The attack's gradient is ∇ log p̄ ("S gradient
  samples"); S = 1 is one stochastic forward pass.
* ``sample_logits_fn(model, S)``: x ↦ log p_s(x), [S, B, K], the per-sample
  log-probabilities, for expectation-over-transformation losses
  (``uqmix.attacks.expectation_over_samples``).
* ``dirichlet_logits_fn(model)``: x ↦ z(x), [B, K], a Prior Network's
  Dirichlet logits (α = exp z), which the KL-DIR criterion needs.

The functions are cached per (model, S): asking again returns the same
callable, so the attacks' compiled loop is not traced again.
"""

from uqmix.predictive import DirichletPredictive, SampledPredictive


def _cached(model, key, build):
    if not hasattr(model, "predictive_on_batch"):
        raise ValueError(
            f"{type(model).__name__} is not a uqmix model (no predictive_on_batch); a plain "
            "Keras classifier that returns logits is itself a model_fn.")
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
                    f"sample_logits_fn needs a sampled model, got {type(predictive).__name__}.")
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
                    f"dirichlet_logits_fn needs a Prior Network, got {type(predictive).__name__}.")
            return predictive.logits
        return logits_fn

    return _cached(model, ("dirichlet",), build)
