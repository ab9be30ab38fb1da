"""Training-step cost of ``MixtureModel`` (S samples by tiling the batch) on a small convnet.

    python bench/mixture_model_step.py [--batch 64] [--samples 5] [--rounds 7] [--steps 5]

Network: 28×28×1 → Conv 16 (3×3, ReLU) → max-pool 2 → Conv 32 (3×3, ReLU) → max-pool 2 →
Flatten → head → 10 logits, Adam 1e-3, random MNIST-shaped data, one compiled
``tf.function`` step each (forward, backward, optimizer update, metrics).  Two heads:

* ``dropout``: Dropout(0.5) → Dense 64 (ReLU) → Dense 10.
  ``mixture``: ``MixtureModel(net, "ml", S)`` on a batch of B;
  ``deterministic``: the same network's Keras train step (cross-entropy, accuracy) on the
  S·B tiled batch — the same arithmetic without the mixture objective.
* ``matrix_normal``: MatrixNormalDense 64 (ReLU) → MatrixNormalDense 10.
  ``mixture``: ``MixtureModel(net, "ml", S, kl_weight=1/60000)`` on B;
  ``deterministic``: the same network with Dense layers in place of the matrix-normal
  ones, Keras train step on the S·B tiled batch.

Cases run round-robin (``time_round_robin`` of bench/mixture_step.py) after warm-up;
reported: median ms per step and the ratio mixture / deterministic (target ≤ 1.15×).
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from mixture_step import time_round_robin  # noqa: E402

from uqmix.layers import MatrixNormalDense  # noqa: E402
from uqmix.models import MixtureModel  # noqa: E402

NUM_CLASSES, TARGET = 10, 1.15


def convnet(head, seed=0):
    """The benchmark network with a ``dropout``, ``matrix_normal`` or ``dense`` head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, activation="relu")(h)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(h))
    if head == "matrix_normal":
        h = MatrixNormalDense(64, activation="relu")(h)
        logits = MatrixNormalDense(NUM_CLASSES)(h)
    else:
        if head == "dropout":
            h = keras.layers.Dropout(0.5)(h)
        h = keras.layers.Dense(64, activation="relu")(h)
        logits = keras.layers.Dense(NUM_CLASSES)(h)
    return keras.Model(inputs, logits)


def _data(batch, seed=0):
    rng = np.random.default_rng(seed)
    return (
        tf.constant(rng.random((batch, 28, 28, 1), dtype=np.float32)),
        tf.constant(rng.integers(0, NUM_CLASSES, batch), tf.int32),
    )


def _step(model, data):
    model.optimizer.build(model.trainable_variables)
    return tf.function(lambda: model.train_step(data)["loss"])


def mixture_step(head, batch, samples):
    model = MixtureModel(
        convnet(head),
        objective="ml",
        num_train_samples=samples,
        kl_weight=1.0 / 60000 if head == "matrix_normal" else None,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return _step(model, _data(batch))


def deterministic_step(head, batch, samples):
    """The same network (Dense for matrix-normal layers) on the S·B tiled batch."""
    model = convnet("dropout" if head == "dropout" else "dense")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = _data(batch)
    return _step(model, (tf.tile(x, [samples, 1, 1, 1]), tf.tile(y, [samples])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    cases = {}
    for head in ("dropout", "matrix_normal"):
        cases[f"{head} mixture S={args.samples} B={args.batch}"] = mixture_step(
            head, args.batch, args.samples
        )
        cases[f"{head} deterministic {args.samples}B={args.samples * args.batch}"] = (
            deterministic_step(head, args.batch, args.samples)
        )
    times = time_round_robin(cases, args.rounds, args.steps)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"small convnet, median of {args.rounds} rounds x {args.steps} steps")
    for name, ms in medians.items():
        print(f"  {name:40s} {ms:8.1f} ms/step")
    names = list(medians)
    for head, (mixture, deterministic) in zip(
        ("dropout", "matrix_normal"), (names[0:2], names[2:4])
    ):
        ratio = medians[mixture] / medians[deterministic]
        verdict = "ok" if ratio <= TARGET else "ABOVE TARGET"
        print(
            f"  {head}: mixture / deterministic on the tiled batch  {ratio:.2f}x  "
            f"(target <= {TARGET:.2f}x: {verdict})"
        )


if __name__ == "__main__":
    main()
