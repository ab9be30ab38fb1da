"""Prior Networks on images: the library side of ``python -m experiments.cifar_rkl``.

``run(config)`` takes a dict of flag values (``OPTIONS`` lists every key with
its default and help; ``default_config()`` gives them all) and

1. validates it (``validate_config``: unknown dataset/backbone/loss, β_in ≤ 0,
   c ≤ 0, γ < 0, …) and loads the data (``load_data``: missing files, OOD
   images of another shape than the in-domain ones) — every problem is one
   ``ValueError`` before any training;
2. prepares ``output_dir`` (``uqmix.runs.prepare_output_dir``: a folder holding
   another configuration is refused unless ``overwrite``; the same one unless
   ``resume``) and writes the flags used (``config.json``, ``flags.cfg``);
3. builds the model(s) under the ``tf.distribute`` strategy ``strategy`` and
   trains each with ``uqmix.training.fit_resumable`` (checkpoint every epoch,
   step-exact resume, NaN stop): in-domain batches zipped with OOD batches
   (``uqmix.data.zip_in_and_ood``; one forward pass per step), optional
   augmentation (``uqmix.augment``), optional generalised adversarial
   training (``uqmix.adversarial_training``); TensorBoard scalars (every loss
   term, accuracy, mean α0 in-domain and OOD, learning rate) and α0
   histograms per epoch; with ``training_processes`` > 1 helper processes train
   their share of the networks at the same time (``parallel_training``);
4. evaluates (``evaluate``): classification error (and NLL, ECE, Brier); OOD
   detection AUROC / AUPR / FPR@95 of every OOD test set by mutual
   information, total uncertainty, expected data uncertainty, α0 and max
   probability (those the model's predictive has); adaptive attacks when
   ``attack`` is on (PGD / MIM, or adaptive C&W L2 with ``attack_method=cw``;
   sampled models with ``attack_noise`` / ``attack_combine``; every option
   recorded under ``attacks.attack_options``; progress kept in
   ``output_dir/attack_backup`` so that ``resume`` continues them,
   ``attack_backup_options``); figures;
5. exports a SavedModel to ``export_dir`` when set (``uqmix.export``), then writes
   ``metrics.json`` atomically, the run's last write (``run_steps.finish``).

Models (``model_kind``):
* ``prior_network``: a ``PriorNetwork`` (``loss`` reverse_kl | forward_kl |
  cross_entropy); a cross-entropy network is evaluated as what it is, a
  single categorical (``SampledPredictive`` with S = 1, mutual information 0);
* ``ensemble``: ``ensemble_size`` cross-entropy networks, independently
  initialised (seeds ``network_seed(seed, m)``) and trained on their own batch orders,
  evaluated as the mixture ``SampledPredictive`` [M, B, K];
* ``mc_dropout``: a cross-entropy network with dropout, evaluated with
  ``eval_samples`` dropout masks (dropout on, batch norm in inference mode).
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
    data_synthetic_images,
    distributed,
    evaluation,
    options,
    plotting,
    runs,
    tensorboard_logging,
    training,
)
from uqmix import metrics as metric_fns
from uqmix.adversarial_training import AdversarialPriorNetwork
from uqmix.augment import augment_dataset
from uqmix.data import (
    check_same_image_shape,
    get_spec,
    hold_out,
    known_names,
    load_arrays,
    make_dataset,
    zip_in_and_ood,
)
from uqmix.models import PriorNetwork
from uqmix.models.backbones import BACKBONES, build_backbone
from uqmix.models.prior_network import LOSSES
from uqmix.models.sampled_networks import ensemble, mc_dropout
from uqmix.optim import OPTIMIZERS, SCHEDULES, make_optimizer
from uqmix.setup_utils import STRATEGIES
from uqmix.studies import parallel_training, reused_training, run_steps

OOD_MEASURES = (
    "mutual_information",
    "total_uncertainty",
    "expected_data_uncertainty",
    "precision",
    "max_probability",
)
MODEL_KINDS = ("prior_network", "ensemble", "mc_dropout")
BATCHNORM_CHOICES = ("auto", "true", "false")
ATTACK_CRITERIA = ("kl_pmf", "kl_dir", "cross_entropy")
ATTACK_METHODS = ("pgd", "mim", "cw")
ATTACK_NOISE = ("redraw", "frozen")
ATTACK_COMBINE = ("log_mean", "mean_loss")
FIGURES_DIR = "figures"

# (name, default, help): the binary's flags and the keys of a configuration.
OPTIONS = (
    # data
    ("dataset", "cifar10", "In-domain data set (uqmix.data names, or synthetic_images)."),
    (
        "ood_train_dataset",
        "cifar100",
        "OOD training data set, zipped batch by batch with the in-domain data; empty for none.",
    ),
    ("ood_test_datasets", ["svhn", "lsun_resize", "tim_resize"], "OOD test sets."),
    *options.DATA_SOURCE_OPTIONS,
    ("ood_test_examples", 0, "Use only the first N examples of each OOD test set (0: all)."),
    (
        "validation_examples",
        0,
        "Hold out the last N training examples as a validation split, "
        "evaluated after every epoch (TensorBoard validation/); 0: none.",
    ),
    # model
    ("model_kind", "prior_network", "prior_network | ensemble | mc_dropout."),
    ("loss", "reverse_kl", "reverse_kl | forward_kl | cross_entropy."),
    ("backbone", "vgg16", "vgg16 | small_convnet | mlp."),
    ("width_multiplier", 1.0, "vgg16 channel width multiplier."),
    ("hidden_units", ["128", "128"], "mlp hidden layer sizes."),
    (
        "batchnorm",
        "auto",
        "Batch norm in conv layers: auto (vgg16 yes, small_convnet no) | true | false.",
    ),
    ("batchnorm_momentum", 0.99, "Momentum of batch norm's moving statistics."),
    ("dropout_rate", 0.0, "Dropout before each dense layer."),
    ("weight_decay", 0.0, "L2 strength on every kernel (in the loss)."),
    (
        "normalize_inputs",
        True,
        "Per-channel (x - mean) / std of the training set as the "
        "model's first layer (inputs stay [0, 1] pixels).",
    ),
    ("target_concentration", 100.0, "beta_in of the in-domain target c + beta_in onehot(y)."),
    ("concentration", 1.0, "c, the flat part of every target concentration."),
    ("ood_weight", 1.0, "gamma, the weight of the OOD loss term."),
    ("normalize_by_target", False, "Divide the KL losses by beta_in."),
    ("ensemble_size", 5, "Members of an ensemble (model_kind=ensemble)."),
    ("eval_samples", 100, "Dropout masks at evaluation (model_kind=mc_dropout)."),
    # adversarial training
    (
        "adversarial_training",
        False,
        "Generalised adversarial training (targeted FGSM inputs "
        "from each batch trained towards beta_adv at the true class).",
    ),
    ("adv_epsilon_stddev", 0.1, "sigma_eps: per-example FGSM step |N(0, sigma_eps^2)| (pixels)."),
    ("adv_weight", 1.0, "gamma_adv, the weight of the adversarial term."),
    ("adv_target_concentration", 1.0, "beta_adv of the adversarial target."),
    # optimisation
    ("optimizer", "sgd", "sgd (Nesterov momentum) | adam."),
    ("learning_rate", 0.05, "Initial learning rate."),
    ("momentum", 0.9, "SGD momentum."),
    ("nesterov", True, "Nesterov momentum for SGD."),
    ("lr_schedule", "step", "constant | step."),
    (
        "lr_decay_epochs",
        30,
        "Step decay: multiply the learning rate by lr_decay_rate every this many epochs.",
    ),
    ("lr_decay_rate", 0.2, "Step decay factor."),
    ("clip_norm", 0.0, "Global gradient-norm clipping threshold (0: none)."),
    ("decoupled_weight_decay", 0.0, "Decoupled weight decay (AdamW-style; 0: none)."),
    ("batch_size", 128, "In-domain examples per step (global batch)."),
    ("ood_batch_size", 0, "OOD examples per step (0: batch_size)."),
    ("epochs", 100, "Training epochs (checkpoint after each)."),
    ("steps_per_epoch", 0, "Steps per epoch (0: ceil(train examples / batch_size))."),
    ("augment", True, "Random crop (zero padding) and horizontal flip of training images."),
    ("augment_padding", 4, "Padding of the random crop."),
    ("augment_flip", True, "Random horizontal flip (off for digits)."),
    # run
    ("seed", 0, "Seed of initialisation, batch order, augmentation and attacks."),
    ("deterministic", True, "TensorFlow op determinism."),
    options.JIT_COMPILE_OPTION,
    ("strategy", "default", "default | mirrored | multi_worker | tpu."),
    (
        "training_processes",
        1,
        "Processes that train the run's networks at once (ensemble members, black-box "
        "source): network j by process j mod K on this machine (strategy default; "
        "uqmix.studies.parallel_training). Speed only: the same networks.",
    ),
    ("tpu_address", "", "TPU address for strategy=tpu."),
    ("output_dir", os.path.join("runs", "cifar_rkl"), "Where the run writes its files."),
    ("resume", False, "Continue the run of the same configuration in output_dir."),
    ("overwrite", False, "Delete output_dir first."),
    ("export_dir", "", "Write a SavedModel with an uncertainty serving signature here."),
    ("eval_batch_size", 500, "Batch size of evaluation."),
    ("histogram_examples", 500, "Examples per α0 histogram in TensorBoard."),
    ("verbose", 2, "Keras fit verbosity (0, 1, 2)."),
    # attacks
    ("attack", False, "Evaluate adaptive white-box attacks (uqmix.attack_eval)."),
    (
        "attack_method",
        "mim",
        "pgd | mim | cw (adaptive Carlini-Wagner L2; attack_iterations = "
        "its max_iterations budgets, attack_eps unused).",
    ),
    ("attack_rand_init", False, "PGD/MIM: random start in the eps-ball."),
    (
        "attack_gradient_samples",
        0,
        "Samples of a sampled model (MC dropout, ensemble) in each "
        "attack gradient (0: eval_samples).",
    ),
    (
        "attack_noise",
        "redraw",
        "Sampled models: redraw (fresh dropout masks at every gradient) "
        "| frozen (one draw per batch held for the attack).",
    ),
    (
        "attack_combine",
        "log_mean",
        "Sampled models: log_mean (criterion of the mean "
        "prediction) | mean_loss (mean over samples, EOT).",
    ),
    ("attack_cw_binary_steps", 5, "C&W binary-search steps over the constant."),
    ("attack_cw_confidence", 0.0, "C&W confidence kappa of the success margin."),
    ("attack_cw_initial_const", 0.01, "C&W initial constant c."),
    ("attack_cw_learning_rate", 0.005, "C&W Adam learning rate."),
    ("attack_criterion", "kl_pmf", "kl_pmf | kl_dir (Prior Networks) | cross_entropy."),
    ("attack_eps", 0.1176, "L-inf attack radius in pixels (30/255)."),
    ("attack_eps_iter", 0.0, "Step per iteration (0: attack_eps / 10)."),
    ("attack_iterations", ["10", "20", "50", "100"], "Iteration counts of the attack curves."),
    ("attack_examples", 500, "First N test images attacked."),
    ("attack_measure", "mutual_information", "Detection score of AUROC/JSR on attacks."),
    (
        "attack_backup_every_seconds",
        600.0,
        "Keep the attack curves' progress in output_dir/attack_backup after every curve point "
        "and about this often between two (uqmix.attack_backup), so that --resume continues "
        "an interrupted attack where it stopped; 0: no backup.",
    ),
    (
        "blackbox_transfer",
        False,
        "Also train a second model (seed + 1000, inside the run) and apply its attacks "
        "to this one (black-box transfer).",
    ),
    (
        "reuse_training_from",
        "",
        "Evaluate and attack the networks of a finished run of the same training flags instead "
        "of training them: its folder, or a sweep root holding <configuration>/seed_<S> named "
        "like this run's output_dir (uqmix.studies.reused_training).",
    ),
)


def default_config(**overrides):
    """Every option at its default, with ``overrides`` applied (unknown keys refused)."""
    return options.default_config(OPTIONS, overrides)


# -- validation ------------------------------------------------------------------------------
def known_datasets():

    return sorted(set(known_names()) | set(data_synthetic_images.NAMES))


def _int_list(values, name):
    try:
        result = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"--{name} must be integers, got {values}.") from None
    if not result or min(result) < 1:
        raise ValueError(f"--{name} must be positive integers, got {values}.")
    return result


def validate_config(config):
    """Raises ``ValueError`` naming the first bad option; returns the normalised config."""

    config = default_config(**config)
    options.check_finite(config)
    datasets = known_datasets()
    image_sets = [n for n in datasets if not n.startswith("synthetic3")]
    choices = [
        (
            "dataset",
            config["dataset"],
            [
                n
                for n in image_sets
                if n not in ("notmnist", "lsun_resize", "tim_resize", "synthetic_images_ood")
            ],
        ),
        ("model_kind", config["model_kind"], MODEL_KINDS),
        ("loss", config["loss"], LOSSES),
        ("backbone", config["backbone"], BACKBONES),
        ("batchnorm", config["batchnorm"], BATCHNORM_CHOICES),
        ("optimizer", config["optimizer"], OPTIMIZERS),
        ("lr_schedule", config["lr_schedule"], SCHEDULES),
        ("strategy", config["strategy"], STRATEGIES),
        ("attack_method", config["attack_method"], ATTACK_METHODS),
        ("attack_criterion", config["attack_criterion"], ATTACK_CRITERIA),
        ("attack_noise", config["attack_noise"], ATTACK_NOISE),
        ("attack_combine", config["attack_combine"], ATTACK_COMBINE),
        ("attack_measure", config["attack_measure"], OOD_MEASURES),
        ("verbose", config["verbose"], (0, 1, 2)),
    ]
    if config["ood_train_dataset"]:
        choices.append(("ood_train_dataset", config["ood_train_dataset"], image_sets))
    options.check_choices(choices)
    config["ood_test_datasets"] = [n for n in config["ood_test_datasets"] if n]
    for name in config["ood_test_datasets"]:
        if name not in image_sets:
            raise ValueError(
                f"Unknown dataset {name!r} in --ood_test_datasets; known image "
                f"sets: {', '.join(image_sets)}."
            )
    config["hidden_units"] = _int_list(config["hidden_units"], "hidden_units")
    config["attack_iterations"] = sorted(
        set(_int_list(config["attack_iterations"], "attack_iterations"))
    )
    rules = [
        ("target_concentration", config["target_concentration"] > 0, "> 0 (beta_in)"),
        ("concentration", config["concentration"] > 0, "> 0"),
        ("ood_weight", config["ood_weight"] >= 0, ">= 0 (gamma)"),
        ("adv_epsilon_stddev", config["adv_epsilon_stddev"] > 0, "> 0"),
        ("adv_weight", config["adv_weight"] >= 0, ">= 0"),
        ("adv_target_concentration", config["adv_target_concentration"] >= 0, ">= 0"),
        ("width_multiplier", config["width_multiplier"] > 0, "> 0"),
        ("dropout_rate", 0 <= config["dropout_rate"] < 1, "in [0, 1)"),
        ("batchnorm_momentum", 0 <= config["batchnorm_momentum"] < 1, "in [0, 1)"),
        ("weight_decay", config["weight_decay"] >= 0, ">= 0"),
        ("learning_rate", config["learning_rate"] > 0, "> 0"),
        ("momentum", 0 <= config["momentum"] < 1, "in [0, 1)"),
        ("lr_decay_epochs", config["lr_decay_epochs"] >= 1, ">= 1"),
        ("lr_decay_rate", 0 < config["lr_decay_rate"] <= 1, "in (0, 1]"),
        ("clip_norm", config["clip_norm"] >= 0, ">= 0"),
        ("decoupled_weight_decay", config["decoupled_weight_decay"] >= 0, ">= 0"),
        ("batch_size", config["batch_size"] >= 1, ">= 1"),
        ("ood_batch_size", config["ood_batch_size"] >= 0, ">= 0"),
        ("epochs", config["epochs"] >= 1, ">= 1"),
        ("steps_per_epoch", config["steps_per_epoch"] >= 0, ">= 0"),
        ("augment_padding", config["augment_padding"] >= 0, ">= 0"),
        ("train_examples", config["train_examples"] >= 0, ">= 0"),
        ("test_examples", config["test_examples"] >= 0, ">= 0"),
        ("ood_test_examples", config["ood_test_examples"] >= 0, ">= 0"),
        ("validation_examples", config["validation_examples"] >= 0, ">= 0"),
        ("ensemble_size", config["ensemble_size"] >= 1, ">= 1"),
        ("eval_samples", config["eval_samples"] >= 1, ">= 1"),
        ("eval_batch_size", config["eval_batch_size"] >= 1, ">= 1"),
        ("histogram_examples", config["histogram_examples"] >= 0, ">= 0"),
        ("seed", config["seed"] >= 0, ">= 0"),
        ("attack_eps", 0 <= config["attack_eps"] <= 1, "in [0, 1] (pixels are in [0, 1])"),
        (
            "attack_eps_iter",
            0 <= config["attack_eps_iter"] <= config["attack_eps"],
            f"in [0, --attack_eps={config['attack_eps']}] (0: attack_eps / 10; PGD and MIM "
            "steps never exceed the radius)",
        ),
        ("attack_examples", config["attack_examples"] >= 1, ">= 1"),
        ("attack_backup_every_seconds", config["attack_backup_every_seconds"] >= 0, ">= 0"),
        ("attack_gradient_samples", config["attack_gradient_samples"] >= 0, ">= 0 (0: default)"),
        ("attack_cw_binary_steps", config["attack_cw_binary_steps"] >= 1, ">= 1"),
        ("attack_cw_confidence", config["attack_cw_confidence"] >= 0, ">= 0"),
        ("attack_cw_initial_const", config["attack_cw_initial_const"] > 0, "> 0"),
        ("attack_cw_learning_rate", config["attack_cw_learning_rate"] > 0, "> 0"),
    ]
    options.check_rules(config, rules)
    options.check_jit_compile(config)
    kind = config["model_kind"]
    if kind in ("ensemble", "mc_dropout") and config["loss"] != "cross_entropy":
        raise ValueError(
            f"--model_kind={kind} is a mixture of cross-entropy networks: set --loss=cross_entropy."
        )
    if kind == "mc_dropout" and config["dropout_rate"] <= 0:
        raise ValueError("--model_kind=mc_dropout needs --dropout_rate > 0.")
    if config["attack_measure"] == "precision" and config["loss"] == "cross_entropy":
        raise ValueError(
            "--attack_measure=precision needs a Prior Network (a Dirichlet "
            "output); use total_uncertainty or max_probability for cross-entropy "
            "models."
        )
    if (
        kind == "prior_network"
        and config["loss"] == "cross_entropy"
        and config["attack_measure"] == "mutual_information"
    ):
        raise ValueError(
            "--attack_measure=mutual_information is 0 for every input of a single "
            "cross-entropy network (no knowledge uncertainty), so its AUROC would "
            "be 0.5 by construction; use --attack_measure=total_uncertainty."
        )
    if config["attack_criterion"] == "kl_dir" and config["loss"] == "cross_entropy":
        raise ValueError(
            "--attack_criterion=kl_dir needs a Prior Network (a Dirichlet output); "
            "use kl_pmf or cross_entropy for cross-entropy models."
        )
    if config["attack"] and config["attack_eps"] <= 0 and config["attack_method"] != "cw":
        raise ValueError("--attack needs --attack_eps > 0.")
    if kind == "prior_network" and (
        config["attack_noise"] != "redraw" or config["attack_combine"] != "log_mean"
    ):
        raise ValueError(
            "--attack_noise / --attack_combine apply to sampled models (mc_dropout, "
            "ensemble); a Prior Network has no sampled noise: keep redraw / "
            "log_mean."
        )
    if config["reuse_training_from"] and config["strategy"] == "multi_worker":
        raise ValueError(
            "--reuse_training_from cannot be used with --strategy=multi_worker (the copied "
            "networks would have to reach every worker); drop it to train here."
        )
    parallel_training.validate(config)
    options.check_run_options(config)
    return config


# -- data --------------------------------------------------------------------------------------
def load_split(name, split, config):
    """(x, y) of one split of a registered or generated image set (uqmix.data contract)."""

    if name in data_synthetic_images.NAMES:
        return data_synthetic_images.load(name, split)
    return load_arrays(
        name,
        split,
        data_dir=config["data_dir"] or None,
        use_tfds=config["use_tfds"],
        check_counts=config["check_counts"],
    )


def num_classes_of(name):

    if name in data_synthetic_images.NAMES:
        return data_synthetic_images.NUM_CLASSES
    return get_spec(name).num_classes


def load_data(config):
    """All arrays of the run, checked: shapes of OOD sets must equal the in-domain shape.

    Returns a dict: x_train, y_train, x_test, y_test, x_ood_train (or None),
    ood_test {name: x}, num_classes, input_shape.
    """

    x_train, y_train = load_split(config["dataset"], "train", config)
    x_test, y_test = load_split(config["dataset"], "test", config)
    x_train, y_train = (
        options.first(x_train, config["train_examples"]),
        options.first(y_train, config["train_examples"]),
    )
    x_test, y_test = (
        options.first(x_test, config["test_examples"]),
        options.first(y_test, config["test_examples"]),
    )
    if x_train.ndim != 4:
        raise ValueError(f"{config['dataset']} is not an image set (x has shape {x_train.shape}).")
    x_train, y_train, x_val, y_val = hold_out(
        x_train, y_train, config["validation_examples"], "--validation_examples"
    )
    data = {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "x_val": x_val,
        "y_val": y_val,
        "num_classes": num_classes_of(config["dataset"]),
        "input_shape": tuple(int(s) for s in x_train.shape[1:]),
        "x_ood_train": None,
        "ood_test": {},
    }
    if config["ood_train_dataset"]:
        x_ood, _ = load_split(config["ood_train_dataset"], "train", config)
        check_same_image_shape(
            x_train, x_ood, config["dataset"], f"OOD training set {config['ood_train_dataset']}"
        )
        data["x_ood_train"] = x_ood
    for name in config["ood_test_datasets"]:
        x_ood, _ = load_split(name, "test", config)
        check_same_image_shape(x_test, x_ood, config["dataset"], f"OOD test set {name}")
        data["ood_test"][name] = options.first(x_ood, config["ood_test_examples"])
    return data


def input_normalization(x_train):
    """(mean, std) per channel of the training images (the model's normalisation layer)."""
    axes = tuple(range(x_train.ndim - 1))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    return mean.tolist(), np.maximum(std, 1e-3).tolist()


# -- models --------------------------------------------------------------------------------------
def build_model(config, input_shape, num_classes, normalization, seed, steps_per_epoch):
    """A compiled (Adversarial)PriorNetwork for ``config``; call under the strategy's scope."""

    keras.utils.set_random_seed(seed)
    batchnorm = {"auto": None, "true": True, "false": False}[config["batchnorm"]]
    backbone = build_backbone(
        config["backbone"],
        input_shape,
        num_classes,
        dropout_rate=config["dropout_rate"],
        weight_decay=config["weight_decay"],
        batchnorm=batchnorm,
        normalization=normalization if config["normalize_inputs"] else None,
        width_multiplier=config["width_multiplier"],
        hidden_units=config["hidden_units"],
        batchnorm_momentum=config["batchnorm_momentum"],
    )
    loss_options = dict(
        loss=config["loss"],
        target_concentration=config["target_concentration"],
        concentration=config["concentration"],
        ood_weight=config["ood_weight"],
        normalize_by_target=config["normalize_by_target"],
    )
    if config["adversarial_training"]:
        model = AdversarialPriorNetwork(
            backbone,
            num_classes,
            epsilon_stddev=config["adv_epsilon_stddev"],
            adversarial_weight=config["adv_weight"],
            adversarial_target_concentration=config["adv_target_concentration"],
            clip_min=0.0,
            clip_max=1.0,
            seed=seed,
            **loss_options,
        )
    else:
        model = PriorNetwork(backbone, num_classes, **loss_options)
    model.compile(
        optimizer=make_optimizer(
            config["optimizer"],
            config["learning_rate"],
            momentum=config["momentum"],
            nesterov=config["nesterov"],
            schedule=config["lr_schedule"],
            decay_every_steps=config["lr_decay_epochs"] * steps_per_epoch,
            decay_rate=config["lr_decay_rate"],
            clip_norm=config["clip_norm"] or None,
            decoupled_weight_decay=config["decoupled_weight_decay"] or None,
        ),
        jit_compile=config["jit_compile"],
    )
    return options.check_compiled_with_xla(model, config)


def steps_per_epoch_of(config, num_train):
    """``steps_per_epoch``, or ceil(training examples / batch_size) when it is 0."""
    if config["steps_per_epoch"]:
        return config["steps_per_epoch"]
    return max(1, math.ceil(num_train / config["batch_size"]))


# -- training ------------------------------------------------------------------------------------
def make_train_dataset_fn(config, data, seed):
    """() -> endless, seeded dataset of (x, y) or ((x, x_ood), y) batches (augmented if asked)."""

    def make():
        dataset = make_dataset(
            data["x_train"],
            data["y_train"],
            batch_size=config["batch_size"],
            repeat=True,
            seed=seed,
            prefetch=False,
        )
        if data["x_ood_train"] is not None:
            ood = make_dataset(
                data["x_ood_train"],
                batch_size=config["ood_batch_size"] or config["batch_size"],
                repeat=True,
                seed=seed + 7919,
                prefetch=False,
            )
            dataset = zip_in_and_ood(dataset, ood)
        if config["augment"] and (config["augment_padding"] or config["augment_flip"]):
            dataset = augment_dataset(
                dataset,
                seed=seed + 104729,
                padding=config["augment_padding"],
                flip=config["augment_flip"],
            )
        return dataset.prefetch(tf.data.AUTOTUNE)

    return make


def alpha0_histograms(x_in, x_ood, eval_batch_size):
    """``model -> {tag: log10 α0}`` on fixed in-domain and OOD inputs (TensorBoard histograms
    written by ``tensorboard_logging.EpochSummaries`` at the step of the epoch's scalars)."""

    def histograms(model):
        result = {}
        for name, x in (("in_domain", x_in), ("ood", x_ood)):
            if x is None or not len(x):
                continue
            logits = model.predictive(x, batch_size=eval_batch_size).logits
            alpha0 = tf.reduce_sum(tf.exp(tf.clip_by_value(logits, -30.0, 30.0)), -1)
            result[f"log10_alpha0/{name}"] = tf.math.log(alpha0) / np.log(10.0)
        return result

    return histograms


def train_model(
    model, config, data, model_dir, seed, log_name, timing_key="train_seconds", callbacks=()
):
    """Trains ``model`` with ``fit_resumable`` into ``model_dir``; returns the seconds spent in
    this call.  Each finished epoch's seconds are added to ``timing_key`` of the run's
    timing.json (``fit_resumable``'s ``timing``), so the total covers every invocation.
    ``callbacks``: more Keras callbacks (``Helpers.callbacks``, on every worker)."""

    steps_per_epoch = steps_per_epoch_of(config, len(data["x_train"]))
    histograms = None
    count = config["histogram_examples"]
    if count:
        x_ood = data["x_ood_train"]
        if x_ood is None and data["ood_test"]:
            x_ood = next(iter(data["ood_test"].values()))
        histograms = alpha0_histograms(
            data["x_test"][:count],
            None if x_ood is None else x_ood[:count],
            config["eval_batch_size"],
        )
    summaries = [
        tensorboard_logging.EpochSummaries(
            os.path.join(config["output_dir"], "tensorboard", log_name), histograms=histograms
        )
    ]
    validation = None
    if data.get("x_val") is not None:
        validation = make_dataset(
            data["x_val"], data["y_val"], batch_size=config["eval_batch_size"], shuffle=False
        )
    start = time.perf_counter()
    training.fit_resumable(
        model,
        make_train_dataset_fn(config, data, seed),
        total_steps=config["epochs"] * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        output_dir=model_dir,
        callbacks=callbacks,
        chief_callbacks=summaries,
        validation_data=validation,
        verbose=config["verbose"],
        timing=(config["output_dir"], timing_key),
    )
    return time.perf_counter() - start


# The black-box source network of a run with seed s trains with seed s + 1000: a network of
# its own, trained inside the run (the run is self-contained), never one of a sweep's seeds 0-999.
BLACKBOX_SOURCE_SEED_OFFSET = 1000
BLACKBOX_PREFIX = (
    "blackbox_source_"  # its folder blackbox_source_model, timing key blackbox_source_train_seconds
)


def network_seed(seed, member):
    """The seed of network ``member`` of a run with ``seed``.

    Member 0 trains with ``seed`` itself (a single network is seeded like before); member
    m ≥ 1 with ``SeedSequence([seed, m])``'s first 31-bit word, so the members of runs with
    different seeds are different networks.  (``seed + m`` made the ensembles of seeds s and
    s + 1 share four of their five members.)
    """
    if member == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(member)]).generate_state(1)[0] >> 1)


