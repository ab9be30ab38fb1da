"""uqmix models: every one answers ``predictive(x, num_samples)``.

Bring your own network: ``MixtureModel(network, objective, num_train_samples, kl_weight)``
trains it as an infinite mixture; ``mc_dropout(network)`` / ``ensemble(networks)`` give
trained networks a ``predictive``; ``PriorNetwork(backbone, num_classes)`` trains a
backbone as a Dirichlet Prior Network.
"""

from uqmix.models.base import PredictiveModelMixin
from uqmix.models.baselines import DeepEnsemble, Deterministic, MCDropout
from uqmix.models.infinite_mixture import InfiniteMixture
from uqmix.models.mixture_model import MixtureModel
from uqmix.models.prior_network import PriorNetwork
from uqmix.models.sampled_networks import SampledNetworks, ensemble, mc_dropout

__all__ = [
    "DeepEnsemble",
    "Deterministic",
    "InfiniteMixture",
    "MCDropout",
    "MixtureModel",
    "PredictiveModelMixin",
    "PriorNetwork",
    "SampledNetworks",
    "ensemble",
    "mc_dropout",
]
