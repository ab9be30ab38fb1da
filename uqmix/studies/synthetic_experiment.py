r"""Forward- vs reverse-KL Prior Networks on ``synthetic3``: the library side of
``python -m experiments.synthetic_rkl`` (the built-in default job).

``run(config)`` takes a dict of flag values (``OPTIONS``: name, default, help;
``default_config()`` gives them all) and trains one Prior Network per
``losses`` entry (default forward_kl and reverse_kl; cross_entropy gives the
plain-network baseline) on the three overlapping 2-D Gaussian classes of
``synthetic3`` with OOD batches from its shell (target α̂ = c·1 + β_in·onehot(y),
β_in = 100, c = 1, OOD weight γ = 1), and writes to ``output_dir``:

* ``config.json`` / ``flags.cfg`` — the flags of the run (``flags.cfg`` is a
  flagfile that re-runs it);
* ``metrics.json`` — per model: test accuracy (and NLL, ECE, Brier), OOD
  detection (test split vs. its OOD shell) by every Dirichlet measure, with
  ``ood_auroc_mutual_information`` and ``ood_auroc_total_uncertainty`` at the
  top, mean α0 in-domain and OOD, training wall time (``train_seconds``, summed over
  the invocations that trained; a re-run that only restores keeps it);
* ``tensorboard/<loss>/`` — ``train/`` and ``validation/`` curves per epoch (the
  validation split is a separate draw of ``synthetic3``, seed 2, with its own
  OOD shell; never trained on), ``evaluation/`` the metrics and the figure at
  the final global step (``uqmix.tensorboard_logging``);
* ``<loss>/checkpoints/`` (resumable) and ``<loss>/model.keras``;
* ``figures/uncertainty_maps.png`` — total, expected data and mutual
  information over the plane, one row per model, each column on one colour
  scale so the rows compare.

Re-running: ``resume`` is on by default (unlike the image binaries), so running
the same command again into the same folder continues an interrupted run, or
(if training finished) restores the trained models and re-writes the metrics
and figure — it never fails and never silently retrains.  A different
configuration aimed at a folder that holds a run is refused with a clear
error: pick another ``output_dir`` or pass ``overwrite`` (deletes the folder
first; it takes precedence over ``resume``).  A non-empty folder without a run
of ours is never written into.
"""

import os
import time

import keras
import tensorflow as tf

from uqmix import (
    console,
    distributed,
    evaluation,
    options,
    plotting,
    runs,
    synthetic,
    tensorboard_logging,
    training,
)
from uqmix.data import load_arrays, make_dataset, zip_in_and_ood
from uqmix.models import PriorNetwork
from uqmix.models.backbones import mlp
from uqmix.models.prior_network import LOSSES
from uqmix.setup_utils import STRATEGIES, make_strategy

LOSS_TITLES = {
    "forward_kl": "Forward KL",
    "reverse_kl": "Reverse KL",
    "cross_entropy": "Cross-entropy",
}
MAP_MEASURES = ("total_uncertainty", "expected_data_uncertainty", "mutual_information")
FIGURE_FILE = os.path.join("figures", "uncertainty_maps.png")
VALIDATION_SEED = 2  # synthetic3's train / test splits use seeds 0 / 1

