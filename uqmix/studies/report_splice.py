"""Generated tables inside a hand-written report: sections of the reports' ``tables.md`` spliced
into marked regions, so the report shows the side-by-side tables it discusses and cannot drift
from them.

A region of the report::

    <!-- splice pn_full/tables.md#Side by side with the published Table 1 (Malinin & Gales), MNIST -->
    (anything: replaced)
    <!-- end splice -->

is replaced by that section of that file (the path relative to the report's folder): the
heading line with that title and everything up to the next heading of the same or a higher
level, every heading of it rendered as a bold line, so the report's own outline is untouched.
Where titles repeat, ``#MNIST > Classification`` names the section Classification inside the
section MNIST (rendered ``**MNIST: Classification**``).  Text outside the regions is kept
byte for byte: the report is read without newline translation (a CRLF report stays CRLF; the
spliced lines take the line ending of their region's start line).  ``splice`` returns the new
text; ``stale_regions`` names the regions whose content differs from what splicing would give;
``splice_file`` writes the report as an editor would save it (``runs.rewrite_file``: a
read-only report is refused before any work, a symbolic link stays a link to the updated file,
the file keeps its mode).
Every problem (a missing file or section, a title that two sections share, a region without its
end, a region inside a region) is one ``ValueError`` naming the line of the report.
"""

import os
import re

from uqmix import runs

_START = re.compile(r"^<!-- splice (?P<path>[^#>]+)#(?P<title>.+?) -->\s*$")
_END = "<!-- end splice -->"
_HEADING = re.compile(r"^(?P<hashes>#{1,6}) +(?P<title>.+?)\s*#*\s*$")


def _regions(lines, report_name):
    """[(start index, end index, path, title)] of the marked regions (indices of the marker
    lines)."""
    regions, open_at = [], None
    for index, line in enumerate(lines):
        text = line.rstrip("\n")
        start = _START.match(text)
        if start:
            if open_at is not None:
                raise ValueError(
                    f"{report_name}:{index + 1}: a splice region starts inside the region of "
                    f"line {open_at[0] + 1}; end that one first ({_END})."
                )
            open_at = (index, start["path"].strip(), start["title"].strip())
        elif text.strip() == _END:
            if open_at is None:
                raise ValueError(f"{report_name}:{index + 1}: {_END} without a splice region.")
            regions.append((open_at[0], index, open_at[1], open_at[2]))
            open_at = None
    if open_at is not None:
        raise ValueError(
            f"{report_name}:{open_at[0] + 1}: the splice region has no {_END} line after it."
        )
    return regions


def _find(lines, headings, title, start, end, source, path):
    """(index, level) of the one heading ``title`` among ``headings`` in lines[start:end]."""
    found = [(i, len(m["hashes"])) for i, m in headings if start <= i < end and m["title"] == title]
    where = f" under {path!r}" if path else ""
    if not found:
        titles = "; ".join(m["title"] for i, m in headings if start <= i < end)
        raise ValueError(f"{source} has no section {title!r}{where} (its headings: {titles}).")
    if len(found) > 1:
        raise ValueError(
            f"{source} has {len(found)} sections titled {title!r}{where}; name the one meant by "
            "its parent, 'PARENT > TITLE'."
        )
    return found[0]


def section(markdown, title, source="the file"):
    """The lines of the section headed ``title`` in ``markdown`` (heading included, up to the
    next heading of the same or a higher level), headings rendered bold.  ``title`` may be a
    path, ``"MNIST > Classification"``: the section Classification inside the section MNIST,
    its heading rendered ``**MNIST: Classification**``."""
    lines = markdown.splitlines()
    headings = [(i, m) for i, m in ((i, _HEADING.match(line)) for i, line in enumerate(lines)) if m]
    parts = [part.strip() for part in title.split(" > ")]
    start, end = 0, len(lines)
    for depth, part in enumerate(parts):
        start, level = _find(lines, headings, part, start, end, source, " > ".join(parts[:depth]))
        end = next((i for i, m in headings if start < i < end and len(m["hashes"]) <= level), end)
    body = lines[start:end]
    while body and not body[-1].strip():
        body.pop()
    body[0] = f"**{': '.join(parts)}**"
    return [f"**{m['title']}**" if (m := _HEADING.match(line)) else line for line in body]


def _spliced_regions(report_path, text):
    lines = text.splitlines(keepends=True)
    name = os.path.basename(report_path)
    folder = os.path.dirname(os.path.abspath(report_path))
    result = []
    for start, end, path, title in _regions(lines, name):
        source = os.path.join(folder, path)
        try:
            with open(source, encoding="utf-8") as f:
                markdown = f.read()
        except OSError as error:
            raise ValueError(
                f"{name}:{start + 1}: cannot read {path} ({error.strerror or error})."
            ) from None
        try:
            body = section(markdown, title, source=path)
        except ValueError as error:
            raise ValueError(f"{name}:{start + 1}: {error}") from None
        newline = "\r\n" if lines[start].endswith("\r\n") else "\n"
        content = "".join(f"{line}{newline}" for line in ["", *body, ""])
        result.append((start, end, path, title, content))
    return lines, result


def _read(report_path):
    """The report's text exactly as stored (no newline translation)."""
    with open(report_path, encoding="utf-8", newline="") as f:
        return f.read()


def splice(report_path, text=None):
    """The report's text with every region replaced by its section (module doc)."""
    if text is None:
        text = _read(report_path)
    lines, regions = _spliced_regions(report_path, text)
    out, position = [], 0
    for start, end, _, _, content in regions:
        out.extend(lines[position : start + 1])
        out.append(content)
        position = end
    out.extend(lines[position:])
    return "".join(out)


def stale_regions(report_path):
    """[(line, path#title)] of the regions whose text differs from their section now."""
    lines, regions = _spliced_regions(report_path, _read(report_path))
    return [
        (start + 1, f"{path}#{title}")
        for start, end, path, title, content in regions
        if "".join(lines[start + 1 : end]) != content
    ]


def splice_file(report_path, flag="report"):
    """Splices the report in place (``splice``) and returns its real path.  Refused before any
    work, nothing written, when the report cannot be rewritten (``runs.check_rewritable``:
    read-only, not a regular file, its folder not writable; ``OutputPathError`` naming
    ``--flag``); a symbolic link's target is replaced and the link kept, the mode is kept."""
    runs.check_rewritable(report_path, flag)
    text = splice(report_path)
    return runs.rewrite_file(report_path, text.encode("utf-8"), flag)
