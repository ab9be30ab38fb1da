"""--training_processes: a Prior Network run's networks trained by several processes give the
run of one process, bit for bit; a failing helper stops the run with its log; bad values are
refused before any work; timing.json survives concurrent writers."""

import multiprocessing
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tests.test_cifar_rkl import _tiny
from tests.test_reused_training import _comparable
from uqmix import run_lock, runs, training
from uqmix.studies import parallel_training, pn_experiment

ENSEMBLE_WITH_SOURCE = dict(
    model_kind="ensemble",
    ensemble_size=2,
    loss="cross_entropy",
    attack_measure="total_uncertainty",
    attack=True,
    attack_iterations=["1", "2"],
    attack_examples=8,
    blackbox_transfer=True,
    seed=3,
)
NETWORKS = ["member_0", "member_1", "blackbox_source_member_0", "blackbox_source_member_1"]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The reference: one process trains the four networks one after the other."""
    folder = tmp_path_factory.mktemp("sequential")
    return folder / "run", pn_experiment.run(_tiny(folder, **ENSEMBLE_WITH_SOURCE))


def test_networks_shared_out_to_helpers_give_the_sequential_run(sequential, tmp_path, monkeypatch):
    """Three processes (the run and two helpers) train member_0 and the source's member_1,
    member_1, the source's member_0: every metric and attack curve equals the sequential
    run's (the same networks), the run itself trained only its share (the others it only
    restored), each helper marked its networks done and logged to its own file, and the
    training seconds of all processes add up in timing.json."""
    trained_here = []
    fit_resumable = training.fit_resumable

    def recording_fit(model, make_dataset, *args, **kwargs):
        history = fit_resumable(model, make_dataset, *args, **kwargs)
        if history is not None:  # None: restored, nothing left to train
            trained_here.append(os.path.basename(kwargs["output_dir"]))
        return history

    monkeypatch.setattr(training, "fit_resumable", recording_fit)
    config = _tiny(tmp_path, training_processes=3, **ENSEMBLE_WITH_SOURCE)
    assert parallel_training.assign(pn_experiment.run_networks(config), 3) == {
        "member_0": 0,
        "member_1": 1,
        "blackbox_source_member_0": 2,
        "blackbox_source_member_1": 0,
    }
    metrics = pn_experiment.run(config)
    sequential_dir, sequential_metrics = sequential
    assert _comparable(metrics) == _comparable(sequential_metrics)
    out = tmp_path / "run"
    assert sorted(trained_here) == ["blackbox_source_member_1", "member_0"]
    for name in NETWORKS:
        assert training.has_checkpoint(str(out / name))
        helper_made = name in ("member_1", "blackbox_source_member_0")
        assert (out / name / parallel_training.DONE_MARKER).exists() == helper_made
    for index in (1, 2):
        log = (out / parallel_training.LOG_FILE.format(index)).read_text()
        assert "Traceback" not in log
    for key in ("train_seconds", "blackbox_source_train_seconds"):
        assert metrics[key] == runs.read_seconds(str(out), key) > 0
    # The flag is speed only: a sweep's record and the reports see one configuration.
    assert (
        runs.record_differences(runs.read_record(str(out)), runs.read_record(str(sequential_dir)))
        == []
    )


def _helpers_run(monkeypatch, script, wait=False):
    """Helper processes run ``python -c script`` instead of ``uqmix.studies.training_process``
    (their other ``Popen`` arguments kept); with ``wait``, ``Popen`` returns once it exited."""
    real_popen = subprocess.Popen

    def popen(command, **kwargs):
        process = real_popen([sys.executable, "-c", script], **kwargs)
        if wait:
            process.wait()
        return process

    monkeypatch.setattr(parallel_training.subprocess, "Popen", popen)


def test_a_failed_helper_stops_the_run_before_its_next_network_naming_its_log(
    tmp_path, monkeypatch
):
    """A helper that exited non-zero ends the run with the helper's exit code and log path:
    the run (three members: it trains member_0 and member_2, the helper member_1) trains none
    of its own networks once the failure is there, and writes no metrics.  The helper has
    exited before the run's training starts (``Popen`` waits for it): no race."""
    _helpers_run(monkeypatch, "import sys; sys.exit(7)", wait=True)
    config = _tiny(
        tmp_path,
        training_processes=2,
        **dict(ENSEMBLE_WITH_SOURCE, ensemble_size=3, blackbox_transfer=False),
    )
    log = str(tmp_path / "run" / parallel_training.LOG_FILE.format(1))
    with pytest.raises(RuntimeError, match=r"failed with exit code 7; its log: " + log):
        pn_experiment.run(config)
    for member in ("member_0", "member_2"):
        assert not training.has_checkpoint(str(tmp_path / "run" / member))
    assert not (tmp_path / "run" / runs.METRICS_FILE).exists()


