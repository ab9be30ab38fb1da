"""uqmix.attack_eval on small hand-made models and predictives."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from uqmix import attack_eval, attacks, plotting
from uqmix.models.base import PredictiveModelMixin
from uqmix.predictive import SampledPredictive

DIM, K, N = 5, 3, 40
_rng = np.random.default_rng(3)
W = _rng.normal(size=(DIM, K)) * 3.0
X = _rng.uniform(0.2, 0.8, (N, DIM)).astype(np.float32)
Y = np.argmax(X @ W, 1)
Y[:5] = (Y[:5] + 1) % K  # a few misclassified examples


def linear_logits(x):
    return tf.matmul(x, tf.constant(W, x.dtype))


class LinearDirichlet(keras.Model, PredictiveModelMixin):
    """A Prior Network with z = x W (α = exp z)."""

    predictive_kind = "dirichlet_logits"

    def predictive_parameters(self, x, num_samples, training=False):
        return linear_logits(x)


def test_robustness_curve_matches_direct_attacks():
    epsilons = [0.0, 0.05, 0.2]
    curve = attack_eval.robustness_curve(
        linear_logits, X, Y, epsilons, attack_eval.AttackOptions(nb_iter=5), batch_size=7
    )
    np.testing.assert_array_equal(curve["epsilons"], epsilons)
    assert curve["options"]["preset"] == "cleverhans4" and curve["options"]["labels"] == "true"
    assert curve["options"]["eps_iter_ratio"] == 0.5 and not curve["options"]["rand_init"]
    assert curve["options"]["frozen_scope"] is None  # a Keras classifier has no noise
    correct = np.argmax(X @ W, 1) == Y
    for eps, accuracy, success in zip(epsilons, curve["accuracy"], curve["success_rate"]):
        adv = attacks.projected_gradient_descent(
            linear_logits,
            X,
            eps,
            0.5 * eps,
            5,
            np.inf,
            clip_min=0.0,
            clip_max=1.0,
            y=Y,
            rand_init=False,
        ).numpy()
        assert accuracy == pytest.approx(np.mean(np.argmax(adv @ W, 1) == Y))
        assert success == pytest.approx(np.mean(np.argmax(adv[correct] @ W, 1) != Y[correct]))
    assert curve["success_rate"][0] == 0.0 and curve["success_rate"][-1] > 0.0
    assert curve["accuracy"][0] == pytest.approx(np.mean(np.argmax(X @ W, 1) == Y))
    assert curve["accuracy"][-1] < curve["accuracy"][0]
    with pytest.raises(ValueError, match="epsilons"):
        attack_eval.robustness_curve(linear_logits, X, Y, [-0.1])


def test_robustness_figure_draws_mean_and_three_sigma():
    accuracy = np.array([[0.9, 0.5, 0.1], [0.8, 0.4, 0.3], [0.85, 0.6, 0.2]])
    figure = attack_eval.robustness_figure(
        {"model": {"epsilons": [0, 0.1, 0.2], "accuracy": accuracy}}
    )
    container = figure.axes[0].containers[0]
    np.testing.assert_allclose(container.lines[0].get_ydata(), accuracy.mean(0))
    segments = container.lines[2][0].get_segments()
    half_widths = [(seg[1][1] - seg[0][1]) / 2 for seg in segments]
    np.testing.assert_allclose(half_widths, 3 * accuracy.std(0, ddof=1))


def _predictive(probs):
    return SampledPredictive(np.asarray(probs, np.float64))


def test_adversarial_detection_on_hand_made_predictives():
    # 2 samples, 6 inputs, 2 classes; labels all 0.  Clean: 0-3 correct (confident), 4-5 wrong.
    labels = np.zeros(6, np.int64)
    confident = [[0.95, 0.05], [0.95, 0.05]]
    wrong = [[0.3, 0.7], [0.3, 0.7]]
    clean = _predictive(np.array([confident] * 4 + [wrong] * 2).transpose(1, 0, 2))
    # Adversarial: inputs 0, 1 flipped with disagreeing samples (successful, uncertain),
    # input 2 flipped but confident (successful, certain), 3 unchanged, 4-5 still wrong.
    flipped_uncertain = [[0.45, 0.55], [0.05, 0.95]]
    flipped_certain = [[0.02, 0.98], [0.02, 0.98]]
    adversarial = _predictive(
        np.array(
            [flipped_uncertain, flipped_uncertain, flipped_certain, confident, wrong, wrong]
        ).transpose(1, 0, 2)
    )
    result = attack_eval.adversarial_detection(
        clean, adversarial, labels, measures=["predictive_variance"], seed=1
    )
    assert (result["num_correct"], result["num_successful"], result["num_subsampled"]) == (4, 3, 3)
    clean_var = clean.predictive_variance().numpy()
    adv_var = adversarial.predictive_variance().numpy()
    expected_all = roc_auc_score(np.r_[np.zeros(6), np.ones(6)], np.r_[clean_var, adv_var])
    assert result["all"]["predictive_variance"]["auroc"] == pytest.approx(expected_all)
    # every correct clean input has variance 0 and the successful ones are 2 × >0 and 1 × 0
    subsampled = result["correct_vs_successful"]["predictive_variance"]["auroc"]
    assert subsampled == pytest.approx((2 * 1.0 + 1 * 0.5) / 3)


def test_adaptive_attack_curves_on_a_prior_network():
    model = LinearDirichlet()
    checkpoints = (0, 3, 30)
    curves = attack_eval.adaptive_attack_curves(
        model, X, checkpoints, eps=0.5, eps_iter=0.05, criterion="kl_dir", batch_size=16
    )
    np.testing.assert_array_equal(curves["iterations"], checkpoints)
    # zero iterations: x' = x, the prediction is the top class, never the target
    assert curves["success_rate"][0] == 0.0 and curves["jsr"][0] == 0.0
    assert np.isnan(curves["auroc"][0])
    # independent check of the last checkpoint: one PGD run of 30 iterations on all of X
    alpha = np.exp(X @ W)
    target = np.argsort(alpha, 1)[:, -2]
    adv = attacks.projected_gradient_descent(
        linear_logits,
        X,
        0.5,
        0.05,
        30,
        np.inf,
        loss_fn=attacks.kl_dir_loss(alpha),
        y=target,
        targeted=True,
        rand_init=False,
        clip_min=0.0,
        clip_max=1.0,
    ).numpy()
    assert curves["success_rate"][-1] == pytest.approx(np.mean(np.argmax(adv @ W, 1) == target))
    assert curves["success_rate"][-1] >= 0.4
    # black-box transfer to an identical model reproduces the white-box result
    same = attack_eval.adaptive_attack_curves(
        model,
        X,
        checkpoints,
        eps=0.5,
        eps_iter=0.05,
        criterion="kl_dir",
        eval_model=LinearDirichlet(),
        batch_size=16,
    )
    np.testing.assert_allclose(same["success_rate"], curves["success_rate"])
    with pytest.raises(ValueError, match="kl_dir"):
        attack_eval.adaptive_attack_curves(
            linear_logits, X, checkpoints, eps=0.5, eps_iter=0.05, criterion="kl_dir"
        )


def test_adaptive_curves_with_kl_pmf_and_mim_reach_the_target():
    curves = attack_eval.adaptive_attack_curves(
        linear_logits,
        X,
        (5, 40),
        eps=0.6,
        eps_iter=0.05,
        method="mim",
        criterion="kl_pmf",
        measure="total_uncertainty",
    )
    assert curves["success_rate"][1] >= curves["success_rate"][0]
    assert curves["success_rate"][1] > 0.5
    assert 0.0 <= curves["jsr"][1] <= curves["success_rate"][1]


def test_adversarial_detection_refuses_measures_it_cannot_compute():
    clean = _predictive([[[0.9, 0.1], [0.2, 0.8]]])
    with pytest.raises(ValueError, match="predictive_varaince"):
        attack_eval.adversarial_detection(
            clean, clean, [0, 1], measures=["mutual_information", "predictive_varaince"]
        )
    with pytest.raises(ValueError, match="differential_entropy"):  # a Dirichlet-only measure
        attack_eval.adversarial_detection(clean, clean, [0, 1], measures="differential_entropy")


def test_robustness_figure_never_repeats_a_line_style():
    curves = {
        f"model {i}": {"epsilons": [0, 0.1], "accuracy": [0.9, 0.5 - 0.01 * i]} for i in range(23)
    }
    figure = attack_eval.robustness_figure(curves)
    lines = [container.lines[0] for container in figure.axes[0].containers]
    styles = {(line.get_color(), line.get_linestyle()) for line in lines}
    assert len(lines) == 23 and len(styles) == 23
    with pytest.raises(ValueError, match="at most 40 series"):
        plotting.series_styles(41)


# -- attack options: presets, labels, evaluation schemes ----------------------------------------
def test_presets_resolve_to_their_sources_values_and_run_as_pgd():
    record = attack_eval.AttackOptions(preset="cleverhans3_pgd").resolved()
    assert (record["eps_iter"], record["nb_iter"], record["rand_init"], record["labels"]) == (
        0.05,
        10,
        True,
        "predicted",
    )
    record = attack_eval.AttackOptions(preset="madry_cleverhans2").resolved()
    assert (record["eps_iter"], record["nb_iter"], record["rand_init"]) == (0.01, 40, True)
    options = attack_eval.AttackOptions(preset="cleverhans3_pgd")
    adv = attack_eval.attack_inputs(linear_logits, X, Y, 0.2, options, seed=7, batch_size=15)
    for index, start in enumerate(range(0, N, 15)):  # predicted labels, seeded random start
        part = slice(start, start + 15)
        direct = attacks.projected_gradient_descent(
            linear_logits,
            X[part],
            0.2,
            0.05,
            10,
            np.inf,
            None,
            0.0,
            1.0,
            None,
            False,
            True,
            seed=[7, index],
        ).numpy()
        np.testing.assert_array_equal(adv[part], direct)
    with pytest.raises(ValueError, match="eps_iter=0.05 > eps=0.02"):
        attack_eval.robustness_curve(linear_logits, X, Y, [0.0, 0.02, 0.1], options)
    for bad, message in (
        (dict(preset="cleverhans5"), "preset must be one of"),
        (dict(noise="fixed"), "noise must be one of"),
        (dict(eps_iter=0.1, eps_iter_ratio=0.5), "at most one"),
        (dict(evaluation="cdn"), "evaluation must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            attack_eval.AttackOptions(**bad).resolved()


def _tiny_mixture():
    from uqmix.models import InfiniteMixture

    model = InfiniteMixture(num_classes=K, hidden_units=(6,), seed=5, dataset_size=100)
    model.build((None, DIM))
    for layer in model.dense_layers:
        layer.log_row_variance.assign(np.full(layer.log_row_variance.shape, -0.5, np.float32))
    return model


@pytest.mark.parametrize("noise", ["frozen", "redraw"])
def test_per_sample_evaluation_equals_its_explicit_loop(noise):
    """CDN scheme: sample n = one fresh sample at the n-th attack realisation; probabilities
    averaged over n (the explicit loop of ml_cdn_mnist.py's evaluation)."""
    model = _tiny_mixture()
    y = np.asarray(model.predictive(X, 50).predicted_class())
    options = attack_eval.AttackOptions(
        nb_iter=3, noise=noise, gradient_samples=2, evaluation="per_sample", eval_attacks=3
    )
    generators = attacks.model_fns._seed_generators(model)
    fn = attacks.stochastic_model_fn(model, 2, noise, seed=9)  # the options' attack model
    fn_states = [g.state.numpy() for g in generators]
    predictive = attack_eval.evaluate_under_attack(model, X, y, 0.1, options, seed=9, batch_size=16)
    for g, state in zip(generators, fn_states):
        g.state.assign(state)
    probs = []
    for n in range(3):
        adversarial = []
        for index, start in enumerate(range(0, N, 16)):
            key = n * 100003 + index
            fn.new_draw(key)
            adversarial.append(
                attacks.projected_gradient_descent(
                    fn,
                    X[start : start + 16],
                    0.1,
                    0.1 * 2.5 / 3,
                    3,
                    np.inf,
                    clip_min=0.0,
                    clip_max=1.0,
                    y=y[start : start + 16],
                    seed=[9, key],
                ).numpy()
            )
        probs.append(model.predictive(np.concatenate(adversarial), 1, batch_size=16).mean().numpy())
    np.testing.assert_allclose(predictive.mean().numpy(), np.mean(probs, axis=0), atol=1e-6)
    assert int(predictive.num_samples) == 3


class ScaledDirichlet(keras.Model, PredictiveModelMixin):
    """A second Prior Network, z = c · x W + b: a different detector for the black-box setting."""

    predictive_kind = "dirichlet_logits"

    def predictive_parameters(self, x, num_samples, training=False):
        return 1.7 * linear_logits(x) + tf.constant([0.3, -0.2, 0.1], x.dtype)


def _np_entropy_of_mean(z):
    alpha = np.exp(z.astype(np.float64))
    p = alpha / alpha.sum(1, keepdims=True)
    return -(p * np.log(p)).sum(1)


def _brute_force_jsr(natural, adversarial, success):
    """FPR(t) = #{natural ≥ t}/N, JS(t) = #{successful, adversarial < t}/M by explicit loops
    over every threshold; the crossing of the two, linearly interpolated."""
    thresholds = sorted(set(natural) | set(adversarial)) + [np.inf]
    fpr = [sum(s >= t for s in natural) / len(natural) for t in thresholds]
    js = [
        sum(ok and s < t for s, ok in zip(adversarial, success)) / len(adversarial)
        for t in thresholds
    ]
    for j in range(len(thresholds)):
        if fpr[j] == js[j]:
            return fpr[j]
        if fpr[j] > js[j] and fpr[j + 1] < js[j + 1]:
            lam = (fpr[j] - js[j]) / ((fpr[j] - js[j]) - (fpr[j + 1] - js[j + 1]))
            return fpr[j] + lam * (fpr[j + 1] - fpr[j])
    raise AssertionError("no crossing")


# inputs over the whole box: natural uncertainties spread, so the AUROCs are not 0 or 1
X_SPREAD = np.random.default_rng(5).uniform(0, 1, (60, DIM)).astype(np.float32)


@pytest.mark.parametrize("setting", ["white_box", "black_box"])
def test_adaptive_curves_auroc_on_successful_attacks_and_jsr_are_independent(setting):
    """At a non-trivial checkpoint: scikit-learn AUROC of natural (0) vs *successful* adversarial
    (1) inputs scored on the evaluated model, and a brute-force JSR over all attacks."""
    x = X_SPREAD
    n = len(x)
    model = LinearDirichlet()
    eval_model = model if setting == "white_box" else ScaledDirichlet()
    curves = attack_eval.adaptive_attack_curves(
        model,
        x,
        (30,),
        eps=0.3,
        eps_iter=0.02,
        criterion="kl_dir",
        eval_model=eval_model,
        measure="total_uncertainty",
        batch_size=16,
    )
    alpha = np.exp(x @ W)
    target = np.argsort(alpha, 1)[:, -2]
    adv = attacks.projected_gradient_descent(
        linear_logits,
        x,
        0.3,
        0.02,
        30,
        np.inf,
        loss_fn=attacks.kl_dir_loss(alpha),
        y=target,
        targeted=True,
        clip_min=0.0,
        clip_max=1.0,
    ).numpy()
    evaluate = (
        (lambda x: x @ W)
        if setting == "white_box"
        else (lambda x: 1.7 * (x @ W) + np.array([0.3, -0.2, 0.1]))
    )
    success = np.argmax(evaluate(adv), 1) == target
    assert 0 < success.sum() < n  # non-trivial: some succeed, some fail
    natural, adversarial = _np_entropy_of_mean(evaluate(x)), _np_entropy_of_mean(evaluate(adv))
    assert curves["success_rate"][0] == pytest.approx(success.mean())
    expected_auroc = roc_auc_score(
        np.r_[np.zeros(n), np.ones(success.sum())], np.r_[natural, adversarial[success]]
    )
    assert curves["auroc"][0] == pytest.approx(expected_auroc, abs=1e-6)
    # the wrong computations differ here, so this test would catch them
    swapped = roc_auc_score(
        np.r_[np.ones(n), np.zeros(success.sum())], np.r_[natural, adversarial[success]]
    )
    every_attack = roc_auc_score(np.r_[np.zeros(n), np.ones(n)], np.r_[natural, adversarial])
    assert abs(swapped - expected_auroc) > 0.05 and abs(every_attack - expected_auroc) > 1e-3
    assert curves["jsr"][0] == pytest.approx(
        _brute_force_jsr(natural, adversarial, success), abs=1e-6
    )


def test_adaptive_curves_log_one_line_per_point_with_its_success_rate():
    lines = []
    curves = attack_eval.adaptive_attack_curves(
        linear_logits, X, (5, 40), eps=0.6, eps_iter=0.05, method="mim", log=lines.append
    )
    assert [line.split(" (")[0] for line in lines] == ["mim 5 iterations", "mim 40 iterations"]
    assert "(batch 1/1, point 2/2)" in lines[1]
    rates = [float(line.rsplit(" ", 1)[1]) for line in lines]
    np.testing.assert_allclose(rates, curves["success_rate"], atol=5e-4)
    # two batches: a line per batch and point, each with that batch's success rate
    lines.clear()
    attack_eval.adaptive_attack_curves(
        linear_logits, X, (5,), eps=0.6, eps_iter=0.05, batch_size=len(X) // 2 + 1, log=lines.append
    )
    assert [line.split(": ")[0] for line in lines] == [
        "pgd 5 iterations (batch 1/2, point 1/1)",
        "pgd 5 iterations (batch 2/2, point 1/1)",
    ]
    lines.clear()
    cw = attack_eval.adaptive_cw_curves(
        LinearDirichlet(), X_SPREAD[:20], (5, 10), binary_search_steps=1, log=lines.append
    )
    assert [line.split(": ")[0] for line in lines] == [
        "C&W L2 max_iterations 5 (point 1/2)",
        "C&W L2 max_iterations 10 (point 2/2)",
    ]
    rates = [float(line.rsplit(" ", 1)[1]) for line in lines]
    np.testing.assert_allclose(rates, cw["success_rate"], atol=5e-4)


def test_adaptive_cw_curves_match_a_direct_carlini_wagner_run():
    model = LinearDirichlet()
    x = X_SPREAD[:20]
    curves = attack_eval.adaptive_cw_curves(
        model,
        x,
        (10, 100),
        binary_search_steps=2,
        criterion="kl_pmf",
        measure="total_uncertainty",
        learning_rate=0.05,
        initial_const=1.0,
        batch_size=8,
    )
    alpha = np.exp(x @ W)
    probs = alpha / alpha.sum(1, keepdims=True)
    target = np.argsort(alpha, 1)[:, -2]
    for index, budget in enumerate((10, 100)):
        adv = np.concatenate(
            [
                attacks.carlini_wagner_l2(
                    linear_logits,
                    x[i : i + 8],
                    y=target[i : i + 8],
                    targeted=True,
                    binary_search_steps=2,
                    max_iterations=budget,
                    learning_rate=0.05,
                    initial_const=1.0,
                    loss_fn=attacks.kl_pmf_loss(probs[i : i + 8]),
                )
                for i in range(0, 20, 8)
            ]
        )
        success = np.argmax(adv @ W, 1) == target
        assert curves["success_rate"][index] == pytest.approx(success.mean())
        if success.any():
            distance = np.sqrt(((adv - x) ** 2).sum(1))[success]
            assert curves["median_l2"][index] == pytest.approx(np.median(distance), rel=1e-5)
    assert 0 < curves["success_rate"][0] < curves["success_rate"][1]
