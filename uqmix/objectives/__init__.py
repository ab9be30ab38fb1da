"""Training objectives.

* ``uqmix.objectives.dirichlet_losses``: KL(Dir ‖ Dir), target concentrations,
  reverse/forward KL losses of Prior Networks.
* ``uqmix.objectives.mixture_losses``: the ML and VI (ELBO) objectives of
  infinite mixtures.
"""
