"""Wall time of a Prior Network run with ``--training_processes=K`` against K = 1 (not a test).

    python bench/training_processes.py [--networks 2 --steps 40 --processes 2 --rounds 2]

One run of ``uqmix.studies.pn_experiment`` on the generated 32×32×3 images: an ensemble of
``--networks`` small convnets (independent networks, as a PN-RKL-ADV run and its black-box
source are), one epoch of ``--steps`` steps each, no attack.  The same run is made with K = 1
and with K = ``--processes`` (fresh folders each time, alternating, ``--rounds`` times), and
the median wall time of each is reported with:

* ``K / 1``: the wall-time ratio measured in this run (what ``--training_processes`` buys);
* the floor of a K-process run, measured from the K = 1 runs themselves:
  ``(wall − training) + training · ⌈n / K⌉ / n`` (the untouched evaluation plus the training
  of the largest share, if the processes did not slow each other down), and ``K run / floor``.

On a machine with C cores, K ≤ C processes each with TensorFlow's default threads compete for
the cores: the gain comes from one small network not keeping several cores busy.  Run it on an
otherwise idle machine.
"""

import argparse
import math
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

from uqmix.studies import pn_experiment  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", type=int, default=2, help="ensemble members")
    parser.add_argument("--steps", type=int, default=40, help="training steps per network")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--processes", type=int, default=2, help="K of the contender")
    parser.add_argument("--rounds", type=int, default=2)
    return parser.parse_args()


def config(args, output_dir, processes):
    return pn_experiment.default_config(
        dataset="synthetic_images",
        ood_train_dataset="synthetic_images_ood",
        ood_test_datasets=["synthetic_images_ood"],
        backbone="small_convnet",
        model_kind="ensemble",
        ensemble_size=args.networks,
        loss="cross_entropy",
        batch_size=args.batch_size,
        epochs=1,
        steps_per_epoch=args.steps,
        optimizer="adam",
        learning_rate=1e-3,
        lr_schedule="constant",
        augment=False,
        attack=False,
        verbose=0,
        histogram_examples=0,
        test_examples=256,
        ood_test_examples=256,
        seed=0,
        training_processes=processes,
        output_dir=output_dir,
    )


def timed_run(args, processes):
    """(wall seconds, training seconds summed over processes) of one fresh run."""
    with tempfile.TemporaryDirectory(prefix="uqmix_bench_") as folder:
        start = time.perf_counter()
        metrics = pn_experiment.run(config(args, os.path.join(folder, "run"), processes))
        return time.perf_counter() - start, metrics["train_seconds"]


def main():
    args = parse_args()
    if args.processes < 2 or args.networks < 2:
        raise SystemExit("--processes and --networks must be at least 2 to compare anything.")
    timed_run(args, 1)  # warm-up: data generation, imports, first traces
    times = {1: [], args.processes: []}
    for _ in range(args.rounds):
        for processes in times:
            times[processes].append(timed_run(args, processes))
    one_wall = statistics.median(wall for wall, _ in times[1])
    one_train = statistics.median(train for _, train in times[1])
    k_wall = statistics.median(wall for wall, _ in times[args.processes])
    share = math.ceil(args.networks / args.processes) / args.networks
    floor = (one_wall - one_train) + one_train * share
    print(
        f"ensemble of {args.networks} small convnets on synthetic_images, {args.steps} steps of "
        f"{args.batch_size} each, no attack; median of {args.rounds} rounds; {os.cpu_count()} "
        f"CPUs, TF {tf.__version__}, "
        f"{os.environ.get('TF_NUM_INTRAOP_THREADS') or 'default'} TF threads per process, "
        f"load avg {os.getloadavg()[0]:.1f}"
    )
    print(f"  K = 1 {'':<12} wall {one_wall:7.1f} s   (training {one_train:6.1f} s of it)")
    print(f"  K = {args.processes} {'':<12} wall {k_wall:7.1f} s")
    print(f"  K = {args.processes} / K = 1          {k_wall / one_wall:5.2f}x")
    print(
        f"  floor of K = {args.processes} (evaluation + largest share of the K = 1 training) "
        f"{floor:7.1f} s = {floor / one_wall:.2f}x K = 1;  K = {args.processes} / floor "
        f"{k_wall / floor:.2f}x"
    )


if __name__ == "__main__":
    main()