NETWORK_SEED_FILE = "network_seed.json"


def check_network_seed(model_dir, seed, member, write=True):
    """Refuses to resume a network's checkpoints with another seed than they were trained
    with; records ``seed`` in ``model_dir/network_seed.json`` (``write``: the chief).

    A folder with a checkpoint (``training.has_checkpoint``: one ``fit_resumable`` would
    resume) but no record predates the record: member 0 was seeded like today, members
    m ≥ 1 with seed + m (``network_seed``'s note), so those are refused.  A folder without a
    checkpoint has nothing to resume and is adopted.
    """
    path = os.path.join(model_dir, NETWORK_SEED_FILE)
    fix = "remove the run folder (or pass --overwrite) to train it anew"
    if os.path.exists(path):
        recorded = runs.read_json_object(path).get("seed")
        if recorded != seed:
            raise ValueError(
                f"{model_dir} was trained with seed {recorded}; resuming it with seed {seed} "
                f"would mix two trainings: {fix}."
            )
        return
    if member > 0 and training.has_checkpoint(model_dir):
        raise ValueError(
            f"{model_dir} holds a training from a uqmix that seeded ensemble member {member} "
            f"with seed + {member}; this one seeds it with {seed}: {fix}."
        )
    if write:
        os.makedirs(model_dir, exist_ok=True)
        runs.atomic_write_json(path, {"seed": seed})


