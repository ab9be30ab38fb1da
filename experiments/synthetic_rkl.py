r"""Forward- vs reverse-KL Prior Networks on ``synthetic3``: the built-in default job.

    python -m experiments.synthetic_rkl                      # defaults, ./runs/synthetic_rkl
    python -m experiments.synthetic_rkl --flagfile=experiments/configs/synthetic_rkl.cfg

Every flag is an option of ``uqmix.studies.synthetic_experiment`` (``OPTIONS``: name,
default, help); this binary only parses them and calls
``uqmix.studies.synthetic_experiment.run``.  Outputs in ``--output_dir`` (default
``runs/synthetic_rkl``): ``config.json`` and ``flags.cfg`` (the flags used),
``metrics.json``, ``tensorboard/<loss>/`` (train, validation and evaluation
events), ``<loss>/checkpoints/`` and ``<loss>/model.keras``,
``figures/uncertainty_maps.png``.

Re-running: ``--resume`` is on by default here, so the same command again
continues an interrupted run, or (if training finished) restores the trained
models and re-writes the metrics and figure; it never silently retrains.  A
different configuration aimed at a folder holding a run is refused (exit 2):
pick another ``--output_dir`` or pass ``--overwrite``.  A non-empty folder
without a run of ours is never written into.

Exit codes: 0 done; 1 bad flags (before anything runs); 2 an output_dir
holding another run (before any training); 3 training diverged.
"""

from experiments.options_binary import run_binary
from uqmix.studies import synthetic_experiment

EXPERIMENT = synthetic_experiment  # the option table experiments.sweep parses run flags with

if __name__ == "__main__":
    run_binary(synthetic_experiment)
