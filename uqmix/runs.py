"""Run directories: what produced a run, safe overwrite, atomic result files.

Every experiment binary writes into one ``output_dir``:

* ``uqmix_run.json`` — the run marker, written when the folder is prepared:
  the binary and the uqmix version that produced the run.  Only a folder with
  this marker (or, for runs made before the marker existed, with both
  ``config.json`` and ``flags.cfg``) is ever deleted by ``--overwrite``.
* ``config.json`` — the configuration (every flag value) it ran with; a second
  run into the same folder with a different configuration is refused unless it
  resumes the same configuration (``resume=True``) or ``overwrite=True``.
  Marker + configuration are the run's *record* (``read_record``), which a
  sweep compares with the run it was asked for.
* ``flags.cfg`` — the same, as a flagfile that re-runs it.
* ``metrics.json`` and other results — written atomically (temp file in the
  same folder, fsync, ``os.replace``, mode 0666 minus the umask), so a crash
  never leaves half a file.

Output paths are checked before any work (``check_output_dir``): a path that
is a file, lies under a file, or is not writable is one ``OutputPathError``
naming it.  ``remove_run_dir`` never deletes the working directory, the home
directory, a filesystem root, a folder containing the working directory, a
folder that holds no uqmix run, or a run folder another process is using.

One process at a time writes a run folder (``uqmix.run_lock``):
``prepare_output_dir`` locks the folder before it deletes or writes anything
in it and raises ``RunInUseError`` naming the process that has it; the
experiments hold it to the end of their run (``run_holding_output_dir``).
"""

import contextlib
import json
import math
import os
import shutil
import stat
import sys
import tempfile
import threading
import time

import numpy as np

from uqmix import __version__, run_lock

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

CONFIG_FILE = "config.json"
FLAGS_FILE = "flags.cfg"
METRICS_FILE = "metrics.json"
RUN_MARKER = "uqmix_run.json"
TIMING_FILE = "timing.json"

# Flags that may differ between a run and its resumption without changing what
# is computed.
VOLATILE_KEYS = frozenset(
    {
        "resume",
        "overwrite",
        "output_dir",
        "data_dir",
        "verbose",
        "progress",
        "export_dir",
        "num_workers",
        "steps_per_execution",  # speed only: the same results for every value (tests)
        # Where a finished training may be reused from (uqmix.training_cache): a run made
        # with the cache and one made without it are the same result.
        "training_cache",
        # Whose finished networks a Prior Network run evaluates (uqmix.studies.reused_training):
        # the run's result is that of its flags, whoever trained them.
        "reuse_training_from",
        # How many processes train a run's networks (uqmix.studies.parallel_training): speed
        # only, the same networks.
        "training_processes",
        # How often an attack curve's progress is saved (uqmix.attack_backup): a resumed
        # curve gives the numbers of an uninterrupted one.
        "attack_backup_every_seconds",
    }
)


class ConfigMismatchError(ValueError):
    """output_dir holds a run made with another configuration."""


class OutputPathError(ValueError):
    """An output path cannot be written (a file, under a file, not writable) or must not be
    deleted (no uqmix run in it, or the working/home directory, a root or an ancestor of the
    working directory)."""


RunInUseError = run_lock.RunInUseError
LOCK_FILE = run_lock.LOCK_FILE


def jsonable(value):
    """``value`` with tuples as lists, numpy scalars and arrays (and tensors) as Python
    values, non-finite floats as None, dict keys as strings: what ``json.dump`` writes."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if hasattr(value, "numpy"):
        return jsonable(value.numpy())
    return value


_UMASK_LOCK = threading.Lock()


def file_mode():
    """0666 minus the process umask: the mode ``open(path, "w")`` would give a new file."""
    with _UMASK_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _atomic_replace(path, write, suffix=None):
    """Calls ``write(temp_path)`` for a temp file next to ``path``, then renames it over
    ``path`` (mode 0666 minus the umask); the temp file is removed on any failure."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=".tmp-", suffix=suffix or os.path.basename(path)
    )
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    """Writes ``data`` to ``path`` so that readers see the old or the new file, never half."""
    atomic_write_files({path: data})


