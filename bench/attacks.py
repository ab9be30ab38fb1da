"""PGD throughput of uqmix.attacks against cleverhans 4.0 on MNIST (not part of the test run).

    python bench/attacks.py [--data_dir ../shared/data] [--num_images 1000] [--repeats 3]
                            [--mixture_repeats 2] [--mixture_steps 300] [--skip_mixture]
                            [--cw_images 100] [--cw_repeats 1] [--only_cw]

PGD L∞, ε = 0.3, eps_iter = 0.01, 40 iterations, no random start, box [0, 1],
on the first ``num_images`` MNIST test images, in one process:

1. Deterministic MLP (784-128-128-10, ReLU), trained for one epoch on the
   MNIST training set (Adam 1e-3, batch 200; a trained net has realistic,
   non-degenerate gradients).  Compared: uqmix (one compiled while-loop),
   cleverhans as shipped (eager Python loop, compiled gradient), and
   cleverhans wrapped in ``tf.function`` by hand (the 40 steps unrolled in one
   graph).  Checks the adversarial examples are identical (max |Δ| ≤ 1e-5).
2. ML-trained infinite mixture (``uqmix.models.InfiniteMixture``, 784-128-128-10,
   λ = 1, σ² = 1, 5 training samples) with 100 gradient samples, trained for
   ``--mixture_steps`` Adam steps (default 300 = one epoch at batch 200): uqmix with
   ``predictive_logits_fn(model, 100)`` (the 100 samples vectorised in one
   call) against cleverhans' PGD driven by a model_fn that averages 100
   single-sample calls one at a time.  Skipped if the model class is absent.

3. Carlini–Wagner L2 (``uqmix.attacks.carlini_wagner_l2_run``, untargeted,
   ``CW`` below) on the deterministic MLP, first ``--cw_images`` images:
   the compiled attack (nested while-loops in one ``tf.function`` per batch)
   against the same algorithm run eagerly op by op (``compiled=False``);
   checks the results are identical (same success flags, max |Δx'| ≤ 1e-5)
   and prints the throughput ratio.  ``--only_cw`` runs just this part (no
   cleverhans needed).

Timings: every contender is traced/warmed up once (the mixture contenders
with a 1-iteration run, which traces the same programs), then the contenders run
round-robin ``repeats`` (``mixture_repeats``) times (the CPU is shared, so interleaving spreads
the noise evenly); the median wall time gives images/s.  Requires cleverhans
4.0 (``pip install --no-deps cleverhans==4.0.0``; not a uqmix dependency).
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

from uqmix import attacks  # noqa: E402
from uqmix.data import load_arrays  # noqa: E402
from uqmix.models.backbones import mlp  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PGD = dict(eps=0.3, eps_iter=0.01, nb_iter=40, norm=np.inf, clip_min=0.0, clip_max=1.0)
CW = dict(
    binary_search_steps=3,
    max_iterations=100,
    learning_rate=0.01,
    initial_const=0.1,
    clip_min=0.0,
    clip_max=1.0,
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=os.path.join(os.path.dirname(REPO), "shared", "data"))
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num_samples", type=int, default=100)
    parser.add_argument("--mixture_steps", type=int, default=300)
    parser.add_argument("--mixture_repeats", type=int, default=2)
    parser.add_argument("--skip_mixture", action="store_true")
    parser.add_argument("--cw_images", type=int, default=100)
    parser.add_argument("--cw_repeats", type=int, default=1)
    parser.add_argument("--only_cw", action="store_true")
    return parser.parse_args()


def time_round_robin(contenders, repeats, warmups=None):
    """{name: (median seconds, last result)}; each contender warmed up once first.

    warmups: optional {name: cheaper callable that traces the same program}
    (e.g. one iteration instead of 40 where the iteration count is not baked
    into the trace), used instead of a full first run.
    """
    warmups = warmups or {}
    results = {name: warmups.get(name, fn)() for name, fn in contenders.items()}
    seconds = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            results[name] = np.asarray(fn())
            seconds[name].append(time.perf_counter() - start)
    return {name: (statistics.median(seconds[name]), results[name]) for name in contenders}


def report(title, timings, num_images, ours, baselines):
    print(f"\n== {title} ==")
    for name, (sec, _) in timings.items():
        print(f"  {name:<46s} {num_images / sec:9.1f} images/s   ({sec:.3f} s)")
    for name, required in baselines:
        ratio = timings[name][0] / timings[ours][0]
        verdict = "ok" if ratio >= required else "BELOW TARGET"
        print(f"  speed-up vs {name:<34s} {ratio:5.2f}x   (target >= {required}x: {verdict})")


def deterministic_mlp(x_train, y_train):
    keras.utils.set_random_seed(0)
    model = mlp(x_train.shape[1:], 10)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=200, epochs=1, verbose=0)
    return model


def bench_deterministic(model, x, y, repeats):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent as ch

    accuracy = np.mean(np.argmax(model.predict(x, verbose=0), 1) == y)
    x_tensor = tf.constant(x)
    ch_compiled = tf.function(lambda images: ch(model, images, **PGD, rand_init=False))
    contenders = {
        "uqmix projected_gradient_descent": lambda: attacks.projected_gradient_descent(
            model, x_tensor, **PGD, rand_init=False
        ),
        "cleverhans 4.0 as shipped (eager loop)": lambda: ch(
            model, x_tensor, **PGD, rand_init=False
        ),
        "cleverhans 4.0 in tf.function by hand": lambda: ch_compiled(x_tensor),
    }
    timings = time_round_robin(contenders, repeats)
    ours = timings["uqmix projected_gradient_descent"][1]
    print(f"\nDeterministic MLP (1 epoch, clean accuracy on these images {accuracy:.3f})")
    for name in list(contenders)[1:]:
        diff = np.max(np.abs(ours - timings[name][1]))
        print(
            f"  max |uqmix − {name}| = {diff:.2e}   ({'identical' if diff <= 1e-5 else 'DIFFERENT'})"
        )
    adv_accuracy = np.mean(np.argmax(model.predict(ours, verbose=0), 1) == y)
    print(f"  accuracy under PGD: {adv_accuracy:.3f}")
    report(
        "PGD L∞ on the deterministic MLP",
        timings,
        len(x),
        "uqmix projected_gradient_descent",
        [
            ("cleverhans 4.0 as shipped (eager loop)", 2.0),
            ("cleverhans 4.0 in tf.function by hand", 1.0),
        ],
    )


def bench_carlini_wagner(model, x, y, repeats):
    """C&W L2 compiled vs the same algorithm eager (see the module docstring)."""
    x_tensor = tf.constant(x)
    names = ["uqmix carlini_wagner_l2 (compiled)", "same algorithm, eager (compiled=False)"]
    contenders = {
        names[0]: lambda: attacks.carlini_wagner_l2_run(model, x_tensor, batch_size=len(x), **CW),
        names[1]: lambda: attacks.carlini_wagner_l2_run(
            model, x_tensor, batch_size=len(x), compiled=False, **CW
        ),
    }
    results = {name: fn() for name, fn in contenders.items()}  # warm-up (traces), kept
    seconds = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            results[name] = fn()
            seconds[name].append(time.perf_counter() - start)
    ours, eager = results[names[0]], results[names[1]]
    diff = np.max(np.abs(ours.adversarial - eager.adversarial))
    same = np.array_equal(ours.success, eager.success) and diff <= 1e-5
    print(f"\nC&W L2 {CW} on {len(x)} images of the deterministic MLP")
    print(
        f"  success rate {ours.success.mean():.3f}, median L2 of successes "
        f"{np.median(np.sqrt(ours.l2_squared[ours.success])):.3f}; max |compiled − eager| = "
        f"{diff:.2e}, same success flags: {np.array_equal(ours.success, eager.success)} "
        f"({'identical' if same else 'DIFFERENT'})"
    )
    timings = {name: (statistics.median(seconds[name]), None) for name in contenders}
    report("C&W L2 compiled vs eager", timings, len(x), names[0], [(names[1], 1.0)])


def ml_mixture(x_train, y_train, steps):
    """The ML-trained infinite mixture of the study (S = 5 training samples), ``steps`` Adam steps."""
    from uqmix.models.infinite_mixture import InfiniteMixture

    keras.utils.set_random_seed(0)
    model = InfiniteMixture(num_classes=10, objective="ml", dataset_size=len(x_train), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    count = min(len(x_train), steps * 200)
    model.fit(x_train[:count], y_train[:count], batch_size=200, epochs=1, verbose=0)
    return model


def bench_mixture(model, x, y, num_samples, repeats):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent as ch

    log_s = float(np.log(num_samples))

    def one_call_at_a_time(images):
        """log of the mean of num_samples single-sample predictions, one model call each."""
        log_probs = [
            tf.nn.log_softmax(model.predictive_parameters(images, 1)[0]) for _ in range(num_samples)
        ]
        return tf.reduce_logsumexp(tf.stack(log_probs), axis=0) - log_s

    ours_fn = attacks.predictive_logits_fn(model, num_samples)
    x_tensor = tf.constant(x)
    names = [
        f"uqmix PGD, predictive_logits_fn(S={num_samples})",
        f"cleverhans 4.0 PGD, {num_samples} calls per gradient",
    ]

    def ours(nb_iter):
        return attacks.projected_gradient_descent(
            ours_fn, x_tensor, **dict(PGD, nb_iter=nb_iter), rand_init=False
        )

    def theirs(nb_iter):
        return ch(one_call_at_a_time, x_tensor, **dict(PGD, nb_iter=nb_iter), rand_init=False)

    # Warm-up with one iteration: neither program bakes the iteration count into
    # its trace (uqmix passes it as a tensor; cleverhans compiles only the gradient).
    timings = time_round_robin(
        {names[0]: lambda: ours(PGD["nb_iter"]), names[1]: lambda: theirs(PGD["nb_iter"])},
        repeats,
        warmups={names[0]: lambda: ours(1), names[1]: lambda: theirs(1)},
    )
    mean_probs = model.predictive(x, num_samples=num_samples).mean().numpy()
    print(
        f"\nML infinite mixture ({num_samples} samples: clean accuracy "
        f"{np.mean(mean_probs.argmax(1) == y):.3f})"
    )
    for name, (_, adv) in timings.items():
        adv_probs = model.predictive(adv, num_samples=num_samples).mean().numpy()
        print(f"  accuracy under PGD ({name}): {np.mean(adv_probs.argmax(1) == y):.3f}")
    report(
        f"PGD L∞ on the ML mixture with {num_samples} gradient samples",
        timings,
        len(x),
        names[0],
        [(names[1], 1.5)],
    )


def main():
    args = parse_args()
    if not args.only_cw:
        try:
            import cleverhans  # noqa: F401
        except ImportError:
            sys.exit(
                "cleverhans is needed for this benchmark: pip install --no-deps "
                "cleverhans==4.0.0 (or run only the C&W part: --only_cw)"
            )
    x_train, y_train = load_arrays("mnist", "train", data_dir=args.data_dir, use_tfds=False)
    x_test, y_test = load_arrays("mnist", "test", data_dir=args.data_dir, use_tfds=False)
    x, y = x_test[: args.num_images], y_test[: args.num_images]
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPU cores, {len(x)} MNIST test images, PGD {PGD}"
    )
    mlp_model = deterministic_mlp(x_train, y_train)
    bench_carlini_wagner(
        mlp_model, x_test[: args.cw_images], y_test[: args.cw_images], args.cw_repeats
    )
    if args.only_cw:
        return
    bench_deterministic(mlp_model, x, y, args.repeats)
    if args.skip_mixture:
        return
    try:
        model = ml_mixture(x_train, y_train, args.mixture_steps)
    except ImportError as error:
        print(f"\nML mixture part skipped: {error}")
        return
    bench_mixture(model, x, y, args.num_samples, args.mixture_repeats)


if __name__ == "__main__":
    main()
