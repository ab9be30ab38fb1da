"""What keeping an attack curve resumable costs (not part of the test run).

    python bench/attack_backup.py [--num_images 200] [--samples 4] [--iterations 40]
                                  [--repeats 3]

An adaptive MIM curve (KL-PMF towards the second most likely class, points
1, 2, 5, 10, 20, 40 by default) on MC dropout of the MNIST Prior Network
study's small convnet (dropout 0.5, ``--samples`` masks per gradient, untrained:
the cost does not depend on the weights) over ``--num_images`` random 28×28
images in one batch, three ways:

* ``none``: ``uqmix.attack_eval.adaptive_attack_curves`` without a backup (one
  compiled call per segment between two points);
* ``default``: ``backup_dir`` with the default 600 s interval (a save after
  every point; at this size no piece is cut inside a segment);
* ``every_iteration``: ``backup_every_seconds=0``: the worst case, one compiled
  call, one host copy of the state and one atomic file write per iteration.

Checks the three curves are identical, then prints the median wall time of
each (round robin, ``--repeats`` times, after one warm-up each) and its ratio
to ``none``.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from uqmix import attack_eval, training_cache  # noqa: E402
from uqmix.models.backbones import small_convnet  # noqa: E402
from uqmix.models.sampled_networks import mc_dropout  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=200)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def main():
    args = parse_args()
    keras.utils.set_random_seed(0)
    network = small_convnet((28, 28, 1), 10, dropout_rate=0.5)
    model = mc_dropout(network, num_samples=args.samples)
    x = np.random.default_rng(0).uniform(0, 1, (args.num_images, 28, 28, 1)).astype(np.float32)
    points = sorted({p for p in (1, 2, 5, 10, 20) if p < args.iterations} | {args.iterations})
    folder = tempfile.mkdtemp(prefix="uqmix-bench-backup-")
    model.predictive(x[:2], 1)  # builds the network: its noise states exist from here
    random_variables = training_cache.random_state_variables(model)
    start_states = [v.numpy().copy() for v in random_variables]

    def curve(name):
        options = {}
        if name != "none":
            backup = os.path.join(folder, f"{name}-{time.monotonic_ns()}")  # never resumed
            options = {"backup_dir": backup}
            if name == "every_iteration":
                options["backup_every_seconds"] = 0.0
        # the same noise for every contender: the curves must agree
        for variable, value in zip(random_variables, start_states):
            variable.assign(value)
        return attack_eval.adaptive_attack_curves(
            model,
            x,
            points,
            eps=0.3,
            eps_iter=0.03,
            method="mim",
            criterion="kl_pmf",
            num_eval_samples=args.samples,
            batch_size=args.num_images,
            seed=0,
            **options,
        )

    names = ("none", "default", "every_iteration")
    results = {name: curve(name) for name in names}  # warm-up, and the check
    for name in names[1:]:
        for key in ("success_rate", "auroc", "jsr"):
            if not np.array_equal(results[name][key], results["none"][key], equal_nan=True):
                sys.exit(f"{name}: {key} differs from the curve without backup")
    times = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            start = time.perf_counter()
            curve(name)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["none"])
    print(
        f"MIM curve to {args.iterations} iterations, {args.num_images} images, "
        f"{args.samples} dropout masks per gradient; curves identical: yes"
    )
    for name in names:
        median = statistics.median(times[name])
        print(f"  {name:16s} {median:8.2f} s   ratio to none {median / base:5.2f}")


if __name__ == "__main__":
    main()
