"""``--training_processes=K``: a Prior Network run's networks trained by K processes at once.

A run trains independent networks one after the other: the members of an ensemble and, with
``--blackbox_transfer``, the black-box source network(s).  On a machine with cores to spare
that is wall time lost: a PN-RKL-ADV run with its black-box source takes two 20-epoch
trainings in a row.  With K > 1 the run starts K − 1 helper processes (this machine, the same
Python and environment) before training.  Network j of the run's list (``run_networks``: its
own networks, then the black-box source's) is trained by process j mod K, the run itself being
process 0:

* the run trains its own share first; for each helper's network it then waits until that
  network is done (the helper writes ``DONE_MARKER`` into its folder after training it) and
  restores it from its finished checkpoint (``training.fit_resumable``: nothing left to train);
* each network folder is written by one process only; every process adds its epochs' seconds
  to the run's timing.json (``runs.add_seconds`` holds a lock), so ``train_seconds`` is the
  training time summed over processes, as with K = 1;
* a helper trains exactly what the run would have trained: the same flags, network seeds and
  batch orders (``pn_experiment.train_networks``), with a checkpoint every epoch, so an
  interrupted run resumes every network where it stopped, whatever K it resumes with;
* a helper that fails stops the run at once (the run looks before each network it trains and,
  in ``Helpers.callbacks``, before each batch) with the helper's exit code and log file
  (``<output_dir>/training_process_<k>.log``); one that exits without finishing its networks
  is an error too; a run that stops terminates its helpers;
* the helpers keep the run folder's lock (``uqmix.run_lock``) until they exit, and exit when
  their run dies (Linux: ``PR_SET_PDEATHSIG``; elsewhere they poll their parent), so no second
  run can open the folder while a helper still writes in it.

K does not change the result (``runs.VOLATILE_KEYS``): a sweep's record and the reports treat
runs made with different K as the same configuration.  Only the single-machine default
strategy can share out networks (``validate``), and on CPU cores: on one GPU every process
would claim the same device memory.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import keras

from uqmix import console, run_lock, runs

FLAG = "training_processes"
SPEC_FILE = "training_process_{}.json"
LOG_FILE = "training_process_{}.log"
DONE_MARKER = "trained_by_helper"  # in a network folder: its helper finished training it
POLL_SECONDS = 0.5
ORPHAN_POLL_SECONDS = 2.0


def validate(config):
    """Raises ``ValueError`` for K < 1, and for K > 1 with another strategy than ``default``."""
    count = config[FLAG]
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"--{FLAG} must be an integer >= 1, got {count!r}.")
    if count > 1 and config["strategy"] != "default":
        raise ValueError(
            f"--{FLAG}={count} shares a run's networks out to processes on this machine; it "
            f"works with --strategy=default only (got {config['strategy']}): use "
            f"--{FLAG}=1 with a distribution strategy."
        )


def assign(networks, processes):
    """{network folder: process index} — network j to process j mod ``processes``."""
    return {name: j % processes for j, (name, _, _) in enumerate(networks)}


class Helpers:
    """The helper processes of one run: which networks they train, whether they failed."""

    def __init__(self, output_dir=None, owner=None):
        self._output_dir = output_dir
        self._owner = {} if owner is None else owner  # network folder -> helper index >= 1
        self._processes = {}  # helper index -> Popen
        self._logs = {}  # helper index -> log path
        self._stopping = threading.Event()
        self._failure = None

    def trained_elsewhere(self, name):
        """True when a helper trains network folder ``name``."""
        return name in self._owner

    def failure(self):
        """The message of the first helper that failed, or None."""
        self._check_exits()
        return self._failure

    def raise_if_failed(self):
        """``RuntimeError`` naming the failed helper's exit code and log, if one failed: the
        run checks it before each network it trains itself, so a helper that failed while
        the run was between networks stops it there."""
        if self.failure():
            raise RuntimeError(self._failure)

    def wait_for(self, name):
        """Blocks until the helper training ``name`` has finished it (its ``DONE_MARKER``);
        ``RuntimeError`` naming the helper's log when it failed, or exited without it."""
        index = self._owner[name]
        marker = os.path.join(self._output_dir, name, DONE_MARKER)
        while not os.path.exists(marker):
            self.raise_if_failed()
            if self._processes[index].poll() is not None and not os.path.exists(marker):
                raise RuntimeError(
                    f"helper process {index} of --{FLAG} exited without training {name} "
                    f"(no {DONE_MARKER} in its folder); its log: {self._logs[index]}. Resume "
                    f"the run (--resume, --{FLAG}=1 to train it here)."
                )
            time.sleep(POLL_SECONDS)

    def _check_exits(self):
        if self._failure is None:
            for index, process in self._processes.items():
                code = process.poll()
                if code not in (None, 0) and not self._stopping.is_set():
                    self._failure = (
                        f"helper process {index} of --{FLAG} failed with exit code {code}; "
                        f"its log: {self._logs[index]}. Fix the cause and resume the run "
                        "(--resume): every network continues from its last epoch."
                    )
                    break

    def launch(self, index, spec_path, pass_fds):
        """Starts helper ``index`` on ``spec_path``, its output appended to its log file."""
        self._logs[index] = os.path.join(self._output_dir, LOG_FILE.format(index))
        with open(self._logs[index], "a", encoding="utf-8") as log:
            self._processes[index] = subprocess.Popen(
                [sys.executable, "-m", "uqmix.studies.training_process", spec_path],
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=pass_fds,
            )
        return self._logs[index]

    def callbacks(self):
        """Keras callbacks for the run's own ``fit`` (none without helpers): before each batch
        (at most every ``POLL_SECONDS``) they raise the failed helper's ``RuntimeError``, so a
        run with hours of its own training left stops within a second of a helper's failure.
        Synchronous, in the training thread: an exception sent from another thread
        (``_thread.interrupt_main``, the first design) can land in code that swallows it (a
        weakref callback's "Exception ignored" in CI) and the run trained on."""
        return [_FailedHelperCheck(self)] if self._owner else []

    def stop(self):
        """Terminates the helpers still running (the run stops) and waits for them."""
        self._stopping.set()
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


