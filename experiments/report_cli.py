"""What the report binaries (``mixture_report``, ``pn_report``) share: the check of their
arguments and ``--sweep_root``, exit code 2 for bad data, and the printout of a report."""

import sys

from absl import app


def sweep_roots(argv, roots):
    """The non-empty entries of ``--sweep_root`` (``roots``); ``app.UsageError`` (exit code 1)
    for positional arguments or when no folder is left."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    roots = [root for root in roots if root]
    if not roots:
        raise app.UsageError("--sweep_root names no folder.")
    return roots


def write_and_print(write_report):
    """Calls ``write_report()`` and prints the report (tables, notes, files written, figures
    skipped); returns 2 after printing the error for bad data or an output folder that cannot
    be written or holds files the report must not replace (``ValueError``, ``OSError``), None
    (exit code 0) otherwise."""
    try:
        report = write_report()
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report["tables"])
    for note in report.get("notes", ()):
        print(f"note: {note}")
    for path in report["written"]:
        print(f"wrote {path}")
    for filename, reason in report.get("skipped", {}).items():
        print(f"skipped {filename}: {reason}")
    return None
