r"""Runs a grid of flagfiles × seeds of one experiment binary, resumably.

  python -m experiments.sweep --binary=experiments.mixture_mnist \
      --flagfiles=experiments/configs/mixture_ml_l1.cfg,experiments/configs/mixture_vi_l1.cfg \
      --seeds=0,1,2 --output_root=runs/mixture --parallel=1

Each run goes to OUTPUT_ROOT/<flagfile stem>/seed_<S>/ (with its own log.txt);
finished runs (metrics.json present) are skipped, unfinished ones resume from
their checkpoints.  Then ``python -m experiments.aggregate`` builds the tables.
Extra flags for every run: ``--extra_flags=--data_dir=../shared/data`` (a comma-separated
list), or one flag per ``--extra_flag``, which keeps commas inside the value:
``--extra_flag=--attack_iterations=1,10,100``.
"""
from absl import app, flags

from uqmix import sweep

FLAGS = flags.FLAGS
flags.DEFINE_string("binary", None, "Experiment module to run, e.g. experiments.mixture_mnist.")
flags.DEFINE_list("flagfiles", None, "Flagfiles, one configuration each.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run every flagfile with.")
flags.DEFINE_string("output_root", None, "Folder that receives one sub-folder per run.")
flags.DEFINE_integer("parallel", 1, "Runs at a time (processes).", lower_bound=1)
flags.DEFINE_list("extra_flags", [], "Flags added to every run, e.g. --data_dir=DIR.")
flags.DEFINE_multi_string("extra_flag", [], "One flag added to every run, taken whole (a value "
                          "may hold commas), e.g. --extra_flag=--attack_iterations=1,10,100; "
                          "repeatable; added after --extra_flags.")
flags.mark_flags_as_required(["binary", "flagfiles", "output_root"])


def main(argv):
    del argv
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as error:
        raise app.UsageError(f"--seeds must be integers: {error}")
    try:
        planned = sweep.plan(FLAGS.flagfiles, seeds, FLAGS.output_root)
    except ValueError as error:
        raise app.UsageError(str(error))
    print(f"sweep: {len(planned)} runs of {FLAGS.binary} into {FLAGS.output_root}", flush=True)
    failures = sweep.run_sweep(FLAGS.binary, planned, parallel=FLAGS.parallel,
                               extra_flags=FLAGS.extra_flags + FLAGS.extra_flag,
                               log=lambda line: print(line, flush=True))
    if failures:
        raise SystemExit(f"{len(failures)} runs failed: " +
                         ", ".join(f"{r.name}/seed_{r.seed}" for r in failures))


if __name__ == "__main__":
    app.run(main)