def network_dirs(config, prefix=""):
    """The folder names of the networks a run trains (under its output_dir): ``model``, or
    ``member_<m>`` for each member of an ensemble; ``prefix`` for the black-box source's."""
    count = config["ensemble_size"] if config["model_kind"] == "ensemble" else 1
    return [f"{prefix}member_{m}" if count > 1 else f"{prefix}model" for m in range(count)]


def run_networks(config):
    """[(folder, prefix, seed offset)] of every network the run trains: its own, then with
    ``attack`` and ``blackbox_transfer`` the black-box source's (the list that
    ``--training_processes`` shares out)."""
    networks = [(name, "", 0) for name in network_dirs(config)]
    if config["attack"] and config["blackbox_transfer"]:
        networks += [
            (name, BLACKBOX_PREFIX, BLACKBOX_SOURCE_SEED_OFFSET)
            for name in network_dirs(config, BLACKBOX_PREFIX)
        ]
    return networks


def train_networks(
    config,
    data,
    strategy,
    seed_offset=0,
    prefix="",
    only=None,
    helpers=parallel_training.NO_HELPERS,
):
    """Builds and trains every network of the configured model (member m seeded with
    ``network_seed(config seed + seed_offset, m)``); returns (networks, seconds spent in this
    call, seeds).  The epochs' seconds of every invocation add up in timing.json under
    ``<prefix>train_seconds`` (``train_seconds_total``).

    ``only``: the folders to train (a helper process's share), None for all.  ``helpers``
    (``parallel_training.Helpers``): the networks they train are not trained here; after
    this process's own networks, each is restored from its finished checkpoint once its
    helper marked it done (``Helpers.wait_for``; the waiting counts in the seconds returned)."""
    normalization = input_normalization(data["x_train"])
    names = network_dirs(config, prefix)
    count = len(names)
    seeds = [network_seed(config["seed"] + seed_offset, m) for m in range(count)]
    mine = [n for n in names if not helpers.trained_elsewhere(n)]
    theirs = [n for n in names if helpers.trained_elsewhere(n)]
    built, seconds = {}, 0.0
    for name in mine + theirs:
        if only is not None and name not in only:
            continue
        member = names.index(name)
        seed = seeds[member]
        model_dir = os.path.join(config["output_dir"], name)
        if name in theirs:
            start = time.perf_counter()
            helpers.wait_for(name)
            seconds += time.perf_counter() - start
        else:
            helpers.raise_if_failed()
        check_network_seed(model_dir, seed, member, write=distributed.is_chief(strategy))
        if config["verbose"]:
            console.announce(name, member + 1, count)
        with strategy.scope():
            model = build_model(
                config,
                data["input_shape"],
                data["num_classes"],
                normalization,
                seed,
                steps_per_epoch_of(config, len(data["x_train"])),
            )
        seconds += train_model(
            model,
            config,
            data,
            model_dir,
            seed,
            name,
            timing_key=f"{prefix}train_seconds",
            callbacks=helpers.callbacks(),  # unused for a helper's network: restored, not fit
        )
        built[name] = model
    return [built[n] for n in names if n in built], seconds, seeds


