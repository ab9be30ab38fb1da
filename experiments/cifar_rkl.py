r"""Prior Networks on images (the project's main job): train, evaluate, attack, export.

    python -m experiments.cifar_rkl --flagfile=experiments/configs/cifar10_rkl.cfg
    python -m experiments.cifar_rkl --flagfile=experiments/configs/smoke.cfg   # 2 min, CPU

Every flag is an option of ``uqmix.studies.pn_experiment`` (``OPTIONS``: name,
default, help); this binary only parses them and calls
``uqmix.studies.pn_experiment.run``.  Outputs in ``--output_dir``: ``config.json`` and
``flags.cfg`` (the flags used), ``metrics.json``, ``tensorboard/``,
``<model>/checkpoints/`` (every epoch; ``--resume`` continues), ``figures/``;
with ``--export_dir`` a SavedModel.

Exit codes: 0 done; 1 bad flags (before anything runs); 2 bad data, or an
output_dir holding another run (before any training); 3 training diverged
(NaN/Inf loss; the last good checkpoint is kept).
"""

from experiments.options_binary import run_binary
from uqmix.studies import pn_experiment

EXPERIMENT = pn_experiment  # the option table experiments.sweep parses run flags with

if __name__ == "__main__":
    run_binary(pn_experiment)
