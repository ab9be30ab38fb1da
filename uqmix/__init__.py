"""uqmix: uncertainty quantification with mixture models on TF2 / Keras 3 / TFP."""

import os as _os

# Keras 3 on the TensorFlow backend is the only supported configuration.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

# The library's public modules (``from uqmix import *``); the two studies live apart in
# ``uqmix.studies`` and the library never imports them.
__all__ = [
    "adversarial_training",
    "attack_eval",
    "attacks",
    "data",
    "dirichlet",
    "distributions",
    "evaluation",
    "export",
    "layers",
    "metrics",
    "models",
    "objectives",
    "plotting",
    "predictive",
    "uncertainty",
]