def train_seconds_total(config, strategy, key, seconds):
    """The training seconds of every invocation of the run (timing.json ``key``, kept by the
    chief epoch by epoch); ``seconds`` (this call's) on the other workers, or when no epoch
    was ever timed (a run trained before epochs were timed, restored here)."""
    if not distributed.is_chief(strategy):
        return seconds
    return runs.read_seconds(config["output_dir"], key, default=seconds)


def evaluation_model(config, networks):
    """The model evaluated, attacked and exported: a Prior Network or a ``SampledNetworks``."""
    if config["model_kind"] == "prior_network" and config["loss"] != "cross_entropy":
        return networks[0]
    backbones = [n.backbone for n in networks]
    if config["model_kind"] == "mc_dropout":
        return mc_dropout(backbones[0], num_samples=config["eval_samples"])
    return ensemble(backbones)


# -- evaluation ------------------------------------------------------------------------------------
def _num_samples(model):
    return getattr(model, "default_num_samples", 1)


def evaluate(model, config, data):
    """Classification and OOD-detection metrics; also the arrays the figures need."""

    samples = _num_samples(model)
    pred_in = model.predictive(
        data["x_test"], num_samples=samples, batch_size=config["eval_batch_size"]
    )
    result = dict(evaluation.classification_metrics(pred_in, data["y_test"]))
    measures = [m for m in OOD_MEASURES if m in pred_in.measure_names]
    values = {"in": {m: getattr(pred_in, m)().numpy() for m in measures}, "ood": {}, "roc": {}}
    result["ood_detection"] = {}
    for name, x_ood in data["ood_test"].items():
        console.progress(f"OOD detection on {name} ({len(x_ood)} images)", config["verbose"])
        pred_out = model.predictive(
            x_ood, num_samples=samples, batch_size=config["eval_batch_size"]
        )
        result["ood_detection"][name] = evaluation.ood_detection(
            pred_in, pred_out, measures=measures
        )
        values["ood"][name] = {m: getattr(pred_out, m)().numpy() for m in measures}
        curve = metric_fns.roc_curve_points(
            evaluation.detection_score(pred_in, "mutual_information"),
            evaluation.detection_score(pred_out, "mutual_information"),
        )
        values["roc"][name] = (
            curve["fpr"],
            curve["tpr"],
            result["ood_detection"][name]["mutual_information"]["auroc"],
        )
    if "precision" in measures:
        result["mean_alpha0_in"] = float(np.mean(values["in"]["precision"]))
        result["mean_alpha0_ood"] = {
            name: float(np.mean(v["precision"])) for name, v in values["ood"].items()
        }
    return result, values


