r"""Infinite mixtures trained by ML vs VI, and the finite-mixture baselines, on MNIST / Fashion-MNIST.

    python -m experiments.mixture_mnist --flagfile=experiments/configs/mixture_ml.cfg \
        --data_dir=../shared/data --output_dir=runs/mixture_ml

Every flag is an option of ``uqmix.studies.mixture_experiment`` (``OPTIONS``: name,
default, help); this binary only parses them and calls
``uqmix.studies.mixture_experiment.run``.  Outputs in ``--output_dir``: ``config.json``
and ``flags.cfg`` (the flags used), ``metrics.json`` (accuracy, NLL, weight
variances, misclassification / OOD / adversarial detection, robustness
curves), ``tensorboard/``, ``checkpoints/`` (``--resume`` continues),
``model.keras``, ``figures/``; with ``--export_dir`` a SavedModel.  With
``--training_cache=DIR`` a run whose training (every flag but the evaluation-only
ones, and the uqmix source) is in DIR reuses it instead of training, and a run that
trains stores it there (``uqmix.training_cache``).

Exit codes: 0 done; 1 bad flags (before anything runs); 2 bad data, or an
output_dir holding another run (before any training); 3 training diverged
(NaN/Inf loss; the last good checkpoint is kept).
"""

from experiments.options_binary import run_binary
from uqmix.studies import mixture_experiment

EXPERIMENT = mixture_experiment  # the option table experiments.sweep parses run flags with

if __name__ == "__main__":
    run_binary(mixture_experiment)