class _SlowBatches(keras.callbacks.Callback):
    """Sleeps after each batch; at batch ``signal_at`` creates ``signal_file``."""

    def __init__(self, signal_file, signal_at):
        super().__init__()
        self.signal_file, self.signal_at, self.batches = signal_file, signal_at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches == self.signal_at:
            open(self.signal_file, "w").close()
        time.sleep(0.02)


def test_a_helper_failing_mid_training_stops_the_fit_within_a_second(tmp_path, monkeypatch):
    """``Helpers.callbacks`` raises in the training thread itself: a helper that fails while
    the run's ``fit`` is under way (here: when the fit's 5th batch is done) stops that fit a
    few batches later with the helper's exit code and log, not after its 2,000 batches."""
    signal_file = str(tmp_path / "fail_now")
    script = (
        "import os, sys, time\n"
        f"while not os.path.exists({signal_file!r}): time.sleep(0.01)\n"
        "sys.exit(7)"
    )
    _helpers_run(monkeypatch, script)
    helpers = parallel_training.Helpers(str(tmp_path), {"member_1": 1})
    log = helpers.launch(1, "spec.json", ())
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    slow = _SlowBatches(signal_file, signal_at=5)
    try:
        with pytest.raises(RuntimeError, match=f"failed with exit code 7; its log: {log}"):
            model.fit(
                np.zeros((200, 2)),
                np.zeros((200, 1)),
                batch_size=1,
                epochs=10,
                verbose=0,
                callbacks=[slow, *helpers.callbacks()],
            )
    finally:
        helpers.stop()
    # 0.5 s between looks, 20 ms per batch: 5 + 25 batches, + the helper's exit (< 1 s)
    assert 5 < slow.batches < 100


def test_no_helpers_add_no_callbacks():
    """K = 1: the run's fit gets no extra callback."""
    assert parallel_training.NO_HELPERS.callbacks() == []


def test_a_helper_that_trains_nothing_is_not_taken_for_done(tmp_path, monkeypatch):
    """A helper that exits 0 without training its networks is an error, not a network the run
    quietly trains itself."""
    _helpers_run(monkeypatch, "pass")
    config = _tiny(tmp_path, training_processes=2, **ENSEMBLE_WITH_SOURCE)
    with pytest.raises(RuntimeError, match="exited without training member_1"):
        pn_experiment.run(config)


def test_a_helper_keeps_the_run_folder_locked_until_it_exits(tmp_path, monkeypatch):
    """A helper holds the run's lock descriptor: after the run let go of the folder (killed),
    another process still finds it in use until the helper ends."""
    _helpers_run(monkeypatch, "import time; time.sleep(60)")
    folder = str(tmp_path / "run")
    os.makedirs(folder)
    run_lock.lock(folder)
    helpers = parallel_training.Helpers(folder, {"member_1": 1})
    helpers.launch(1, "spec.json", (run_lock.held_descriptor(folder),))
    run_lock.release(folder)  # the run is gone
    try:
        assert run_lock.holder(folder) is not None  # the helper still holds it
    finally:
        helpers.stop()
    assert run_lock.holder(folder) is None


def test_a_helper_of_a_dead_run_exits(tmp_path):
    """A helper polls its run's process id and ends itself when the run is gone."""
    script = (
        "import os, sys, time\n"
        "from uqmix.studies import parallel_training\n"
        "parallel_training.die_with_parent(os.getppid() + 999999, poll_seconds=0.05)\n"
        "time.sleep(30)\n"
    )
    start = time.monotonic()
    code = subprocess.call([sys.executable, "-c", script], timeout=60)
    assert code == 3 and time.monotonic() - start < 25


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(training_processes=0), "must be an integer >= 1"),
        (dict(training_processes=2, strategy="mirrored"), "works with --strategy=default only"),
    ],
)
def test_bad_training_processes_are_refused_before_any_work(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        pn_experiment.validate_config(_tiny(tmp_path, **overrides))
    assert not (tmp_path / "run").exists()


def _add_many(folder, key, count):
    for _ in range(count):
        runs.add_seconds(folder, key, 1.0)


def test_timing_totals_survive_concurrent_writers(tmp_path):
    """Two processes adding to timing.json at once (a run and its helper) lose no addition."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_add_many, args=(str(tmp_path), key, 200))
        for key in ("train_seconds", "blackbox_source_train_seconds")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert runs.read_seconds(str(tmp_path), "train_seconds") == 200.0
    assert runs.read_seconds(str(tmp_path), "blackbox_source_train_seconds") == 200.0
