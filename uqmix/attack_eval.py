"""Attack evaluations: robustness curves, adversarial detection, adaptive-attack curves.

Library functions behind the experiment binaries.  Every function takes a
*model*: a uqmix model (``PredictiveModelMixin``; attacked through
``attack_model_fn``: ``uqmix.attacks.stochastic_model_fn`` with the named
options of ``AttackOptions`` for sampled models, evaluated through
``model.predictive`` with S' evaluation samples) or a plain Keras
classifier returning logits (attacked directly, its predictive is the S = 1
``SampledPredictive`` of softmax(logits)).  Inputs are processed in batches of
``batch_size``; the attacks of one batch are one compiled call each.

* ``AttackOptions`` / ``ATTACK_PRESETS``: every protocol choice of the
  untargeted PGD evaluations (preset named after its source, noise,
  combination, labels, evaluation scheme), resolved to a record that is
  stored with every result; ``attack_inputs`` / ``evaluate_under_attack``
  run one attack / the attack-and-evaluation scheme.
* ``robustness_curve``: accuracy and attack success rate under untargeted PGD against ε.
  ``robustness_figure``: the curves of several models, mean ± 3σ over seeds.
* ``adversarial_detection``: AUROC (and the other detection scores) of
  uncertainty measures separating test inputs from their adversarial
  versions; also the variant with correctly classified inputs vs successful
  attacks, both subsampled to the smaller count.
* ``adaptive_cw_curves``: the same evaluation for adaptive Carlini–Wagner L2
  (criterion in place of C&W's margin loss) against its iteration budget.
* ``adaptive_attack_curves``: targeted PGD/MIM at the second most likely
  class with the KL-PMF / KL-DIR / cross-entropy criterion; success rate,
  AUROC on successful attacks and joint success rate (JSR) after each
  iteration checkpoint.  ``eval_model`` ≠ the attacked model gives the
  black-box transfer setting (attack crafted on one model, applied to another).
  Both curve functions take ``backup_dir`` (``uqmix.attack_backup``): an
  interrupted curve continues where it stopped, with the same numbers.
"""

import dataclasses
import math
import time
import typing

import keras
import numpy as np
import tensorflow as tf

from uqmix import attack_backup, attacks, metrics, plotting
from uqmix.evaluation import detection_score
from uqmix.predictive import DirichletPredictive, SampledPredictive

DEFAULT_DETECTION_MEASURES = ("predictive_variance", "total_uncertainty", "mutual_information")


# -- models and attack options ----------------------------------------------------------------
def _is_uqmix_model(model):
    return hasattr(model, "predictive_on_batch") and hasattr(model, "predictive")


# Random start, step schedule, iterations and labels of PGD, named after their sources
# (see BUILD_NOTES "Attacks on stochastic models" for the source lines checked).
ATTACK_PRESETS = {
    # uqmix's own rules (cleverhans 4.0 PGD, no random start, true labels,
    # eps_iter = ratio·ε with Madry et al.'s ratio min(1, 2.5 / nb_iter))
    "cleverhans4": dict(nb_iter=40, eps_iter=None, rand_init=False, labels="true"),
    # cleverhans 3.0.1 ProjectedGradientDescent defaults (eps_iter 0.05, nb_iter 10,
    # random start uniform in the ε-ball, labels = the model's prediction)
    "cleverhans3_pgd": dict(nb_iter=10, eps_iter=0.05, rand_init=True, labels="predicted"),
    # cleverhans 2.1 MadryEtAl defaults (eps_iter 0.01, nb_iter 40, random start,
    # labels = the model's prediction)
    "madry_cleverhans2": dict(nb_iter=40, eps_iter=0.01, rand_init=True, labels="predicted"),
}
LABEL_MODES = ("true", "predicted")
EVALUATION_SCHEMES = ("single", "per_sample")


