"""--strategy=multi_worker: two worker processes on 127.0.0.1 against one process on two devices.

The reference is ``--strategy=mirrored`` in one process over two logical CPU devices, with the
same flags (same global batch, same seed).  Both arrangements see the same per-replica batches:
``uqmix.distributed.distribute_dataset`` gives replica r of 2 the rows [r·B/2, (r+1)·B/2) of
every global batch, on one machine (replicas 0 and 1 = the two devices) and on two (replica r
= worker r).  The gradient all-reduce sums the same two per-replica gradients (a sum of two
floats does not depend on the order), so the metrics agree to float round-off.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO_ROOT
from tests.metric_comparison import assert_same_metrics
from uqmix import runs

SMOKE = os.path.join(REPO_ROOT, "experiments", "configs", "smoke.cfg")
# The smoke flagfile made smaller (a small convnet, 2 epochs of 3 steps, no attack) and tamer:
# SGD at 0.01 without clipping instead of Adam at 0.003, whose first steps drive α0 to the
# 1e13 clip, where any round-off difference between the two arrangements grows to 1e-4 in
# the weights (see _assert_same_metrics).
FLAGS = [
    f"--flagfile={SMOKE}",
    "--backbone=small_convnet",
    "--epochs=2",
    "--steps_per_epoch=3",
    "--batch_size=32",
    "--learning_rate=0.0003",
    "--clip_norm=0",
    "--lr_schedule=constant",
    "--attack=false",
    "--test_examples=64",
    "--ood_test_examples=64",
    "--histogram_examples=16",
    "--verbose=2",
    "--resume",
]
TIMEOUT = 240

# Two logical CPU devices must be configured before TensorFlow initialises: run the binary's
# module in a fresh interpreter after doing so.
_MIRRORED = textwrap.dedent("""
    import runpy, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.argv = ["cifar_rkl"] + sys.argv[1:]
    runpy.run_module("experiments.cifar_rkl", run_name="__main__")
""")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(**extra):
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "UQMIX_TEST_EXIT_AFTER_EPOCH")
    }
    env.update(TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


def _start_workers(out, ports, hook=None):
    """Starts worker 0 (chief) and worker 1 with the same command, differing only in TF_CONFIG."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(len(ports)):
        env = _env(
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        )
        if hook:
            env["UQMIX_TEST_EXIT_AFTER_EPOCH"] = hook
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "experiments.cifar_rkl",
                    *FLAGS,
                    "--strategy=multi_worker",
                    f"--output_dir={out}",
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    return workers


def _finish(process, timeout=TIMEOUT):
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    return process.returncode, stdout, stderr


def _start_mirrored(out):
    return subprocess.Popen(
        [sys.executable, "-c", _MIRRORED, *FLAGS, "--strategy=mirrored", f"--output_dir={out}"],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _assert_same_metrics(multi, single):
    assert multi["num_replicas"] == single["num_replicas"] == 2
    compared, largest = assert_same_metrics(multi, single, rel_tol=2e-4, abs_tol=1e-5)
    print(f"{compared} metrics compared, largest difference {largest:.3g}")
    assert compared > 20
    assert multi["mean_alpha0_in"] > 15  # trained: α0 = Σ exp(logits) ≈ 10 at initialisation


def _files(folder):
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )


def _check_run_folder(out, chief_pids):
    """One metrics.json, no worker temp folder left, TensorBoard events from the chief only
    (an events file name holds the writer's process id)."""
    files = _files(out)
    assert [f for f in files if os.path.basename(f) == runs.METRICS_FILE] == [runs.METRICS_FILE]
    assert not [f for f in files if ".workertemp_" in f], files
    events = [f for f in files if "events.out" in f]
    folders = {os.path.basename(os.path.dirname(f)) for f in events}
    assert {"train", "evaluation"} <= folders <= {"train", "validation", "evaluation"}, events
    writers = {int(os.path.basename(f).split(".")[-3]) for f in events}  # <host>.<pid>.<n>.v2
    assert writers <= set(chief_pids), (events, chief_pids)


def test_two_workers_equal_one_process_on_two_devices(tmp_path):
    reference = _start_mirrored(tmp_path / "single")  # in parallel: the test's wall time
    workers = _start_workers(tmp_path / "multi", _free_ports(2))
    for code, _, stderr in [_finish(w) for w in workers]:
        assert code == 0, stderr[-3000:]
    code, _, stderr = _finish(reference)
    assert code == 0, stderr[-3000:]
    _check_run_folder(tmp_path / "multi", [workers[0].pid])
    assert "metrics.json" not in _files(tmp_path / "multi" / "model")
    _assert_same_metrics(
        runs.read_json(tmp_path / "multi" / runs.METRICS_FILE),
        runs.read_json(tmp_path / "single" / runs.METRICS_FILE),
    )


def test_worker_killed_after_first_epoch_resumes_with_the_same_command(tmp_path):
    out = tmp_path / "multi"
    reference = _start_mirrored(tmp_path / "single")  # the uninterrupted run, in parallel
    # Worker 1 dies (os._exit, no clean-up) right after the first epoch's checkpoint.
    workers = _start_workers(out, _free_ports(2), hook="1:1")
    code, _, _ = _finish(workers[1])
    assert code == 75
    # The chief cannot go on without its peer: TF's guide has the cluster restart the failed
    # workers.  Wait until the chief's first checkpoint is complete, then stop it as a
    # cluster manager would (it may also have failed on its own by then).
    checkpoints = out / "model" / "checkpoints"
    deadline = time.time() + 60
    while (
        time.time() < deadline
        and workers[0].poll() is None
        and not (checkpoints / "checkpoint").exists()
    ):
        time.sleep(0.5)
    if workers[0].poll() is None:
        os.killpg(workers[0].pid, signal.SIGKILL)
    _finish(workers[0])
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("ckpt-"))[
        0
    ].startswith("ckpt-1")
    assert not (out / runs.METRICS_FILE).exists()
    # Restart both with the same command: they resume from the chief's epoch-1 checkpoint.
    restarted = _start_workers(out, _free_ports(2))
    for code, stdout, stderr in [_finish(w) for w in restarted]:
        assert code == 0, stderr[-3000:]
        assert "Epoch 2/2" in stdout and "Epoch 1/2" not in stdout, stdout[-2000:]
    code, _, stderr = _finish(reference)
    assert code == 0, stderr[-3000:]
    _check_run_folder(out, [workers[0].pid, restarted[0].pid])
    _assert_same_metrics(
        runs.read_json(out / runs.METRICS_FILE),
        runs.read_json(tmp_path / "single" / runs.METRICS_FILE),
    )


