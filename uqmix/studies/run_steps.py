"""The first and last steps of both image studies' runs (mixture, Prior Network), in one place.

``check_export_dir``: the refusal that needs no work (an ``export_dir`` that holds other files),
called first, before a study's own before-any-work checks (training cache, reused training).

``begin``: the seed, the attacks' XLA switch, the ``tf.distribute`` strategy (before any other
TF op: a multi-worker strategy must be made first), the data (every data problem raised before
the output folder is touched) and the output folder (``uqmix.runs.prepare_output_dir``, on the
chief).

``finish``: the SavedModel export when ``export_dir`` is set, then ``metrics.json``, written
atomically by the chief as the run's **last** write: ``metrics.json`` is what marks a run
finished (``uqmix.sweep`` skips such a run, ``--reuse_training_from`` accepts it), so a run
whose export fails writes none and is run again (a finished run re-run with ``--resume`` keeps
its earlier ``metrics.json`` if its new export fails).
"""

import os

from uqmix import distributed, export_target, runs
from uqmix.attacks import gradient_attacks
from uqmix.setup_utils import make_strategy, set_seed


def check_export_dir(config):
    """Refuses, before any work, an ``export_dir`` an export would have to replace files in."""
    if config["export_dir"]:
        export_target.check_export_dir(config["export_dir"], config["output_dir"])


def begin(config, load_data):
    """(strategy, data) of a validated ``config``; ``load_data(config)`` reads the data."""
    set_seed(config["seed"], deterministic=config["deterministic"])
    gradient_attacks.set_jit_compile(config["jit_compile"])
    strategy = make_strategy(config["strategy"], tpu_address=config["tpu_address"] or None)
    data = load_data(config)
    distributed.prepare_output_dir(config, strategy, runs.prepare_output_dir)  # chief only
    return strategy, data


def finish(config, strategy, model, input_shape, metrics):
    """Exports ``model`` (every worker takes part) when ``export_dir`` is set, recording it
    in ``metrics``, then writes ``metrics`` (the chief); returns ``metrics``."""
    if config["export_dir"]:
        export_target.export_run_model(model, config, strategy, input_shape)
        metrics["export_dir"] = config["export_dir"]
    if distributed.is_chief(strategy):  # the other workers write no results
        runs.atomic_write_json(os.path.join(config["output_dir"], runs.METRICS_FILE), metrics)
    return metrics