NO_HELPERS = Helpers()


class _FailedHelperCheck(keras.callbacks.Callback):
    """``Helpers.callbacks``: ``raise_if_failed`` before a batch, at most every POLL_SECONDS."""

    def __init__(self, helpers):
        super().__init__()
        self._helpers = helpers
        self._next_look = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + POLL_SECONDS
            self._helpers.raise_if_failed()


def start(config, networks, verbose=1):
    """Starts the helpers of a run with ``config`` (validated; its output folder prepared and
    locked) over ``networks`` [(folder, prefix, seed offset)]; returns their ``Helpers`` (no
    helpers when K = 1 or the run has fewer than two networks)."""
    count = min(config[FLAG], len(networks))
    if count < 2:
        return NO_HELPERS
    output_dir = config["output_dir"]
    owner = {name: k for name, k in assign(networks, count).items() if k > 0}
    for name in owner:  # a marker of an earlier invocation would stand for this one's work
        marker = os.path.join(output_dir, name, DONE_MARKER)
        if os.path.exists(marker):
            os.remove(marker)
    lock_fd = run_lock.held_descriptor(output_dir)
    helpers = Helpers(output_dir, owner)
    try:
        for index in range(1, count):
            jobs = [[p, o, name] for name, p, o in networks if owner.get(name) == index]
            spec_path = os.path.join(output_dir, SPEC_FILE.format(index))
            runs.atomic_write_json(
                spec_path,
                {"config": runs.jsonable(config), "jobs": jobs, "parent_pid": os.getpid()},
            )
            log = helpers.launch(index, spec_path, () if lock_fd is None else (lock_fd,))
            console.progress(
                f"helper process {index} trains {', '.join(j[2] for j in jobs)} (log: {log})",
                verbose,
            )
    except BaseException:
        helpers.stop()
        raise
    return helpers


def mark_done(output_dir, name):
    """In a helper: network ``name`` is trained (``Helpers.wait_for`` returns)."""
    runs.atomic_write_json(os.path.join(output_dir, name, DONE_MARKER), {"pid": os.getpid()})


def die_with_parent(parent_pid, poll_seconds=ORPHAN_POLL_SECONDS):
    """In a helper: end this process when its run (``parent_pid``) is gone, so a killed run
    leaves no helper training on (and holding the run folder's lock).  Linux delivers SIGKILL
    at the parent's death (``PR_SET_PDEATHSIG``); a daemon thread polling the parent's id
    covers other systems and a parent that died before the request."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(poll_seconds)

    thread = threading.Thread(target=watch, daemon=True, name="uqmix-parent-watch")
    thread.start()
    return thread


def read_spec(path):
    """(config, jobs [(prefix, seed offset, folder)], parent pid) of a helper's spec file."""
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    return spec["config"], [tuple(job) for job in spec["jobs"]], int(spec["parent_pid"])