# -- fast checks of the pieces (one process) -------------------------------------------------------
def test_tf_config_is_checked_before_anything_runs(tmp_path):
    from uqmix.setup_utils import check_tf_config

    good = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    check_tf_config(json.dumps(good))
    for bad, message in (
        (None, "needs the TF_CONFIG"),
        ("{", "not a valid cluster"),
        (json.dumps(dict(good, task={"type": "worker", "index": 2})), "index 2 is not in"),
    ):
        with pytest.raises(ValueError, match=message):
            check_tf_config(bad)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.cifar_rkl",
            f"--flagfile={SMOKE}",
            "--strategy=multi_worker",
            f"--output_dir={tmp_path / 'run'}",
        ],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "TF_CONFIG" in result.stderr
    assert not (tmp_path / "run").exists()


def test_replica_slices_are_the_rows_of_a_numpy_split():
    import numpy as np
    import tensorflow as tf

    from uqmix import distributed

    x, y = np.arange(8 * 3, dtype=np.float32).reshape(8, 3), np.arange(8)
    ood = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
    for count in (1, 2, 4):
        for r in range(count):
            (xs, os_), ys = distributed._replica_slice(
                ((tf.constant(x), tf.constant(ood)), tf.constant(y)), r, count
            )
            np.testing.assert_array_equal(xs, np.split(x, count)[r])
            np.testing.assert_array_equal(os_, np.split(ood, count)[r])
            np.testing.assert_array_equal(ys, np.split(y, count)[r])
    spec = tf.data.Dataset.from_tensors((x[:6], y[:6])).element_spec
    with pytest.raises(ValueError, match="divisible by 4"):
        distributed._check_divisible(spec, 4)
    unknown = tf.data.Dataset.from_tensor_slices(x).batch(3).element_spec
    with pytest.raises(ValueError, match="static batch size"):
        distributed._check_divisible(unknown, 2)


def test_single_process_is_the_chief_and_writes_to_the_real_paths(tmp_path):
    import tensorflow as tf

    from uqmix import distributed

    strategy = tf.distribute.get_strategy()
    assert distributed.is_chief(strategy) and not distributed.is_multi_worker(strategy)
    assert distributed.write_path(str(tmp_path / "x"), strategy) == str(tmp_path / "x")
    assert distributed.agree(strategy, True) and not distributed.agree(strategy, False)


def test_a_worker_with_other_flags_is_refused(tmp_path):
    from uqmix import distributed
    from uqmix.studies import pn_experiment

    config = pn_experiment.default_config(output_dir=str(tmp_path / "run"))
    runs.prepare_output_dir(config["output_dir"], config)  # what the chief wrote
    distributed.check_same_config(dict(config, resume=True, verbose=0))  # volatile keys only
    with pytest.raises(runs.ConfigMismatchError, match="differ from the chief's in: epochs"):
        distributed.check_same_config(dict(config, epochs=3))
    with pytest.raises(runs.ConfigMismatchError, match="shared file system"):
        distributed.check_same_config(dict(config, output_dir=str(tmp_path / "elsewhere")))


SYNTHETIC_FLAGS = [
    "--losses=reverse_kl",
    "--train_steps=40",
    "--steps_per_epoch=20",
    "--steps_per_execution=1",
    "--grid_resolution=20",
    "--verbose=0",
]


def test_synthetic_job_on_two_workers_equals_one_process(tmp_path):
    """The default job: the chief alone writes; the global batch split over two workers gives
    the single-process run's metrics (the mean gradient over the same global batch)."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    command = [sys.executable, "-m", "experiments.synthetic_rkl", *SYNTHETIC_FLAGS]
    workers = [
        subprocess.Popen(
            [*command, "--strategy=multi_worker", f"--output_dir={tmp_path / 'multi'}"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=_env(
                TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                )
            ),
        )
        for index in range(2)
    ]
    single = subprocess.Popen(
        [*command, f"--output_dir={tmp_path / 'single'}"],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    for code, _, stderr in [_finish(p) for p in [*workers, single]]:
        assert code == 0, stderr[-3000:]
    files = _files(tmp_path / "multi")
    assert [f for f in files if os.path.basename(f) == runs.METRICS_FILE] == [runs.METRICS_FILE]
    assert not [f for f in files if ".workertemp_" in f], files
    writers = {int(os.path.basename(f).split(".")[-3]) for f in files if "events.out" in f}
    assert writers == {workers[0].pid}
    multi = runs.read_json(str(tmp_path / "multi" / runs.METRICS_FILE))["models"]["reverse_kl"]
    reference = runs.read_json(str(tmp_path / "single" / runs.METRICS_FILE))
    compared, _ = assert_same_metrics(
        multi, reference["models"]["reverse_kl"], rel_tol=1e-3, abs_tol=1e-4
    )
    assert compared > 10