def json_bytes(obj):
    """UTF-8 JSON text (indent 2, sorted keys, final newline) with NumPy/tensor values
    converted and non-finite floats as null."""
    text = json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    return (text + "\n").encode("utf-8")


def atomic_write_json(path, obj):
    """JSON with NumPy/tensor values converted; non-finite floats become null."""
    atomic_write_bytes(path, json_bytes(obj))


def atomic_write_files(contents, modes=None):
    """Writes every ``{path: bytes}`` or none: all temp files first, then the renames.

    Each file gets ``modes[path]`` (default 0666 minus the umask).  A destination that is a
    folder, or a failure while writing the temp files (a folder that is a file, a full disk),
    leaves every destination untouched.
    """
    folders = [path for path in contents if os.path.isdir(path)]
    if folders:
        raise OutputPathError(f"{folders[0]} is a folder; cannot write a file there.")
    staged = []
    try:
        for path, data in contents.items():
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, (modes or {}).get(path, file_mode()))
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    return list(contents)


def check_rewritable(path, flag=None):
    """The real path (symbolic links resolved) of the existing file ``path``, which
    ``rewrite_file`` may replace; ``OutputPathError`` (naming ``--flag`` when given) when it is
    not a regular file, is read-only (no write permission bit at all, which root would
    otherwise ignore, or none for this process), or its folder cannot take the temp file.
    ``FileNotFoundError`` when it does not exist.  Writes nothing."""
    name = f"--{flag}={path}" if flag else path
    real = os.path.realpath(path)
    status = os.stat(real)
    mode = stat.S_IMODE(status.st_mode)
    if not stat.S_ISREG(status.st_mode):
        raise OutputPathError(f"{name} is not a regular file; nothing was written.")
    if not mode & 0o222 or not os.access(real, os.W_OK):
        raise OutputPathError(
            f"{name} is read-only (mode {mode:04o}"
            f"{f', {real}' if real != os.path.abspath(path) else ''}); nothing was written. "
            f"Make it writable (chmod u+w {real}) or pass a writable copy."
        )
    folder = os.path.dirname(real)
    if not _writable(folder):
        raise OutputPathError(
            f"{name}: its folder {folder} is not writable (the file is replaced through a temp "
            "file beside it); nothing was written."
        )
    return real


def rewrite_file(path, data, flag=None):
    """Replaces the contents of the existing file ``path`` with ``data`` atomically, as an
    editor saving it would: through a symbolic link the link's target is replaced (the link
    stays a link), and the file keeps its mode.  Refused (``check_rewritable``, nothing
    written) for a file that is read-only or not a regular file.  Returns the real path."""
    real = check_rewritable(path, flag)
    atomic_write_files({real: data}, modes={real: stat.S_IMODE(os.stat(real).st_mode)})
    return real


def atomic_save_model(model, path):
    """``model.save(path)`` through a temp ``.keras`` file renamed over ``path``."""

    _atomic_replace(path, model.save, suffix=".keras")


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_json_object(path):
    """The JSON object (dict) in ``path``; ValueError naming the file when it is not one."""
    try:
        value = read_json(path)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: corrupt JSON ({error})") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got a JSON {type(value).__name__}")
    return value


def _comparable(config):
    return {k: v for k, v in jsonable(config).items() if k not in VOLATILE_KEYS}


def differences(old, new):
    """["key: old → new", …] over the keys where two flag dicts differ (sorted)."""
    keys = sorted(set(old) | set(new))
    missing = "(absent)"
    return [
        f"{k}: {json.dumps(old.get(k, missing))} → {json.dumps(new.get(k, missing))}"
        for k in keys
        if old.get(k, missing) != new.get(k, missing)
    ]