# (name, default, help): the binary's flags and the keys of a configuration.
OPTIONS = (
    ("output_dir", os.path.join("runs", "synthetic_rkl"), "Where the run writes its files."),
    (
        "resume",
        True,
        "Continue (or re-evaluate) the run of the same configuration in --output_dir.",
    ),
    (
        "overwrite",
        False,
        "Delete --output_dir first and start afresh (takes precedence over --resume).",
    ),
    ("seed", 0, "Seed of initialisation and batch order."),
    ("deterministic", True, "Enable TensorFlow op determinism."),
    options.JIT_COMPILE_OPTION,
    (
        "losses",
        ["forward_kl", "reverse_kl"],
        "Models to train: any of forward_kl, reverse_kl, cross_entropy.",
    ),
    ("target_concentration", 100.0, "β_in of the in-domain target."),
    ("concentration", 1.0, "c, the flat part of every target."),
    ("ood_weight", 1.0, "γ, the weight of the OOD term."),
    ("normalize_by_target", False, "Divide the KL losses by β_in."),
    ("hidden_units", ["64", "64"], "MLP hidden layer sizes."),
    ("learning_rate", 3e-3, "Adam learning rate."),
    ("batch_size", 128, "In-domain (and OOD) examples per step."),
    ("train_steps", 3000, "Training steps per model."),
    ("steps_per_epoch", 500, "Steps between checkpoints / logs / validation."),
    options.STEPS_PER_EXECUTION_OPTION,
    ("plot_extent", 8.0, "Maps cover [-e, e]²."),
    ("grid_resolution", 200, "Map points per axis."),
    ("verbose", 2, "Keras fit verbosity (0, 1, 2)."),
    (
        "strategy",
        "default",
        "tf.distribute strategy: default | mirrored | multi_worker (reads "
        "TF_CONFIG) | tpu; --batch_size is the global batch.",
    ),
    ("tpu_address", "", "TPU address for --strategy=tpu (empty: the environment's TPU)."),
)


def default_config(**overrides):
    """Every option at its default, with ``overrides`` applied (unknown keys refused)."""
    return options.default_config(OPTIONS, overrides)


def validate_config(config):
    """Raises ``ValueError`` naming the first bad option; returns the normalised config."""
    config = default_config(**config)
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
            f"--hidden_units must be integers, got {config['hidden_units']}."
        ) from None
    if not hidden or min(hidden) < 1:
        raise ValueError(f"--hidden_units must be positive integers, got {hidden}.")
    config["hidden_units"] = hidden
    options.check_finite(config)
    options.check_rules(
        config,
        [
            ("target_concentration", config["target_concentration"] > 0, "> 0"),
            ("concentration", config["concentration"] > 0, "> 0"),
            ("ood_weight", config["ood_weight"] >= 0, ">= 0"),
            ("learning_rate", config["learning_rate"] > 0, "> 0"),
            ("batch_size", config["batch_size"] >= 1, ">= 1"),
            ("train_steps", config["train_steps"] >= 1, ">= 1"),
            ("steps_per_epoch", config["steps_per_epoch"] >= 1, ">= 1"),
            ("plot_extent", config["plot_extent"] > 0, "> 0"),
            ("grid_resolution", 10 <= config["grid_resolution"] <= 1000, "in [10, 1000]"),
            ("verbose", config["verbose"] in (0, 1, 2), "0, 1 or 2"),
            ("seed", config["seed"] >= 0, ">= 0"),
        ],
    )
    options.check_choices([("strategy", config["strategy"], STRATEGIES)])
    options.resolve_steps_per_execution(config, config["train_steps"], config["steps_per_epoch"])
    if not config["output_dir"]:
        raise ValueError("--output_dir must be set.")
    # --resume is on by default here and --overwrite takes precedence, so the shared
    # resume-xor-overwrite rule is not applied; the strategy rules are.
    options.check_run_options(dict(config, resume=False))
    options.check_jit_compile(config)
    return config


# -- data ------------------------------------------------------------------------------------
def load_data():
    """Train / validation / test splits of ``synthetic3`` and their OOD shells."""
    x_train, y_train = load_arrays("synthetic3", "train")
    x_test, y_test = load_arrays("synthetic3", "test")
    x_ood_train, _ = load_arrays("synthetic3_ood", "train")
    x_ood_test, _ = load_arrays("synthetic3_ood", "test")
    x_val, y_val, x_ood_val = synthetic.synthetic3(
        synthetic.SPLIT_NUM_PER_CLASS["test"], VALIDATION_SEED
    )
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "x_ood_train": x_ood_train,
        "x_ood_test": x_ood_test,
        "x_val": x_val,
        "y_val": y_val,
        "x_ood_val": x_ood_val,
    }


