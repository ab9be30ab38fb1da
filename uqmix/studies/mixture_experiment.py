"""The ML-vs-VI infinite-mixture study: the library side of ``python -m experiments.mixture_mnist``.

``run(config)`` takes a dict of flag values (``OPTIONS``: name, default, help;
``default_config()`` gives them all) and

1. validates it (``validate_config``: λ ≥ 0, σ² > 0, S ≥ 1, known dataset and
   model, …) and loads the data (MNIST or Fashion-MNIST, and notMNIST as the
   OOD test set) — every problem is one ``ValueError`` before any training;
2. prepares ``output_dir`` (``uqmix.runs.prepare_output_dir``) and writes the
   flags used (``config.json``, ``flags.cfg``);
3. builds the model (``build_model``):
   * ``ml`` / ``vi``: ``InfiniteMixture`` (matrix-normal 784-128-128-10) trained
     by maximum likelihood of the S-sample mixture or by the ELBO:
       VI: loss = mean_b[−(1/S) Σ_s ℓ_bs] + (λ/N)·KL
       ML: loss = mean_b[−logsumexp_s ℓ_bs + log S] + (λ/N)·KL
   * ``deterministic`` (L2 weight decay), ``mc_dropout`` (p = 0.5, on at test
     time), ``ensemble`` (5 members): the finite-mixture baselines, same MLP;
   and trains it with Adam for ``steps`` steps of ``batch_size``
   (``uqmix.training.fit_resumable``: checkpoint every ``steps_per_epoch``
   steps, step-exact resume, NaN stop), with TensorBoard scalars (loss, NLL,
   KL / weight decay, accuracy) and, for mixtures, histograms of every
   layer's log10 weight variances u_i·v_j;
4. evaluates the ``evaluations`` asked for (``EVALUATIONS``) with
   ``test_samples`` samples of the predictive:
   * ``classification``: accuracy, error, NLL, ECE, Brier of the mean prediction;
   * ``weight_variances``: per layer mean / median / quantiles and a histogram of
     log10 Var[W_ij] (mixtures only);
   * ``misclassification``: AUROC/AUPR/FPR@95 of every measure, positives =
     wrongly classified test inputs; histograms of predictive variance and
     entropy for correct vs wrong;
   * ``ood``: detection of the OOD set (notMNIST, first ``ood_examples``) by every
     measure (predictive variance and entropy = total uncertainty among them);
   * ``robustness``: accuracy and attack success rate under untargeted PGD
     (L∞; ``attack_preset``: cleverhans4 = ``pgd_iterations`` steps of
     ``pgd_eps_iter_ratio``·ε, or the cleverhans3_pgd / madry_cleverhans2
     defaults; the ``attack_*`` flags name noise, combination, labels and the
     evaluation scheme, ``uqmix.attack_eval.AttackOptions``) against ε on the first
     ``robustness_examples`` test images, once per number of gradient samples in
     ``robustness_gradient_samples`` (stochastic models; one curve otherwise);
     every curve records its resolved ``attack_options``;
   * ``adversarial_detection``: the same attack at ε = ``detection_eps`` with
     ``detection_gradient_samples`` samples (success rate and options
     recorded); AUROC by predictive variance, entropy and mutual information,
     both variants (all inputs vs all attacks; correct inputs vs successful
     attacks, subsampled to the smaller count);
   and writes figures in ``figures/``, the trained model as ``model.keras``, with
   ``export_dir`` a SavedModel, and last ``metrics.json``, atomically (``run_steps.finish``).

Running the same configuration again with ``resume`` continues an interrupted
run, or re-evaluates a finished one without training.

With ``training_cache=DIR`` a run whose training is already in ``DIR`` (same flags
outside ``TRAINING_CACHE_EXCLUDED``, the evaluation-only / output flags, and the same
uqmix source: ``uqmix.training_cache``) loads that model instead of training, and
records ``training_reused_from`` (the entry), ``train_seconds`` (of the original
training) and ``train_seconds_this_run`` (the load) in ``metrics.json``; a run
that trains stores its model there.  A run that has a checkpoint already
(``resume``) continues from it and does not reuse.
"""

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from uqmix import (
    attack_eval,
    console,
    distributed,
    evaluation,
    metrics,
    options,
    plotting,
    runs,
    tensorboard_logging,
    training,
    training_cache,
)
from uqmix.data import hold_out, load_arrays, make_dataset
from uqmix.layers import SAMPLING_MODES
from uqmix.models import DeepEnsemble, Deterministic, InfiniteMixture, MCDropout
from uqmix.setup_utils import STRATEGIES
from uqmix.studies import run_steps

