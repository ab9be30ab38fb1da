"""uqmix models: every one answers ``predictive(x, num_samples)``."""
from uqmix.models.base import PredictiveModelMixin  # noqa: F401
