"""Attack evaluations: robustness curves, adversarial detection, adaptive-attack curves.

Library functions behind the experiment binaries.  Every function takes a
*model*: a uqmix model (``PredictiveModelMixin``; attacked through
``uqmix.attacks.predictive_logits_fn`` with S gradient samples, evaluated
through ``model.predictive`` with S' evaluation samples) or a plain Keras
classifier returning logits (attacked directly, its predictive is the S = 1
``SampledPredictive`` of softmax(logits)).  Inputs are processed in batches of
``batch_size``; the attacks of one batch are one compiled call each.

* ``robustness_curve``: accuracy under untargeted PGD against ε.
  ``robustness_figure``: the curves of several models, mean ± 3σ over seeds.
* ``adversarial_detection``: AUROC (and the other detection scores) of
  uncertainty measures separating test inputs from their adversarial
  versions; also the variant with correctly classified inputs vs successful
  attacks, both subsampled to the smaller count.
* ``adaptive_attack_curves``: targeted PGD/MIM at the second most likely
  class with the KL-PMF / KL-DIR / cross-entropy criterion; success rate,
  AUROC on successful attacks and joint success rate (JSR) after each
  iteration checkpoint.  ``eval_model`` ≠ the attacked model gives the
  black-box transfer setting (attack crafted on one model, applied to another).
"""

import keras
import numpy as np
import tensorflow as tf

from uqmix import attacks
from uqmix import metrics
from uqmix import plotting
from uqmix.evaluation import detection_score
from uqmix.predictive import DirichletPredictive, SampledPredictive

DEFAULT_DETECTION_MEASURES = ("predictive_variance", "total_uncertainty", "mutual_information")


# -- models ---------------------------------------------------------------------------------
def _is_uqmix_model(model):
    return hasattr(model, "predictive_on_batch") and hasattr(model, "predictive")


def attack_model_fn(model, num_samples=None):
    """The ``model_fn`` an attack differentiates: log p̄ of S samples, or a Keras model's logits."""
    if _is_uqmix_model(model):
        return attacks.predictive_logits_fn(model, num_samples)
    if not callable(model):
        raise ValueError(f"model must be a uqmix model or a Keras classifier, got {model!r}.")
    return model


def predict(model, x, num_samples=None, batch_size=500):
    """The ``Predictive`` of ``model`` on all of x (batched)."""
    if _is_uqmix_model(model):
        return model.predictive(x, num_samples=num_samples, batch_size=batch_size)
    logits = [model(tf.convert_to_tensor(x[i:i + batch_size], tf.float32))
              for i in range(0, len(x), batch_size)]
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


# -- robustness ------------------------------------------------------------------------------
def default_eps_iter_ratio(nb_iter):
    """Madry et al.'s step rule eps_iter = 2.5·ε / nb_iter, capped at ε (so eps_iter ≤ ε)."""
    return min(1.0, 2.5 / max(int(nb_iter), 1))