@dataclasses.dataclass(frozen=True)
class AttackOptions:
    """Every protocol choice of an untargeted L∞ PGD evaluation (recorded with its results).

    preset: a key of ``ATTACK_PRESETS``; nb_iter, eps_iter (absolute step),
      eps_iter_ratio (step = ratio·ε), rand_init, labels override it (None: the
      preset's; at most one of eps_iter / eps_iter_ratio).
    gradient_samples, noise, combine, frozen_scope: the attack model of a sampled
      model (``uqmix.attacks.stochastic_model_fn``; frozen draws are new for
      every batch and attack realisation, reproducible from the seed).
    labels: "true" (the loss of the true label) or "predicted" (of the model's
      prediction: with label_samples None the attack model's own clean
      prediction, as cleverhans guesses labels; else argmax of the mean of
      ``label_samples`` fresh samples).
    evaluation: "single" — one adversarial example per input, evaluated with N
      fresh samples; "per_sample" — a new attack for each of the N evaluation
      samples, each evaluated with one fresh sample, the N probabilities
      averaged (the compound-density-networks scheme); N = eval_attacks if set,
      else the evaluation's sample count.
    """

    preset: str = "cleverhans4"
    nb_iter: typing.Optional[int] = None
    eps_iter: typing.Optional[float] = None
    eps_iter_ratio: typing.Optional[float] = None
    rand_init: typing.Optional[bool] = None
    labels: typing.Optional[str] = None
    label_samples: typing.Optional[int] = None
    gradient_samples: int = 1
    noise: str = "redraw"
    combine: str = "log_mean"
    frozen_scope: str = "auto"
    evaluation: str = "single"
    eval_attacks: typing.Optional[int] = None

    def resolved(self):
        """The options with the preset applied, validated: a JSON-ready dict."""
        if self.preset not in ATTACK_PRESETS:
            raise ValueError(
                f"attack preset must be one of {tuple(ATTACK_PRESETS)}, got {self.preset!r}."
            )
        preset = ATTACK_PRESETS[self.preset]
        if self.eps_iter is not None and self.eps_iter_ratio is not None:
            raise ValueError("give at most one of eps_iter (absolute) and eps_iter_ratio.")
        nb_iter = preset["nb_iter"] if self.nb_iter is None else int(self.nb_iter)
        if nb_iter < 1:
            raise ValueError(f"nb_iter must be >= 1, got {nb_iter}.")
        ratio, step = self.eps_iter_ratio, self.eps_iter
        if ratio is None and step is None:
            step = preset["eps_iter"]
            ratio = default_eps_iter_ratio(nb_iter) if step is None else None
        if ratio is not None and not 0 < ratio <= 1:
            raise ValueError(f"eps_iter_ratio must be in (0, 1] (eps_iter <= eps), got {ratio}.")
        if step is not None and not (math.isfinite(step) and step > 0):
            raise ValueError(f"eps_iter must be > 0, got {step}.")
        labels = preset["labels"] if self.labels is None else self.labels
        checks = [
            ("labels", labels, LABEL_MODES),
            ("evaluation", self.evaluation, EVALUATION_SCHEMES),
            ("noise", self.noise, attacks.model_fns.NOISE_MODES),
            ("combine", self.combine, attacks.model_fns.COMBINE_MODES),
            ("frozen_scope", self.frozen_scope, attacks.model_fns.FROZEN_SCOPES),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"attack option {name} must be one of {allowed}, got {value!r}.")
        for name in ("gradient_samples", "label_samples", "eval_attacks"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"attack option {name} must be an integer >= 1, got {value!r}.")
        rand_init = preset["rand_init"] if self.rand_init is None else bool(self.rand_init)
        return {
            "preset": self.preset,
            "nb_iter": nb_iter,
            "eps_iter": step,
            "eps_iter_ratio": ratio,
            "rand_init": rand_init,
            "labels": labels,
            "label_samples": self.label_samples,
            "gradient_samples": int(self.gradient_samples),
            "noise": self.noise,
            "combine": self.combine,
            "frozen_scope": self.frozen_scope,
            "evaluation": self.evaluation,
            "eval_attacks": self.eval_attacks,
            "norm": "inf",
        }

    def step(self, eps):
        """PGD's eps_iter at radius ``eps``; a fixed step larger than a non-zero ε is an error."""
        record = self.resolved()
        if record["eps_iter"] is None:
            return record["eps_iter_ratio"] * eps
        if 0 < eps < record["eps_iter"]:
            raise ValueError(
                f"attack preset {self.preset!r} steps eps_iter={record['eps_iter']} > eps={eps} "
                "(PGD needs eps_iter <= eps): use larger radii or set eps_iter/eps_iter_ratio."
            )
        return record["eps_iter"]


def attack_model_fn(model, options=None, seed=None):
    """The ``model_fn`` an attack differentiates for ``options`` (default ``AttackOptions()``).

    A sampled uqmix model → ``stochastic_model_fn`` with the options' samples,
    noise and combination; a closed-form uqmix model (Prior Network) → its log
    p̄ (``predictive_logits_fn``; only redraw/log_mean make sense); a Keras
    classifier returning logits → itself.
    """
    options = AttackOptions() if options is None else options
    if not _is_uqmix_model(model):
        if not callable(model):
            raise ValueError(f"model must be a uqmix model or a Keras classifier, got {model!r}.")
        return model
    if getattr(model, "predictive_kind", "sampled_logits") == "sampled_logits":
        return attacks.stochastic_model_fn(
            model,
            options.gradient_samples,
            options.noise,
            options.combine,
            seed,
            options.frozen_scope,
        )
    if options.combine != "log_mean" or options.noise != "redraw":
        raise ValueError(
            f"{type(model).__name__} has no sampled noise: use noise='redraw' and "
            "combine='log_mean'."
        )
    return attacks.predictive_logits_fn(model, options.gradient_samples)


def options_record(model, options=None, seed=None):
    """``options.resolved()`` with the scope of a frozen draw as ``model`` resolves it
    ("auto" → "batch" / "example"; None with redraw noise or a non-sampled model)."""
    options = AttackOptions() if options is None else options
    record = options.resolved()
    model_fn = attack_model_fn(model, options, seed)
    record["frozen_scope"] = getattr(model_fn, "frozen_scope", None)
    return record