DATASETS = ("mnist", "fashion_mnist")
OOD_DATASETS = ("notmnist", "mnist", "fashion_mnist", "")
MODELS = ("ml", "vi", "deterministic", "mc_dropout", "ensemble")
MIXTURE_MODELS = ("ml", "vi")
STOCHASTIC_MODELS = ("ml", "vi", "mc_dropout")
EVALUATIONS = (
    "classification",
    "weight_variances",
    "misclassification",
    "ood",
    "robustness",
    "adversarial_detection",
)
DEFAULT_EVALUATIONS = ["classification", "weight_variances", "misclassification", "ood"]
HISTOGRAM_MEASURES = ("predictive_variance", "total_uncertainty")
DETECTION_MEASURES = ("predictive_variance", "total_uncertainty", "mutual_information")
FIGURES_DIR = "figures"
MODEL_FILE = "model.keras"
DEFAULT_EPSILONS = ["0", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4", "0.45", "0.5"]

# (name, default, help): the binary's flags and the keys of a configuration.
OPTIONS = (
    # data
    ("dataset", "mnist", "In-domain data: mnist | fashion_mnist."),
    ("ood_dataset", "notmnist", "OOD test set (test split); empty for none."),
    *options.DATA_SOURCE_OPTIONS,
    ("ood_examples", 10000, "First N images of the OOD set (0: all)."),
    (
        "validation_examples",
        0,
        "Hold out the last N training images as a validation split, "
        "evaluated after every epoch (TensorBoard validation/); 0: none.",
    ),
    # model
    ("model", "ml", "ml | vi (infinite mixtures) | deterministic | mc_dropout | ensemble."),
    ("hidden_units", ["128", "128"], "Hidden layer widths of the MLP."),
    ("kl_weight", 1.0, "lambda >= 0: weight of KL/N in the mixture objective (1 = exact VI)."),
    ("prior_variance", 1.0, "sigma^2 > 0 of the prior MN(0, sigma^2 I, I)."),
    ("train_samples", 5, "S: weight samples per training step (mixtures)."),
    (
        "sampling",
        "local_reparameterization",
        "Training sampling mode of the mixture: local_reparameterization | shared_weights.",
    ),
    (
        "predictive_sampling",
        "local_reparameterization",
        "Sampling mode of the mixture's predictive.",
    ),
    (
        "jit_sampling",
        True,
        "Draw the mixture's noise in one XLA kernel and run the training step's forward and "
        "backward pass as one XLA program (faster on CPU).",
    ),
    ("weight_decay", -1.0, "L2 strength w of the baselines (loss + w * sum W^2); -1: 1/N."),
    ("dropout_rate", 0.5, "Dropout rate of mc_dropout."),
    ("ensemble_size", 5, "Members of the ensemble."),
    # training
    ("steps", 30000, "Training steps."),
    ("batch_size", 200, "Examples per step."),
    ("learning_rate", 1e-3, "Adam learning rate."),
    ("steps_per_epoch", 1000, "Steps between checkpoints / TensorBoard points."),
    options.STEPS_PER_EXECUTION_OPTION,
    ("seed", 0, "Seed of initialisation, noise, batch order and attacks."),
    ("deterministic", True, "TensorFlow op determinism."),
    options.JIT_COMPILE_OPTION,
    ("strategy", "default", "tf.distribute strategy: default | mirrored | multi_worker | tpu."),
    ("tpu_address", "", "TPU address for strategy=tpu."),
    ("verbose", 2, "Keras fit verbosity (0, 1, 2)."),
    # evaluation
    ("evaluations", DEFAULT_EVALUATIONS, "Any of " + ", ".join(EVALUATIONS) + "."),
    ("test_samples", 100, "Samples of the predictive at evaluation (stochastic models)."),
    ("eval_batch_size", 500, "Batch size of evaluation and attacks."),
    ("histogram_bins", 50, "Bins of the measure and weight-variance histograms."),
    ("robustness_examples", 1000, "First N test images attacked for the robustness curve."),
    ("robustness_epsilons", DEFAULT_EPSILONS, "L-inf radii of the robustness curve."),
    (
        "robustness_gradient_samples",
        ["1"],
        "Samples inside each attack gradient, one curve per entry (stochastic models).",
    ),
    ("pgd_iterations", 40, "PGD steps."),
    ("pgd_eps_iter_ratio", 0.0, "PGD step = ratio * eps (0: min(1, 2.5 / pgd_iterations))."),
    ("pgd_rand_init", False, "Random start in the eps-ball."),
    (
        "attack_preset",
        "cleverhans4",
        "PGD random start / step / iterations / labels: "
        + " | ".join(attack_eval.ATTACK_PRESETS)
        + " (pgd_* flags "
        "apply to cleverhans4 only).",
    ),
    (
        "attack_noise",
        "redraw",
        "Noise of a sampled model during the attack: redraw (fresh at "
        "every gradient) | frozen (one draw held for the attack).",
    ),
    ("attack_frozen_scope", "auto", "Frozen draw per batch (weight matrices) | example | auto."),
    (
        "attack_combine",
        "log_mean",
        "Attack loss of S samples: log_mean (loss of log mean p) | "
        "mean_loss (mean of per-sample losses, EOT).",
    ),
    ("attack_labels", "", "true | predicted ('': the preset's)."),
    (
        "attack_label_samples",
        0,
        "Samples of the prediction used as labels (0: the attack model's own prediction).",
    ),
    (
        "attack_evaluation",
        "single",
        "single (one attack, N fresh samples) | per_sample (a new "
        "attack per evaluation sample, averaged; CDN scheme).",
    ),
    ("attack_evaluation_attacks", 0, "Attacks of per_sample evaluation (0: test_samples)."),
    ("detection_eps", 0.25, "L-inf radius of the adversarial-detection attack."),
    ("detection_examples", 1000, "First N test images of adversarial detection."),
    ("detection_gradient_samples", 1, "Samples inside each gradient of that attack."),
    # run
    ("output_dir", os.path.join("runs", "mixture_mnist"), "Where the run writes its files."),
    ("resume", False, "Continue (or re-evaluate) the run of the same configuration."),
    ("overwrite", False, "Delete output_dir first."),
    ("export_dir", "", "Write a SavedModel with an uncertainty serving signature here."),
    (
        "training_cache",
        "",
        "Folder of finished trainings keyed by every training flag and the uqmix source: a "
        "run whose training is there reuses it (evaluation-only flags may differ), else "
        "trains and stores it; empty: off.",
    ),
)


def default_config(**overrides):
    """Every option at its default, with ``overrides`` applied (unknown keys refused)."""
    return options.default_config(OPTIONS, overrides)


def _number_list(values, name, kind, minimum):
    try:
        result = [kind(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"--{name} must be a list of numbers, got {values}.") from None
    if not result or any(not math.isfinite(v) or v < minimum for v in result):
        raise ValueError(f"--{name} must be a non-empty list of values >= {minimum}, got {values}.")
    return result


def validate_config(config):
    """Raises ``ValueError`` naming the first bad option; returns the normalised config."""
    config = default_config(**config)
    options.check_finite(config)
    options.check_choices(
        (name, config[name], allowed)
        for name, allowed in (
            ("dataset", DATASETS),
            ("ood_dataset", OOD_DATASETS),
            ("model", MODELS),
            ("sampling", SAMPLING_MODES),
            ("predictive_sampling", SAMPLING_MODES),
            ("strategy", STRATEGIES),
            ("verbose", (0, 1, 2)),
        )
    )
    if config["ood_dataset"] == config["dataset"]:
        raise ValueError("--ood_dataset must differ from --dataset.")
    unknown = [e for e in config["evaluations"] if e not in EVALUATIONS]
    if unknown:
        raise ValueError(f"Unknown --evaluations {unknown}; choose from {', '.join(EVALUATIONS)}.")
    config["evaluations"] = [e for e in EVALUATIONS if e in config["evaluations"]]
    if "ood" in config["evaluations"] and not config["ood_dataset"]:
        raise ValueError("--evaluations=ood needs an --ood_dataset.")
    config["hidden_units"] = _number_list(config["hidden_units"], "hidden_units", int, 1)
    config["robustness_epsilons"] = _number_list(
        config["robustness_epsilons"], "robustness_epsilons", float, 0.0
    )
    if max(config["robustness_epsilons"]) > 1:
        raise ValueError(
            f"--robustness_epsilons must be in [0, 1] (pixels are in [0, 1]), got "
            f"{config['robustness_epsilons']}."
        )
    config["robustness_gradient_samples"] = _number_list(
        config["robustness_gradient_samples"], "robustness_gradient_samples", int, 1
    )
    rules = [
        ("kl_weight", math.isfinite(config["kl_weight"]) and config["kl_weight"] >= 0, ">= 0 (λ)"),
        (
            "prior_variance",
            math.isfinite(config["prior_variance"]) and config["prior_variance"] > 0,
            "> 0 (σ²)",
        ),
        ("train_samples", config["train_samples"] >= 1, ">= 1 (S)"),
        (
            "weight_decay",
            config["weight_decay"] >= 0 or config["weight_decay"] == -1,
            ">= 0, or -1 for 1/N",
        ),
        ("dropout_rate", 0 < config["dropout_rate"] < 1, "in (0, 1)"),
        ("ensemble_size", config["ensemble_size"] >= 1, ">= 1"),
        ("steps", config["steps"] >= 1, ">= 1"),
        ("batch_size", config["batch_size"] >= 1, ">= 1"),
        ("learning_rate", config["learning_rate"] > 0, "> 0"),
        ("steps_per_epoch", config["steps_per_epoch"] >= 1, ">= 1"),
        ("seed", config["seed"] >= 0, ">= 0"),
        ("train_examples", config["train_examples"] >= 0, ">= 0"),
        ("test_examples", config["test_examples"] >= 0, ">= 0"),
        ("ood_examples", config["ood_examples"] >= 0, ">= 0"),
        ("validation_examples", config["validation_examples"] >= 0, ">= 0"),
        ("test_samples", config["test_samples"] >= 1, ">= 1"),
        ("eval_batch_size", config["eval_batch_size"] >= 1, ">= 1"),
        ("histogram_bins", config["histogram_bins"] >= 1, ">= 1"),
        ("robustness_examples", config["robustness_examples"] >= 1, ">= 1"),
        ("pgd_iterations", config["pgd_iterations"] >= 1, ">= 1"),
        ("pgd_eps_iter_ratio", 0 <= config["pgd_eps_iter_ratio"] <= 1, "in [0, 1] (0: auto)"),
        ("detection_eps", 0 < config["detection_eps"] <= 1, "in (0, 1] (pixels are in [0, 1])"),
        ("detection_examples", config["detection_examples"] >= 1, ">= 1"),
        ("detection_gradient_samples", config["detection_gradient_samples"] >= 1, ">= 1"),
    ]
    options.check_rules(config, rules)
    _check_attack_options(config)
    if config["training_cache"] and config["strategy"] == "multi_worker":
        raise ValueError(
            "--training_cache cannot be used with --strategy=multi_worker (every worker would "
            "have to find the same entry, and workers need not share a file system); drop "
            "--training_cache."
        )
    options.check_run_options(config)
    options.check_jit_compile(config)
    options.resolve_steps_per_execution(config, config["steps"], config["steps_per_epoch"])
    return config


_PGD_FLAG_DEFAULTS = {"pgd_iterations": 40, "pgd_eps_iter_ratio": 0.0, "pgd_rand_init": False}


def attack_options(config, gradient_samples):
    """The ``AttackOptions`` of the robustness / detection attacks from the attack_* flags."""
    cleverhans4 = config["attack_preset"] == "cleverhans4"
    return attack_eval.AttackOptions(
        preset=config["attack_preset"],
        nb_iter=config["pgd_iterations"] if cleverhans4 else None,
        eps_iter_ratio=(config["pgd_eps_iter_ratio"] or None) if cleverhans4 else None,
        rand_init=config["pgd_rand_init"] if cleverhans4 else None,
        labels=config["attack_labels"] or None,
        label_samples=config["attack_label_samples"] or None,
        gradient_samples=gradient_samples,
        noise=config["attack_noise"],
        combine=config["attack_combine"],
        frozen_scope=config["attack_frozen_scope"],
        evaluation=config["attack_evaluation"],
        eval_attacks=config["attack_evaluation_attacks"] or None,
    )


def _check_attack_options(config):
    """Every attack option valid for every attack the evaluations will run, before any work."""
    if config["attack_preset"] != "cleverhans4":
        changed = [name for name, default in _PGD_FLAG_DEFAULTS.items() if config[name] != default]
        if changed:
            raise ValueError(
                f"--{', --'.join(changed)} apply to --attack_preset=cleverhans4 only; "
                f"--attack_preset={config['attack_preset']} fixes them."
            )
    for name in ("attack_label_samples", "attack_evaluation_attacks"):
        if config[name] < 0:
            raise ValueError(f"--{name} must be >= 0 (0: default), got {config[name]}.")
    try:
        for count in config["robustness_gradient_samples"] + [config["detection_gradient_samples"]]:
            option = attack_options(config, count)
            option.resolved()
            if "robustness" in config["evaluations"]:
                for eps in config["robustness_epsilons"]:
                    option.step(eps)
            if "adversarial_detection" in config["evaluations"]:
                option.step(config["detection_eps"])
    except ValueError as error:
        raise ValueError(f"attack flags (--attack_*, --pgd_*): {error}") from None


# -- data ------------------------------------------------------------------------------------
def load_data(config):
    """{x_train, y_train, x_val, y_val (None without validation_examples), x_test, y_test,
    x_ood (or None)}; every data problem raised here."""
    sources = dict(
        data_dir=config["data_dir"] or None,
        use_tfds=config["use_tfds"],
        check_counts=config["check_counts"],
    )
    x_train, y_train = load_arrays(config["dataset"], "train", **sources)
    x_test, y_test = load_arrays(config["dataset"], "test", **sources)
    x_train, y_train, x_val, y_val = hold_out(
        options.first(x_train, config["train_examples"]),
        options.first(y_train, config["train_examples"]),
        config["validation_examples"],
        "--validation_examples",
    )
    data = {
        "x_train": x_train,
        "y_train": y_train,
        "x_val": x_val,
        "y_val": y_val,
        "x_test": options.first(x_test, config["test_examples"]),
        "y_test": options.first(y_test, config["test_examples"]),
        "x_ood": None,
    }
    if config["ood_dataset"]:
        x_ood, _ = load_arrays(config["ood_dataset"], "test", **sources)
        if x_ood.shape[1:] != x_test.shape[1:]:
            raise ValueError(
                f"OOD set {config['ood_dataset']} has images of shape "
                f"{x_ood.shape[1:]}, {config['dataset']} {x_test.shape[1:]}."
            )
        data["x_ood"] = options.first(x_ood, config["ood_examples"])
    return data


# -- model -----------------------------------------------------------------------------------
def build_model(config, input_shape, dataset_size):
    """The compiled model of ``config["model"]`` (Adam, ``learning_rate``)."""
    kind = config["model"]
    hidden = tuple(config["hidden_units"])
    weight_decay = 1.0 / dataset_size if config["weight_decay"] == -1 else config["weight_decay"]
    keras.utils.set_random_seed(config["seed"])
    if kind in MIXTURE_MODELS:
        model = InfiniteMixture(
            num_classes=10,
            hidden_units=hidden,
            objective=kind,
            num_train_samples=config["train_samples"],
            kl_weight=config["kl_weight"],
            dataset_size=dataset_size,
            prior_variance=config["prior_variance"],
            sampling=config["sampling"],
            predictive_sampling=config["predictive_sampling"],
            seed=config["seed"] * 1000,
            jit_sampling=config["jit_sampling"],
        )
    elif kind == "deterministic":
        model = Deterministic(input_shape, 10, hidden, weight_decay=weight_decay)
    elif kind == "mc_dropout":
        model = MCDropout(
            input_shape, 10, hidden, dropout_rate=config["dropout_rate"], weight_decay=weight_decay
        )
    else:
        model = DeepEnsemble(
            input_shape, 10, hidden, num_members=config["ensemble_size"], weight_decay=weight_decay
        )
    model.build((None, *input_shape))
    model.compile(
        optimizer=keras.optimizers.Adam(config["learning_rate"]),
        steps_per_execution=options.resolve_steps_per_execution(
            config, config["steps"], config["steps_per_epoch"]
        ),
        jit_compile=config["jit_compile"],
    )
    return options.check_compiled_with_xla(model, config)


def weight_variance_histograms(model):
    """{tag: log10 Var[W_ij] = log10(u_i v_j)} of every mixture layer (TensorBoard histograms
    written by ``tensorboard_logging.EpochSummaries`` at the step of the epoch's scalars)."""
    return {
        f"log10_weight_variance/{name}": tf.math.log(variance) / np.log(10.0)
        for name, variance in model.weight_variances().items()
    }


def train(model, config, data):
    """``fit_resumable`` into ``output_dir`` with TensorBoard; returns the seconds spent in
    this call (every finished epoch's seconds also add up in timing.json ``train_seconds``,
    ``fit_resumable``'s ``timing``)."""
    callbacks = [
        tensorboard_logging.EpochSummaries(
            os.path.join(config["output_dir"], "tensorboard"),
            histograms=weight_variance_histograms if config["model"] in MIXTURE_MODELS else None,
        )
    ]
    validation = None
    if data.get("x_val") is not None:
        validation = make_dataset(
            data["x_val"], data["y_val"], batch_size=config["eval_batch_size"], shuffle=False
        )

    def make():
        return make_dataset(
            data["x_train"],
            data["y_train"],
            batch_size=config["batch_size"],
            repeat=True,
            seed=config["seed"],
        )

    start = time.perf_counter()
    training.fit_resumable(
        model,
        make,
        total_steps=config["steps"],
        steps_per_epoch=config["steps_per_epoch"],
        output_dir=config["output_dir"],
        chief_callbacks=callbacks,
        validation_data=validation,
        verbose=config["verbose"],
        timing=(config["output_dir"], "train_seconds"),
    )
    return time.perf_counter() - start


# -- evaluation --------------------------------------------------------------------------------
def _num_samples(config):
    return config["test_samples"] if config["model"] in STOCHASTIC_MODELS else None


def weight_variance_summary(model, bins):
    """Per layer: mean, median, 5/95 % quantiles and a histogram of log10 Var[W_ij]."""
    result = {}
    for name, variance in model.weight_variances().items():
        values = np.asarray(variance, np.float64).ravel()
        counts, edges = np.histogram(np.log10(values), bins=bins)
        result[name] = {
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "q05": float(np.quantile(values, 0.05)),
            "q95": float(np.quantile(values, 0.95)),
            "log10_histogram": {"bin_edges": edges.tolist(), "counts": counts.tolist()},
        }
    return result


def histogram_edges(measure, num_classes, bins):
    """Fixed bin edges over the whole range of ``measure``, the same for every run (so the
    histograms of seeds and configurations can be summed and compared): predictive variance
    lies in [0, 1/4] (the variance of a probability), the entropy in [0, log K]."""
    upper = {"predictive_variance": 0.25, "total_uncertainty": math.log(num_classes)}[measure]
    return np.linspace(0.0, upper, int(bins) + 1)


def _histograms(predictive, labels, bins):
    result = {}
    for measure in HISTOGRAM_MEASURES:
        edges = histogram_edges(measure, predictive.num_classes, bins)
        hist = evaluation.measure_histograms(predictive, labels, measure, bins=edges)
        values = evaluation.measure_values(predictive, measure)
        correct = np.asarray(predictive.predicted_class()) == labels
        result[measure] = {
            "bin_edges": hist["bin_edges"].tolist(),
            "correct": hist["correct"].tolist(),
            "wrong": hist["wrong"].tolist(),
            "mean_all": float(values.mean()),
            "mean_correct": float(values[correct].mean()) if correct.any() else None,
            "mean_wrong": float(values[~correct].mean()) if (~correct).any() else None,
        }
    return result


def _attack_batch_size(config, gradient_samples):
    """Batch of an attack: the S·B rows of one gradient stay within ~50k (memory)."""
    return max(1, min(config["eval_batch_size"], 50000 // max(1, gradient_samples)))


def robustness(model, config, data):
    """{"S=<n>": {"epsilons", "accuracy"}} of untargeted PGD, one entry per gradient-sample count."""
    n = config["robustness_examples"]
    x, y = data["x_test"][:n], data["y_test"][:n]
    counts = config["robustness_gradient_samples"] if config["model"] in STOCHASTIC_MODELS else [1]
    curves = {}
    for count in counts:
        _progress(
            config,
            f"robustness: PGD on {len(x)} test images with S={count} gradient "
            f"samples at {len(config['robustness_epsilons'])} radii",
        )
        curve = attack_eval.robustness_curve(
            model,
            x,
            y,
            config["robustness_epsilons"],
            attack_options(config, count),
            num_eval_samples=_num_samples(config),
            seed=config["seed"],
            batch_size=_attack_batch_size(config, count),
            verbose=config["verbose"] == 1,
        )
        curves[f"S={count}"] = {
            "epsilons": curve["epsilons"].tolist(),
            "accuracy": curve["accuracy"].tolist(),
            "success_rate": curve["success_rate"].tolist(),
            "attack_options": curve["options"],
            "num_examples": int(len(x)),
        }
        _progress(
            config,
            f"robustness with S={count} gradient samples: accuracy "
            + ", ".join(f"{a:.3f}" for a in curve["accuracy"]),
        )
    return curves


def adversarial_detection(model, config, data, clean):
    """PGD at ``detection_eps`` on the first test images; detection AUROC, both variants."""
    n = config["detection_examples"]
    x, y = data["x_test"][:n], data["y_test"][:n]
    count = config["detection_gradient_samples"]
    eps = config["detection_eps"]
    attack = attack_options(config, count)
    adv_pred = attack_eval.evaluate_under_attack(
        model,
        x,
        y,
        eps,
        attack,
        num_eval_samples=_num_samples(config),
        seed=config["seed"],
        batch_size=_attack_batch_size(config, count),
        verbose=config["verbose"] == 1,
    )
    clean_part = clean.take(np.arange(len(x)))
    result = attack_eval.adversarial_detection(
        clean_part, adv_pred, y, measures=DETECTION_MEASURES, seed=config["seed"]
    )
    result.update(
        eps=eps,
        gradient_samples=count,
        num_examples=int(len(x)),
        adversarial_accuracy=float(np.mean(np.asarray(adv_pred.predicted_class()) == y)),
        success_rate=metrics.attack_success_rate(adv_pred, y, clean=clean_part),
        attack_options=attack_eval.options_record(model, attack, config["seed"]),
    )
    return result


def _progress(config, message):
    """One line per finished piece of evaluation (fit's progress bars cover training)."""
    console.progress(message, config["verbose"])


def evaluate(model, config, data):
    """The metrics of every evaluation in ``config["evaluations"]``."""
    _progress(config, f"evaluating: {', '.join(config['evaluations'])}")
    asked = config["evaluations"]
    samples = _num_samples(config)
    batch = config["eval_batch_size"]
    clean = model.predictive(data["x_test"], num_samples=samples, batch_size=batch)
    result = {}
    if "classification" in asked:
        result["test"] = evaluation.classification_metrics(clean, data["y_test"])
    if "weight_variances" in asked and config["model"] in MIXTURE_MODELS:
        result["weight_variances"] = weight_variance_summary(model, config["histogram_bins"])
    if "misclassification" in asked:
        wrong = int(np.sum(np.asarray(clean.predicted_class()) != data["y_test"]))
        # Undefined without both groups (a perfect classifier): recorded as null, not an error.
        result["misclassification"] = (
            evaluation.misclassification_detection(clean, data["y_test"])
            if 0 < wrong < len(data["y_test"])
            else None
        )
        result["histograms"] = _histograms(clean, data["y_test"], config["histogram_bins"])
    if "ood" in asked:
        ood = model.predictive(data["x_ood"], num_samples=samples, batch_size=batch)
        result["ood"] = evaluation.ood_detection(clean, ood)
        result["ood"]["dataset"] = config["ood_dataset"]
        result["ood"]["num_examples"] = int(len(data["x_ood"]))
        result["ood_measure_means"] = {
            m: float(evaluation.measure_values(ood, m).mean()) for m in HISTOGRAM_MEASURES
        }
    _progress(config, "classification, weight variances, misclassification and OOD done")
    if "robustness" in asked:
        result["robustness"] = robustness(model, config, data)
    if "adversarial_detection" in asked:
        _progress(
            config,
            f"adversarial detection: PGD at eps {config['detection_eps']:g} on "
            f"{config['detection_examples']} test images",
        )
        result["adversarial_detection"] = adversarial_detection(model, config, data, clean)
    return result


# -- figures -----------------------------------------------------------------------------------
def write_figures(metrics, config):
    """Histograms (correct vs wrong), weight variances and robustness curves; paths relative."""
    folder = os.path.join(config["output_dir"], FIGURES_DIR)
    written = []
    label = run_label(config)
    if "histograms" in metrics:
        figure = plotting.correct_wrong_histograms(
            metrics["histograms"],
            title=plotting.join_title(
                label,
                plotting.averaging_text(
                    [1], examples=metrics["num_test_examples"], example_noun="test image"
                ),
            ),
        )
        written.append(plotting.save_figure(figure, os.path.join(folder, "uncertainty_hist.png")))
    if "weight_variances" in metrics:
        figure = plotting.weight_variance_histograms(
            metrics["weight_variances"], title=f"{label}: 1 seed"
        )
        written.append(plotting.save_figure(figure, os.path.join(folder, "weight_variance.png")))
    if "robustness" in metrics:
        figure = attack_eval.robustness_figure(
            {f"{label}, {k}": v for k, v in metrics["robustness"].items()}
        )
        written.append(plotting.save_figure(figure, os.path.join(folder, "robustness.png")))
    return [os.path.relpath(p, config["output_dir"]) for p in written]


def log_evaluation(config, metrics, step):
    """The metrics (accuracy, NLL, ECE, misclassification / OOD AUROCs, robustness points, ...)
    as scalars and the figures as images in ``tensorboard/evaluation`` at the global ``step``."""
    tensorboard_logging.log_evaluation(
        os.path.join(config["output_dir"], "tensorboard"),
        metrics,
        step,
        [os.path.join(config["output_dir"], path) for path in metrics["figures"]],
    )


def run_label(config):
    """A short name of the configuration, e.g. ``ML λ=1 σ²=1``."""
    kind = config["model"]
    if kind in MIXTURE_MODELS:
        return f"{kind.upper()} λ={config['kl_weight']:g} σ²={config['prior_variance']:g}"
    return {"deterministic": "weight decay", "mc_dropout": "MC dropout", "ensemble": "ensemble"}[
        kind
    ]


# -- training cache (--training_cache) ------------------------------------------------------------
TRAINING_CACHE_BINARY = "experiments.mixture_mnist"  # the key's binary, also for library calls

# The flags that do NOT enter the training-cache key: every other option of ``OPTIONS`` does,
# so a flag added later is part of the key unless it is named here.  Only flags that cannot
# change the trained network belong here:
# * read only after training, by the evaluations: ``ood_dataset`` / ``ood_examples`` (the OOD
#   set is loaded but never trained on), ``test_examples`` (training sees only the training
#   split), ``evaluations``, ``test_samples``, ``histogram_bins``, ``robustness_*``,
#   ``pgd_*``, ``attack_*``, ``detection_*``;
# * where the run writes and how it talks: ``output_dir``, ``export_dir``, ``resume``,
#   ``overwrite``, ``verbose``, ``training_cache`` itself; and every key of
#   ``uqmix.runs.VOLATILE_KEYS`` (``data_dir`` among them: the same dataset from another
#   folder is the same data; its content is not hashed).
# Deliberately kept in the key although they look like evaluation or speed flags:
# ``eval_batch_size`` (the batch of the per-epoch validation pass, whose calls advance the
# layers' noise generators between training epochs), ``predictive_sampling`` (an argument of
# the mixture model itself), ``jit_sampling`` / ``jit_compile`` / ``deterministic`` /
# ``strategy`` / ``tpu_address`` (they change the numbers drawn or computed),
# ``steps_per_epoch`` (where validation passes and checkpoints fall), ``use_tfds`` /
# ``check_counts`` / ``train_examples`` / ``validation_examples`` (the data trained on), and
# ``seed``.
TRAINING_CACHE_EVALUATION_ONLY = frozenset(
    {
        "ood_dataset",
        "ood_examples",
        "test_examples",
        "evaluations",
        "test_samples",
        "histogram_bins",
        "robustness_examples",
        "robustness_epsilons",
        "robustness_gradient_samples",
        "pgd_iterations",
        "pgd_eps_iter_ratio",
        "pgd_rand_init",
        "attack_preset",
        "attack_noise",
        "attack_frozen_scope",
        "attack_combine",
        "attack_labels",
        "attack_label_samples",
        "attack_evaluation",
        "attack_evaluation_attacks",
        "detection_eps",
        "detection_examples",
        "detection_gradient_samples",
        "output_dir",
        "export_dir",
        "resume",
        "overwrite",
        "verbose",
        "training_cache",
    }
)
TRAINING_CACHE_EXCLUDED = TRAINING_CACHE_EVALUATION_ONLY | runs.VOLATILE_KEYS


def training_cache_key(config):
    """(key, keyed record) of the training a validated ``config`` does
    (``uqmix.training_cache``: SHA-256 of the binary, every flag outside
    ``TRAINING_CACHE_EXCLUDED``, the uqmix source fingerprint and the TF/Keras versions)."""
    keyed = training_cache.keyed_record(TRAINING_CACHE_BINARY, config, TRAINING_CACHE_EXCLUDED)
    return training_cache.key_of(keyed), keyed


def _cached_training(config):
    """(key, keyed, entry or None) of ``--training_cache``, or None when it is off; a broken
    entry raises ``training_cache.TrainingCacheError`` here, before any work."""
    if not config["training_cache"]:
        return None
    runs.check_output_dir(config["training_cache"], flag="training_cache")
    key, keyed = training_cache_key(config)
    return key, keyed, training_cache.lookup(config["training_cache"], key, keyed)


# -- the run -----------------------------------------------------------------------------------
def run(config):
    """Runs the whole job for a configuration dict; returns the metrics dict (module doc).

    The run folder is locked for this process (``uqmix.run_lock``) to the end of the run,
    from before the data is read when it exists: a second process writing it is refused.
    """
    config = validate_config(config)
    return runs.run_holding_output_dir(_run, config)


def _run(config):
    run_steps.check_export_dir(config)  # before any work: an export must not replace files
    cache = _cached_training(config)  # a broken entry is an error before anything runs
    strategy, data = run_steps.begin(config, load_data)  # then every worker runs the same steps
    input_shape = tuple(int(s) for s in data["x_train"].shape[1:])
    with strategy.scope():
        model = build_model(config, input_shape, len(data["x_train"]))
    chief = distributed.is_chief(strategy)  # the other workers write no results
    # A cached training wins only over a run that has not started training: a run with a
    # checkpoint (--resume of an interrupted or finished run) continues from it as always.
    entry = cache[2] if cache and not training.has_checkpoint(config["output_dir"]) else None
    reused = {}
    if entry is not None:
        reused = dict(
            training_reused_from=entry.path,
            train_seconds_this_run=training_cache.restore(model, entry),
        )
        seconds = entry.train_seconds
        _progress(
            config,
            f"training reused from {entry.path} (trained in {seconds:.0f} s by {entry.source_run})",
        )
    else:
        if config["verbose"]:
            console.announce(run_label(config))
        seconds = train(model, config, data)
        if chief:  # every invocation's epochs (a run from before epochs were timed: this one's)
            seconds = runs.read_seconds(config["output_dir"], "train_seconds", default=seconds)
    if entry is None:  # a cached training was checked before it was stored
        training.check_outputs_finite(
            model, data["x_test"][: config["eval_batch_size"]], _num_samples(config)
        )
    model_path = os.path.join(config["output_dir"], MODEL_FILE)
    with distributed.writing(model_path, strategy) as path:
        runs.atomic_save_model(model, path)
    if cache and entry is None and chief:
        key, keyed, _ = cache
        stored = training_cache.store(
            config["training_cache"], key, keyed, model, model_path, seconds, config["output_dir"]
        )
        if stored:
            _progress(config, f"training stored in {stored}")
    start = time.perf_counter()
    metrics = evaluate(model, config, data)
    metrics.update(
        dataset=config["dataset"],
        model=config["model"],
        label=run_label(config),
        kl_weight=config["kl_weight"],
        prior_variance=config["prior_variance"],
        train_samples=config["train_samples"],
        test_samples=_num_samples(config) or 1,
        steps=config["steps"],
        seed=config["seed"],
        num_train_examples=int(len(data["x_train"])),
        num_test_examples=int(len(data["x_test"])),
        train_seconds=seconds,
        num_replicas=int(strategy.num_replicas_in_sync),
        eval_seconds=time.perf_counter() - start,
        **reused,
    )
    if chief:
        metrics["figures"] = write_figures(metrics, config)
        log_evaluation(config, metrics, tensorboard_logging.global_step(model))
    else:
        metrics["figures"] = []
    return run_steps.finish(config, strategy, model, input_shape, metrics)


def summary(metrics):
    """A few lines for the terminal."""
    lines = [f"{metrics['dataset']} {metrics['label']}:"]
    if "test" in metrics:
        lines.append(
            f"  test accuracy {metrics['test']['accuracy']:.4f}, NLL {metrics['test']['nll']:.4f}"
        )
    if "ood" in metrics:
        lines.append(
            f"  OOD ({metrics['ood']['dataset']}) AUROC: predictive variance "
            f"{metrics['ood']['predictive_variance']['auroc']:.4f}, entropy "
            f"{metrics['ood']['total_uncertainty']['auroc']:.4f}"
        )
    if metrics.get("misclassification"):
        lines.append(
            "  misclassification AUROC: predictive variance "
            f"{metrics['misclassification']['predictive_variance']['auroc']:.4f}, "
            f"entropy {metrics['misclassification']['total_uncertainty']['auroc']:.4f}"
        )
    for key, curve in metrics.get("robustness", {}).items():
        points = ", ".join(f"{e:g}: {a:.3f}" for e, a in zip(curve["epsilons"], curve["accuracy"]))
        lines.append(f"  PGD accuracy ({key}) {points}")
    if "adversarial_detection" in metrics:
        adv = metrics["adversarial_detection"]
        lines.append(
            f"  adversarial detection at eps {adv['eps']:g}: AUROC by variance "
            f"{adv['all']['predictive_variance']['auroc']:.4f}"
        )
    return "\n".join(lines)
