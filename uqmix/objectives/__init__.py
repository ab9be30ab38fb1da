"""Training objectives.

* ``uqmix.objectives.dirichlet_losses``: KL(Dir ‖ Dir), target concentrations,
  reverse/forward KL losses of Prior Networks.
* ``uqmix.objectives.mixture_losses``: the ML and VI (ELBO) objectives of
  infinite mixtures.
"""

from uqmix.objectives.dirichlet_losses import (
    cross_entropy_loss,
    dirichlet_kl,
    forward_kl_loss,
    reverse_kl_loss,
    target_concentrations,
)
from uqmix.objectives.mixture_losses import (
    OBJECTIVES,
    kl_term,
    mixture_loss,
    per_example_nll,
    sample_log_likelihoods,
)

__all__ = [
    "OBJECTIVES",
    "cross_entropy_loss",
    "dirichlet_kl",
    "forward_kl_loss",
    "kl_term",
    "mixture_loss",
    "per_example_nll",
    "reverse_kl_loss",
    "sample_log_likelihoods",
    "target_concentrations",
]