def predict(model, x, num_samples=None, batch_size=500):
    """The ``Predictive`` of ``model`` on all of x (batched)."""
    if _is_uqmix_model(model):
        return model.predictive(x, num_samples=num_samples, batch_size=batch_size)
    logits = [
        model(tf.convert_to_tensor(x[i : i + batch_size], tf.float32))
        for i in range(0, len(x), batch_size)
    ]
    return SampledPredictive.from_logits(tf.concat(logits, axis=0)[None])


def _check_data(x, y=None):
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch [N, ...], got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or Inf values.")
    if y is not None:
        y = metrics.check_labels(y, "y", length=len(x))
    return x, y


def _batches(count, batch_size):
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    return [slice(i, min(i + batch_size, count)) for i in range(0, count, int(batch_size))]


def _progress(total, verbose):
    return keras.utils.Progbar(total, verbose=1) if verbose else None


def _advance(bar):
    if bar is not None:
        bar.add(1)


def _log_point(log, what, batch, point, success_rate):
    """One progress line to ``log`` (if given): what was evaluated, the batch (None: all of
    them) and the curve point as (index, count) pairs, counted from 1 in the line, and the
    success rate of the attacks evaluated."""
    if log is None:
        return
    where = [] if batch is None else [f"batch {batch[0] + 1}/{batch[1]}"]
    where.append(f"point {point[0] + 1}/{point[1]}")
    log(f"{what} ({', '.join(where)}): success rate {float(success_rate):.3f}")


# -- robustness ------------------------------------------------------------------------------
def default_eps_iter_ratio(nb_iter):
    """Madry et al.'s step rule eps_iter = 2.5·ε / nb_iter, capped at ε (so eps_iter ≤ ε)."""
    return min(1.0, 2.5 / max(int(nb_iter), 1))


def attack_inputs(
    model,
    x,
    y,
    eps,
    options=None,
    *,
    seed=0,
    realisation=0,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=500,
    bar=None,
):
    """One realisation of untargeted L∞ PGD at radius ``eps`` on all of x, batch by batch.

    Batch i uses the random start seed (seed, realisation·100003 + i) and, with
    frozen noise, the frozen draw of the same key.  ε = 0 returns x (no attack).
    """
    options = AttackOptions() if options is None else options
    record = options.resolved()
    step = options.step(eps)
    if eps == 0:
        return np.array(x, copy=True)
    model_fn = attack_model_fn(model, options, seed)
    loss_fn = model_fn.loss() if isinstance(model_fn, attacks.StochasticModelFn) else None
    if record["labels"] == "true":
        labels = y
    elif record["label_samples"] is None:
        labels = None  # the attack model's own prediction (cleverhans' guess)
    else:
        labels = np.asarray(
            predict(model, x, record["label_samples"], batch_size).predicted_class()
        )
    adversarial = []
    for index, part in enumerate(_batches(len(x), batch_size)):
        key = realisation * 100003 + index
        if isinstance(model_fn, attacks.StochasticModelFn):
            model_fn.new_draw(key)
        adversarial.append(
            attacks.projected_gradient_descent(
                model_fn,
                x[part],
                eps,
                step,
                record["nb_iter"],
                np.inf,
                loss_fn,
                clip_min,
                clip_max,
                None if labels is None else labels[part],
                False,
                record["rand_init"],
                seed=[seed, key],
            ).numpy()
        )
        _advance(bar)
    return np.concatenate(adversarial)


def evaluate_under_attack(
    model,
    x,
    y,
    eps,
    options=None,
    *,
    num_eval_samples=None,
    seed=0,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=500,
    bar=None,
    verbose=False,
):
    """The ``Predictive`` of the adversarial inputs under ``options.evaluation`` (see
    ``AttackOptions``): "single" → predict(x', N samples); "per_sample" → sample n is one fresh
    sample at x'_n, the n-th attack realisation, n = 1..N.  ``verbose``: a progress bar over
    the attacked batches (unless a ``bar`` is given)."""
    options = AttackOptions() if options is None else options
    if bar is None and verbose and eps > 0:
        bar = _progress(
            len(_batches(len(x), batch_size)) * _attack_count(options, num_eval_samples, model),
            verbose,
        )
    kwargs = dict(seed=seed, clip_min=clip_min, clip_max=clip_max, batch_size=batch_size, bar=bar)
    if options.evaluation == "single":
        adversarial = attack_inputs(model, x, y, eps, options, **kwargs)
        return predict(model, adversarial, num_eval_samples, batch_size)
    count = options.eval_attacks or num_eval_samples or getattr(model, "default_num_samples", 1)
    samples = []
    for realisation in range(int(count)):
        adversarial = attack_inputs(model, x, y, eps, options, realisation=realisation, **kwargs)
        samples.append(predict(model, adversarial, 1, batch_size).log_probs)
    return SampledPredictive.from_log_probs(tf.concat(samples, axis=0))