# -- output paths ----------------------------------------------------------------------------
def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _writable(folder):
    """True when a file can be created in ``folder`` (tried, not ``os.access``: root ignores
    permission bits but not read-only mounts)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".uqmix-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def check_output_dir(path, flag="output_dir"):
    """Raises ``OutputPathError`` naming ``--flag`` when ``path`` cannot become a folder of
    results: empty, an existing file, under a file, or in a folder that is not writable.
    Creates nothing."""
    if not path:
        raise OutputPathError(f"--{flag} must be set.")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputPathError(f"--{flag}={path} is a file, not a folder; choose another path.")
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise OutputPathError(f"--{flag}={path} cannot be created: {existing} is a file.")
    if not _writable(existing):
        what = (
            "is"
            if os.path.abspath(path) == existing
            else f"would be created in {existing}, which is"
        )
        raise OutputPathError(f"--{flag}={path} {what} not writable; choose another path.")
    return os.path.abspath(path)


def is_run_dir(path):
    """True when ``path`` holds a uqmix run: the marker, or (runs made before the marker)
    both config.json and flags.cfg."""
    return os.path.isfile(os.path.join(path, RUN_MARKER)) or (
        os.path.isfile(os.path.join(path, CONFIG_FILE))
        and os.path.isfile(os.path.join(path, FLAGS_FILE))
    )


def entries(path):
    """The names in folder ``path`` that belong to a run: all but the lock file."""
    return [name for name in os.listdir(path) if name != LOCK_FILE]


def _protected_reason(path):
    real = os.path.realpath(path)
    cwd = os.path.realpath(os.getcwd())
    if real == os.path.dirname(real) or os.path.ismount(real):
        return "a filesystem root"
    if real == os.path.realpath(os.path.expanduser("~")):
        return "the home directory"
    if real == cwd:
        return "the working directory"
    if cwd.startswith(real.rstrip(os.sep) + os.sep):
        return "a folder containing the working directory"
    return None


def check_removable(path):
    """Raises ``OutputPathError`` unless ``path`` may be deleted as a run folder: not the
    working or home directory, a root or an ancestor of the working directory, not a
    symbolic link, and a uqmix run folder (``is_run_dir``).  Deletes nothing."""
    reason = _protected_reason(path)
    if reason:
        raise OutputPathError(f"refusing to delete {path}: it is {reason}.")
    if os.path.islink(os.path.normpath(path)):
        raise OutputPathError(
            f"refusing to delete {path}: it is a symbolic link; point --output_dir at the "
            "folder itself, or delete it yourself."
        )
    if not is_run_dir(path):
        raise OutputPathError(
            f"refusing to delete {path}: it holds no uqmix run ({RUN_MARKER}, or {CONFIG_FILE} "
            f"with {FLAGS_FILE}); remove it yourself or choose another --output_dir."
        )


def remove_run_dir(path):
    """Deletes the run folder ``path``; refuses (``OutputPathError``, nothing deleted) when
    ``check_removable`` does, and (``RunInUseError``) while another process uses the run.
    The folder is first renamed, under its lock, to a hidden sibling ``.NAME.deleting-…``
    and then deleted (an interrupted deletion leaves that sibling, never a half-run)."""
    check_removable(path)
    run_lock.lock(path)
    parent, name = os.path.split(os.path.abspath(path))
    doomed = os.path.join(parent, f".{name}.deleting-{os.getpid()}-{time.time_ns()}")
    try:
        # Still locked while it moves (the lock file moves with it): no other process can
        # lock and write the folder half-deleted.
        os.rename(path, doomed)
    finally:
        run_lock.release(path)  # the folder is gone from ``path``: nothing left to hold
    shutil.rmtree(doomed)


def _clear_run_dir(path):
    """Deletes the contents of the run folder ``path``, whose lock this process holds (the
    lock file stays, so the folder stays locked)."""
    for name in entries(path):
        child = os.path.join(path, name)
        if os.path.isdir(child) and not os.path.islink(child):
            shutil.rmtree(child)
        else:
            os.remove(child)


# -- the run record ------------------------------------------------------------------------------
def main_binary():
    """The running program: its module name under ``python -m``, else the script's path."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def make_record(config, binary=None):
    """{"binary", "uqmix_version", "flags"}: what a run with ``config`` is (volatile flags
    such as output_dir left out)."""
    return {
        "binary": binary or main_binary(),
        "uqmix_version": __version__,
        "flags": _comparable(config),
    }


