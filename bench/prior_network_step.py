"""Training-step cost of Prior Networks against a cross-entropy network (not a test).

    python bench/prior_network_step.py [--backbone vgg16 --width 0.5 --batch_size 64]

On one backbone and one batch of random images (values in [0, 1]), times one
compiled ``train_step`` of:

1. reverse-KL Prior Network on an in-domain batch of B   vs. cross-entropy on B
   (target ≤ 1.10×: the loss itself is cheap next to the network);
2. reverse-KL with an in-domain batch of B plus an OOD batch of B (one forward
   pass of 2B)   vs. cross-entropy on a batch of 2B (target ≤ 1.10×);
3. generalised adversarial training (targeted FGSM inputs from the batch of B,
   trained as a second term)   vs. cross-entropy on B (target ≤ 2.2×), and against
   its arithmetic floor measured in the same run: two cross-entropy steps plus the
   crafting's backward pass to the inputs (``[input gradient B]`` − ``[forward B]``).

Each step function is ``tf.function(model.train_step)`` (what ``model.fit``
runs), traced and warmed up first; the contenders then run round-robin
``--rounds`` times ``--steps`` steps each (the CPU is shared: interleaving
spreads the noise evenly) and the median time per step is reported.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from uqmix.adversarial_training import AdversarialPriorNetwork  # noqa: E402
from uqmix.models import PriorNetwork  # noqa: E402
from uqmix.models.backbones import BACKBONES, build_backbone  # noqa: E402

SHAPES = {"vgg16": (32, 32, 3), "small_convnet": (28, 28, 1), "mlp": (28, 28, 1)}
TARGETS = {
    "reverse_kl / cross_entropy": 1.10,
    "with OOD batch / cross_entropy on 2B": 1.10,
    "adversarial training / cross_entropy": 2.2,
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="vgg16", choices=BACKBONES)
    parser.add_argument("--width", type=float, default=0.5, help="vgg16 width multiplier")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def make_model(args, model_cls, loss, **kwargs):
    keras.utils.set_random_seed(args.seed)
    shape = SHAPES[args.backbone]
    backbone = build_backbone(
        args.backbone,
        shape,
        args.num_classes,
        width_multiplier=args.width,
        normalization=(0.5, 0.25),
    )
    model = model_cls(backbone, args.num_classes, loss=loss, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True))
    model.build((None, *shape))
    model.optimizer.build(model.trainable_variables)
    return model


def make_step(args, model_cls, loss, **kwargs):
    return tf.function(make_model(args, model_cls, loss, **kwargs).train_step)


def make_pieces(args):
    """Diagnostics: a training-mode forward pass, and forward + gradient w.r.t. the inputs only
    (what crafting FGSM inputs costs on top of a forward pass that is there anyway)."""
    model = make_model(args, PriorNetwork, "reverse_kl")

    @tf.function
    def forward(data):
        x, _ = data
        return {"loss": tf.reduce_mean(model(x, training=True))}

    @tf.function
    def input_gradient(data):
        x, y = data
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(model.per_example_loss(model(x, training=True), y))
        return {"loss": tf.reduce_mean(tape.gradient(loss, x))}

    return forward, input_gradient


def main():
    args = parse_args()
    rng = np.random.default_rng(args.seed)
    shape = SHAPES[args.backbone]
    b = args.batch_size

    def batch(n):
        return (
            tf.constant(rng.random((n, *shape), dtype=np.float32)),
            tf.constant(rng.integers(0, args.num_classes, n)),
        )

    x, y = batch(b)
    x2, y2 = batch(2 * b)
    x_ood, _ = batch(b)
    contenders = {
        "cross_entropy B": (make_step(args, PriorNetwork, "cross_entropy"), (x, y)),
        "cross_entropy 2B": (make_step(args, PriorNetwork, "cross_entropy"), (x2, y2)),
        "reverse_kl B": (make_step(args, PriorNetwork, "reverse_kl"), (x, y)),
        "reverse_kl B + OOD B": (make_step(args, PriorNetwork, "reverse_kl"), ((x, x_ood), y)),
        "adversarial reverse_kl B": (
            make_step(
                args, AdversarialPriorNetwork, "reverse_kl", epsilon_stddev=0.05, seed=args.seed
            ),
            (x, y),
        ),
    }
    forward, input_gradient = make_pieces(args)
    contenders["[forward B]"] = (forward, (x, y))
    contenders["[input gradient B]"] = (input_gradient, (x, y))
    for step, data in contenders.values():  # trace + warm up
        for _ in range(2):
            step(data)
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, (step, data) in contenders.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                logs = step(data)
            float(logs["loss"])
            times[name].append((time.perf_counter() - start) / args.steps)
    per_step = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"backbone {args.backbone} (width {args.width}), input {shape}, batch B = {b}, "
        f"median of {args.rounds} rounds x {args.steps} steps, "
        f"{os.environ.get('TF_NUM_INTRAOP_THREADS') or os.cpu_count()} threads"
    )
    for name, seconds in per_step.items():
        print(f"  {name:<26} {1000 * seconds:8.1f} ms/step")
    ratios = {
        "reverse_kl / cross_entropy": per_step["reverse_kl B"] / per_step["cross_entropy B"],
        "with OOD batch / cross_entropy on 2B": per_step["reverse_kl B + OOD B"]
        / per_step["cross_entropy 2B"],
        "adversarial training / cross_entropy": per_step["adversarial reverse_kl B"]
        / per_step["cross_entropy B"],
    }
    for name, ratio in ratios.items():
        verdict = "ok" if ratio <= TARGETS[name] else "ABOVE TARGET"
        print(f"  {name:<40} {ratio:5.2f}x  (target <= {TARGETS[name]:.2f}x: {verdict})")
    # The adversarial step cannot cost less than: the training step on B (its forward pass is
    # shared with the crafting), the crafting's extra backward to the inputs (input gradient
    # minus its forward), and a training step on the B crafted inputs.
    crafting = per_step["[input gradient B]"] - per_step["[forward B]"]
    floor = 2 * per_step["cross_entropy B"] + crafting
    print(
        f"  arithmetic floor of the adversarial step = 2 x cross_entropy B + (input gradient "
        f"- forward) = {1000 * floor:.1f} ms = {floor / per_step['cross_entropy B']:.2f}x "
        f"cross_entropy; adversarial step / floor = "
        f"{per_step['adversarial reverse_kl B'] / floor:.2f}x"
    )


if __name__ == "__main__":
    main()