def robustness_curve(model, x, y, epsilons, *, num_gradient_samples=1, num_eval_samples=None,
                     nb_iter=40, eps_iter_ratio=None, norm=np.inf, rand_init=False, seed=0,
                     attack_true_labels=True, clip_min=0.0, clip_max=1.0, batch_size=500,
                     verbose=False):
    """Accuracy under untargeted PGD for every ε in ``epsilons``.

    PGD: nb_iter steps of eps_iter = eps_iter_ratio · ε (default min(1, 2.5 / nb_iter),
    Madry et al.'s rule), ``norm``, box [clip_min, clip_max]; gradients of
    log p̄ with ``num_gradient_samples`` samples; the loss is that of the true
    label (``attack_true_labels``) or of the clean prediction; with
    ``rand_init`` batch i starts from the stateless seed (seed, i).  Accuracy
    of the mean prediction with ``num_eval_samples`` samples.

    Returns {"epsilons": [E], "accuracy": [E]} (float64 arrays); ε = 0 gives
    the clean accuracy.
    """
    x, y = _check_data(x, y)
    epsilons = np.asarray(epsilons, np.float64).reshape(-1)
    if epsilons.size == 0 or np.any(~np.isfinite(epsilons)) or np.any(epsilons < 0):
        raise ValueError(f"epsilons must be a non-empty list of finite values >= 0, got {epsilons}.")
    if eps_iter_ratio is None:
        eps_iter_ratio = default_eps_iter_ratio(nb_iter)
    if not 0 < eps_iter_ratio <= 1:
        raise ValueError(f"eps_iter_ratio must be in (0, 1] (eps_iter <= eps), got {eps_iter_ratio}.")
    model_fn = attack_model_fn(model, num_gradient_samples)
    batches = _batches(len(x), batch_size)
    bar = _progress(len(epsilons) * len(batches), verbose)
    accuracy = []
    for eps in epsilons:
        adversarial = []
        for index, part in enumerate(batches):
            adversarial.append(attacks.projected_gradient_descent(
                model_fn, x[part], eps, eps_iter_ratio * eps, nb_iter, norm,
                clip_min=clip_min, clip_max=clip_max, y=y[part] if attack_true_labels else None,
                rand_init=rand_init, seed=[seed, index]).numpy())
            _advance(bar)
        predictive = predict(model, np.concatenate(adversarial), num_eval_samples, batch_size)
        accuracy.append(metrics.accuracy(predictive, y))
    return {"epsilons": epsilons, "accuracy": np.asarray(accuracy, np.float64)}


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
    seeds, examples = [], []
    for (label, curve), (color, style) in zip(curves.items(),
                                              plotting.series_styles(len(curves))):
        epsilons = np.asarray(curve["epsilons"], np.float64)
        accuracy = np.atleast_2d(np.asarray(curve["accuracy"], np.float64))
        if accuracy.shape[1] != epsilons.size:
            raise ValueError(f"{label!r}: {accuracy.shape[1]} accuracies for {epsilons.size} epsilons.")
        seeds.append(accuracy.shape[0])
        examples += [int(n) for n in np.atleast_1d(curve.get("num_examples") or [])]
        spread = sigmas * accuracy.std(axis=0, ddof=1) if accuracy.shape[0] > 1 else None
        ax.errorbar(epsilons, accuracy.mean(axis=0), yerr=spread, marker="o", markersize=3,
                    capsize=3, linewidth=1.5, label=f"{label} (n={accuracy.shape[0]})",
                    color=color, linestyle=style)
    ax.set_xlabel("ε")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(f"{title or 'PGD robustness'}\n" + plotting.averaging_text(
        seeds, sigmas, examples or None, "attacked image"), fontsize=10)
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
        raise ValueError(f"unknown or empty measures {unknown or measures}; this predictive "
                         f"provides {list(predictive.measure_names)}.")
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
        raise ValueError(f"adversarial has {int(adversarial.batch_size)} examples, clean {labels.size}.")
    names = _measures_of(clean, measures)
    clean_scores = {m: detection_score(clean, m) for m in names}
    adv_scores = {m: detection_score(adversarial, m) for m in names}
    result = {"all": {m: metrics.detection_scores(clean_scores[m], adv_scores[m]) for m in names}}
    correct = metrics.predicted_classes(clean) == labels
    successful = correct & metrics.attack_success(adversarial, labels)
    count = int(min(correct.sum(), successful.sum()))
    result.update(num_correct=int(correct.sum()), num_successful=int(successful.sum()),
                  num_subsampled=count, correct_vs_successful=None)
    if count > 0:
        rng = np.random.default_rng(seed)
        negatives = rng.choice(np.flatnonzero(correct), count, replace=False)
        positives = rng.choice(np.flatnonzero(successful), count, replace=False)
        result["correct_vs_successful"] = {
            m: metrics.detection_scores(clean_scores[m][negatives], adv_scores[m][positives])
            for m in names}
    return result


# -- adaptive attacks --------------------------------------------------------------------------
CRITERIA = ("kl_pmf", "kl_dir", "cross_entropy")


