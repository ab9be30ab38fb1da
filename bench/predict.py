"""100-sample prediction of the infinite mixture vs 100 deterministic forward passes.

    python bench/predict.py [--num_images 10000] [--num_samples 100] [--rounds 3]
                            [--batch_size 500] [--skip_memory]

On ``--num_images`` random MNIST-shaped images (timing does not depend on the
pixels), 784-128-128-10 networks (untrained: the cost does not depend on the
weights), all through the models' ``predictive`` (compiled, batched by
``--batch_size``):

* ``det_x100``            100 × ``Deterministic.predictive(x)``: 100 forward passes
* ``det_x100_tiled``      the same 100 passes as one forward pass per batch on the
                          batch tiled 100 times (no per-call overhead); the
                          faster of the two is the baseline
* ``mixture_local``       ``InfiniteMixture.predictive(x, 100)``, local
                          reparameterisation (the input layer's a·M and a²·u
                          once per image, noise per sample), plain TF ops
* ``mixture_local_jit``   the same with ``jit_sampling=True``: per batch the noise as one
                          XLA kernel (ThreeFry), then the forward pass as one XLA program
                          fed that noise (``InfiniteMixture._prediction_parameters``)
* ``mixture_shared[_jit]`` shared weights (100 weight draws per batch)
* ``mixture_local_xla``   ``jit_sampling`` and the model compiled with
                          ``jit_compile=True``: each batch's prediction is one XLA program
* ``det_x100_tiled_xla``  the tiled baseline compiled by XLA
* ``mc_dropout``          ``MCDropout.predictive(x, 100)``, for reference
* ``det_x1`` / ``noise``  the floor's parts: one deterministic pass over the images
                          (the input layer once, as the mixture shares it over S) and
                          the noise draw alone (S·N·(128 + 128 + 10) normals, per batch,
                          Box–Muller in one XLA kernel); floor = their sum

Cases are warmed up (traced/compiled) once, then run round-robin
``--rounds`` times; the median and minimum wall time are reported with the
ratio to the faster deterministic baseline and to the floor, and the load
average (the machine is shared: compare ratios).  Unless ``--skip_memory``, the peak resident memory
of one ``mixture_local`` prediction is measured in fresh processes for 2,000
and ``--num_images`` images: it grows only by the inputs and the [S, N, K]
result, not by the per-batch working set.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from uqmix import gaussian_noise  # noqa: E402
from uqmix.models import Deterministic, InfiniteMixture, MCDropout  # noqa: E402

INPUT_SHAPE = (28, 28)


def _images(n):
    return np.random.default_rng(0).random((n,) + INPUT_SHAPE, dtype=np.float32)


def _mixture(sampling, jit_sampling, jit_compile=False):
    model = InfiniteMixture(predictive_sampling=sampling, jit_sampling=jit_sampling, seed=1)
    model.build((None,) + INPUT_SHAPE)
    if jit_compile:
        model.compile(optimizer="adam", jit_compile=True)  # predictive follows jit_compile
    return model


def _noise_only(num_images, num_samples, batch_size):
    """The normals of one S-sample prediction of every batch (layer widths 128, 128, 10)."""
    generator = keras.random.SeedGenerator(3)
    draw = tf.function(
        lambda shapes: [
            gaussian_noise.standard_normal_xla(s, gaussian_noise.stateless_seed(generator))
            for s in shapes
        ]
    )

    def run():
        for start in range(0, num_images, batch_size):
            rows = min(batch_size, num_images - start)
            out = draw(
                [(num_samples, rows, 128), (num_samples * rows, 128), (num_samples * rows, 10)]
            )
        return out[-1]

    return run


def _block(result):
    np.asarray(getattr(result, "log_probs", result))


def make_cases(x, num_samples, batch_size):
    deterministic = Deterministic(input_shape=INPUT_SHAPE)
    dropout = MCDropout(input_shape=INPUT_SHAPE)

    def repeated_deterministic():
        for _ in range(num_samples):
            out = deterministic.predictive(x, batch_size=batch_size, validate=False)
        return out

    def copies_in_one_batch(batch):  # the S passes of a batch as one [S·B, ...] forward pass
        tiled = tf.reshape(tf.tile(batch[None], [num_samples, 1, 1, 1]), (-1,) + INPUT_SHAPE)
        return deterministic(tiled)

    def batched_deterministic(jit_compile):
        fn = tf.function(copies_in_one_batch, reduce_retracing=True, jit_compile=jit_compile)
        return lambda: [
            fn(tf.constant(x[i : i + batch_size])) for i in range(0, len(x), batch_size)
        ][-1]

    def sampled(model):
        return lambda: model.predictive(
            x, num_samples=num_samples, batch_size=batch_size, validate=False
        )

    local, shared = "local_reparameterization", "shared_weights"
    return {
        f"det_x{num_samples}": repeated_deterministic,
        f"det_x{num_samples}_tiled": batched_deterministic(False),
        f"det_x{num_samples}_tiled_xla": batched_deterministic(True),
        "mixture_local": sampled(_mixture(local, False)),
        "mixture_local_jit": sampled(_mixture(local, True)),
        "mixture_local_xla": sampled(_mixture(local, True, jit_compile=True)),
        "mixture_shared": sampled(_mixture(shared, False)),
        "mixture_shared_jit": sampled(_mixture(shared, True)),
        "mc_dropout": sampled(dropout),
        "det_x1": lambda: deterministic.predictive(x, batch_size=batch_size, validate=False),
        "noise": _noise_only(len(x), num_samples, batch_size),
    }


def peak_memory_mb(num_images, num_samples, batch_size):
    """Peak RSS growth (MB) of one mixture_local prediction (compilation included), fresh process."""
    code = (
        "import sys; sys.argv = ['x', '--memory_probe', '--num_images', '{n}', "
        "'--num_samples', '{s}', '--batch_size', '{b}']; "
        "exec(open({path!r}).read())"
    ).format(n=num_images, s=num_samples, b=batch_size, path=os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _current_rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_probe(num_images, num_samples, batch_size):
    """Prints peak RSS during one prediction minus the RSS before it (inputs already loaded)."""
    model = _mixture("local_reparameterization", False)
    x = _images(num_images)
    before = _current_rss_mb()
    _block(model.predictive(x, num_samples=num_samples, batch_size=batch_size, validate=False))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - before)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=10000)
    parser.add_argument("--num_samples", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--memory_probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    if args.memory_probe:
        memory_probe(args.num_images, args.num_samples, args.batch_size)
        return
    x = _images(args.num_images)
    cases = make_cases(x, args.num_samples, args.batch_size)
    print(
        f"{args.num_samples}-sample prediction on {args.num_images} images, batch "
        f"{args.batch_size}; {args.rounds} rounds; {os.cpu_count()} CPUs, "
        f"load avg {os.getloadavg()[0]:.1f}"
    )
    for fn in cases.values():
        _block(fn())  # trace / compile every batch shape
    times = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            _block(fn())
            times[name].append(time.perf_counter() - start)
    baseline = f"det_x{args.num_samples}_tiled"  # 100 tiled passes without XLA
    base_med, base_min = statistics.median(times[baseline]), min(times[baseline])
    floor = statistics.median(times["det_x1"]) + statistics.median(times["noise"])
    print(
        f"{'case':22s} {'median s':>9s} {'min s':>7s} {'/' + baseline + ' (med, min)':>24s} "
        f"{'/floor':>7s}"
    )
    for name, values in times.items():
        med, low = statistics.median(values), min(values)
        print(
            f"{name:22s} {med:9.2f} {low:7.2f} {med / base_med:12.2f}× {low / base_min:9.2f}× "
            f"{med / floor:6.2f}×"
        )
    best = min(
        (k for k in times if k.startswith("mixture")), key=lambda k: statistics.median(times[k])
    )
    best_med = statistics.median(times[best])
    print(
        f"floor = det_x1 + noise = {floor:.2f} s ({floor / base_med:.2f}× {baseline}); "
        f"target: best mixture mode ≤ 0.7× {baseline} (best: {best}, "
        f"{best_med / base_med:.2f}×, {best_med / floor:.2f}× the floor)"
    )
    if not args.skip_memory:
        result_mb = args.num_samples * args.num_images * 10 * 4 / 2**20
        for n in (2000, args.num_images):
            print(
                f"peak RSS growth during mixture_local.predictive on {n} images: "
                f"{peak_memory_mb(n, args.num_samples, args.batch_size):.0f} MB "
                f"(the [S, N, K] float32 result alone: {result_mb * n / args.num_images:.0f} MB)"
            )
    print(f"load avg after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
