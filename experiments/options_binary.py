"""The shared body of the option-table binaries (``cifar_rkl``, ``mixture_mnist``,
``synthetic_rkl``).

A library experiment module (``uqmix.studies.pn_experiment``, ``uqmix.studies.mixture_experiment``,
``uqmix.studies.synthetic_experiment``)
declares ``OPTIONS`` (name, default, help), ``validate_config``, ``run`` and
``summary``; this module turns the table into absl flags and runs it.

Exit codes: 0 done; 1 bad flags (before anything runs); 2 bad data, an
output_dir / export_dir / training_cache that cannot be written (a file, under a file, not
writable: checked before the data is read) or that holds another run, or a
folder --overwrite must not delete (before any training); 3 training diverged
(NaN/Inf loss; the last good checkpoint is kept).  Every error is one line on
stderr, never a traceback.

A binary module sets ``EXPERIMENT = <library module>`` so that
``experiments.sweep`` can parse a run's flags exactly as the binary does and
compare the result with the record of a finished run.
"""

import sys

from uqmix import console

console.quiet_logs()  # before the experiment modules import TensorFlow: no INFO lines

from absl import app, flags  # noqa: E402

from uqmix import options, runs  # noqa: E402

EXIT_BAD_FLAGS, EXIT_BAD_DATA_OR_OUTPUT, EXIT_DIVERGED = 1, 2, 3
OUTPUT_PATH_OPTIONS = ("output_dir", "export_dir", "training_cache")


def define_flags(experiment, flag_values):
    """Defines one flag per ``experiment.OPTIONS`` entry on ``flag_values``."""
    options.define_flags(experiment.OPTIONS, flag_values)


def check_output_paths(config):
    """``runs.check_output_dir`` of every set output-path option (raises OutputPathError)."""
    for name in OUTPUT_PATH_OPTIONS:
        if config.get(name):
            runs.check_output_dir(config[name], flag=name)


def exit_code_of(error):
    """3 for ``uqmix.training.TrainingDivergedError``, 2 for a ValueError / OSError (data,
    output paths, a folder of another run), None for anything else (a bug: re-raised).
    uqmix.training (TensorFlow) is not imported for this: if it is not loaded, nothing
    could have raised its error."""
    training = sys.modules.get("uqmix.training")
    if training is not None and isinstance(error, training.TrainingDivergedError):
        return EXIT_DIVERGED
    if isinstance(error, (ValueError, OSError)):
        return EXIT_BAD_DATA_OR_OUTPUT
    return None


def main_for(experiment, flag_values=flags.FLAGS):
    """An ``app.run`` main that validates the flags, runs ``experiment`` and prints its summary."""

    def main(argv):
        console.quiet_logs("verbosity" in flag_values and flag_values["verbosity"].present)
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        config = {name: flag_values[name].value for name, _, _ in experiment.OPTIONS}
        try:
            config = experiment.validate_config(config)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
        try:
            check_output_paths(config)
            metrics = experiment.run(config)
        except (ValueError, OSError, RuntimeError) as error:
            code = exit_code_of(error)
            if code is None:
                raise
            print(f"error: {error}", file=sys.stderr)
            return code
        print(experiment.summary(metrics))
        print(f"wrote {config['output_dir']} (metrics.json, figures/, tensorboard/)")
        return 0

    return main


def run_binary(experiment):
    """Defines the flags of ``experiment`` and runs it (``if __name__ == "__main__"``)."""
    define_flags(experiment, flags.FLAGS)
    app.run(main_for(experiment))
