"""Training-step cost of the ML infinite mixture against a deterministic MLP and TFP's layers.

    python bench/mixture_step.py [--rounds 15] [--steps 10]

All on 784-128-128-10 ReLU MLPs, Adam 1e-3, random MNIST-shaped data, one
compiled ``tf.function`` step each (forward, backward, optimizer update):

* ``mixture_local``        uqmix ``InfiniteMixture`` (ML, S = 5, batch 200, λ = 1,
                           N = 60,000), local reparameterisation, its train_step
                           (metrics included), sampling as plain TF ops
* ``mixture_local_jit``    the same with ``jit_sampling=True``: the noise of all
                           layers from one XLA kernel (ThreeFry), then the forward
                           and backward pass as a second XLA program fed that noise
                           (``step_noise``); optimizer update and metrics as TF ops
* ``mixture_shared[_jit]`` shared weights (S weight draws per step)
* ``det_200`` / ``det_1000``  uqmix ``Deterministic`` (L2 1/60000) train_step
                           at batch 200 / 1,000 (metrics included)
* ``det_mixture_shapes``   the same deterministic MLP with the mixture step's shapes:
                           input layer on the 200 rows, its output tiled S = 5 times,
                           the other layers on 1,000 rows (the arithmetic of the
                           mixture's means, without variances or noise)
* ``..._xla``              the whole train_step compiled by XLA (``jit_compile=True``,
                           what ``compile(jit_compile=True)`` / ``--jit_compile`` run);
                           mixtures with ``jit_sampling`` (its polynomial cosine)
* ``tfp_reparam``          the same ML objective from ``tfp.layers.DenseReparameterization``
                           on tf-keras: S = 5 calls of the network (one weight draw each)
* ``tfp_flipout``          ``tfp.layers.DenseFlipout`` on the batch tiled S = 5 times
Diagnostics (where the time goes):
* ``...[no_noise]``        the layers' N(0, 1) noise replaced by a constant fill
                           (not a valid model: everything but the random numbers)
* ``noise[...]``           only the 5·200·(128+128+10) = 266,000 normals of one
                           step, by each generator.

Every case is traced and warmed up first, then the cases run round-robin
``--rounds`` times ``--steps`` steps each (the CPU is shared, so
interleaving spreads the load evenly).  Reported: median and minimum ms per
step over rounds, and ratios to ``det_1000`` and to ``tfp_reparam``; then the
floor of the mixture step, measured in the same run: the deterministic step at
batch 200 plus the noise draw alone (``det_200 + noise[uqmix box-muller xla]``;
with XLA: ``det_200_xla`` + the same noise; issue 16's floor) and the arithmetic
floor ``det_mixture_shapes`` + the noise (layers 2 and 3 necessarily run on S·B
rows), and every mixture case as ratios to ``det_1000`` and to those floors, with the load average (the machine is
shared: compare ratios, and only runs with a load average near 0).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import uqmix.layers  # noqa: E402
from uqmix import gaussian_noise  # noqa: E402
from uqmix.models import Deterministic, InfiniteMixture  # noqa: E402
from uqmix.objectives import mixture_losses  # noqa: E402

INPUT_DIM, NUM_CLASSES, HIDDEN = 784, 10, (128, 128)
NUM_SAMPLES, BATCH, DATASET_SIZE = 5, 200, 60000


def time_round_robin(cases, rounds, steps, clock=time.perf_counter):
    """{name: fn} → {name: [ms per call, one entry per round]}, calls interleaved.

    clock: ``time.perf_counter`` (wall time) or ``time.process_time`` (CPU
    time of this process: with one thread, insensitive to other processes).
    """
    for fn in cases.values():
        _block(fn())
        _block(fn())
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = clock()
            for _ in range(steps):
                out = fn()
            _block(out)
            times[name].append((clock() - start) / steps * 1e3)
    return times


def _block(value):
    for tensor in tf.nest.flatten(value):
        np.asarray(tensor)


def _data(batch, seed=0):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.random((batch, INPUT_DIM), dtype=np.float32))
    y = tf.constant(rng.integers(0, NUM_CLASSES, batch), tf.int32)
    return x, y


def _uqmix_step(model, batch, jit_compile=False):
    """The model's train_step as one tf.function (one XLA program with ``jit_compile``)."""
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.build((None, INPUT_DIM))
    model.optimizer.build(model.trainable_variables)
    data = _data(batch)
    return tf.function(lambda: model.train_step(data)["loss"], jit_compile=jit_compile)