def _attack_count(options, num_eval_samples, model):
    if options.evaluation == "single":
        return 1
    return int(options.eval_attacks or num_eval_samples or getattr(model, "default_num_samples", 1))


def robustness_curve(
    model,
    x,
    y,
    epsilons,
    options=None,
    *,
    num_eval_samples=None,
    seed=0,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=500,
    verbose=False,
):
    """Accuracy and attack success rate under untargeted L∞ PGD for every ε in ``epsilons``.

    The attack and the evaluation follow ``options`` (``AttackOptions``; default:
    the cleverhans4 preset, redraw noise, log_mean, one gradient sample, a
    single attack evaluated with ``num_eval_samples`` samples).  Accuracy of
    the mean prediction; success rate = fraction of the inputs classified
    correctly before the attack that are misclassified after it
    (``metrics.attack_success_rate`` with the clean prediction).

    Returns {"epsilons": [E], "accuracy": [E], "success_rate": [E]} (float64
    arrays) and "options" (the resolved options); ε = 0 is the clean prediction itself
    (accuracy = clean accuracy, success rate 0).
    """
    x, y = _check_data(x, y)
    options = AttackOptions() if options is None else options
    record = options_record(model, options, seed)
    epsilons = np.asarray(epsilons, np.float64).reshape(-1)
    if epsilons.size == 0 or np.any(~np.isfinite(epsilons)) or np.any(epsilons < 0):
        raise ValueError(
            f"epsilons must be a non-empty list of finite values >= 0, got {epsilons}."
        )
    for eps in epsilons:
        options.step(eps)  # a fixed step larger than some ε: one error before any work
    batches = _batches(len(x), batch_size)
    attacked = int(np.sum(epsilons > 0))
    bar = _progress(
        attacked * len(batches) * _attack_count(options, num_eval_samples, model), verbose
    )
    clean = predict(model, x, num_eval_samples, batch_size)
    accuracy, success = [], []
    for eps in epsilons:
        predictive = (
            clean
            if eps == 0
            else evaluate_under_attack(
                model,
                x,
                y,
                eps,
                options,
                num_eval_samples=num_eval_samples,
                seed=seed,
                clip_min=clip_min,
                clip_max=clip_max,
                batch_size=batch_size,
                bar=bar,
            )
        )
        accuracy.append(metrics.accuracy(predictive, y))
        success.append(metrics.attack_success_rate(predictive, y, clean=clean))
    return {
        "epsilons": epsilons,
        "accuracy": np.asarray(accuracy, np.float64),
        "success_rate": np.asarray(success, np.float64),
        "options": record,
    }


def robustness_figure(curves, title=None, sigmas=3.0):
    """Accuracy against ε, one line per model, error bars ± ``sigmas``·std over seeds
    (sample standard deviation, ddof = 1, as every aggregate of uqmix; none for one seed).

    curves: {label: {"epsilons": [E], "accuracy": [E] or [seeds, E]}} (e.g.
    ``robustness_curve`` results of several seeds stacked with ``np.stack``), optionally
    "num_examples" (count or counts of attacked images).  The title (``title``: what the
    figure shows) gets the seeds and examples appended; "± σ" only with more than one seed.
    """
    if not curves:
        raise ValueError("curves is empty.")
    figure = plotting.new_figure(5.0, 3.8)
    ax = figure.subplots()
    seeds, examples = plotting.robustness_axes(ax, curves, sigmas)
    ax.set_title(
        f"{title or 'PGD robustness'}\n"
        + plotting.averaging_text(seeds, sigmas, examples or None, "attacked image"),
        fontsize=10,
    )
    return figure


# -- adversarial detection ---------------------------------------------------------------------
def _measures_of(predictive, measures):
    """The measures asked for (default: those of ``DEFAULT_DETECTION_MEASURES`` the
    predictive has); a name the predictive does not provide is an error, never dropped."""
    if measures is None:
        return [m for m in DEFAULT_DETECTION_MEASURES if m in predictive.measure_names]
    measures = [measures] if isinstance(measures, str) else list(measures)
    unknown = [m for m in measures if m not in predictive.measure_names]
    if unknown or not measures:
        raise ValueError(
            f"unknown or empty measures {unknown or measures}; this predictive "
            f"provides {list(predictive.measure_names)}."
        )
    return measures


