"""uqmix models: every one answers ``predictive(x, num_samples)``."""
from uqmix.models.base import PredictiveModelMixin  # noqa: F401
from uqmix.models.prior_network import PriorNetwork  # noqa: F401
from uqmix.models.infinite_mixture import InfiniteMixture  # noqa: F401
from uqmix.models.baselines import DeepEnsemble, Deterministic, MCDropout  # noqa: F401
