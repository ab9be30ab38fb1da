"""A stand-in option-table experiment binary for the sweep tests: writes metrics from its seed.

It is its own library module (``EXPERIMENT``), run through ``experiments.options_binary``,
so the sweep parses its flags and compares run records exactly as for the real binaries.
"""

import sys

from uqmix import options, runs

OPTIONS = (
    ("seed", 0, "Seed."),
    ("output_dir", "", "Run folder."),
    ("resume", False, "Continue the run in output_dir."),
    ("overwrite", False, "Delete output_dir first."),
    ("scale", 1.0, "accuracy = scale * seed + sum(offsets)."),
    ("fail", False, "Exit 2 as a failed run does."),
    ("offsets", [], "Added to the accuracy (a flag whose value holds commas)."),
)


def validate_config(config):
    config = options.default_config(OPTIONS, config)
    options.check_finite(config)
    if not config["output_dir"]:
        raise ValueError("--output_dir must be set.")
    return config


def run(config):
    return runs.run_holding_output_dir(_run, config)


def _run(config):
    if config["fail"]:
        raise ValueError("asked to fail")
    runs.prepare_output_dir(
        config["output_dir"], config, resume=config["resume"], overwrite=config["overwrite"]
    )
    metrics = {
        "test": {
            "accuracy": config["scale"] * config["seed"] + sum(float(o) for o in config["offsets"])
        },
        "name": "x",
    }
    runs.atomic_write_json(f"{config['output_dir']}/{runs.METRICS_FILE}", metrics)
    return metrics


def summary(metrics):
    return f"accuracy {metrics['test']['accuracy']}"


EXPERIMENT = sys.modules[__name__]

if __name__ == "__main__":
    from experiments.options_binary import run_binary

    run_binary(EXPERIMENT)
