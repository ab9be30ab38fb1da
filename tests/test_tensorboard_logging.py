"""uqmix.tensorboard_logging: one step axis for scalars, histograms and the evaluation."""

import math

import keras
import numpy as np
import pytest

from uqmix import tensorboard_logging


def test_flatten_metrics_joins_keys_and_labels_curve_points_by_their_x():
    metrics = {
        "accuracy": 0.9,
        "num_examples": 100,
        "figures": ["a.png"],
        "flag": True,
        "none": None,
        "nan": math.nan,
        "ood": {"mutual_information": {"auroc": 0.8, "aupr": 0.7}, "dataset": "notmnist"},
        "robustness": {"S=1": {"epsilons": [0.0, 0.1], "accuracy": [0.9, 0.4], "num_examples": 30}},
        "attacks": {
            "iterations": [10, 100],
            "white_box": {"jsr": [0.1, None], "success_rate": [0.5, 0.9]},
        },
        "histograms": {"bin_edges": [0, 1, 2], "correct": [3, 4]},
    }
    assert tensorboard_logging.flatten_metrics(metrics) == {
        "accuracy": 0.9,
        "num_examples": 100.0,
        "ood/mutual_information/auroc": 0.8,
        "ood/mutual_information/aupr": 0.7,
        "robustness/S=1/accuracy/eps=0": 0.9,
        "robustness/S=1/accuracy/eps=0.1": 0.4,
        "robustness/S=1/num_examples": 30.0,
        "attacks/white_box/jsr/iter=10": 0.1,
        "attacks/white_box/success_rate/iter=10": 0.5,
        "attacks/white_box/success_rate/iter=100": 0.9,
    }


def test_epoch_summaries_put_scalars_validation_and_histograms_on_the_optimizer_step(tmp_path):
    """3 steps per epoch, 2 epochs (and a resumed third): every event at step 3, 6, 9, never
    at the epoch index; the validation scalar equals ``model.evaluate`` of the same data."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        metrics=["accuracy"],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    def histograms(m):
        return {"kernel": m.layers[0].kernel}

    callback = tensorboard_logging.EpochSummaries(str(tmp_path), histograms=histograms)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        validation_data=(x[:8], y[:8]),
        callbacks=[callback],
        verbose=0,
    )
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        initial_epoch=2,
        validation_data=(x[:8], y[:8]),
        callbacks=[callback],
        verbose=0,
    )
    events = tensorboard_logging.read_events(str(tmp_path))
    for key in (
        ("train", "epoch_loss"),
        ("train", "epoch_learning_rate"),
        ("train", "kernel"),
        ("validation", "epoch_loss"),
        ("validation", "epoch_accuracy"),
    ):
        assert [step for step, _ in events[key]] == [3, 6, 9], key
    expected = model.evaluate(x[:8], y[:8], verbose=0, return_dict=True)
    assert events[("validation", "epoch_loss")][-1][1] == pytest.approx(expected["loss"], rel=1e-5)
    assert events[("train", "epoch_learning_rate")][0][1] == pytest.approx(0.1)


def test_log_evaluation_writes_scalars_and_images_at_the_given_step(tmp_path):
    from matplotlib.figure import Figure

    from uqmix import plotting

    figure = Figure(figsize=(1, 1))
    path = plotting.save_figure(figure, str(tmp_path / "f.png"), dpi=20)
    tags = tensorboard_logging.log_evaluation(
        str(tmp_path / "tb"), {"test": {"nll": 0.25}}, 123, [path]
    )
    assert tags == ["evaluation/test/nll"]
    events = tensorboard_logging.read_events(str(tmp_path / "tb"))
    assert events[("evaluation", "evaluation/test/nll")] == [(123, 0.25)]
    ((step, image),) = events[("evaluation", "figures/f")]
    assert step == 123 and image[:2].tolist() == [b"20", b"20"]