def write_figures(values, output_dir):
    """α0 / mutual-information histograms in vs out and ROC curves by mutual information."""

    folder = os.path.join(output_dir, FIGURES_DIR)
    written = []
    if not values["ood"]:
        return written
    for measure, log10 in (("precision", True), ("mutual_information", False)):
        if measure not in values["in"]:
            continue
        figure = plotting.in_out_histograms(
            values["in"][measure],
            {n: v[measure] for n, v in values["ood"].items()},
            measure,
            log10=log10,
        )
        name = "alpha0_histogram.png" if measure == "precision" else "mi_histogram.png"
        written.append(plotting.save_figure(figure, os.path.join(folder, name)))
    count = len(next(iter(values["in"].values())))
    figure = plotting.roc_curves(
        values["roc"],
        title=f"OOD detection by mutual information: 1 seed, {count:,} in-domain test images",
    )
    written.append(plotting.save_figure(figure, os.path.join(folder, "roc_mutual_information.png")))
    return written


# -- the run -----------------------------------------------------------------------------------------
def run(config):
    """Runs the whole job for a configuration dict; returns the metrics dict (see module doc).

    The run folder is locked for this process (``uqmix.run_lock``) to the end of the run,
    from before the data is read when it exists: a second process writing it is refused.
    """
    config = validate_config(config)
    return runs.run_holding_output_dir(_run, config)


