r"""Forward- vs reverse-KL Prior Networks on ``synthetic3``: the built-in default job.

    python -m experiments.synthetic_rkl                      # defaults, ./runs/synthetic_rkl
    python -m experiments.synthetic_rkl --flagfile=experiments/configs/synthetic_rkl.cfg

Trains one Prior Network per ``--losses`` entry (default forward_kl and
reverse_kl; cross_entropy gives the plain-network baseline) on the three
overlapping 2-D Gaussian classes of ``synthetic3`` with OOD batches from its
shell (target α̂ = c·1 + β_in·onehot(y), β_in = 100, c = 1, OOD weight γ = 1),
and writes to ``--output_dir``:

* ``config.json`` / ``flags.cfg`` — the flags of the run (``flags.cfg`` is a
  flagfile that re-runs it);
* ``metrics.json`` — per model: test accuracy (and NLL, ECE, Brier), OOD
  detection (test split vs. its OOD shell) by every Dirichlet measure, with
  ``ood_auroc_mutual_information`` and ``ood_auroc_total_uncertainty`` at the
  top, mean α0 in-domain and OOD, training wall time (``train_seconds``, of
  the invocation that trained; a re-run that only restores keeps it);
* ``tensorboard/<loss>/`` — TensorBoard events of training;
* ``<loss>/checkpoints/`` (resumable) and ``<loss>/model.keras``;
* ``figures/uncertainty_maps.png`` — total, expected data and mutual
  information over the plane, one row per model.

Re-running: ``--resume`` is on by default, so running the same command again
into the same folder continues an interrupted run, or (if training finished)
restores the trained models and re-writes the metrics and figure — it never
fails and never silently retrains.  A different configuration aimed at a
folder that holds a run is refused with a clear error: pick another
``--output_dir`` or pass ``--overwrite`` (deletes the folder first).  A
non-empty folder without a run of ours is never written into.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging as absl_logging

DEFAULT_OUTPUT_DIR = os.path.join("runs", "synthetic_rkl")
LOSS_TITLES = {"forward_kl": "Forward KL", "reverse_kl": "Reverse KL",
               "cross_entropy": "Cross-entropy"}
MAP_MEASURES = ("total_uncertainty", "expected_data_uncertainty", "mutual_information")
FIGURE_FILE = os.path.join("figures", "uncertainty_maps.png")


def define_flags(flag_values):
    """Defines this binary's flags on ``flag_values`` (the single source of defaults)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("output_dir", DEFAULT_OUTPUT_DIR, "Where the run writes its files.", **fv)
    flags.DEFINE_bool("resume", True, "Continue (or re-evaluate) the run of the same "
                      "configuration in --output_dir.", **fv)
    flags.DEFINE_bool("overwrite", False, "Delete --output_dir first and start afresh "
                      "(takes precedence over --resume).", **fv)
    flags.DEFINE_integer("seed", 0, "Seed of initialisation and batch order.", **fv)
    flags.DEFINE_bool("deterministic", True, "Enable TensorFlow op determinism.", **fv)
    flags.DEFINE_list("losses", ["forward_kl", "reverse_kl"],
                      "Models to train: any of forward_kl, reverse_kl, cross_entropy.", **fv)
    flags.DEFINE_float("target_concentration", 100.0, "β_in of the in-domain target.", **fv)
    flags.DEFINE_float("concentration", 1.0, "c, the flat part of every target.", **fv)
    flags.DEFINE_float("ood_weight", 1.0, "γ, the weight of the OOD term.", **fv)
    flags.DEFINE_bool("normalize_by_target", False, "Divide the KL losses by β_in.", **fv)
    flags.DEFINE_list("hidden_units", ["64", "64"], "MLP hidden layer sizes.", **fv)
    flags.DEFINE_float("learning_rate", 3e-3, "Adam learning rate.", **fv)
    flags.DEFINE_integer("batch_size", 128, "In-domain (and OOD) examples per step.", **fv)
    flags.DEFINE_integer("train_steps", 3000, "Training steps per model.", **fv)
    flags.DEFINE_integer("steps_per_epoch", 500, "Steps between checkpoints / logs.", **fv)
    flags.DEFINE_integer("steps_per_execution", 25, "Training steps per compiled call (divides "
                         "--steps_per_epoch and --train_steps).", **fv)
    flags.DEFINE_float("plot_extent", 8.0, "Maps cover [-e, e]².", **fv)
    flags.DEFINE_integer("grid_resolution", 200, "Map points per axis.", **fv)
    flags.DEFINE_integer("verbose", 2, "Keras fit verbosity (0, 1, 2).", **fv)


