"""``--training_processes=K``: a Prior Network run's networks trained by K processes at once.

A run trains independent networks one after the other: the members of an ensemble and, with
``--blackbox_transfer``, the black-box source network(s).  On a machine with cores or
accelerators to spare that is wall time lost: a PN-RKL-ADV run with its black-box source takes
two 20-epoch trainings in a row.  With K > 1 the run starts K − 1 helper processes (this
machine, the same Python and environment) before training.  Network j of the run's list
(``run_networks``: its own networks, then the black-box source's) is trained by process
j mod K, the run itself being process 0:

* the run trains its own share first, then, for each helper's network, waits for that helper
  to exit and restores the network from its finished checkpoint (``training.fit_resumable``:
  nothing left to train);
* each network folder is written by one process only; every process adds its epochs' seconds
  to the run's timing.json (``runs.add_seconds`` holds a lock), so ``train_seconds`` is the
  training time summed over processes, as with K = 1;
* a helper trains exactly what the run would have trained: the same flags, network seeds and
  batch orders (``pn_experiment.train_networks``), with a checkpoint every epoch, so an
  interrupted run resumes every network where it stopped, whatever K it resumes with;
* a helper that fails stops the run with its exit code and log file
  (``<output_dir>/training_process_<k>.log``); a run that stops for any reason terminates its
  helpers; a helper whose run died exits (it polls its parent's process id).

K does not change the result (``runs.VOLATILE_KEYS``): a sweep's record and the reports treat
runs made with different K as the same configuration.  Only the single-machine default
strategy can share out networks (``validate``).
"""

import json
import os
import subprocess
import sys
import threading
import time

from uqmix import console, runs

FLAG = "training_processes"
SPEC_FILE = "training_process_{}.json"
LOG_FILE = "training_process_{}.log"
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
    """The helper processes of one run: which networks they train, their exit."""

    def __init__(self, owner=None, processes=None, logs=None):
        self._owner = {} if owner is None else owner  # network folder -> helper index >= 1
        self._processes = {} if processes is None else processes  # helper index -> Popen
        self._logs = {} if logs is None else logs  # helper index -> log path

    def trained_elsewhere(self, name):
        """True when a helper trains network folder ``name``."""
        return name in self._owner

    def wait_for(self, name):
        """Blocks until the helper training ``name`` exits; ``RuntimeError`` naming its log
        when it failed."""
        index = self._owner[name]
        code = self._processes[index].wait()
        if code != 0:
            raise RuntimeError(
                f"helper process {index} of --{FLAG} (training {name}) failed with exit code "
                f"{code}; its log: {self._logs[index]}. Fix the cause and resume the run "
                "(--resume): every network continues from its last epoch."
            )

    def stop(self):
        """Terminates the helpers still running (the run stops) and waits for them."""
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


def start(config, networks, verbose=1):
    """Starts the helpers of a run with ``config`` (validated; its output folder prepared)
    over ``networks`` [(folder, prefix, seed offset)]; returns their ``Helpers`` (no
    helpers when K = 1 or the run has one network)."""
    count = min(config[FLAG], len(networks))
    if count < 2:
        return NO_HELPERS
    owner = {name: k for name, k in assign(networks, count).items() if k > 0}
    processes, logs = {}, {}
    helpers = Helpers(owner, processes, logs)  # fills as the helpers start (stop() sees them)
    try:
        for index in range(1, count):
            jobs = [
                [prefix, offset, name]
                for name, prefix, offset in networks
                if owner.get(name) == index
            ]
            spec_path = os.path.join(config["output_dir"], SPEC_FILE.format(index))
            runs.atomic_write_json(
                spec_path,
                {"config": runs.jsonable(config), "jobs": jobs, "parent_pid": os.getpid()},
            )
            logs[index] = os.path.join(config["output_dir"], LOG_FILE.format(index))
            with open(logs[index], "a", encoding="utf-8") as log:
                processes[index] = subprocess.Popen(
                    [sys.executable, "-m", "uqmix.studies.training_process", spec_path],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            console.progress(
                f"helper process {index} trains {', '.join(j[2] for j in jobs)} "
                f"(log: {logs[index]})",
                verbose,
            )
    except BaseException:
        helpers.stop()
        raise
    return helpers


def watch_parent(parent_pid, poll_seconds=ORPHAN_POLL_SECONDS):
    """In a helper: a daemon thread that ends this process when its run (``parent_pid``) is
    gone, so a killed run leaves no helper training on."""

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