def _run(config):
    run_steps.check_export_dir(config)  # before any work: an export must not replace files
    reuse_source = (  # before any work: a source of other training flags is refused
        reused_training.check_source(config, default_config(), network_dirs(config))
        if config["reuse_training_from"]
        else None
    )
    # train_networks' folders and timing keys ("<prefix>train_seconds") of both kinds
    mine, blackbox = network_dirs(config), network_dirs(config, BLACKBOX_PREFIX)
    optional = blackbox if config["blackbox_transfer"] else []
    if reuse_source:  # before any work: a copy must not replace files that are not the run's
        reused_training.check_targets(
            config["output_dir"],
            reused_training.networks_to_copy(reuse_source, config["output_dir"], mine, optional),
            (NETWORK_SEED_FILE,),
        )
    strategy, data = run_steps.begin(config, load_data)  # then every worker runs the same steps
    copied = []
    if reuse_source:
        copied = reused_training.copy_networks(
            reuse_source,
            config["output_dir"],
            mine,
            optional_dirs=optional,
            seconds_keys=[
                ("train_seconds", mine[0]),
                (f"{BLACKBOX_PREFIX}train_seconds", blackbox[0]),
            ],
            replaceable=(NETWORK_SEED_FILE,),
        )
        if copied:
            console.progress(
                f"networks {', '.join(copied)} copied from {reuse_source}", config["verbose"]
            )
    # Helper processes train their share of the networks meanwhile (--training_processes);
    # networks just copied from --reuse_training_from are only restored, here.
    to_train = [network for network in run_networks(config) if network[0] not in copied]
    helpers = parallel_training.start(config, to_train, config["verbose"])
    try:
        return _train_evaluate_attack(config, data, strategy, helpers)
    finally:
        helpers.stop()  # after a normal end none is left running; after an error, stopped