def adversarial_detection(clean, adversarial, labels, measures=None, seed=0):
    """Detection of adversarial inputs by uncertainty (positives = adversarial).

    clean, adversarial: ``Predictive``s of the same N test inputs and their
    adversarial versions; labels: true classes [N].
    Returns {"all": {measure: detection_scores}, "correct_vs_successful":
    {measure: detection_scores}, "num_correct", "num_successful", "num_subsampled"}:
    * "all": every clean input vs every adversarial input;
    * "correct_vs_successful": clean inputs classified correctly vs
      successful attacks (adversarial versions of correctly classified inputs
      that are now misclassified), both subsampled without replacement (seeded)
      to the smaller count; None when either set is empty.
    measures: names (default predictive variance, total uncertainty and
    mutual information, those the predictive provides).
    """
    labels = metrics.check_labels(labels, "labels", clean.num_classes, int(clean.batch_size))
    if int(adversarial.batch_size) != labels.size:
        raise ValueError(
            f"adversarial has {int(adversarial.batch_size)} examples, clean {labels.size}."
        )
    names = _measures_of(clean, measures)
    clean_scores = {m: detection_score(clean, m) for m in names}
    adv_scores = {m: detection_score(adversarial, m) for m in names}
    result = {"all": {m: metrics.detection_scores(clean_scores[m], adv_scores[m]) for m in names}}
    correct = metrics.predicted_classes(clean) == labels
    successful = correct & metrics.attack_success(adversarial, labels)
    count = int(min(correct.sum(), successful.sum()))
    result.update(
        num_correct=int(correct.sum()),
        num_successful=int(successful.sum()),
        num_subsampled=count,
        correct_vs_successful=None,
    )
    if count > 0:
        rng = np.random.default_rng(seed)
        negatives = rng.choice(np.flatnonzero(correct), count, replace=False)
        positives = rng.choice(np.flatnonzero(successful), count, replace=False)
        result["correct_vs_successful"] = {
            m: metrics.detection_scores(clean_scores[m][negatives], adv_scores[m][positives])
            for m in names
        }
    return result


# -- adaptive attacks --------------------------------------------------------------------------
CRITERIA = ("kl_pmf", "kl_dir", "cross_entropy")


def _criterion(
    criterion,
    model,
    clean_part,
    num_gradient_samples,
    noise="redraw",
    combine="log_mean",
    seed=None,
    draw=None,
):
    """(model_fn, loss_fn) of an adaptive criterion for one batch of clean outputs.

    A sampled uqmix model is attacked through ``stochastic_model_fn`` (noise,
    combine; S = num_gradient_samples or the model's default); with
    combine="mean_loss" the criterion is averaged over the samples (EOT).
    ``draw`` (the batch index) keys that model_fn's frozen draw (``new_draw``).
    """
    if criterion == "kl_dir":
        if not isinstance(clean_part, DirichletPredictive):
            raise ValueError("criterion 'kl_dir' needs a Prior Network (Dirichlet output).")
        return attacks.dirichlet_logits_fn(model), attacks.kl_dir_loss(clean_part.alpha)
    sampled = (
        _is_uqmix_model(model)
        and getattr(model, "predictive_kind", "sampled_logits") == "sampled_logits"
    )
    if sampled:
        samples = num_gradient_samples or getattr(model, "default_num_samples", 1)
        model_fn = attacks.stochastic_model_fn(model, samples, noise, combine, seed)
    elif noise != "redraw" or combine != "log_mean":
        raise ValueError(
            "noise / combine options need a sampled model (MC dropout, ensemble, "
            "mixture); use noise='redraw', combine='log_mean'."
        )
    else:
        model_fn = (
            attacks.predictive_logits_fn(model, num_gradient_samples)
            if _is_uqmix_model(model)
            else attack_model_fn(model)
        )
    if draw is not None and isinstance(model_fn, attacks.StochasticModelFn):
        model_fn.new_draw(draw)
    loss_fn = attacks.kl_pmf_loss(clean_part.mean()) if criterion == "kl_pmf" else None
    if sampled:
        loss_fn = model_fn.loss(loss_fn)
    return model_fn, loss_fn


def _curves(iterations, points):
    """{"iterations", "success_rate", "auroc", "jsr"} from one ``_adaptive_point`` per count."""
    result = {"iterations": np.asarray(iterations)}
    for key, values in zip(("success_rate", "auroc", "jsr"), zip(*points)):
        result[key] = np.asarray(values, np.float64)
    return result


def _adaptive_point(natural_scores, scores, hit):
    """(success rate, AUROC of natural vs successful adversarial inputs, JSR)."""
    auroc = (
        metrics.detection_scores(natural_scores, scores[hit])["auroc"]
        if hit.any()
        else float("nan")
    )
    return float(hit.mean()), auroc, metrics.joint_success_rate(natural_scores, scores, hit)


