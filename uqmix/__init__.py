"""uqmix: uncertainty quantification with mixture models on TF2 / Keras 3 / TFP."""
import os as _os

# Keras 3 on the TensorFlow backend is the only supported configuration.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