def _train_evaluate_attack(config, data, strategy, helpers):
    """Steps 3–5 of the module doc: train (with ``helpers``), evaluate, attack, write."""
    networks, seconds, network_seeds = train_networks(config, data, strategy, helpers=helpers)
    seconds = train_seconds_total(config, strategy, "train_seconds", seconds)
    model = evaluation_model(config, networks)
    training.check_outputs_finite(
        model, data["x_test"][: config["eval_batch_size"]], _num_samples(model)
    )
    start = time.perf_counter()
    console.progress(
        f"evaluating on {len(data['x_test'])} test images and "
        f"{len(data['ood_test'])} OOD test set(s)",
        config["verbose"],
    )
    metrics, values = evaluate(model, config, data)
    metrics["eval_seconds"] = time.perf_counter() - start
    metrics.update(
        {
            "dataset": config["dataset"],
            "model_kind": config["model_kind"],
            "loss": config["loss"],
            "backbone": config["backbone"],
            "num_networks": len(networks),
            "network_seeds": network_seeds,
            "num_replicas": strategy.num_replicas_in_sync,
            "train_seconds": seconds,
            "adversarial_training": config["adversarial_training"],
            "num_train_examples": len(data["x_train"]),
            "num_test_examples": len(data["x_test"]),
            "num_ood_train_examples": (
                0 if data["x_ood_train"] is None else len(data["x_ood_train"])
            ),
            "num_ood_test_examples": {n: len(x) for n, x in data["ood_test"].items()},
        }
    )
    copied = reused_training.copy_record(config["output_dir"])
    if copied:  # networks were copied (by this invocation or an earlier one, flag or not)
        metrics["training_reused_from"] = copied["source"]
    if config["attack"]:
        start = time.perf_counter()
        console.progress(
            f"attacking the first {config['attack_examples']} test images "
            f"({config['attack_method']}, iterations "
            f"{', '.join(map(str, config['attack_iterations']))})",
            config["verbose"],
        )
        metrics["attacks"], values["attacks"], source = attack_metrics(
            model, config, data, strategy, helpers
        )
        elapsed = time.perf_counter() - start
        if source is not None:  # top level: a list under "attacks" would read as a curve
            metrics["blackbox_source_seeds"], source_seconds = source
            metrics["blackbox_source_train_seconds"] = train_seconds_total(
                config, strategy, "blackbox_source_train_seconds", source_seconds
            )
            elapsed -= source_seconds  # the attacks alone
        metrics["attack_seconds"] = elapsed
        console.progress(f"attacks done in {metrics['attack_seconds']:.0f} s", config["verbose"])
    if distributed.is_chief(strategy):  # the other workers write no results
        metrics["figures"] = [
            os.path.relpath(p, config["output_dir"])
            for p in write_figures(values, config["output_dir"])
        ]
        if config["attack"]:
            metrics["figures"] += write_attack_figures(values["attacks"], config["output_dir"])
        log_evaluation(config, metrics, tensorboard_logging.global_step(networks[0]))
    return run_steps.finish(config, strategy, model, data["input_shape"], metrics)


def log_evaluation(config, metrics, step):
    """The metrics (accuracy, NLL, ECE, OOD AUROCs, attack-curve points, ...) as scalars and the
    figures as images in ``tensorboard/evaluation`` at the global ``step`` of training."""
    tensorboard_logging.log_evaluation(
        os.path.join(config["output_dir"], "tensorboard"),
        metrics,
        step,
        [os.path.join(config["output_dir"], path) for path in metrics["figures"]],
    )


