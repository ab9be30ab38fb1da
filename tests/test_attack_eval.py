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
    curve = attack_eval.robustness_curve(linear_logits, X, Y, epsilons, nb_iter=5, batch_size=7)
    np.testing.assert_array_equal(curve["epsilons"], epsilons)
    for eps, accuracy in zip(epsilons, curve["accuracy"]):
        adv = attacks.projected_gradient_descent(linear_logits, X, eps, 0.5 * eps, 5, np.inf,
                                                 clip_min=0.0, clip_max=1.0, y=Y,
                                                 rand_init=False).numpy()
        assert accuracy == pytest.approx(np.mean(np.argmax(adv @ W, 1) == Y))
    assert curve["accuracy"][0] == pytest.approx(np.mean(np.argmax(X @ W, 1) == Y))
    assert curve["accuracy"][-1] < curve["accuracy"][0]
    with pytest.raises(ValueError, match="epsilons"):
        attack_eval.robustness_curve(linear_logits, X, Y, [-0.1])


def test_robustness_figure_draws_mean_and_three_sigma():
    accuracy = np.array([[0.9, 0.5, 0.1], [0.8, 0.4, 0.3], [0.85, 0.6, 0.2]])
    figure = attack_eval.robustness_figure({"model": {"epsilons": [0, 0.1, 0.2],
                                                      "accuracy": accuracy}})
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
    adversarial = _predictive(np.array(
        [flipped_uncertain, flipped_uncertain, flipped_certain, confident, wrong, wrong]
    ).transpose(1, 0, 2))
    result = attack_eval.adversarial_detection(clean, adversarial, labels,
                                               measures=["predictive_variance"], seed=1)
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
    curves = attack_eval.adaptive_attack_curves(model, X, checkpoints, eps=0.5, eps_iter=0.05,
                                                criterion="kl_dir", batch_size=16)
    np.testing.assert_array_equal(curves["iterations"], checkpoints)
    # zero iterations: x' = x, the prediction is the top class, never the target
    assert curves["success_rate"][0] == 0.0 and curves["jsr"][0] == 0.0
    assert np.isnan(curves["auroc"][0])
    # independent check of the last checkpoint: one PGD run of 30 iterations on all of X
    alpha = np.exp(X @ W)
    target = np.argsort(alpha, 1)[:, -2]
    adv = attacks.projected_gradient_descent(linear_logits, X, 0.5, 0.05, 30, np.inf,
                                             loss_fn=attacks.kl_dir_loss(alpha), y=target,
                                             targeted=True, rand_init=False, clip_min=0.0,
                                             clip_max=1.0).numpy()
    assert curves["success_rate"][-1] == pytest.approx(np.mean(np.argmax(adv @ W, 1) == target))
    assert curves["success_rate"][-1] >= 0.4
    # black-box transfer to an identical model reproduces the white-box result
    same = attack_eval.adaptive_attack_curves(model, X, checkpoints, eps=0.5, eps_iter=0.05,
                                              criterion="kl_dir", eval_model=LinearDirichlet(),
                                              batch_size=16)
    np.testing.assert_allclose(same["success_rate"], curves["success_rate"])
    with pytest.raises(ValueError, match="kl_dir"):
        attack_eval.adaptive_attack_curves(linear_logits, X, checkpoints, eps=0.5, eps_iter=0.05,
                                           criterion="kl_dir")


def test_adaptive_curves_with_kl_pmf_and_mim_reach_the_target():
    curves = attack_eval.adaptive_attack_curves(linear_logits, X, (5, 40), eps=0.6, eps_iter=0.05,
                                                method="mim", criterion="kl_pmf",
                                                measure="total_uncertainty")
    assert curves["success_rate"][1] >= curves["success_rate"][0]
    assert curves["success_rate"][1] > 0.5
    assert 0.0 <= curves["jsr"][1] <= curves["success_rate"][1]


def test_adversarial_detection_refuses_measures_it_cannot_compute():
    clean = _predictive([[[0.9, 0.1], [0.2, 0.8]]])
    with pytest.raises(ValueError, match="predictive_varaince"):
        attack_eval.adversarial_detection(clean, clean, [0, 1],
                                          measures=["mutual_information", "predictive_varaince"])
    with pytest.raises(ValueError, match="differential_entropy"):  # a Dirichlet-only measure
        attack_eval.adversarial_detection(clean, clean, [0, 1], measures="differential_entropy")


def test_robustness_figure_never_repeats_a_line_style():
    curves = {f"model {i}": {"epsilons": [0, 0.1], "accuracy": [0.9, 0.5 - 0.01 * i]}
              for i in range(23)}
    figure = attack_eval.robustness_figure(curves)
    lines = [container.lines[0] for container in figure.axes[0].containers]
    styles = {(line.get_color(), line.get_linestyle()) for line in lines}
    assert len(lines) == 23 and len(styles) == 23
    with pytest.raises(ValueError, match="at most 40 series"):
        plotting.series_styles(41)
