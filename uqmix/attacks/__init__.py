"""Adversarial attacks: cleverhans-compatible FGM / PGD / MIM, compiled end to end.

* ``fast_gradient_method``, ``projected_gradient_descent``,
  ``momentum_iterative_method`` — cleverhans 4.0's TF2 signatures and rules,
  each one ``tf.function`` call; ``iterative_attack_checkpoints`` gives the
  iterates of one run after several iteration counts, ``iterative_attack_run``
  a run advanced piece by piece whose state can be saved and resumed
  (``uqmix.attacks.gradient_attacks``);
* ``carlini_wagner_l2`` (cleverhans 4.0's call, the reference algorithm),
  ``carlini_wagner_l2_run`` (with distances and success flags), also with an
  adaptive criterion as ``loss_fn`` (``uqmix.attacks.carlini_wagner``);
* ``optimize_linear``, ``clip_eta``, ``random_lp_vector`` — the per-norm rules
  (``uqmix.attacks.norms``);
* ``stochastic_model_fn`` — the attack model of a sampled model with named
  noise (redraw / frozen) and combination (log_mean / mean_loss) options;
* ``predictive_logits_fn``, ``sample_logits_fn``, ``dirichlet_logits_fn`` —
  model_fns from uqmix models, S samples in one vectorised call
  (``uqmix.attacks.model_fns``);
* ``cross_entropy``, ``BoundLoss``, ``expectation_over_samples`` — losses
  (``uqmix.attacks.losses``);
* ``kl_pmf_loss``, ``kl_dir_loss``, ``second_most_likely_class``,
  ``swap_top_and_target`` — adaptive criteria for Prior Networks
  (``uqmix.attacks.adaptive``).
"""

from uqmix.attacks.adaptive import (
    kl_dir_loss,
    kl_pmf_loss,
    second_most_likely_class,
    swap_top_and_target,
)
from uqmix.attacks.carlini_wagner import (
    CarliniWagnerResult,
    carlini_wagner_l2,
    carlini_wagner_l2_run,
)
from uqmix.attacks.gradient_attacks import (
    IterativeAttackRun,
    fast_gradient_method,
    iterative_attack_checkpoints,
    iterative_attack_run,
    momentum_iterative_method,
    projected_gradient_descent,
)
from uqmix.attacks.losses import BoundLoss, cross_entropy, expectation_over_samples
from uqmix.attacks.model_fns import (
    StochasticModelFn,
    dirichlet_logits_fn,
    predictive_logits_fn,
    sample_logits_fn,
    stochastic_model_fn,
)
from uqmix.attacks.norms import clip_eta, optimize_linear, random_lp_vector

__all__ = [
    "BoundLoss",
    "CarliniWagnerResult",
    "IterativeAttackRun",
    "StochasticModelFn",
    "carlini_wagner_l2",
    "carlini_wagner_l2_run",
    "clip_eta",
    "cross_entropy",
    "dirichlet_logits_fn",
    "expectation_over_samples",
    "fast_gradient_method",
    "iterative_attack_checkpoints",
    "iterative_attack_run",
    "kl_dir_loss",
    "kl_pmf_loss",
    "momentum_iterative_method",
    "optimize_linear",
    "predictive_logits_fn",
    "projected_gradient_descent",
    "random_lp_vector",
    "sample_logits_fn",
    "second_most_likely_class",
    "stochastic_model_fn",
    "swap_top_and_target",
]