def mixture_step(sampling, jit_sampling, noise_fn=None, jit_compile=False, objective="ml"):
    """The mixture's train step; ``noise_fn`` temporarily replaces the layers' noise."""
    model = InfiniteMixture(
        num_classes=NUM_CLASSES,
        hidden_units=HIDDEN,
        objective=objective,
        num_train_samples=NUM_SAMPLES,
        kl_weight=1.0,
        dataset_size=DATASET_SIZE,
        sampling=sampling,
        seed=1,
        jit_sampling=jit_sampling,
    )
    step = _uqmix_step(model, BATCH, jit_compile)
    name = "_xla_noise_generator" if jit_sampling else "_noise_generator"
    original = getattr(uqmix.layers, name)
    if noise_fn is not None:
        setattr(uqmix.layers, name, noise_fn)
    try:
        step()  # trace now, with the noise function in place
    finally:
        setattr(uqmix.layers, name, original)
    return step


def deterministic_step(batch, jit_compile=False, model_class=Deterministic):
    return _uqmix_step(
        model_class(input_shape=(INPUT_DIM,), num_classes=NUM_CLASSES, hidden_units=HIDDEN),
        batch,
        jit_compile,
    )


class MixtureShapedDeterministic(Deterministic):
    """``Deterministic`` with the mixture step's shapes: the input layer on the B rows, its
    output tiled S times, the other layers on S·B rows; Σ_s CE over the S copies."""

    def training_logits(self, x, training):
        dense = [layer for layer in self.network.layers if isinstance(layer, keras.layers.Dense)]
        h = tf.tile(dense[0](x), [NUM_SAMPLES, 1])
        for layer in dense[1:]:
            h = layer(h)
        return tf.reshape(h, [NUM_SAMPLES, -1, NUM_CLASSES])


def tfp_step(layer_name):
    """ML objective (S = 5) built from a tfp.layers Bayesian dense layer on tf-keras."""
    import tensorflow_probability as tfp
    import tf_keras

    layer_cls = getattr(tfp.layers, layer_name)
    divergence = lambda q, p, _: tfp.distributions.kl_divergence(q, p)  # noqa: E731
    model = tf_keras.Sequential(
        [layer_cls(units, activation="relu", kernel_divergence_fn=divergence) for units in HIDDEN]
        + [layer_cls(NUM_CLASSES, kernel_divergence_fn=divergence)]
    )
    model.build((None, INPUT_DIM))
    optimizer = tf_keras.optimizers.Adam(1e-3)
    x, y = _data(BATCH)
    flipout = layer_name == "DenseFlipout"

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            if flipout:  # one call on the tiled batch: per-example pseudo-independent weights
                logits = tf.reshape(
                    model(tf.tile(x, [NUM_SAMPLES, 1]), training=True),
                    [NUM_SAMPLES, BATCH, NUM_CLASSES],
                )
            else:  # S calls: one weight draw per call, shared by the batch
                logits = tf.stack([model(x, training=True) for _ in range(NUM_SAMPLES)])
            log_lik = mixture_losses.sample_log_likelihoods(y, logits)
            loss = mixture_losses.mixture_loss(
                log_lik, tf.add_n(model.losses), "ml", 1.0, DATASET_SIZE
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def noise_only(fn):
    shapes = [
        (NUM_SAMPLES, BATCH, HIDDEN[0]),
        (NUM_SAMPLES * BATCH, HIDDEN[1]),
        (NUM_SAMPLES * BATCH, NUM_CLASSES),
    ]
    generator = keras.random.SeedGenerator(3)
    return tf.function(lambda: [fn(s, gaussian_noise.stateless_seed(generator)) for s in shapes])


def _tf_normal(shape, seed, dtype=tf.float32):
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg="philox")


def _constant_fill(shape, seed, dtype=tf.float32):
    """No random numbers, but a run-time value (so the graph optimiser cannot fold it away)."""
    return tf.fill(shape, tf.cast(seed[0] % 2, dtype))


def keras_normal_only():
    """keras.random.normal with a SeedGenerator, as a Keras layer would draw its noise."""
    generator = keras.random.SeedGenerator(4)
    shapes = [
        (NUM_SAMPLES, BATCH, HIDDEN[0]),
        (NUM_SAMPLES * BATCH, HIDDEN[1]),
        (NUM_SAMPLES * BATCH, NUM_CLASSES),
    ]
    return tf.function(lambda: [keras.random.normal(s, seed=generator) for s in shapes])


