"""Another process that holds, or tries to take, a run folder's lock (``uqmix.run_lock``)."""

import contextlib
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HOLD = (
    "import sys; from uqmix import run_lock; run_lock.lock(sys.argv[1]); "
    "print('locked', flush=True); sys.stdin.read()"
)
_TRY = (
    "import sys; from uqmix import run_lock\n"
    "try:\n    run_lock.lock(sys.argv[1])\nexcept run_lock.RunInUseError:\n    sys.exit(7)\n"
)


@contextlib.contextmanager
def held_by_another_process(folder):
    """Yields the ``Popen`` of a python process holding ``folder``'s lock until the block
    ends (then it is killed with SIGKILL, as a crash would end it)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


def lockable_by_another_process(folder):
    """True when a fresh python process can take ``folder``'s lock (False: someone has it)."""
    result = subprocess.run(
        [sys.executable, "-c", _TRY, str(folder)], cwd=REPO, capture_output=True, timeout=60
    )
    assert result.returncode in (0, 7), result.stderr
    return result.returncode == 0