def read_record(run_dir):
    """The record of the run in ``run_dir`` (``make_record`` form), or None without one.

    A run made before the marker existed (config.json + flags.cfg) has binary and
    uqmix_version None.  A broken config.json or marker is a ValueError naming it.
    """
    config_path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(config_path):
        return None
    marker_path = os.path.join(run_dir, RUN_MARKER)
    marker = read_json_object(marker_path) if os.path.isfile(marker_path) else {}
    return {
        "binary": marker.get("binary"),
        "uqmix_version": marker.get("uqmix_version"),
        "flags": _comparable(read_json_object(config_path)),
    }


def record_differences(found, requested):
    """What differs between a run's record and the requested one ([] when equal).

    The binary and version of a run made before the marker existed (None) are not compared.
    """
    lines = []
    for key in ("binary", "uqmix_version"):
        if found.get(key) is not None and found.get(key) != requested.get(key):
            lines.append(f"{key}: {found[key]} → {requested.get(key)}")
    return lines + differences(found["flags"], requested["flags"])


# What a sweep leaves in a run folder before the binary first writes its record, beside the
# folder's lock file (``uqmix.run_lock``, taken before the log is opened): the log it appends
# to (``uqmix.sweep``).  ``--resume`` accepts a locked-before folder holding only these.
RESUMABLE_BEFORE_RECORD = frozenset({"log.txt"})


def claim_output_dir(output_dir, resume=False, overwrite=False):
    """Makes ``output_dir`` this process's run folder without writing any result: checks
    the path (``check_output_dir``), refuses what ``prepare_output_dir`` would refuse
    without looking at the configuration — a non-empty folder that is not a uqmix run
    (``is_run_dir``; with ``resume`` also one holding only ``RESUMABLE_BEFORE_RECORD`` and the
    lock file: a sweep's log of a run that stopped before writing its record); with
    ``overwrite``, a folder ``check_removable`` refuses — then creates the folder and takes
    its lock (``run_lock.lock``; ``RunInUseError`` while another process has it).
    Re-entrant."""
    check_output_dir(output_dir)
    present = entries(output_dir) if os.path.isdir(output_dir) else []
    if present:  # refusals that write nothing
        if overwrite:
            check_removable(output_dir)
        elif not is_run_dir(output_dir) and not (
            resume
            and set(present) <= RESUMABLE_BEFORE_RECORD
            and os.path.isfile(os.path.join(output_dir, LOCK_FILE))
        ):
            raise ConfigMismatchError(
                f"{output_dir} exists and is not empty but holds no uqmix run (no {RUN_MARKER}, "
                f"{CONFIG_FILE} + {FLAGS_FILE}; it holds {', '.join(sorted(present)[:5])}); "
                "refusing to write into it, with --resume too (--overwrite deletes only uqmix "
                "run folders). Choose another --output_dir."
            )
    os.makedirs(output_dir, exist_ok=True)
    run_lock.lock(output_dir)


def run_holding_output_dir(run, config, resume=None):
    """``run(config)`` holding the lock of ``config["output_dir"]`` (``uqmix.run_lock``) until
    it returns; the experiments' ``run`` is this around their body.

    A single-process run whose folder exists already (a resume, an overwrite, a sweep's
    run folder) claims it first (``claim_output_dir``), so a folder another process is
    writing is refused before the data is read; a new folder is created and locked by
    ``prepare_output_dir``, so a run refused for its data leaves nothing behind.  In a
    multi-worker run only the chief's ``prepare_output_dir`` locks.  ``resume``: what the
    run will pass to ``prepare_output_dir`` (default ``config["resume"]``).
    """
    output_dir = config["output_dir"]
    with run_lock.holding(output_dir):
        if config.get("strategy") != "multi_worker" and os.path.isdir(output_dir):
            claim_output_dir(
                output_dir,
                resume=config.get("resume", False) if resume is None else resume,
                overwrite=config.get("overwrite", False),
            )
        return run(config)


