"""Run directories (config refusal, atomic JSON) and resumable, NaN-safe training."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from uqmix import runs, training


def test_atomic_json_round_trip_and_non_finite(tmp_path):
    path = tmp_path / "m.json"
    runs.atomic_write_json(str(path), {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan")})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": None}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left


def test_prepare_output_dir_refuses_other_config(tmp_path):
    out = str(tmp_path / "run")
    assert runs.prepare_output_dir(out, {"lr": 0.1, "output_dir": out}) is False
    assert "--lr=0.1" in open(os.path.join(out, runs.FLAGS_FILE)).read()
    with pytest.raises(runs.ConfigMismatchError, match="--resume"):
        runs.prepare_output_dir(out, {"lr": 0.1})
    assert runs.prepare_output_dir(out, {"lr": 0.1, "resume": True}, resume=True) is True
    with pytest.raises(runs.ConfigMismatchError, match="differs in: lr"):
        runs.prepare_output_dir(out, {"lr": 0.2}, resume=True)
    assert runs.prepare_output_dir(out, {"lr": 0.2}, overwrite=True) is False
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "file").write_text("x")
    with pytest.raises(runs.ConfigMismatchError, match="not empty"):
        runs.prepare_output_dir(str(stray), {"lr": 0.1})


_X = np.random.RandomState(0).rand(256, 8).astype("float32")
_Y = (_X.sum(1) > 4).astype("int64")


def _dataset():
    ds = tf.data.Dataset.from_tensor_slices((_X, _Y))
    return ds.shuffle(256, seed=1, reshuffle_each_iteration=True).repeat().batch(32)


def _model(lr=1e-2):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.5, seed=3),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt


@pytest.mark.parametrize("total_steps", [48, 50])  # whole epochs, and a short last epoch
def test_resumed_run_matches_uninterrupted_run(tmp_path, capsys, total_steps):
    tf.config.experimental.enable_op_determinism()
    straight = _model()
    training.fit_resumable(straight, _dataset, total_steps, 8, str(tmp_path / "a"), verbose=0)
    crashed = _model()
    with pytest.raises(KeyboardInterrupt):
        training.fit_resumable(
            crashed, _dataset, total_steps, 8, str(tmp_path / "b"), callbacks=[_Crash()], verbose=0
        )
    resumed = _model()
    capsys.readouterr()
    training.fit_resumable(resumed, _dataset, total_steps, 8, str(tmp_path / "b"), verbose=2)
    epochs = -(-total_steps // 8)
    assert f"3 of {epochs} epochs done, resuming" in capsys.readouterr().out
    assert int(resumed.optimizer.iterations.numpy()) == total_steps
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A finished run has nothing left to do.
    assert (
        training.fit_resumable(resumed, _dataset, total_steps, 8, str(tmp_path / "b"), verbose=0)
        is None
    )
    # ... and says so when verbose (a restored network would otherwise look like a new training)
    capsys.readouterr()
    assert training.fit_resumable(resumed, _dataset, total_steps, 8, str(tmp_path / "b")) is None
    assert f"{epochs} of {epochs} epochs done, nothing left to train" in capsys.readouterr().out


@pytest.mark.parametrize("total_steps, epochs", [(48, 6), (50, 7)])  # 7: a short last epoch
def test_epoch_seconds_add_up_over_invocations(tmp_path, monkeypatch, total_steps, epochs):
    """``timing``: each finished epoch adds its seconds, so a run interrupted after 3 epochs
    and resumed records all its epochs, not only the last invocation's.  A fake clock that
    advances 1 s per reading makes every epoch exactly 1 s."""
    ticks = iter(range(1000))
    monkeypatch.setattr(training, "_clock", lambda: float(next(ticks)))
    folder = str(tmp_path / "run")
    timing = (folder, "train_seconds")
    with pytest.raises(KeyboardInterrupt):  # after the checkpoint of epoch 3
        training.fit_resumable(
            _model(),
            _dataset,
            total_steps,
            8,
            folder,
            callbacks=[_Crash()],
            verbose=0,
            timing=timing,
        )
    assert runs.read_seconds(folder, "train_seconds") == 3.0
    training.fit_resumable(_model(), _dataset, total_steps, 8, folder, verbose=0, timing=timing)
    assert runs.read_seconds(folder, "train_seconds") == float(epochs)
    assert training.fit_resumable(_model(), _dataset, total_steps, 8, folder, timing=timing) is None
    assert runs.read_seconds(folder, "train_seconds") == float(epochs)  # nothing trained


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path):
    model = _model()

    class _Poison(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                for w in model.trainable_variables:
                    w.assign(tf.fill(w.shape, np.nan))

    with pytest.raises(training.TrainingDivergedError, match="ckpt-2"):
        training.fit_resumable(
            model, _dataset, 64, 8, str(tmp_path), callbacks=[_Poison()], verbose=0
        )
    kept = tf.train.latest_checkpoint(os.path.join(str(tmp_path), training.CHECKPOINT_SUBDIR))
    assert kept.endswith("ckpt-2")


def test_outputs_overflowing_under_finite_weights_are_divergence():
    """Finite weights whose forward pass overflows (inf - inf = NaN logits) are refused; the
    same model with ordinary weights passes."""
    from tests.test_model_base import _NoisyLinear

    model = _NoisyLinear()
    x = np.random.default_rng(0).uniform(0.5, 1.0, (6, 4)).astype(np.float32)
    model(x[:1])
    training.check_outputs_finite(model, x, num_samples=2)  # ordinary weights
    huge = np.tile(np.array([[3e38, -3e38, 1.0]], np.float32), (4, 1))
    model.dense.kernel.assign(huge)
    assert all(np.isfinite(v.numpy()).all() for v in model.weights)
    assert not np.isfinite(model.predictive_parameters(x, 2).numpy()).all()
    with pytest.raises(training.TrainingDivergedError, match="outputs on 6 test images are NaN"):
        training.check_outputs_finite(model, x, num_samples=2)