def _attack_log(config, setting):
    """Progress lines of the attack curves for a log file (``verbose`` = 2, one timestamped
    line per curve point); None otherwise (``verbose`` = 1 shows a progress bar instead)."""
    if config["verbose"] != 2:
        return None
    return lambda line: console.progress(f"{setting} attack, {line}")


def attack_metrics(model, config, data, strategy, helpers=parallel_training.NO_HELPERS):
    """Adaptive-attack curves (``uqmix.attack_eval.adaptive_attack_curves``) on the first
    ``attack_examples`` test images; with ``blackbox_transfer`` also the curves of attacks
    crafted on a second model (trained with seed + 1000, ``BLACKBOX_SOURCE_SEED_OFFSET``)
    and applied to this one.

    Returns (metrics dict, figure data, None or (the source networks' seeds, the seconds
    spent training them in this call)): per setting,
    lists over ``attack_iterations`` of success_rate, auroc (natural vs successful attacks, by
    ``attack_measure``; None when no attack succeeded) and jsr.
    """
    x = data["x_test"][: config["attack_examples"]]
    common = dict(
        criterion=config["attack_criterion"],
        measure=config["attack_measure"],
        num_gradient_samples=config["attack_gradient_samples"] or None,
        noise=config["attack_noise"],
        combine=config["attack_combine"],
        seed=config["seed"],
        batch_size=config["eval_batch_size"],
        verbose=config["verbose"] == 1,
    )
    if config["attack_method"] == "cw":
        recorded = dict(
            binary_search_steps=config["attack_cw_binary_steps"],
            confidence=config["attack_cw_confidence"],
            initial_const=config["attack_cw_initial_const"],
            learning_rate=config["attack_cw_learning_rate"],
        )
        curves_fn = attack_eval.adaptive_cw_curves
    else:
        recorded = dict(
            eps=config["attack_eps"],
            eps_iter=config["attack_eps_iter"] or config["attack_eps"] / 10.0,
            method=config["attack_method"],
            rand_init=config["attack_rand_init"],
        )
        curves_fn = attack_eval.adaptive_attack_curves
    attack_options = dict(common, **recorded)
    backup = attack_backup_options(config, strategy)
    settings = {
        "white_box": curves_fn(
            model,
            x,
            config["attack_iterations"],
            log=_attack_log(config, "white-box"),
            **backup("white_box"),
            **attack_options,
        )
    }
    source_seeds = None
    if config["blackbox_transfer"]:
        source_networks, source_seconds, source_seeds = train_networks(
            config,
            data,
            strategy,
            seed_offset=BLACKBOX_SOURCE_SEED_OFFSET,
            prefix=BLACKBOX_PREFIX,
            helpers=helpers,
        )
        source = evaluation_model(config, source_networks)
        settings["black_box"] = curves_fn(
            source,
            x,
            config["attack_iterations"],
            eval_model=model,
            log=_attack_log(config, "black-box"),
            **backup("black_box"),
            **attack_options,
        )
    result = {
        "iterations": list(config["attack_iterations"]),
        "eps": config["attack_eps"],
        "method": config["attack_method"],
        "criterion": config["attack_criterion"],
        "measure": config["attack_measure"],
        "num_examples": int(len(x)),
        "attack_options": {
            k: v for k, v in attack_options.items() if k not in ("verbose", "batch_size")
        },
    }
    for setting, curves in settings.items():
        result[setting] = {
            key: [float(v) for v in curves[key]]
            for key in ("success_rate", "auroc", "jsr", "median_l2")
            if key in curves
        }
        if curves.get("resumed_from"):  # this call's attack_seconds are a part of the work
            result[setting]["resumed_from"] = curves["resumed_from"]
    return result, result, None if source_seeds is None else (source_seeds, source_seconds)


ATTACK_BACKUP_DIR = "attack_backup"


def attack_backup_options(config, strategy):
    """setting → the backup arguments of its curve function: ``backup_dir`` =
    output_dir/attack_backup/<setting> (and, for PGD/MIM, ``backup_every_seconds``) on the
    chief; none on the other workers (they write no results) or with
    ``attack_backup_every_seconds`` = 0."""
    every = config["attack_backup_every_seconds"]
    if not every or not distributed.is_chief(strategy):
        return lambda setting: {}

    def options(setting):
        folder = os.path.join(config["output_dir"], ATTACK_BACKUP_DIR, setting)
        if config["attack_method"] == "cw":  # saved after every budget
            return {"backup_dir": folder}
        return {"backup_dir": folder, "backup_every_seconds": float(every)}

    return options


def write_attack_figures(attack_values, output_dir):
    """Success rate, AUROC on successful attacks and JSR against attack iterations."""
    settings = [s for s in ("white_box", "black_box") if s in attack_values]
    panels = {
        title: {s.replace("_", "-"): attack_values[s][key] for s in settings}
        for key, title in (
            ("success_rate", "Success rate"),
            ("auroc", f"AUROC ({attack_values['measure']})"),
            ("jsr", "Joint success rate"),
        )
    }
    figure = plotting.attack_curves(
        attack_values["iterations"],
        panels,
        seeds=[1],
        examples=attack_values["num_examples"],
        title=(
            f"Adaptive C&W L2 ({attack_values['criterion']}) against max_iterations"
            if attack_values["method"] == "cw"
            else f"Adaptive {attack_values['method'].upper()} ({attack_values['criterion']}), "
            f"eps = {attack_values['eps']:.4g}"
        ),
    )
    path = plotting.save_figure(figure, os.path.join(output_dir, FIGURES_DIR, "attack_curves.png"))
    return [os.path.relpath(path, output_dir)]


def summary(metrics):
    """A few lines for the terminal."""
    lines = [
        f"{metrics['dataset']} {metrics['model_kind']} ({metrics['loss']}, "
        f"{metrics['backbone']}): test error {metrics['error']:.4f}"
    ]
    for name, scores in metrics["ood_detection"].items():
        mi = scores.get("mutual_information", {}).get("auroc")
        tu = scores.get("total_uncertainty", {}).get("auroc")
        lines.append(
            f"  OOD {name}: AUROC by mutual information {mi:.4f}, by total uncertainty {tu:.4f}"
        )
    return "\n".join(lines)
