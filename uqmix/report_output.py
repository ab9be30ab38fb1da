"""Report output folders: a report replaces only files a uqmix report wrote.

A report binary (``experiments.pn_report``, ``experiments.mixture_report``) writes its files
into folders the user names (``--output_dir``, ``--figures_dir``) and, next to them, the marker
``uqmix_report.json`` ({"binary", "uqmix_version", "files"}), in the same all-or-none write
(``runs.atomic_write_files``).  "files" maps every file name uqmix reports have written into
that folder (kept across regenerations, by any report kind) to the SHA-256 of the bytes
written: a file that is still exactly that, and only such a file, a report may replace.  Any
other file the report would write that is already there — the user's own ``tables.md`` or
figures, in a folder with or without a marker, or a report file the user edited since — refuses the report before any
work (``check_report_dirs``, before the runs are read) and again at the moment of writing
(``write_report_files``, on the exact paths), with one ``OutputPathError`` naming the files
and the fix.  Nothing of the user's is ever replaced.

``experiments.aggregate`` writes one file into the sweep root, ``aggregate.json``; it carries its
own format field, "uqmix_aggregate" (``write_aggregate``), and an ``aggregate.json`` without it
is never replaced (``check_aggregate_file``).
"""

import collections
import hashlib
import os

from uqmix import __version__, runs

REPORT_MARKER = "uqmix_report.json"


def _digest(data):
    return hashlib.sha256(data).hexdigest()


def _file_digest(path):
    with open(path, "rb") as handle:
        return _digest(handle.read())


def written_files(folder):
    """{name: SHA-256 hex} of the files uqmix reports wrote into ``folder``, as its marker
    ``uqmix_report.json`` lists them ({"binary": str, "uqmix_version", "files": {name:
    digest}}); None when the folder has no such marker (none, unreadable, or a foreign file
    of that name)."""
    path = os.path.join(folder, REPORT_MARKER)
    if not os.path.isfile(path):
        return None
    try:
        marker = runs.read_json_object(path)
    except ValueError:
        return None
    files = marker.get("files")
    if not (
        isinstance(marker.get("binary"), str)
        and "uqmix_version" in marker
        and isinstance(files, dict)
        and all(isinstance(name, str) and isinstance(d, str) for name, d in files.items())
    ):
        return None
    return dict(files)


def is_report_dir(folder):
    """True when ``folder`` holds the marker of a uqmix report (``written_files``)."""
    return written_files(folder) is not None


def _is_ours(folder, name, ours):
    """True when ``folder/name`` is the marker of a uqmix report, or a regular file with the
    bytes a uqmix report wrote there (its digest in the marker ``ours``): a file the user
    saved under that name since, or a link, is not."""
    path = os.path.join(folder, name)
    if ours is None or os.path.islink(path) or not os.path.isfile(path):
        return False
    return name == REPORT_MARKER or ours.get(name) == _file_digest(path)


def _not_ours(folder, names):
    """Of ``names`` present in ``folder``, those no uqmix report wrote there as they are now
    (the marker among them when it is not a uqmix report's)."""
    ours = written_files(folder)
    return sorted(
        name
        for name in names
        if os.path.lexists(os.path.join(folder, name)) and not _is_ours(folder, name, ours)
    )


def _refuse(folder, names, flags=()):
    """The ``OutputPathError`` for ``names`` in ``folder`` that no uqmix report wrote, naming
    the ``flags`` that chose the folder."""
    where = f"{'/'.join(f'--{f}' for f in flags)}={folder}" if flags else folder
    fix = f"another --{flags[0]}" if flags else "another output folder"
    them = "it" if len(names) == 1 else "them"
    why = (
        f"its {REPORT_MARKER} (the files uqmix reports wrote there, with their SHA-256) does "
        f"not list {them} as they are now"
        if is_report_dir(folder)
        else f"it has no valid {REPORT_MARKER} (the list of files uqmix reports wrote there)"
    )
    return runs.OutputPathError(
        f"{where} already holds {', '.join(sorted(names))}, which this report would replace, "
        f"and {why}: they may be your own files, so nothing was written. Choose {fix}, or "
        f"move {them} out of {folder}."
    )


def _folder_key(folder):
    return os.path.realpath(os.path.abspath(folder))


def check_report_dirs(output_dir, figures_dir, file_names, is_figure_file):
    """Checks, before any work, the folders of a report that writes ``file_names`` into
    ``output_dir`` and its figures (the names for which ``is_figure_file(name)`` is True) into
    ``figures_dir`` (default ``output_dir``).  Raises ``runs.OutputPathError`` when a folder
    cannot be written (``runs.check_output_dir``), when a name the report may write is a folder
    there, or when the folder holds a file the report may write that its report marker does
    not list as it is now (``written_files``; all of them without a marker) or a foreign
    ``uqmix_report.json``.  Creates and writes nothing."""
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
        foreign = _not_ours(folder, names)
        if foreign:
            raise _refuse(folder, foreign, list(dict.fromkeys(flag for flag, _, _ in group)))


def write_report_files(contents, binary):
    """Writes ``contents`` ({path: bytes}) and the marker of every folder they go to (``binary``:
    the report's command, e.g. "experiments.pn_report"), all or none
    (``runs.atomic_write_files``); each marker lists the files it listed before that are
    still as written, and those written now, with their digests.  Refuses
    (``runs.OutputPathError``, nothing written) when a folder already holds one of these files
    that its marker does not list as it is now (or a foreign marker).  Returns the paths
    written, the markers last."""
    folders = collections.OrderedDict()
    for path in contents:
        folders.setdefault(_folder_key(os.path.dirname(os.path.abspath(path))), []).append(path)
    markers = {}
    for paths in folders.values():
        folder = os.path.dirname(paths[0]) or "."
        names = [os.path.basename(p) for p in paths]
        foreign = _not_ours(folder, names + [REPORT_MARKER])
        if foreign:
            raise _refuse(folder, foreign)
        listed = {  # what uqmix wrote there and is still there as written, and this write
            name: digest
            for name, digest in (written_files(folder) or {}).items()
            if name not in names and _is_ours(folder, name, {name: digest})
        }
        listed.update({os.path.basename(p): _digest(contents[p]) for p in paths})
        markers[os.path.join(folder, REPORT_MARKER)] = runs.json_bytes(
            {"binary": binary, "uqmix_version": __version__, "files": listed}
        )
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
