"""Where a run's ``--export_dir`` SavedModel goes, without destroying anything already there.

A SavedModel export writes ``saved_model.pb``, ``fingerprint.pb``, ``variables/`` and
``assets/`` into its folder; written there directly it would overwrite another model's files in
that folder without a word, and leave a half-written model behind when the run stops mid-write.
So a run's export

* is refused before any work (``check_export_dir``) when the folder holds anything but an
  earlier export of the same run (the record ``uqmix_export.json`` names the run's
  ``output_dir``), or when it is the run folder or contains it;
* is written into a hidden sibling ``.<name>.uqmix-export-<pid>`` first and moved into place
  by ``rename`` (``installing``): a new or empty folder is replaced atomically; the same
  run's earlier export is moved aside, the new one renamed in, the old one deleted.  A folder
  that was filled by someone else while the run worked is not touched: the export stays in
  the sibling, and the error names it.
"""

import contextlib
import json
import os
import shutil

from uqmix import runs

EXPORT_RECORD = "uqmix_export.json"


def _same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _contains(folder, path):
    """True when ``path`` is ``folder`` or lies under it (after resolving links)."""
    folder, path = os.path.realpath(folder), os.path.realpath(path)
    return os.path.commonpath([folder, path]) == folder


def recorded_output_dir(export_dir):
    """The ``output_dir`` of the run whose export ``export_dir`` holds, or None (no record)."""
    try:
        with open(os.path.join(export_dir, EXPORT_RECORD)) as f:
            return json.load(f).get("output_dir")
    except (OSError, ValueError, AttributeError):
        return None


def is_export_of(export_dir, output_dir):
    """True when ``export_dir`` holds an export recorded as made by the run in ``output_dir``."""
    recorded = recorded_output_dir(export_dir)
    return recorded is not None and _same_path(recorded, output_dir)


def check_export_dir(export_dir, output_dir):
    """Raises ``runs.OutputPathError`` when the run in ``output_dir`` must not export into
    ``export_dir``: it is the run folder or contains it, or it holds files that are not an
    earlier export of this run; it is a file or cannot be created (``runs.check_output_dir``).
    Reads only."""
    runs.check_output_dir(export_dir, flag="export_dir")
    if _contains(export_dir, output_dir):
        raise runs.OutputPathError(
            f"--export_dir={export_dir} is the run folder --output_dir={output_dir} or contains "
            "it: the export would replace the run. Choose a folder of its own, for example "
            f"{os.path.join(output_dir, 'saved_model')}."
        )
    if not os.path.isdir(export_dir) or not os.listdir(export_dir):
        return
    recorded = recorded_output_dir(export_dir)
    if recorded is not None and _same_path(recorded, output_dir):
        return  # this run's earlier export (is_export_of), replaced whole
    holds = (
        f"the export of another run (--output_dir={recorded})"
        if recorded
        else f"files that are not an export of this run ({', '.join(sorted(os.listdir(export_dir))[:5])})"
    )
    raise runs.OutputPathError(
        f"--export_dir={export_dir} holds {holds}; nothing is replaced. Choose a new or empty "
        "folder, or remove that one yourself."
    )


def _sibling(path, tag):
    parent, name = os.path.split(os.path.normpath(os.path.abspath(path)))
    return os.path.join(parent, f".{name}.uqmix-{tag}-{os.getpid()}")


@contextlib.contextmanager
def installing(export_dir, output_dir):
    """``with installing(export_dir, output_dir) as path:`` write the SavedModel into
    ``path``; on leaving the block it becomes ``export_dir`` (module doc).  An error in the
    block deletes ``path`` and leaves ``export_dir`` as it was."""
    staging = _sibling(export_dir, "export")
    if os.path.lexists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    try:
        yield staging
        with open(os.path.join(staging, EXPORT_RECORD), "w") as f:
            json.dump({"output_dir": os.path.abspath(output_dir)}, f)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _install(staging, export_dir, output_dir)


def _install(staging, export_dir, output_dir):
    old = None
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        if not is_export_of(export_dir, output_dir):
            raise runs.OutputPathError(
                f"--export_dir={export_dir} was filled by someone else while this run worked; "
                f"nothing is replaced. The export is in {staging}."
            )
        old = _sibling(export_dir, "old")
        os.rename(export_dir, old)
    try:
        os.rename(staging, export_dir)  # onto a missing or empty folder: atomic
    except OSError as error:
        if old is not None:
            os.rename(old, export_dir)
        raise runs.OutputPathError(
            f"--export_dir={export_dir} could not be replaced ({error}); nothing is replaced. "
            f"The export is in {staging}."
        ) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_run_model(model, config, strategy, input_shape):
    """Writes ``model`` as the SavedModel of the run ``config`` (``export_dir``, checked by
    ``check_export_dir``); every worker of a multi-worker run writes (saving may involve
    collectives), the chief through ``installing``, the others into their temporary copy
    (``distributed.writing``), which is deleted."""
    from uqmix import distributed
    from uqmix.export import export_saved_model

    export_dir = config["export_dir"]
    with distributed.writing(export_dir, strategy) as worker_path:
        if distributed.is_chief(strategy):
            with installing(export_dir, config["output_dir"]) as path:
                export_saved_model(model, path, input_shape)
        else:
            export_saved_model(model, worker_path, input_shape)
