"""One process at a time per run folder: an advisory lock on ``<output_dir>/.uqmix_lock``.

Two processes writing the same run folder (a sweep started twice, a second
``--resume`` while the first still runs, ``--overwrite`` of a run in progress)
would mix their checkpoints and results, or delete a running training, without
a word.  ``uqmix.runs.claim_output_dir`` (called by ``prepare_output_dir``, and
by ``run_holding_output_dir`` before the data is read) therefore takes this lock
before anything in a run folder is read, deleted or written, and the
experiments hold it until their run ends (``holding``):

* the lock is ``flock(LOCK_EX | LOCK_NB)`` on the file ``LOCK_FILE`` inside
  the folder, so the operating system releases it when the holder exits in any
  way (a crash or ``kill -9`` leaves no stale lock to clean up by hand);
* the file holds one JSON line naming the holder (pid, host, start time,
  command), which the ``RunInUseError`` of a refused process quotes;
* within one process the lock is re-entrant (the same folder prepared twice,
  as a resume test or a notebook does, is not refused);
* the file is part of no result: emptiness checks and ``--overwrite`` ignore it
  (``uqmix.runs.entries``).

A sweep hands each run folder's lock to the binary it starts (``handed_to_child``:
the open lock file is inherited, its descriptor named in ``UQMIX_RUN_LOCK_FD``),
so the folder is locked from before the sweep writes the run's ``log.txt`` to
the end of the run, with no gap while the binary starts.

A process that only probes (``holder``) takes the lock for an instant; ``lock``
retries for ``RETRY_SECONDS`` before refusing, so a probe never refuses a run.

``flock`` is local to one machine's kernel on local file systems; on NFS, Linux
emulates it with POSIX byte-range locks, which the server arbitrates unless the
mount says ``nolock`` or ``local_lock=flock|all`` (then it is local to each
client).  Where ``fcntl`` does not exist (Windows), or the file system refuses
locks, nothing is locked and ``lock`` warns once.
"""

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
import threading
import time
import warnings

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

LOCK_FILE = ".uqmix_lock"
INHERITED_FD_VARIABLE = "UQMIX_RUN_LOCK_FD"  # a lock handed down by the parent (a sweep)
RETRY_SECONDS = 1.0  # how long ``lock`` waits out a probe before refusing
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL)

_held = {}  # realpath of a folder → the open lock file this process holds
_guard = threading.Lock()
_warned = []  # the platform / file-system warning is given once per process


class RunInUseError(ValueError):
    """Another process holds the run folder's lock."""


def _key(folder):
    return os.path.realpath(folder)


def _holder_line():
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv) if sys.argv else "python",
        }
    )


def _describe(text):
    """'pid 12, host h, since 2026-…: command' from a lock file's line (or a plain note)."""
    try:
        holder = json.loads(text)
        return (
            f"pid {holder['pid']} on {holder['host']}, since {holder['started']}: "
            f"{holder['command']}"
        )
    except (ValueError, TypeError, KeyError):
        return "holder not recorded yet"


class _Unsupported(Exception):
    """The file system does not lock (NFS without lockd, some FUSE mounts)."""


def _try_flock(handle):
    """True when the exclusive lock was taken; False when another open file holds it."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if error.errno in _UNSUPPORTED:
            raise _Unsupported(os.strerror(error.errno)) from None
        raise
    return True


def _warn_unlocked(folder, why):
    if not _warned:
        _warned.append(True)
        warnings.warn(
            f"uqmix cannot lock run folders here ({why}): do not run two processes into "
            f"{folder} (or any run folder) at once.",
            stacklevel=3,
        )


def _open(path):
    """The lock file, opened for writing when allowed (NFS needs it for an exclusive lock);
    read-only when it belongs to another user of a shared folder."""
    try:
        return open(path, "a+", encoding="utf-8")  # noqa: SIM115
    except PermissionError:
        return open(path, encoding="utf-8")  # noqa: SIM115


def _same_file(handle, path):
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


def _in_use_error(folder, handle):
    handle.seek(0)
    holder = _describe(handle.read().strip())
    return RunInUseError(
        f"{folder} is in use by another process ({holder}). Two processes writing one run "
        "folder would mix their checkpoints and results: wait for it to finish, stop it, or "
        "choose another --output_dir."
    )


def _inherited(path):
    """The lock file the parent process handed down (``handed_to_child``) when it is
    ``path``'s, opened on the inherited descriptor (adopted once), else None."""
    value = os.environ.get(INHERITED_FD_VARIABLE, "")
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return None
    except OSError:
        return None
    del os.environ[INHERITED_FD_VARIABLE]
    # Opened as the parent opened it (``_open``): ``open(fd, "a+")`` of a read-only
    # descriptor succeeds and only its first write fails.
    writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
    return open(fd, "a+" if writable else "r", encoding="utf-8")  # noqa: SIM115