def _flag_names():
    probe = flags.FlagValues()
    define_flags(probe)
    return sorted(probe)


def default_config(**overrides):
    """The default configuration (a dict of flag values) with ``overrides`` applied."""
    probe = flags.FlagValues()
    define_flags(probe)
    probe(["synthetic_rkl"])
    config = {name: probe[name].value for name in probe}
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown configuration keys: {sorted(unknown)}.")
    config.update(overrides)
    return config


def validate_config(config):
    """Raises ``ValueError`` naming the first bad flag; returns the normalised config."""
    from uqmix.models.prior_network import LOSSES

    config = dict(config)
    losses = list(config["losses"])
    if not losses:
        raise ValueError("--losses is empty.")
    unknown = [loss for loss in losses if loss not in LOSSES]
    if unknown:
        raise ValueError(f"--losses has unknown entries {unknown}; known: {', '.join(LOSSES)}.")
    if len(set(losses)) != len(losses):
        raise ValueError(f"--losses lists a loss twice: {losses}.")
    config["losses"] = losses
    try:
        hidden = [int(h) for h in config["hidden_units"]]
    except (TypeError, ValueError):
        raise ValueError(
            f"--hidden_units must be integers, got {config['hidden_units']}.") from None
    if not hidden or min(hidden) < 1:
        raise ValueError(f"--hidden_units must be positive integers, got {hidden}.")
    config["hidden_units"] = hidden
    checks = [
        ("target_concentration", config["target_concentration"] > 0, "> 0"),
        ("concentration", config["concentration"] > 0, "> 0"),
        ("ood_weight", config["ood_weight"] >= 0, ">= 0"),
        ("learning_rate", config["learning_rate"] > 0, "> 0"),
        ("batch_size", config["batch_size"] >= 1, ">= 1"),
        ("train_steps", config["train_steps"] >= 1, ">= 1"),
        ("steps_per_epoch", config["steps_per_epoch"] >= 1, ">= 1"),
        ("steps_per_execution", config["steps_per_execution"] >= 1, ">= 1"),
        ("plot_extent", config["plot_extent"] > 0, "> 0"),
        ("grid_resolution", 10 <= config["grid_resolution"] <= 1000, "in [10, 1000]"),
        ("verbose", config["verbose"] in (0, 1, 2), "0, 1 or 2"),
        ("seed", config["seed"] >= 0, ">= 0"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise ValueError(f"--{name} must be {rule}, got {config[name]}.")
    for name in ("steps_per_epoch", "train_steps"):
        if config[name] % config["steps_per_execution"]:
            raise ValueError(f"--steps_per_execution ({config['steps_per_execution']}) must divide "
                             f"--{name} ({config[name]}).")
    if not config["output_dir"]:
        raise ValueError("--output_dir must be set.")
    return config


def _train_model(loss, config, data, output_dir):
    """Builds (or restores) and trains the Prior Network for ``loss``.

    Returns (model, seconds of training, or None when the checkpoint already
    held the finished run and nothing was trained).
    """
    import keras

    from uqmix import training
    from uqmix.data import make_dataset, zip_in_and_ood
    from uqmix.models import PriorNetwork
    from uqmix.models.backbones import mlp

    seed = config["seed"] + config["losses"].index(loss)
    keras.utils.set_random_seed(seed)
    backbone = mlp((2,), 3, hidden_units=config["hidden_units"], name=f"{loss}_mlp")
    model = PriorNetwork(backbone, 3, loss=loss,
                         target_concentration=config["target_concentration"],
                         concentration=config["concentration"], ood_weight=config["ood_weight"],
                         normalize_by_target=config["normalize_by_target"], name=loss)
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]),
                  steps_per_execution=config["steps_per_execution"])
    x, y, x_ood = data["x_train"], data["y_train"], data["x_ood_train"]

    def make_train_dataset():
        batch = config["batch_size"]
        return zip_in_and_ood(make_dataset(x, y, batch_size=batch, repeat=True, seed=seed),
                              make_dataset(x_ood, batch_size=batch, repeat=True, seed=seed + 1000))

    model_dir = os.path.join(output_dir, loss)
    tensorboard = keras.callbacks.TensorBoard(
        log_dir=os.path.join(output_dir, "tensorboard", loss), update_freq="epoch",
        write_graph=False)
    start = time.perf_counter()
    history = training.fit_resumable(model, make_train_dataset, total_steps=config["train_steps"],
                           steps_per_epoch=config["steps_per_epoch"], output_dir=model_dir,
                           callbacks=[tensorboard], verbose=config["verbose"])
    seconds = time.perf_counter() - start
    model.save(os.path.join(model_dir, "model.keras"))
    return model, (None if history is None else seconds)


