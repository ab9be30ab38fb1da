"""The shared body of the option-table binaries (``cifar_rkl``, ``mixture_mnist``,
``synthetic_rkl``).

A library experiment module (``uqmix.pn_experiment``, ``uqmix.mixture_experiment``,
``uqmix.synthetic_experiment``)
declares ``OPTIONS`` (name, default, help), ``validate_config``, ``run`` and
``summary``; this module turns the table into absl flags and runs it.

Exit codes: 0 done; 1 bad flags (before anything runs); 2 bad data, or an
output_dir holding another run (before any training); 3 training diverged
(NaN/Inf loss; the last good checkpoint is kept).
"""

import sys

from uqmix import console

console.quiet_logs()  # before the experiment modules import TensorFlow: no INFO lines

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string, list: flags.DEFINE_list}


def define_flags(experiment, flag_values):
    """Defines one flag per ``experiment.OPTIONS`` entry on ``flag_values``."""
    for name, default, help_text in experiment.OPTIONS:
        _DEFINE[type(default)](name, default, help_text, flag_values=flag_values)


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
        from uqmix.training import TrainingDivergedError

        try:
            metrics = experiment.run(config)
        except TrainingDivergedError as error:
            print(f"error: {error}", file=sys.stderr)
            return 3
        except ValueError as error:  # data problems, output_dir of another run
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(experiment.summary(metrics))
        print(f"wrote {config['output_dir']} (metrics.json, figures/, tensorboard/)")
        return 0

    return main


def run_binary(experiment):
    """Defines the flags of ``experiment`` and runs it (``if __name__ == "__main__"``)."""
    define_flags(experiment, flags.FLAGS)
    app.run(main_for(experiment))
