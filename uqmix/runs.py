"""Run directories: the configuration a run was made with, atomic result files.

Every experiment binary writes into one ``output_dir``:

* ``config.json`` — the configuration (flag values) it ran with; a second run
  into the same folder with a different configuration is refused unless it
  resumes the same configuration (``resume=True``) or ``overwrite=True``.
* ``flags.cfg`` — the same, as a flagfile that re-runs it.
* ``metrics.json`` and other results — written atomically (temp file in the
  same folder, fsync, ``os.replace``), so a crash never leaves half a file.
"""

import json
import math
import os
import shutil
import tempfile

import numpy as np

CONFIG_FILE = "config.json"
FLAGS_FILE = "flags.cfg"
METRICS_FILE = "metrics.json"

# Flags that may differ between a run and its resumption without changing what
# is computed.
VOLATILE_KEYS = frozenset({"resume", "overwrite", "output_dir", "data_dir", "verbose",
                           "progress", "export_dir", "num_workers"})


class ConfigMismatchError(ValueError):
    """output_dir holds a run made with another configuration."""


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if hasattr(value, "numpy"):
        return _jsonable(value.numpy())
    return value


def atomic_write_bytes(path, data):
    """Writes ``data`` to ``path`` so that readers see the old or the new file, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj):
    """JSON with NumPy/tensor values converted; non-finite floats become null."""
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _comparable(config):
    return {k: v for k, v in _jsonable(config).items() if k not in VOLATILE_KEYS}


def prepare_output_dir(output_dir, config, resume=False, overwrite=False):
    """Creates ``output_dir`` for a run with ``config`` (a dict of flag values).

    Returns True when a previous run of the same configuration is there to be
    resumed.  Raises ``ConfigMismatchError`` when the folder holds another
    configuration (or any run, without ``resume``), unless ``overwrite``.
    """
    if not output_dir:
        raise ValueError("output_dir must be set.")
    config_path = os.path.join(output_dir, CONFIG_FILE)
    if os.path.isdir(output_dir) and overwrite:
        shutil.rmtree(output_dir)
    existing = os.path.exists(config_path)
    if existing:
        previous = read_json(config_path)
        if _comparable(previous) != _comparable(config):
            changed = sorted(
                k for k in set(_comparable(previous)) | set(_comparable(config))
                if _comparable(previous).get(k) != _comparable(config).get(k)
            )
            raise ConfigMismatchError(
                f"{output_dir} holds a run with a different configuration "
                f"(differs in: {', '.join(changed)}). Use another --output_dir, or "
                "--overwrite to replace it."
            )
        if not resume:
            raise ConfigMismatchError(
                f"{output_dir} already holds a run of this configuration. Pass --resume to "
                "continue it or --overwrite to start again."
            )
    elif os.path.isdir(output_dir) and os.listdir(output_dir) and not resume:
        raise ConfigMismatchError(
            f"{output_dir} exists and is not empty but holds no {CONFIG_FILE}; refusing to "
            "write into it. Use another --output_dir or --overwrite."
        )
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_json(config_path, config)
    flag_lines = []
    for key, value in sorted(_jsonable(config).items()):
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        flag_lines.append(f"--{key}={value}")
    atomic_write_bytes(os.path.join(output_dir, FLAGS_FILE), ("\n".join(flag_lines) + "\n").encode())
    return existing


def flag_values_dict(flags_module_flags, names=None):
    """Flag values of an absl ``FLAGS`` object defined by the main module (or ``names``)."""
    if names is None:
        import sys

        module = sys.argv[0]
        names = [f.name for f in flags_module_flags.get_key_flags_for_module(module)]
        if not names:
            names = [f.name for f in flags_module_flags.get_flags_for_module("__main__")]
    return {name: flags_module_flags[name].value for name in names}
