"""Option tables of the experiments: defaults, choices and rules, checked before anything runs.

An experiment module declares ``OPTIONS``, a tuple of (name, default, help):
the keys of its configuration dict and, through ``experiments.options_binary``,
the flags of its binary.  These helpers turn a table into a default
configuration and check values, raising one ``ValueError`` that names the
flag (``--name``) and what it must be.  ``define_flags`` / ``config_from_args``
turn a table into absl flags and parse a command line into a configuration
(the same parse the binary does; ``uqmix.sweep`` uses it to know the record
of a run before running it).
"""

import math

from absl import flags as absl_flags

_DEFINE = {
    bool: absl_flags.DEFINE_bool,
    int: absl_flags.DEFINE_integer,
    float: absl_flags.DEFINE_float,
    str: absl_flags.DEFINE_string,
    list: absl_flags.DEFINE_list,
}


# Where the data comes from and how much of it: the same options in every experiment.
DATA_SOURCE_OPTIONS = (
    (
        "data_dir",
        "",
        "Folder with <dataset>/ subfolders of the published files; empty: "
        "tensorflow-datasets where it has the set.",
    ),
    ("use_tfds", True, "Allow tensorflow-datasets downloads when data_dir has no copy."),
    ("check_counts", True, "Check example counts against the published ones."),
    ("train_examples", 0, "Use only the first N training examples (0: all)."),
    ("test_examples", 0, "Use only the first N test examples (0: all)."),
)


def default_config(options, overrides):
    """Every option of ``options`` at its default (lists copied), with ``overrides`` applied.

    Unknown keys in ``overrides`` are refused.
    """
    config = {
        name: (list(value) if isinstance(value, list) else value) for name, value, _ in options
    }
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"unknown configuration keys: {unknown}.")
    config.update(overrides)
    return config


def define_flags(options, flag_values):
    """Defines one absl flag per (name, default, help) of ``options`` on ``flag_values``."""
    for name, default, help_text in options:
        _DEFINE[type(default)](name, default, help_text, flag_values=flag_values)


def config_from_args(options, args):
    """The configuration dict that command-line ``args`` (without the program name; may
    hold ``--flagfile=F``) give for the option table ``options``.  Bad flags (unknown,
    unparsable, an unreadable flagfile) raise ``ValueError``."""
    flag_values = absl_flags.FlagValues()
    define_flags(options, flag_values)
    try:
        flag_values(["program", *args])
    except absl_flags.Error as error:
        raise ValueError(str(error)) from None
    return {name: flag_values[name].value for name, _, _ in options}


def check_finite(config):
    """Every float option must be a finite number (NaN and ±inf mean nothing for any of them)."""
    for name, value in config.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name} must be a finite number, got {value}.")


def check_choices(choices):
    """choices: (name, value, allowed values); the first value not allowed is an error."""
    for name, value, allowed in choices:
        if value not in allowed:
            raise ValueError(
                f"Unknown --{name} {value!r}; choose one of {', '.join(str(a) for a in allowed)}."
            )


def check_rules(config, rules):
    """rules: (name, holds, what it must be); the first rule that does not hold is an error."""
    for name, holds, rule in rules:
        if not holds:
            raise ValueError(f"--{name} must be {rule}, got {config[name]}.")


def check_run_options(config):
    """Rules every experiment shares: an output folder, --resume xor --overwrite,
    --deterministic (bitwise reproducible kernels) not on TPU, and a valid TF_CONFIG for
    --strategy=multi_worker."""
    if not config["output_dir"]:
        raise ValueError("--output_dir must be set.")
    if config["resume"] and config["overwrite"]:
        raise ValueError("--resume and --overwrite contradict each other.")
    if config["strategy"] == "tpu" and config["deterministic"]:
        raise ValueError("--deterministic is not supported on TPU; pass --nodeterministic.")
    if config["strategy"] == "multi_worker":
        import os

        from uqmix.setup_utils import check_tf_config

        check_tf_config(os.environ.get("TF_CONFIG"))


def first(array, count):
    """The first ``count`` entries of ``array`` (all of them when ``count`` is 0)."""
    return array[:count] if count else array


# Several training steps per compiled call (issue 16): shared by the binaries' option tables.
AUTO_STEPS_PER_EXECUTION_MAX = 50
STEPS_PER_EXECUTION_OPTION = (
    "steps_per_execution",
    0,
    "Training steps per compiled call (Keras compile(steps_per_execution=n): one Python "
    "round trip per n steps). 0: auto, the largest divisor <= "
    f"{AUTO_STEPS_PER_EXECUTION_MAX} of the steps per epoch and the total steps (1 under "
    "--strategy=multi_worker). n >= 1 must divide both. The same results for every n.",
)


def resolve_steps_per_execution(config, total_steps, steps_per_epoch):
    """The validated steps per compiled call of ``config["steps_per_execution"]`` (0 = auto).

    n must divide ``steps_per_epoch`` and ``total_steps`` (checkpoints and epochs stay at
    exact steps); Keras 3.15's multi-step loop fails under MultiWorkerMirroredStrategy
    ("You must feed a value for placeholder tensor ... while/cond"), so it is 1 there.
    """
    requested = config["steps_per_execution"]
    if int(requested) != requested or requested < 0:
        raise ValueError(f"--steps_per_execution must be an integer >= 0, got {requested}.")
    multi_worker = config.get("strategy") == "multi_worker"
    if requested == 0:
        if multi_worker:
            return 1
        common = math.gcd(int(total_steps), int(steps_per_epoch))
        return max(d for d in range(1, AUTO_STEPS_PER_EXECUTION_MAX + 1) if common % d == 0)
    if multi_worker and requested != 1:
        raise ValueError(
            f"--strategy=multi_worker needs --steps_per_execution=1 (or 0: auto), got {requested}."
        )
    for name, value in (("steps per epoch", steps_per_epoch), ("total steps", total_steps)):
        if value % requested:
            raise ValueError(
                f"--steps_per_execution ({requested}) must divide the {name} ({value}); "
                "0 picks a divisor automatically."
            )
    return int(requested)


# XLA (issue 16): shared by the experiment binaries' option tables.
JIT_COMPILE_OPTION = (
    "jit_compile",
    False,
    "Compile every training/evaluation step, the predictive and the attack loops with XLA "
    "(jit_compile=True: fused kernels, the GPU-ready form; needs --nodeterministic).",
)


def check_jit_compile(config):
    """--jit_compile needs --nodeterministic: Keras runs the steps without XLA (a mere warning)
    when TensorFlow op determinism is on, so the pair is refused instead."""
    if config["jit_compile"] and config["deterministic"]:
        raise ValueError(
            "--jit_compile needs --nodeterministic (under TensorFlow op determinism "
            "Keras silently runs without XLA); pass --nodeterministic, or drop "
            "--jit_compile."
        )


def check_compiled_with_xla(model, config):
    """After ``compile``: --jit_compile must really have given an XLA model (Keras drops it with
    only a warning when op determinism is on in this process or a layer does not support XLA)."""
    if config["jit_compile"] and model.jit_compile is not True:
        raise ValueError(
            "--jit_compile: Keras would run this model without XLA (TensorFlow op "
            "determinism is enabled in this process, or a layer does not support "
            "XLA); run with --nodeterministic in a fresh process, or drop "
            "--jit_compile."
        )
    return model
