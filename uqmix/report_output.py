"""Report output folders: a report replaces only files a uqmix report wrote.

A report binary (``experiments.pn_report``, ``experiments.mixture_report``) writes its files
into folders the user names (``--output_dir``, ``--figures_dir``) and, next to them, the marker
``uqmix_report.json`` ({"binary", "uqmix_version"}), in the same all-or-none write
(``runs.atomic_write_files``).  A folder with that marker is a uqmix report's: regenerating
replaces its files.  A folder without it may hold the user's own ``tables.md`` or figures: when
any file the report would write is already there (the marker's name included), the report is
refused before any work (``check_report_dirs``, before the runs are read) and again at the
moment of writing (``write_report_files``, on the exact paths), with one ``OutputPathError``
naming the files and the fix.  Nothing of the user's is ever replaced.

``experiments.aggregate`` writes one file into the sweep root, ``aggregate.json``; it carries its
own format field, "uqmix_aggregate" (``write_aggregate``), and an ``aggregate.json`` without it
is never replaced (``check_aggregate_file``).
"""

import collections
import os

from uqmix import __version__, runs

REPORT_MARKER = "uqmix_report.json"


def is_report_dir(folder):
    """True when ``folder`` holds the marker of a uqmix report: ``uqmix_report.json``, a JSON
    object with a "binary" and a "uqmix_version" (any uqmix report's; an unreadable or foreign
    file of that name is no marker)."""
    path = os.path.join(folder, REPORT_MARKER)
    if not os.path.isfile(path):
        return False
    try:
        marker = runs.read_json_object(path)
    except ValueError:
        return False
    return isinstance(marker.get("binary"), str) and "uqmix_version" in marker


def _refuse(folder, names, flags=()):
    """The ``OutputPathError`` for ``names`` of the user's in ``folder`` (no report marker),
    naming the ``flags`` that chose the folder."""
    where = f"{'/'.join(f'--{f}' for f in flags)}={folder}" if flags else folder
    fix = f"another --{flags[0]}" if flags else "another output folder"
    return runs.OutputPathError(
        f"{where} already holds {', '.join(sorted(names))}, which this report would replace, "
        f"and no {REPORT_MARKER} (the marker of a folder a uqmix report wrote): they may be "
        f"your own files, so nothing was written. Choose {fix}, or move "
        f"{'it' if len(names) == 1 else 'them'} out of {folder}."
    )


def _folder_key(folder):
    return os.path.realpath(os.path.abspath(folder))


def check_report_dirs(output_dir, figures_dir, file_names, is_figure_file):
    """Checks, before any work, the folders of a report that writes ``file_names`` into
    ``output_dir`` and its figures (the names for which ``is_figure_file(name)`` is True) into
    ``figures_dir`` (default ``output_dir``).  Raises ``runs.OutputPathError`` when a folder
    cannot be written (``runs.check_output_dir``), when a name the report may write is a folder
    there, or when the folder has no report marker (``is_report_dir``) and holds a file the
    report may write or a foreign ``uqmix_report.json``.  Creates and writes nothing."""
    outputs = [
        ("output_dir", output_dir, frozenset(file_names).__contains__),
        ("figures_dir" if figures_dir else "output_dir", figures_dir or output_dir, is_figure_file),
    ]
    groups = collections.defaultdict(list)
    for flag, folder, may_write in outputs:
        runs.check_output_dir(folder, flag=flag)
        groups[_folder_key(folder)].append((flag, folder, may_write))
    for group in groups.values():
        folder = group[0][1]
        if not os.path.isdir(folder):
            continue
        names = [
            name
            for name in os.listdir(folder)
            if name == REPORT_MARKER or any(may_write(name) for _, _, may_write in group)
        ]
        for name in sorted(names):
            if os.path.isdir(os.path.join(folder, name)):
                raise runs.OutputPathError(
                    f"{os.path.join(folder, name)} is a folder; cannot write a file there."
                )
        if names and not is_report_dir(folder):
            raise _refuse(folder, names, list(dict.fromkeys(flag for flag, _, _ in group)))


def write_report_files(contents, binary):
    """Writes ``contents`` ({path: bytes}) and the marker of every folder they go to (``binary``:
    the report's command, e.g. "experiments.pn_report"), all or none
    (``runs.atomic_write_files``).  Refuses (``runs.OutputPathError``, nothing written) when a
    folder without a report marker already holds one of these files or a foreign marker.
    Returns the paths written, the markers last."""
    folders = collections.OrderedDict()
    for path in contents:
        folders.setdefault(_folder_key(os.path.dirname(os.path.abspath(path))), []).append(path)
    markers = {}
    for paths in folders.values():
        folder = os.path.dirname(paths[0]) or "."
        marker = os.path.join(folder, REPORT_MARKER)
        if not is_report_dir(folder):
            existing = [p for p in paths + [marker] if os.path.lexists(p)]
            if existing:
                raise _refuse(folder, [os.path.basename(p) for p in existing])
        markers[marker] = runs.json_bytes({"binary": binary, "uqmix_version": __version__})
    return runs.atomic_write_files({**contents, **markers})


# -- aggregate.json (experiments.aggregate) --------------------------------------------------
AGGREGATE_FILE = "aggregate.json"
AGGREGATE_FORMAT = 1  # the value of "uqmix_aggregate", the field that marks the file as ours


def check_aggregate_file(path):
    """Raises ``runs.OutputPathError`` when ``path`` exists and is not an aggregate written by
    ``experiments.aggregate`` (a folder; unreadable; not a JSON object with the
    "uqmix_aggregate" field, which aggregates written before the field existed lack too).
    Writes nothing."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        raise runs.OutputPathError(f"{path} is a folder; cannot write a file there.")
    try:
        ours = "uqmix_aggregate" in runs.read_json_object(path)
    except ValueError:
        ours = False
    if not ours:
        raise runs.OutputPathError(
            f"{path} exists and is not an aggregate written by experiments.aggregate (no "
            '"uqmix_aggregate" field): it may be your own file, so nothing was written. Move or '
            "rename it (an aggregate.json of uqmix from before the field existed can be "
            "deleted), then run again."
        )


def write_aggregate(path, table):
    """Writes ``table`` ({configuration: {metric: stats}}, ``sweep.aggregate``) to ``path`` as
    {"uqmix_aggregate": AGGREGATE_FORMAT, "binary", "uqmix_version", "configurations": table},
    atomically; refuses (``check_aggregate_file``) to replace a file that is not one."""
    check_aggregate_file(path)
    runs.atomic_write_json(
        path,
        {
            "uqmix_aggregate": AGGREGATE_FORMAT,
            "binary": "experiments.aggregate",
            "uqmix_version": __version__,
            "configurations": table,
        },
    )
