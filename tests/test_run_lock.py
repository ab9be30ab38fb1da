"""One writer per run folder (``uqmix.run_lock``): a second process is refused before it
reads, deletes or writes anything, and a crashed holder leaves no stale lock."""

import json
import os
import subprocess
import sys
import threading

import pytest

from tests import fake_experiment
from tests.lock_helpers import REPO, held_by_another_process, lockable_by_another_process
from uqmix import run_lock, runs, sweep


def _finished_run(path):
    fake_experiment.run(fake_experiment.validate_config({"output_dir": str(path), "seed": 5}))
    return path


def _contents(folder):
    return {
        name: (folder / name).read_bytes()
        for name in sorted(os.listdir(folder))
        if name != run_lock.LOCK_FILE
    }


def test_second_process_is_refused_naming_the_holder_until_it_dies(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with held_by_another_process(folder) as holder:
        with pytest.raises(run_lock.RunInUseError) as error:
            run_lock.lock(str(folder))
        assert f"pid {holder.pid} on " in str(error.value)
        assert run_lock.holder(str(folder)).startswith(f"pid {holder.pid} on ")
    # The holder was killed (SIGKILL): the kernel released its lock, nothing to clean up.
    assert run_lock.holder(str(folder)) is None
    run_lock.lock(str(folder))
    try:
        assert not lockable_by_another_process(folder)
    finally:
        run_lock.release(str(folder))
    assert lockable_by_another_process(folder)


def test_run_in_use_is_neither_overwritten_resumed_nor_removed(tmp_path):
    folder = _finished_run(tmp_path / "run")
    before = _contents(folder)
    with held_by_another_process(folder):
        for flags in (["--overwrite"], ["--resume"], ["--overwrite", "--seed=9"]):
            result = subprocess.run(
                [sys.executable, "-m", "tests.fake_experiment", f"--output_dir={folder}", *flags],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 2, result.stderr
            (line,) = result.stderr.strip().splitlines()
            assert line.startswith(f"error: {folder} is in use by another process (pid ")
        with pytest.raises(runs.RunInUseError):
            runs.remove_run_dir(str(folder))
        assert _contents(folder) == before
    runs.remove_run_dir(str(folder))  # free again: removed
    assert not folder.exists()


def test_lock_is_reentrant_in_one_process_and_released_when_the_run_ends(tmp_path):
    folder = str(tmp_path / "run")
    config = {"output_dir": folder, "a": 1}
    with run_lock.holding(folder):
        assert runs.prepare_output_dir(folder, config) is False
        assert runs.prepare_output_dir(folder, config, resume=True) is True  # same process
        assert not lockable_by_another_process(folder)
    assert lockable_by_another_process(folder)
    _finished_run(tmp_path / "fake")
    assert lockable_by_another_process(tmp_path / "fake")  # fake_experiment.run released it


def test_lock_file_is_not_run_content(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / run_lock.LOCK_FILE).write_text("")  # left by an earlier holder
    with run_lock.holding(str(folder)):
        assert runs.prepare_output_dir(str(folder), {"a": 1}) is False  # counts as empty
    folder = _finished_run(tmp_path / "finished")
    (folder / "stale.txt").write_text("x")
    with run_lock.holding(str(folder)):
        runs.prepare_output_dir(str(folder), {"a": 2}, overwrite=True)
        assert not (folder / "stale.txt").exists()
        assert (folder / run_lock.LOCK_FILE).exists()  # kept: the folder stays locked
        assert not lockable_by_another_process(folder)
        assert json.loads((folder / runs.CONFIG_FILE).read_text()) == {"a": 2}


def test_holder_line_names_pid_host_and_command(tmp_path):
    folder = str(tmp_path)
    with run_lock.holding(folder):
        run_lock.lock(folder)
        with open(os.path.join(folder, run_lock.LOCK_FILE), encoding="utf-8") as handle:
            line = json.loads(handle.read())
    assert line["pid"] == os.getpid() and line["host"] and line["command"]
    assert run_lock.holder(folder) is None  # released


def _sweep_with_seed_1_folder(tmp_path, monkeypatch):
    """(flagfile, root, planned runs of seeds 0 and 1, seed 1's existing folder) of a sweep
    of ``tests.fake_experiment``, run from the repository root."""
    monkeypatch.chdir(REPO)  # the sweep runs ``python -m tests.fake_experiment``
    flagfile = tmp_path / "a.cfg"
    flagfile.write_text("--scale=1.0\n")
    root = tmp_path / "root"
    planned = sweep.plan([str(flagfile)], [0, 1], str(root))
    busy = root / "a" / "seed_1"
    busy.mkdir(parents=True)
    return flagfile, root, planned, busy


def test_sweep_refuses_runs_another_process_writes_before_running_anything(tmp_path, monkeypatch):
    flagfile, root, planned, busy = _sweep_with_seed_1_folder(tmp_path, monkeypatch)
    with held_by_another_process(busy) as holder:
        with pytest.raises(sweep.RunsInUseError, match=f"seed_1: pid {holder.pid} on "):
            sweep.run_sweep("tests.fake_experiment", planned, log=lambda _: None)
        assert not (root / "a" / "seed_0").exists()  # nothing ran
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.sweep",
                "--binary=tests.fake_experiment",
                f"--flagfiles={flagfile}",
                "--seeds=0,1",
                f"--output_root={root}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2 and "being written by other processes" in result.stderr
        assert not (root / "a" / "seed_0").exists()
    assert sweep.run_sweep("tests.fake_experiment", planned, log=lambda _: None) == []


def test_lock_waits_out_a_holder_that_lets_go_within_the_retry_time(tmp_path):
    """A sweep's probe (``holder``) takes the lock for an instant: a run starting in that
    instant waits ``RETRY_SECONDS`` instead of being refused."""
    with held_by_another_process(tmp_path) as holder:
        timer = threading.Timer(0.3, holder.kill)
        timer.start()
        try:
            run_lock.lock(str(tmp_path))  # refused at first, taken once the holder died
        finally:
            timer.cancel()
    try:
        assert not lockable_by_another_process(tmp_path)
    finally:
        run_lock.release(str(tmp_path))


def test_removed_and_recreated_folder_is_locked_again(tmp_path):
    """``remove_run_dir`` renames the folder away under its lock, then deletes it; a folder
    prepared again at the same path is locked anew (not taken for the deleted one)."""
    folder = str(tmp_path / "run")
    with run_lock.holding(folder):
        runs.prepare_output_dir(folder, {"a": 1})
        runs.remove_run_dir(folder)
        assert os.listdir(tmp_path) == []  # no half-deleted sibling left
        runs.prepare_output_dir(folder, {"a": 2})
        assert not lockable_by_another_process(folder)
    assert lockable_by_another_process(folder)


def test_overwrite_refuses_a_symbolic_link_to_a_run(tmp_path):
    target = _finished_run(tmp_path / "run")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(runs.OutputPathError, match="symbolic link"):
        runs.prepare_output_dir(str(link), {"a": 1}, overwrite=True)
    assert (target / runs.METRICS_FILE).exists()


def test_a_lock_handed_to_a_child_is_adopted_and_held_until_the_parent_lets_go(tmp_path):
    """``handed_to_child``: the child's ``lock`` adopts the inherited lock (without it the
    child would be refused: the parent holds the folder); a third process is refused while
    the child runs and after it exits, until the parent's block ends."""
    child = (
        "import sys; from uqmix import run_lock; run_lock.lock(sys.argv[1]); "
        "run_lock.release(sys.argv[1]); print('adopted')"
    )
    with run_lock.handed_to_child(str(tmp_path)) as (fds, env):
        assert fds and env
        result = subprocess.run(
            [sys.executable, "-c", child, str(tmp_path)],
            cwd=REPO,
            pass_fds=fds,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout.strip() == "adopted", result.stderr
        assert not lockable_by_another_process(tmp_path)  # the child's exit released nothing
        refused = subprocess.run(
            [sys.executable, "-c", child, str(tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0 and "RunInUseError" in refused.stderr
    assert lockable_by_another_process(tmp_path)


def test_sweep_holds_each_run_folder_before_writing_its_log(tmp_path, monkeypatch):
    """A folder taken between the sweep's probe and the run's start (the probe skipped here)
    is not started and gets no log line; the other runs go ahead."""
    monkeypatch.setattr(sweep, "check_not_in_use", lambda planned: None)
    _, root, planned, busy = _sweep_with_seed_1_folder(tmp_path, monkeypatch)
    lines = []
    with held_by_another_process(busy):
        failures = sweep.run_sweep("tests.fake_experiment", planned, log=lines.append)
    assert [run.seed for run in failures] == [1]
    assert any(
        "a seed 1: NOT STARTED (" in line and "in use by another process" in line for line in lines
    )
    assert not (busy / "log.txt").exists()
    assert (root / "a" / "seed_0" / runs.METRICS_FILE).exists()


def test_a_read_only_lock_handed_to_a_child_is_adopted(tmp_path):
    """The parent opens another user's lock file read-only (``run_lock._open``); the child
    adopts that descriptor as it is, without writing its holder line into it."""
    (tmp_path / run_lock.LOCK_FILE).write_text("")
    child = "import sys; from uqmix import run_lock; run_lock.lock(sys.argv[1]); print('adopted')"
    with open(tmp_path / run_lock.LOCK_FILE, encoding="utf-8") as read_only:
        assert run_lock._try_flock(read_only)
        result = subprocess.run(
            [sys.executable, "-c", child, str(tmp_path)],
            cwd=REPO,
            pass_fds=(read_only.fileno(),),
            env={**os.environ, run_lock.INHERITED_FD_VARIABLE: str(read_only.fileno())},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout.strip() == "adopted", result.stderr
        assert not lockable_by_another_process(tmp_path)
    assert lockable_by_another_process(tmp_path)