def _evaluate(model, data):
    from uqmix import evaluation

    pred_in = model.predictive(data["x_test"], batch_size=4096)
    pred_ood = model.predictive(data["x_ood_test"], batch_size=4096)
    ood = evaluation.ood_detection(pred_in, pred_ood)
    result = dict(evaluation.classification_metrics(pred_in, data["y_test"]))
    result.update({
        "ood_auroc_mutual_information": ood["mutual_information"]["auroc"],
        "ood_auroc_total_uncertainty": ood["total_uncertainty"]["auroc"],
        "ood_detection": ood,
        "mean_alpha0_in": float(pred_in.precision().numpy().mean()),
        "mean_alpha0_ood": float(pred_ood.precision().numpy().mean()),
    })
    return result


def _maps(model, config):
    from uqmix import plotting

    extent = config["plot_extent"]
    points, shape = plotting.plane_grid((-extent, extent, -extent, extent),
                                        config["grid_resolution"])
    predictive = model.predictive(points, batch_size=8192)
    return {name: getattr(predictive, name)().numpy().reshape(shape) for name in MAP_MEASURES}


def _load_data():
    from uqmix.data import load_arrays

    x_train, y_train = load_arrays("synthetic3", "train")
    x_test, y_test = load_arrays("synthetic3", "test")
    x_ood_train, _ = load_arrays("synthetic3_ood", "train")
    x_ood_test, _ = load_arrays("synthetic3_ood", "test")
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "x_ood_train": x_ood_train, "x_ood_test": x_ood_test}


def run(config):
    """Runs the job for a configuration dict (flag name → value); returns the metrics dict."""
    config = validate_config(config)
    import tensorflow as tf

    from uqmix import plotting
    from uqmix import runs

    output_dir = config["output_dir"]
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    # Resume only a run of ours: a non-empty folder without config.json is refused.
    resume = config["resume"] and os.path.exists(os.path.join(output_dir, runs.CONFIG_FILE))
    runs.prepare_output_dir(output_dir, config, resume=resume, overwrite=config["overwrite"])
    data = _load_data()
    metrics_path = os.path.join(output_dir, runs.METRICS_FILE)
    previous = runs.read_json(metrics_path).get("models", {}) if os.path.exists(metrics_path) else {}
    metrics = {"dataset": "synthetic3", "models": {}}
    maps = {}
    for loss in config["losses"]:
        model, seconds = _train_model(loss, config, data, output_dir)
        result = _evaluate(model, data)
        # a re-run that only restored the finished model keeps the recorded training time
        result["train_seconds"] = (seconds if seconds is not None
                                   else previous.get(loss, {}).get("train_seconds"))
        metrics["models"][loss] = result
        maps[LOSS_TITLES[loss]] = _maps(model, config)
    runs.atomic_write_json(metrics_path, metrics)
    extent = config["plot_extent"]
    every = max(1, len(data["x_test"]) // 300)
    overlays = [
        (data["x_test"][::every], {"s": 2, "c": "white", "alpha": 0.5, "linewidths": 0}),
        (data["x_ood_test"][::every], {"s": 2, "c": "red", "alpha": 0.5, "linewidths": 0}),
    ]
    figure = plotting.uncertainty_maps(
        maps, (-extent, extent, -extent, extent), overlays=overlays,
        title="synthetic3: Prior Networks (white: test data, red: OOD shell)",
        color_scale="panel")
    plotting.save_figure(figure, os.path.join(output_dir, FIGURE_FILE))
    return metrics


def _summary(metrics):
    lines = []
    for loss, result in metrics["models"].items():
        lines.append(f"{loss:>13}: accuracy {result['accuracy']:.3f}, OOD AUROC by mutual "
                     f"information {result['ood_auroc_mutual_information']:.3f}, by total "
                     f"uncertainty {result['ood_auroc_total_uncertainty']:.3f}")
    return "\n".join(lines)


def main(argv, flag_values=flags.FLAGS):
    """The binary: parsed flags (``flag_values``, absl's global FLAGS by default) → ``run``."""
    if "verbosity" not in flag_values or not flag_values["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)  # no per-checkpoint INFO lines
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = {name: flag_values[name].value for name in _flag_names()}
    try:
        config = validate_config(config)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    from uqmix.runs import ConfigMismatchError

    try:
        metrics = run(config)
    except ConfigMismatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(_summary(metrics))
    print(f"wrote {config['output_dir']} (metrics.json, {FIGURE_FILE}, tensorboard/)")
    return 0


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