def _criterion(criterion, model, clean_part, num_gradient_samples):
    """(model_fn, loss_fn) of an adaptive criterion for one batch of clean outputs."""
    if criterion == "kl_dir":
        if not isinstance(clean_part, DirichletPredictive):
            raise ValueError("criterion 'kl_dir' needs a Prior Network (Dirichlet output).")
        return attacks.dirichlet_logits_fn(model), attacks.kl_dir_loss(clean_part.alpha)
    model_fn = attack_model_fn(model, num_gradient_samples)
    if criterion == "kl_pmf":
        return model_fn, attacks.kl_pmf_loss(clean_part.mean())
    return model_fn, None


def adaptive_attack_curves(model, x, checkpoints, *, eps, eps_iter, method="pgd",
                           criterion="kl_pmf", eval_model=None, measure="mutual_information",
                           norm=np.inf, num_gradient_samples=None, num_eval_samples=None,
                           decay_factor=1.0, rand_init=False, seed=0, clip_min=0.0,
                           clip_max=1.0, batch_size=500, verbose=False):
    """Targeted adaptive attack at the second most likely class, evaluated after each checkpoint.

    The attack (PGD or MIM, ``iterative_attack_checkpoints``) runs on ``model``
    towards t = the second most likely class of its clean prediction,
    descending ``criterion``: "kl_pmf" (KL(π_adv ‖ π̂(x'))), "kl_dir"
    (KL(Dir(α_adv) ‖ Dir(α(x'))), Prior Networks only) or "cross_entropy"
    (−log p̄_t(x')).  The examples after n iterations are evaluated on
    ``eval_model`` (default: ``model``; another model = black-box transfer):
    * success_rate: fraction of all inputs with argmax p̄(x') = t;
    * auroc: natural inputs (negatives) vs *successful* adversarial inputs
      (positives) scored by ``measure`` (NaN when no attack succeeded);
    * jsr: joint success rate (``uqmix.metrics.joint_success_rate``) of the
      natural and all adversarial inputs.
    Returns {"iterations", "success_rate", "auroc", "jsr"} (arrays [T]).
    """
    x, _ = _check_data(x)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    eval_model = model if eval_model is None else eval_model
    checkpoints = [int(c) for c in checkpoints]
    clean = predict(model, x, num_eval_samples, batch_size)
    targets = attacks.second_most_likely_class(clean.mean()).numpy()
    eval_clean = clean if eval_model is model else predict(eval_model, x, num_eval_samples,
                                                           batch_size)
    natural_scores = detection_score(eval_clean, measure)
    batches = _batches(len(x), batch_size)
    scores = {c: [] for c in checkpoints}
    success = {c: [] for c in checkpoints}
    bar = _progress(len(batches) * len(checkpoints), verbose)
    for index, part in enumerate(batches):
        model_fn, loss_fn = _criterion(criterion, model, clean.take(np.arange(len(x))[part]),
                                       num_gradient_samples)
        runs = attacks.iterative_attack_checkpoints(
            method, model_fn, x[part], checkpoints, eps, eps_iter, norm, loss_fn=loss_fn,
            clip_min=clip_min, clip_max=clip_max, y=targets[part], targeted=True,
            rand_init=rand_init, seed=[seed, index], decay_factor=decay_factor)
        for count, adversarial in runs:
            predictive = predict(eval_model, adversarial.numpy(), num_eval_samples, batch_size)
            scores[count].append(detection_score(predictive, measure))
            success[count].append(metrics.attack_success(predictive, targets=targets[part]))
            _advance(bar)
    result = {"iterations": np.asarray(checkpoints), "success_rate": [], "auroc": [], "jsr": []}
    for count in checkpoints:
        adv_scores, hit = np.concatenate(scores[count]), np.concatenate(success[count])
        result["success_rate"].append(float(hit.mean()))
        result["auroc"].append(
            metrics.detection_scores(natural_scores, adv_scores[hit])["auroc"] if hit.any()
            else float("nan"))
        result["jsr"].append(metrics.joint_success_rate(natural_scores, adv_scores, hit))
    return {k: np.asarray(v, np.float64) if k != "iterations" else v for k, v in result.items()}