def _validation_dataset(data, batch_size):
    """One pass over the validation split, each batch zipped with validation OOD points."""
    return zip_in_and_ood(
        make_dataset(data["x_val"], data["y_val"], batch_size=batch_size, shuffle=False),
        make_dataset(data["x_ood_val"], batch_size=batch_size, shuffle=False),
    )


# -- model -----------------------------------------------------------------------------------
def build_model(loss, config):
    """The compiled ``PriorNetwork`` (MLP backbone, Adam) for ``loss``, seeded per loss."""
    keras.utils.set_random_seed(config["seed"] + config["losses"].index(loss))
    backbone = mlp(
        (2,), synthetic.NUM_CLASSES, hidden_units=config["hidden_units"], name=f"{loss}_mlp"
    )
    model = PriorNetwork(
        backbone,
        synthetic.NUM_CLASSES,
        loss=loss,
        target_concentration=config["target_concentration"],
        concentration=config["concentration"],
        ood_weight=config["ood_weight"],
        normalize_by_target=config["normalize_by_target"],
        name=loss,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config["learning_rate"]),
        steps_per_execution=options.resolve_steps_per_execution(
            config, config["train_steps"], config["steps_per_epoch"]
        ),
        jit_compile=config["jit_compile"],
    )
    return options.check_compiled_with_xla(model, config)


def train_model(loss, config, data, strategy):
    """Builds (or restores) and trains the Prior Network for ``loss``.

    Returns (model, seconds of training, or None when the checkpoint already
    held the finished run and nothing was trained).
    """
    with strategy.scope():
        model = build_model(loss, config)
    seed = config["seed"] + config["losses"].index(loss)
    batch = config["batch_size"]

    def make_train_dataset():
        return zip_in_and_ood(
            make_dataset(
                data["x_train"], data["y_train"], batch_size=batch, repeat=True, seed=seed
            ),
            make_dataset(data["x_ood_train"], batch_size=batch, repeat=True, seed=seed + 1000),
        )

    output_dir = config["output_dir"]
    model_dir = os.path.join(output_dir, loss)
    summaries = tensorboard_logging.EpochSummaries(os.path.join(output_dir, "tensorboard", loss))
    start = time.perf_counter()
    history = training.fit_resumable(
        model,
        make_train_dataset,
        total_steps=config["train_steps"],
        steps_per_epoch=config["steps_per_epoch"],
        output_dir=model_dir,
        chief_callbacks=[summaries],
        validation_data=_validation_dataset(data, max(batch, 512)),
        verbose=config["verbose"],
        timing=(output_dir, f"train_seconds.{loss}"),
    )
    seconds = time.perf_counter() - start
    with distributed.writing(os.path.join(model_dir, "model.keras"), strategy) as path:
        runs.atomic_save_model(model, path)
    return model, (None if history is None else seconds)


# -- evaluation ------------------------------------------------------------------------------
def evaluate(model, data):
    """Classification metrics on the test split and OOD detection of its shell."""
    pred_in = model.predictive(data["x_test"], batch_size=4096)
    pred_ood = model.predictive(data["x_ood_test"], batch_size=4096)
    ood = evaluation.ood_detection(pred_in, pred_ood)
    result = dict(evaluation.classification_metrics(pred_in, data["y_test"]))
    result.update(
        {
            "ood_auroc_mutual_information": ood["mutual_information"]["auroc"],
            "ood_auroc_total_uncertainty": ood["total_uncertainty"]["auroc"],
            "ood_detection": ood,
            "mean_alpha0_in": float(pred_in.precision().numpy().mean()),
            "mean_alpha0_ood": float(pred_ood.precision().numpy().mean()),
        }
    )
    return result


def uncertainty_maps(model, config):
    """{measure: [n, n] image} of ``MAP_MEASURES`` over the ``plot_extent`` square."""
    extent = config["plot_extent"]
    points, shape = plotting.plane_grid(
        (-extent, extent, -extent, extent), config["grid_resolution"]
    )
    predictive = model.predictive(points, batch_size=8192)
    return {name: getattr(predictive, name)().numpy().reshape(shape) for name in MAP_MEASURES}