def lock(folder):
    """Takes ``folder``'s lock for this process (the folder must exist); re-entrant.

    Raises ``RunInUseError`` naming the holder when another process has it (after waiting
    ``RETRY_SECONDS`` for a mere probe to let go).
    """
    key, path = _key(folder), os.path.join(folder, LOCK_FILE)
    with _guard:
        held = _held.get(key)
        if held is not None:
            if _same_file(held, path):
                return
            del _held[key]  # the folder was deleted or replaced since: lock the new one
            held.close()
        if fcntl is None:
            # no lock, but the lock file still marks the folder as claimed by uqmix (a sweep's
            # run folder holding only its log.txt is resumable only beside it: runs.claim_output_dir)
            with open(path, "a", encoding="utf-8"):
                pass
            _warn_unlocked(folder, "no fcntl on this platform")
            return
        inherited = _inherited(path)
        handle = inherited or _open(path)
        try:
            deadline = time.monotonic() + RETRY_SECONDS
            # an inherited descriptor shares the parent's open file, so it holds the lock
            while inherited is None and not _try_flock(handle):
                if time.monotonic() >= deadline:
                    raise _in_use_error(folder, handle)
                time.sleep(0.05)
            if handle.writable():
                handle.seek(0)
                handle.truncate()
                handle.write(_holder_line() + "\n")
                handle.flush()
        except _Unsupported as error:
            handle.close()
            _warn_unlocked(folder, f"the file system refuses locks: {error}")
            return
        except BaseException:
            handle.close()
            raise
        _held[key] = handle


def release(folder):
    """Gives up this process's lock on ``folder`` (nothing when it holds none).  The lock
    file stays: removing it could let a third process lock a file no one else sees."""
    with _guard:
        handle = _held.pop(_key(folder), None)
    if handle is not None:
        handle.close()  # closing the last descriptor releases the flock


def holder(folder):
    """The description of the *other* process holding ``folder``'s lock, or None (free,
    no lock file, held by this process, no fcntl or no locks on this file system).  Probes
    by taking the lock for an instant (``lock`` waits such a probe out)."""
    path = os.path.join(folder, LOCK_FILE)
    if fcntl is None or not os.path.isfile(path):
        return None
    with _guard:
        held = _held.get(_key(folder))
        if held is not None and _same_file(held, path):
            return None
    with _open(path) as handle:
        try:
            if _try_flock(handle):
                return None  # closing releases the probe's lock
        except _Unsupported as error:
            _warn_unlocked(folder, f"the file system refuses locks: {error}")
            return None
        handle.seek(0)
        return _describe(handle.read().strip())


def held_descriptor(folder):
    """The file descriptor of this process's lock on ``folder``, or None when it holds none:
    a helper process started with ``pass_fds`` of it keeps the folder locked until it exits
    too (``uqmix.studies.parallel_training``)."""
    with _guard:
        handle = _held.get(_key(folder))
    return None if handle is None else handle.fileno()


@contextlib.contextmanager
def handed_to_child(folder):
    """Takes ``folder``'s lock and yields (pass_fds, env) for ``subprocess``: a child started
    with ``pass_fds=pass_fds`` and ``env`` (added to its environment) adopts the lock in its
    own ``lock(folder)`` instead of being refused.  The lock is held until the block ends:
    the child's exit alone does not release it.  ((), {}) where nothing can be locked."""
    with holding(folder):
        lock(folder)
        with _guard:
            handle = _held.get(_key(folder))
        if handle is None:
            yield (), {}
        else:
            yield (handle.fileno(),), {INHERITED_FD_VARIABLE: str(handle.fileno())}


@contextlib.contextmanager
def holding(folder):
    """Releases, when the block ends, the lock on ``folder`` that was taken inside it
    (by ``uqmix.runs.prepare_output_dir``); a lock held before the block is kept."""
    held_before = _key(folder) in _held
    try:
        yield
    finally:
        if not held_before:
            release(folder)