def report(times, baseline, peer=None, out=sys.stdout):
    base_med, base_min = statistics.median(times[baseline]), min(times[baseline])
    header = f"{'case':28s} {'median ms':>10s} {'min ms':>8s} {'/' + baseline + ' (med, min)':>26s}"
    if peer:
        header += f" {peer + ' / case (med)':>22s}"
    print(header, file=out)
    for name, values in times.items():
        med, low = statistics.median(values), min(values)
        line = f"{name:28s} {med:10.2f} {low:8.2f} {med / base_med:12.2f}× {low / base_min:10.2f}×"
        if peer:
            line += f" {statistics.median(times[peer]) / med:20.2f}×"
        print(line, file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TF intra- and inter-op threads (0: TF's default, all cores); with 1, "
        "the CPU time of the process is reported instead of wall time",
    )
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    keras.utils.set_random_seed(0)
    local, shared = "local_reparameterization", "shared_weights"
    cases = {
        "det_1000": deterministic_step(1000),
        "det_200": deterministic_step(200),
        "det_1000_xla": deterministic_step(1000, jit_compile=True),
        "det_200_xla": deterministic_step(200, jit_compile=True),
        "det_mixture_shapes": deterministic_step(200, model_class=MixtureShapedDeterministic),
        "mixture_local": mixture_step(local, False),
        "mixture_local_jit": mixture_step(local, True),
        "mixture_local_xla": mixture_step(local, True, jit_compile=True),
        "vi_local_jit": mixture_step(local, True, objective="vi"),
        "vi_local_xla": mixture_step(local, True, jit_compile=True, objective="vi"),
        "mixture_local_xla[no_noise]": mixture_step(local, True, _constant_fill, jit_compile=True),
        "mixture_shared": mixture_step(shared, False),
        "mixture_shared_jit": mixture_step(shared, True),
        "tfp_reparam": tfp_step("DenseReparameterization"),
        "tfp_flipout": tfp_step("DenseFlipout"),
        "mixture_local[no_noise]": mixture_step(local, False, _constant_fill),
        "mixture_local_jit[no_noise]": mixture_step(local, True, _constant_fill),
        "noise[uqmix box-muller]": noise_only(gaussian_noise.box_muller),
        "noise[uqmix box-muller xla]": noise_only(gaussian_noise.standard_normal_xla),
        "noise[tf stateless_normal]": noise_only(_tf_normal),
        "noise[keras.random.normal]": keras_normal_only(),
        "noise[constant fill]": noise_only(_constant_fill),
    }
    print(
        f"ML mixture S={NUM_SAMPLES}, batch {BATCH}, 784-128-128-10; "
        f"{args.rounds} rounds × {args.steps} steps; TF {tf.__version__}, "
        f"Keras {keras.__version__}, {os.cpu_count()} CPUs, "
        f"{args.threads or 'default'} TF threads, "
        f"{'CPU' if clock is time.process_time else 'wall'} time, "
        f"load avg {os.getloadavg()[0]:.1f}"
    )
    times = time_round_robin(cases, args.rounds, args.steps, clock)
    report(times, "det_1000", peer="tfp_reparam")
    report_floor(times)
    print(f"load avg after: {os.getloadavg()[0]:.1f}")


def report_floor(times, out=sys.stdout):
    """The floor (deterministic step at batch 200 + the noise draw alone) and every mixture
    case against det_1000, its floor and the TFP peers (issue 16's targets)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    noise = med["noise[uqmix box-muller xla]"]
    floors = {
        "plain": med["det_200"] + noise,
        "xla": med["det_200_xla"] + noise,
        "shapes": med["det_mixture_shapes"] + noise,
    }
    print(
        f"floor = det_200 + noise[uqmix box-muller xla] = {floors['plain']:.2f} ms "
        f"({floors['plain'] / med['det_1000']:.2f}× det_1000); with XLA: det_200_xla + noise = "
        f"{floors['xla']:.2f} ms; arithmetic floor = det_mixture_shapes + noise = "
        f"{floors['shapes']:.2f} ms ({floors['shapes'] / med['det_1000']:.2f}× det_1000)",
        file=out,
    )
    print(
        f"{'case':28s} {'/det_1000':>10s} {'/floor':>8s} {'/arith':>8s} {'reparam/case':>13s} "
        f"{'flipout/case':>13s}   (targets ≤ 1.0×, ≤ 1.25× floor, ≥ 2.5×, ≥ 4×)",
        file=out,
    )
    for case in med:
        if not case.startswith(("mixture_local", "vi_local")) or "[" in case:
            continue
        floor = floors["xla" if case.endswith("_xla") else "plain"]
        print(
            f"{case:28s} {med[case] / med['det_1000']:9.2f}× {med[case] / floor:7.2f}× "
            f"{med[case] / floors['shapes']:7.2f}× "
            f"{med['tfp_reparam'] / med[case]:12.2f}× {med['tfp_flipout'] / med[case]:12.2f}×",
            file=out,
        )


if __name__ == "__main__":
    main()