def _adaptive_setup(model, x, criterion, eval_model, measure, num_eval_samples, batch_size):
    """Clean predictive, second-most-likely targets and natural scores on ``eval_model``."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    eval_model = model if eval_model is None else eval_model
    clean = predict(model, x, num_eval_samples, batch_size)
    targets = attacks.second_most_likely_class(clean.mean()).numpy()
    eval_clean = (
        clean if eval_model is model else predict(eval_model, x, num_eval_samples, batch_size)
    )
    return eval_model, clean, targets, detection_score(eval_clean, measure)


def adaptive_attack_curves(
    model,
    x,
    checkpoints,
    *,
    eps,
    eps_iter,
    method="pgd",
    criterion="kl_pmf",
    eval_model=None,
    measure="mutual_information",
    norm=np.inf,
    num_gradient_samples=None,
    num_eval_samples=None,
    decay_factor=1.0,
    rand_init=False,
    seed=0,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=500,
    verbose=False,
    noise="redraw",
    combine="log_mean",
    log=None,
    backup_dir=None,
    backup_every_seconds=600.0,
):
    """Targeted adaptive attack at the second most likely class, evaluated after each checkpoint.

    The attack (PGD or MIM, ``iterative_attack_run``) runs on ``model``
    towards t = the second most likely class of its clean prediction,
    descending ``criterion``: "kl_pmf" (KL(π_adv ‖ π̂(x'))), "kl_dir"
    (KL(Dir(α_adv) ‖ Dir(α(x'))), Prior Networks only) or "cross_entropy"
    (−log p̄_t(x')).  Sampled models are attacked with ``noise`` / ``combine``
    (``uqmix.attacks.stochastic_model_fn``; a frozen draw per batch).  The
    examples after n iterations are evaluated on ``eval_model`` (default:
    ``model``; another model = black-box transfer):
    * success_rate: fraction of all inputs with argmax p̄(x') = t;
    * auroc: natural inputs (negatives) vs *successful* adversarial inputs
      (positives) scored by ``measure`` (NaN when no attack succeeded);
    * jsr: joint success rate (``uqmix.metrics.joint_success_rate``) of the
      natural and all adversarial inputs.
    ``log``: None or a callable given one line of progress per evaluated checkpoint of each
    batch (for a log file, where ``verbose``'s progress bar does not belong).
    ``backup_dir``: None, or a folder where the curve's progress is kept
    (``uqmix.attack_backup``): after every evaluated checkpoint and, within
    the iterations between two, about every ``backup_every_seconds``; called
    again with the same folder and arguments (and models, inputs, code) the
    curve continues from there, with the result of an uninterrupted run.  It writes
    one file there, ``attack_backup.BACKUP_FILE``; a file of that name that is not a
    uqmix attack backup raises ``FileExistsError`` before any attack (never overwritten).
    Returns {"iterations", "success_rate", "auroc", "jsr"} (arrays [T]); with a backup also
    "resumed_from" (None, or the {"batch", "iterations"} this call continued from).
    """
    x, _ = _check_data(x)
    checkpoints = attacks.checks.check_increasing_counts(checkpoints, "checkpoints")
    attack = dict(
        method=method,
        eps=eps,
        eps_iter=eps_iter,
        norm=norm,
        clip_min=clip_min,
        clip_max=clip_max,
        rand_init=rand_init,
        decay_factor=decay_factor,
    )
    sampling = dict(
        num_gradient_samples=num_gradient_samples, noise=noise, combine=combine, seed=seed
    )
    options = dict(
        attack,
        norm=str(norm),
        rand_init=bool(rand_init),
        checkpoints=checkpoints,
        criterion=criterion,
        measure=measure,
        num_eval_samples=num_eval_samples,
        batch_size=int(batch_size),
        **sampling,
    )
    pacer = None if backup_dir is None else attack_backup.Pacer(backup_every_seconds)
    backup, position, eval_model, clean, targets, natural_scores = _backed_setup(
        "adaptive_attack_curves",
        options,
        {"batch": 0, "iterations": 0},
        model,
        x,
        criterion,
        eval_model,
        measure,
        num_eval_samples,
        batch_size,
        backup_dir,
        log,
    )
    batches = _batches(len(x), batch_size)
    scores = {c: [] for c in checkpoints}
    success = {c: [] for c in checkpoints}
    bar = _progress(len(batches) * len(checkpoints), verbose)
    for index, part in enumerate(batches):
        run = None
        for point, count in enumerate(checkpoints):
            saved = _saved_point(backup, index, count)
            if saved is None:
                if run is None:
                    model_fn, loss_fn = _criterion(
                        criterion,
                        model,
                        clean.take(np.arange(len(x))[part]),
                        draw=index,
                        **sampling,
                    )
                    run = _batch_run(x[part], targets[part], model_fn, loss_fn, seed, index, attack)
                    if index == position["batch"] and position["iterations"]:
                        run.restore(position["iterations"], backup.attack_state)
                adversarial = _advance_run(run, count, pacer, backup, index)
                predictive = predict(eval_model, adversarial.numpy(), num_eval_samples, batch_size)
                saved = (
                    detection_score(predictive, measure),
                    metrics.attack_success(predictive, targets=targets[part]),
                )
                _save_point(backup, pacer, index, count, saved, run, point == len(checkpoints) - 1)
                _log_point(
                    log,
                    f"{method} {count} iterations",
                    (index, len(batches)),
                    (point, len(checkpoints)),
                    saved[1].mean(),
                )
            scores[count].append(saved[0])
            success[count].append(saved[1])
            _advance(bar)
    points = [
        _adaptive_point(natural_scores, np.concatenate(scores[c]), np.concatenate(success[c]))
        for c in checkpoints
    ]
    return _with_backup_record(_curves(checkpoints, points), backup, position)


def _batch_run(x, targets, model_fn, loss_fn, seed, index, attack):
    """The targeted ``IterativeAttackRun`` of batch ``index`` towards ``targets`` (PGD's
    random start keyed by (seed, index)); ``attack``: method, eps, eps_iter and the other
    arguments of ``iterative_attack_run``."""
    attack = dict(attack)
    method, eps, eps_iter = (attack.pop(name) for name in ("method", "eps", "eps_iter"))
    return attacks.iterative_attack_run(
        method,
        model_fn,
        x,
        eps,
        eps_iter,
        loss_fn=loss_fn,
        y=targets,
        targeted=True,
        seed=[seed, index],
        **attack,
    )


def _saved_point(backup, index, count):
    """(scores, success) of batch ``index`` after ``count`` iterations from the backup, or
    None when it was not evaluated before."""
    if backup is None or f"scores/{index}/{count}" not in backup.arrays:
        return None
    return backup.arrays[f"scores/{index}/{count}"], backup.arrays[f"success/{index}/{count}"]


def _save_point(backup, pacer, index, count, point, run, last):
    """Saves an evaluated point (with the attack's state to continue from, unless it was the
    batch's ``last``: then the position moves to the next batch)."""
    if backup is None:
        return
    backup.save(
        {"batch": index + last, "iterations": 0 if last else count},
        {f"scores/{index}/{count}": point[0], f"success/{index}/{count}": point[1]},
        () if last else run.state(),
    )
    pacer.saved()


def _with_backup_record(result, backup, position):
    """With a backup, ``result["resumed_from"]``: the position this call continued from
    (None when it started afresh), so that its seconds are read as a part of the work."""
    if backup is not None:
        result["resumed_from"] = position if backup.resumed else None
    return result


def _backed_setup(
    function,
    options,
    fresh,
    model,
    x,
    criterion,
    eval_model,
    measure,
    num_eval_samples,
    batch_size,
    backup_dir,
    log,
):
    """The start both curve functions share, in the order a resume needs: the backup opened
    (``_open_backup``: the random generators put back to the computation's first start),
    then the clean predictions, targets and natural scores (``_adaptive_setup``), then where
    to continue (``_resume_position``, from ``fresh``'s position when there is nothing to).
    Returns (backup or None, position, eval_model, clean, targets, natural_scores)."""
    backup = _open_backup(function, options, x, model, eval_model, backup_dir, log)
    eval_model, clean, targets, natural_scores = _adaptive_setup(
        model, x, criterion, eval_model, measure, num_eval_samples, batch_size
    )
    position = _resume_position(backup, fresh, _setup_arrays(clean, targets, natural_scores))
    return backup, position, eval_model, clean, targets, natural_scores


def _open_backup(function, options, x, model, eval_model, backup_dir, log):
    """None without ``backup_dir``; else the started ``AttackBackup`` of this computation
    (``options["seed"]`` must be an integer)."""
    if backup_dir is None:
        return None
    if options["seed"] is None:
        raise ValueError(
            "backup_dir needs an integer seed: the frozen noise drawn with seed=None "
            "cannot be drawn again after a resume."
        )
    key = attack_backup.computation_key(
        function,
        options,
        {"x": x},
        {"model": model, "eval_model": None if eval_model is model else eval_model},
    )
    backup = attack_backup.AttackBackup(backup_dir, key, [model, eval_model], log)
    backup.start()
    return backup


def _setup_arrays(clean, targets, natural_scores):
    """What a resumed curve recomputes and must find unchanged: the attack targets, the
    clean predictions the criterion aims at (the mean, and α for a Dirichlet) and the
    natural inputs' detection scores."""
    arrays = {
        "targets": targets,
        "clean_mean": np.asarray(clean.mean()),
        "natural_scores": natural_scores,
    }
    if isinstance(clean, DirichletPredictive):
        arrays["clean_alpha"] = np.asarray(clean.alpha)
    return arrays


def _resume_position(backup, fresh, recomputed):
    """Where the computation continues: the backup's position (``fresh``'s names, ints), or
    ``fresh`` without one; a resumed backup must find every ``recomputed`` array as saved,
    else it starts afresh (``AttackBackup.verify``)."""
    if backup is None:
        return fresh
    if not backup.verify(recomputed):
        return fresh
    backup.resume_rng()
    position = {name: int(backup.position[name]) for name in fresh}
    done = ", ".join(f"{name} {value}" for name, value in position.items())
    backup.say(f"resuming the attack from {backup.path} at {done}")
    return position


def _advance_run(run, count, pacer, backup, index):
    """Advances ``run`` to ``count`` iterations and returns x'; with a backup, in pieces of
    about ``pacer.every_seconds``, saving the attack's state when a save is due."""
    if pacer is None:
        return run.advance(count - run.iterations)
    adversarial = None
    while adversarial is None or run.iterations < count:
        piece = pacer.chunk(count - run.iterations)
        start = time.monotonic()
        adversarial = run.advance(piece)
        adversarial.numpy()  # waits for the device: the piece's time is its compute time
        pacer.ran(piece, time.monotonic() - start)
        if run.iterations < count and pacer.due():
            backup.save({"batch": index, "iterations": run.iterations}, None, run.state())
            pacer.saved()
    return adversarial


def adaptive_cw_curves(
    model,
    x,
    budgets,
    *,
    binary_search_steps=5,
    criterion="kl_pmf",
    eval_model=None,
    measure="mutual_information",
    num_gradient_samples=None,
    num_eval_samples=None,
    confidence=0.0,
    initial_const=1e-2,
    learning_rate=5e-3,
    abort_early=True,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=500,
    verbose=False,
    noise="redraw",
    combine="log_mean",
    seed=0,
    log=None,
    backup_dir=None,
):
    """Adaptive Carlini–Wagner L2 at the second most likely class against the iteration budget.

    For every budget n in ``budgets`` one ``carlini_wagner_l2_run`` with
    max_iterations = n and ``binary_search_steps``, its misclassification
    term replaced by ``criterion`` (as ``adaptive_attack_curves``; "cross_entropy"
    keeps C&W's own margin loss).  Examples never made adversarial stay x.
    Evaluated like ``adaptive_attack_curves`` on ``eval_model``; also the
    median L2 distance ‖x' − x‖ of the successful examples (NaN if none).
    ``log``: as ``adaptive_attack_curves``, one line per evaluated budget.
    ``backup_dir``: as ``adaptive_attack_curves``, saved after every budget (a budget's
    run restarts when interrupted: C&W's binary search keeps no state between budgets).
    Returns {"iterations", "success_rate", "auroc", "jsr", "median_l2"} (arrays [T]); with a
    backup also "resumed_from" (None, or the {"budgets_done"} this call continued from).
    """
    x, _ = _check_data(x)
    budgets = [int(b) for b in budgets]
    options = dict(
        budgets=budgets,
        binary_search_steps=binary_search_steps,
        criterion=criterion,
        measure=measure,
        num_gradient_samples=num_gradient_samples,
        num_eval_samples=num_eval_samples,
        confidence=confidence,
        initial_const=initial_const,
        learning_rate=learning_rate,
        abort_early=bool(abort_early),
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=int(batch_size),
        noise=noise,
        combine=combine,
        seed=seed,
    )
    backup, position, eval_model, clean, targets, natural_scores = _backed_setup(
        "adaptive_cw_curves",
        options,
        {"budgets_done": 0},
        model,
        x,
        criterion,
        eval_model,
        measure,
        num_eval_samples,
        batch_size,
        backup_dir,
        log,
    )
    done = position["budgets_done"]
    points, medians = [], []
    batches = _batches(len(x), batch_size)
    bar = _progress(len(batches) * len(budgets), verbose)
    for point, budget in enumerate(budgets):
        if point < done:
            points.append(tuple(backup.arrays[f"point/{point}"]))
            medians.append(float(backup.arrays[f"median_l2/{point}"]))
            for _ in batches:
                _advance(bar)
            continue
        adversarial = []
        for index, part in enumerate(batches):
            model_fn, loss_fn = _criterion(
                criterion,
                model,
                clean.take(np.arange(len(x))[part]),
                num_gradient_samples,
                noise,
                combine,
                seed,
                draw=index,
            )
            adversarial.append(
                attacks.carlini_wagner_l2_run(
                    model_fn,
                    x[part],
                    y=targets[part],
                    targeted=True,
                    batch_size=len(x[part]),
                    clip_min=clip_min,
                    clip_max=clip_max,
                    binary_search_steps=binary_search_steps,
                    max_iterations=budget,
                    abort_early=abort_early,
                    confidence=confidence,
                    initial_const=initial_const,
                    learning_rate=learning_rate,
                    loss_fn=loss_fn,
                ).adversarial
            )
            _advance(bar)
        adversarial = np.concatenate(adversarial)
        predictive = predict(eval_model, adversarial, num_eval_samples, batch_size)
        hit = metrics.attack_success(predictive, targets=targets)
        points.append(_adaptive_point(natural_scores, detection_score(predictive, measure), hit))
        distances = np.sqrt(((adversarial - x).reshape(len(x), -1) ** 2).sum(1))
        medians.append(float(np.median(distances[hit])) if hit.any() else float("nan"))
        if backup is not None:
            backup.save(
                {"budgets_done": point + 1},
                {f"point/{point}": np.asarray(points[-1]), f"median_l2/{point}": medians[-1]},
            )
        _log_point(log, f"C&W L2 max_iterations {budget}", None, (point, len(budgets)), hit.mean())
    result = _curves(budgets, points)
    result["median_l2"] = np.asarray(medians, np.float64)
    return _with_backup_record(result, backup, position)