def write_figure(maps, config, data):
    """The uncertainty maps of every model (rows) with test and OOD points; returns the path."""
    extent = config["plot_extent"]
    every = max(1, len(data["x_test"]) // 300)
    overlays = [
        (data["x_test"][::every], {"s": 2, "c": "white", "alpha": 0.5, "linewidths": 0}),
        (data["x_ood_test"][::every], {"s": 2, "c": "red", "alpha": 0.5, "linewidths": 0}),
    ]
    shown = len(overlays[0][0])
    figure = plotting.uncertainty_maps(
        maps,
        (-extent, extent, -extent, extent),
        overlays=overlays,
        title=f"synthetic3 Prior Networks, 1 seed (seed {config['seed']}); white: {shown:,} of "
        f"{len(data['x_test']):,} test points, red: {len(overlays[1][0]):,} of "
        f"{len(data['x_ood_test']):,} OOD points; one colour scale per column",
        color_scale="column",
    )
    return plotting.save_figure(figure, os.path.join(config["output_dir"], FIGURE_FILE))


# -- the run ---------------------------------------------------------------------------------
def run(config):
    """Runs the job for a configuration dict (flag name → value); returns the metrics dict.

    The run folder is locked for this process (``uqmix.run_lock``) to the end of the run,
    from before the data is read when it exists: a second process writing it is refused.
    """
    config = validate_config(config)
    # ``resume`` (on by default) continues a run of ours only: ``runs.claim_output_dir`` refuses
    # a non-empty folder that holds none, and a new or empty folder starts a run.
    return runs.run_holding_output_dir(_run, config)


def _run(config):
    output_dir = config["output_dir"]
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    # Before any other TF op (multi_worker); then every worker runs the same steps.
    strategy = make_strategy(config["strategy"], tpu_address=config["tpu_address"] or None)
    chief = distributed.is_chief(strategy)  # the other workers write no results

    # the chief creates the folder
    distributed.prepare_output_dir(config, strategy, runs.prepare_output_dir)
    data = load_data()
    metrics_path = os.path.join(output_dir, runs.METRICS_FILE)
    previous = (
        runs.read_json(metrics_path).get("models", {}) if os.path.exists(metrics_path) else {}
    )
    metrics = {"dataset": "synthetic3", "models": {}}
    maps, steps = {}, {}
    for index, loss in enumerate(config["losses"], start=1):
        if config["verbose"]:
            console.announce(loss, index, len(config["losses"]))
        model, seconds = train_model(loss, config, data, strategy)
        result = evaluate(model, data)
        # every invocation's epochs (fit_resumable's timing); a re-run that only restored
        # the finished model keeps the recorded time
        total = (
            runs.read_seconds(output_dir, f"train_seconds.{loss}", default=0.0)
            if chief
            else (seconds or 0.0)
        )
        result["train_seconds"] = (
            total if total > 0 else previous.get(loss, {}).get("train_seconds")
        )
        metrics["models"][loss] = result
        maps[LOSS_TITLES[loss]] = uncertainty_maps(model, config)
        steps[loss] = tensorboard_logging.global_step(model)
    if chief:  # metrics.json last: it marks the run finished (``run_steps``' module doc)
        figure = write_figure(maps, config, data)
        for loss, result in metrics["models"].items():
            log_evaluation(config, loss, result, steps[loss], [figure])
        runs.atomic_write_json(metrics_path, metrics)
    return metrics


def log_evaluation(config, loss, result, step, figures):
    """The evaluation metrics and figures of one model to ``tensorboard/<loss>/evaluation``."""
    tensorboard_logging.log_evaluation(
        os.path.join(config["output_dir"], "tensorboard", loss), result, step, figures
    )


def summary(metrics):
    """A few lines for the terminal."""
    lines = []
    for loss, result in metrics["models"].items():
        lines.append(
            f"{loss:>13}: accuracy {result['accuracy']:.3f}, OOD AUROC by mutual "
            f"information {result['ood_auroc_mutual_information']:.3f}, by total "
            f"uncertainty {result['ood_auroc_total_uncertainty']:.3f}"
        )
    return "\n".join(lines)
