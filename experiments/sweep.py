r"""Runs a grid of flagfiles × seeds of one experiment binary, resumably.

  python -m experiments.sweep --binary=experiments.mixture_mnist \
      --flagfiles=experiments/configs/mixture_ml_l1.cfg,experiments/configs/mixture_vi_l1.cfg \
      --seeds=0,1,2 --output_root=runs/mixture --parallel=1

Each run goes to OUTPUT_ROOT/<flagfile stem>/seed_<S>/ (with its own log.txt).
A run is done, and skipped, only when its recorded binary, uqmix version and
flags equal the ones asked for; a finished run with another record stops the
sweep before anything runs, with the differences listed (``--redo_stale``
deletes and redoes such runs).  Unfinished runs resume from their checkpoints.
Then ``python -m experiments.aggregate`` builds the tables.
Extra flags for every run: ``--extra_flags=--data_dir=../shared/data`` (a comma-separated
list), or one flag per ``--extra_flag``, which keeps commas inside the value:
``--extra_flag=--attack_iterations=1,10,100``.

``--print_commands`` prints, instead of running, one self-contained shell line
per run still to do (``cd CWD && <the command the local runner issues, with
--resume>``), for a cluster scheduler (SLURM array, GNU parallel, ...).

Exit codes: 0 done; 1 bad flags (of the sweep, or of a run's flagfile);
2 stale runs, runs another process is writing (a sweep started twice), or an output
root that cannot be written; 4 some runs failed.
"""

import sys

from absl import app, flags

from uqmix import runs, sweep

FLAGS = flags.FLAGS
flags.DEFINE_string("binary", None, "Experiment module to run, e.g. experiments.mixture_mnist.")
flags.DEFINE_list("flagfiles", None, "Flagfiles, one configuration each.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run every flagfile with.")
flags.DEFINE_string("output_root", None, "Folder that receives one sub-folder per run.")
flags.DEFINE_integer("parallel", 1, "Runs at a time (processes).", lower_bound=1)
flags.DEFINE_list("extra_flags", [], "Flags added to every run, e.g. --data_dir=DIR.")
flags.DEFINE_multi_string(
    "extra_flag",
    [],
    "One flag added to every run, taken whole (a value "
    "may hold commas), e.g. --extra_flag=--attack_iterations=1,10,100; "
    "repeatable; added after --extra_flags.",
)
flags.DEFINE_bool(
    "print_commands",
    False,
    "Print one shell command per run still to do "
    "(finished runs with the requested record skipped) instead of running them.",
)
flags.DEFINE_bool(
    "redo_stale",
    False,
    "Delete finished runs whose record (binary, uqmix "
    "version, flags) differs from the requested one, and redo them.",
)
flags.mark_flags_as_required(["binary", "flagfiles", "output_root"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as error:
        raise app.UsageError(f"--seeds must be integers: {error}")
    extra_flags = FLAGS.extra_flags + FLAGS.extra_flag
    try:
        planned = sweep.plan(FLAGS.flagfiles, seeds, FLAGS.output_root)
        sweep.experiment_of(FLAGS.binary)
    except ValueError as error:
        raise app.UsageError(str(error))
    log = (
        (lambda line: print(line, file=sys.stderr, flush=True))
        if FLAGS.print_commands
        else (lambda line: print(line, flush=True))
    )
    try:
        runs.check_output_dir(FLAGS.output_root, flag="output_root")
        if FLAGS.print_commands:
            todo = sweep.triage(FLAGS.binary, planned, extra_flags, FLAGS.redo_stale, log)
            print("\n".join(sweep.shell_commands(FLAGS.binary, todo, extra_flags)))
            return 0
        log(f"sweep: {len(planned)} runs of {FLAGS.binary} into {FLAGS.output_root}")
        failures = sweep.run_sweep(
            FLAGS.binary,
            planned,
            parallel=FLAGS.parallel,
            extra_flags=extra_flags,
            log=log,
            redo_stale=FLAGS.redo_stale,
        )
    except (
        sweep.StaleRunsError,
        sweep.RunsInUseError,
        runs.OutputPathError,
        runs.RunInUseError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a run's flags
        raise app.UsageError(str(error))
    if failures:
        print(
            f"{len(failures)} runs failed: "
            + ", ".join(f"{r.name}/seed_{r.seed}" for r in failures),
            file=sys.stderr,
        )
        return 4
    return 0


if __name__ == "__main__":
    app.run(main)