def prepare_output_dir(output_dir, config, resume=False, overwrite=False, binary=None):
    """Creates ``output_dir`` for a run with ``config`` (a dict of flag values).

    Returns True when a previous run of the same configuration is there to be
    resumed.  Raises ``ConfigMismatchError`` when the folder holds another
    configuration (or any run, without ``resume``), unless ``overwrite``;
    ``OutputPathError`` when the path cannot be written, or ``overwrite`` would
    delete a folder that is not a uqmix run (``check_removable``); ``RunInUseError``
    while another process uses the folder (``uqmix.run_lock``; then nothing is
    touched).  Keeps the folder's lock for this process: wrap the run in
    ``run_lock.holding(output_dir)`` (or ``run_holding_output_dir``) to release it when the
    run ends.  A refused run may leave the lock file (hidden, not run content) behind.
    Writes the marker, config.json and flags.cfg.
    """
    claim_output_dir(output_dir, resume=resume, overwrite=overwrite)
    config_path = os.path.join(output_dir, CONFIG_FILE)
    if overwrite and entries(output_dir):
        _clear_run_dir(output_dir)
    existing = os.path.exists(config_path)
    if existing:
        previous = read_json_object(config_path)
        old, new = _comparable(previous), _comparable(config)
        changed = differences(old, new)
        if changed:
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigMismatchError(
                f"{output_dir} holds a run with a different configuration (differs in: "
                f"{', '.join(keys)}; {'; '.join(changed)}). Use another --output_dir, or "
                "--overwrite to replace it."
            )
        if not resume:
            raise ConfigMismatchError(
                f"{output_dir} already holds a run of this configuration. Pass --resume to "
                "continue it or --overwrite to start again."
            )
    os.makedirs(output_dir, exist_ok=True)
    record = make_record(config, binary)
    atomic_write_json(
        os.path.join(output_dir, RUN_MARKER),
        {"binary": record["binary"], "uqmix_version": record["uqmix_version"]},
    )
    atomic_write_json(config_path, config)
    flag_lines = []
    for key, value in sorted(jsonable(config).items()):
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        flag_lines.append(f"--{key}={value}")
    atomic_write_bytes(
        os.path.join(output_dir, FLAGS_FILE), ("\n".join(flag_lines) + "\n").encode()
    )
    return existing


def add_seconds(output_dir, key, seconds):
    """Adds ``seconds`` to the total ``key`` kept in ``output_dir``/timing.json and returns the
    total: the time of every invocation of a resumed run, not only the last one
    (``training.fit_resumable`` adds each finished epoch)."""
    return _update_seconds(output_dir, key, lambda total: float(total or 0.0) + float(seconds))


def set_seconds(output_dir, key, seconds):
    """Sets the total ``key`` kept in ``output_dir``/timing.json (``add_seconds``) to
    ``seconds``: for time spent elsewhere (networks copied from another run), recorded once
    however often it is set."""
    return _update_seconds(output_dir, key, lambda total: float(seconds))


def _update_seconds(output_dir, key, update):
    """Replaces the total ``key`` of ``output_dir``/timing.json by ``update(total or None)``
    under the file's lock (helper processes write the same file); returns the new total."""
    path = os.path.join(output_dir, TIMING_FILE)
    with _exclusive(path + ".lock"):
        totals = read_json_object(path) if os.path.exists(path) else {}
        totals[key] = update(totals.get(key))
        atomic_write_json(path, totals)
    return totals[key]


@contextlib.contextmanager
def _exclusive(lock_path):
    """Holds ``flock(LOCK_EX)`` on ``lock_path`` (blocking) for the block: read-modify-write
    of one file by several processes of a run (``uqmix.studies.parallel_training``).  Without
    flock (Windows) the block runs unlocked: a run there uses one process."""
    if fcntl is None:
        yield
        return
    with open(lock_path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_seconds(output_dir, key, default=None):
    """The total ``key`` kept in ``output_dir``/timing.json (``add_seconds``), or ``default``
    when none was kept."""
    path = os.path.join(output_dir, TIMING_FILE)
    value = read_json_object(path).get(key) if os.path.exists(path) else None
    return default if value is None else float(value)


def flag_values_dict(flags_module_flags, names=None):
    """Flag values of an absl ``FLAGS`` object defined by the main module (or ``names``)."""
    if names is None:
        module = sys.argv[0]
        names = [f.name for f in flags_module_flags.get_key_flags_for_module(module)]
        if not names:
            names = [f.name for f in flags_module_flags.get_flags_for_module("__main__")]
    return {name: flags_module_flags[name].value for name in names}
