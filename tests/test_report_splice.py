"""uqmix.studies.report_splice / experiments.splice_report: generated sections spliced into a
hand-written report, the rest of it untouched; the repository's report is up to date."""

import os
import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from uqmix import runs
from uqmix.studies import report_splice

TABLES = """# Study

## Classification

| a | b |
|---|---|
| 1 | 2 |

## Side by side

Intro line.

### Table 1

| x | verdict |
|---|---|
| 0.5 | within |

#### Table 1, protocol p

| y |
|---|
| 3 |

## Figures

figure text
"""

REPORT = """# Report

Hand-written text, kept as is.

### Our section

<!-- splice sub/tables.md#Side by side -->
old, stale content
<!-- end splice -->

Between the regions.
<!-- splice sub/tables.md#Classification -->
<!-- end splice -->
Tail without a newline at the end"""


@pytest.fixture
def report(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tables.md").write_text(TABLES)
    path = tmp_path / "REPORT.md"
    path.write_text(REPORT)
    return path


SPLICED = (
    "# Report\n\nHand-written text, kept as is.\n\n### Our section\n\n"
    "<!-- splice sub/tables.md#Side by side -->\n"
    "\n**Side by side**\n\nIntro line.\n\n**Table 1**\n\n| x | verdict |\n|---|---|\n"
    "| 0.5 | within |\n\n**Table 1, protocol p**\n\n| y |\n|---|\n| 3 |\n\n"
    "<!-- end splice -->\n\nBetween the regions.\n"
    "<!-- splice sub/tables.md#Classification -->\n"
    "\n**Classification**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    "<!-- end splice -->\nTail without a newline at the end"
)


def _splice_binary(path):
    return subprocess.run(
        [sys.executable, "-m", "experiments.splice_report", f"--report={path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_regions_get_their_sections_with_bold_headings_and_the_rest_is_kept(report):
    text = report_splice.splice(str(report))
    assert text == SPLICED
    assert report_splice.splice(str(report), text) == text  # idempotent


def test_stale_regions_are_named_and_check_mode_writes_nothing(report):
    assert report_splice.stale_regions(str(report)) == [
        (7, "sub/tables.md#Side by side"),
        (12, "sub/tables.md#Classification"),
    ]
    command = [sys.executable, "-m", "experiments.splice_report", f"--report={report}"]
    checked = subprocess.run(
        [*command, "--check"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 1
    assert f"{report}:7: stale region sub/tables.md#Side by side" in checked.stderr
    assert report.read_text() == REPORT
    written = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr
    assert report_splice.stale_regions(str(report)) == []
    again = subprocess.run(
        [*command, "--check"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "up to date" in again.stdout


@pytest.mark.parametrize(
    "region, line, message",
    [
        (
            "<!-- splice sub/tables.md#Missing -->\n<!-- end splice -->\n",
            3,
            "no section 'Missing' \\(its headings: Study; Classification; Side by side; Table 1; ",
        ),
        ("<!-- splice sub/nope.md#A -->\n<!-- end splice -->\n", 3, "cannot read sub/nope.md"),
        ("<!-- splice sub/tables.md#Figures -->\n", 3, "has no <!-- end splice --> line"),
        ("<!-- end splice -->\n", 3, "without a splice region"),
        (
            "<!-- splice sub/tables.md#Figures -->\n<!-- splice sub/tables.md#Figures -->\n",
            4,
            "starts inside the region of line 3",
        ),
    ],
    ids=["missing section", "missing file", "no end", "end alone", "nested"],
)
def test_broken_regions_are_one_error_naming_the_line(report, region, line, message):
    report.write_text(f"# R\n\n{region}")
    with pytest.raises(ValueError, match=f"REPORT.md:{line}: .*{message}"):
        report_splice.splice(str(report))
    assert report.read_text() == f"# R\n\n{region}"


def test_a_repeated_title_is_refused_and_its_parent_names_the_one_meant(report):
    (report.parent / "sub" / "tables.md").write_text(
        "## MNIST\n\n### A\n\nx\n\n#### A.1\n\nx1\n\n## Fashion\n\n### A\n\ny\n"
    )
    report.write_text("<!-- splice sub/tables.md#A -->\n<!-- end splice -->\n")
    with pytest.raises(ValueError, match="has 2 sections titled 'A'; name the one meant"):
        report_splice.splice(str(report))
    report.write_text(
        "<!-- splice sub/tables.md#Fashion > A -->\n<!-- end splice -->\n"
        "<!-- splice sub/tables.md#MNIST > A -->\n<!-- end splice -->\n"
    )
    assert report_splice.splice(str(report)) == (
        "<!-- splice sub/tables.md#Fashion > A -->\n\n**Fashion: A**\n\ny\n\n<!-- end splice -->\n"
        "<!-- splice sub/tables.md#MNIST > A -->\n\n**MNIST: A**\n\nx\n\n**A.1**\n\nx1\n\n"
        "<!-- end splice -->\n"
    )
    report.write_text("<!-- splice sub/tables.md#Fashion > A.1 -->\n<!-- end splice -->\n")
    with pytest.raises(
        ValueError, match="no section 'A.1' under 'Fashion' \\(its headings: Fashion; A\\)"
    ):
        report_splice.splice(str(report))


def test_binary_exits_2_in_one_line_on_a_broken_region(report):
    report.write_text("<!-- splice sub/tables.md#Missing -->\n<!-- end splice -->\n")
    result = _splice_binary(report)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: REPORT.md:1: sub/tables.md has no section")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_crlf_report_keeps_its_line_endings_byte_for_byte(report):
    """The report was read with newline translation: a CRLF report came back LF throughout.
    Now every byte outside the regions is kept and the spliced lines take their region's
    line ending (so the spliced report is up to date, not stale, for --check)."""
    report.write_bytes(REPORT.replace("\n", "\r\n").encode())
    report_splice.splice_file(str(report))
    assert report.read_bytes() == SPLICED.replace("\n", "\r\n").encode()
    assert report_splice.stale_regions(str(report)) == []
    mixed = REPORT.replace("Hand-written text, kept as is.\n", "Hand-written text\r\n", 1)
    report.write_bytes(mixed.encode())  # one CRLF line outside the regions of an LF report
    report_splice.splice_file(str(report))
    expected = SPLICED.replace("Hand-written text, kept as is.\n", "Hand-written text\r\n", 1)
    assert report.read_bytes() == expected.encode()


def test_a_symlinked_report_stays_a_link_and_the_file_keeps_its_mode(report):
    """The report was replaced by a regular file at the link's path (the linked file stayed
    stale) and got mode 0644 whatever it had."""
    report.write_bytes(REPORT.replace("\n", "\r\n").encode())
    os.chmod(report, 0o640)
    link = report.parent / "LINK.md"
    link.symlink_to(report)
    result = _splice_binary(link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(report)
    assert report.read_bytes() == SPLICED.replace("\n", "\r\n").encode()
    assert stat.S_IMODE(os.stat(report).st_mode) == 0o640


def test_a_read_only_report_is_refused_before_any_work(report):
    """A read-only (0444) report was rewritten and ended 0644: now one error naming it and the
    fix, nothing written, through a link too; checked before splicing (a broken region is
    not reached)."""
    report.write_bytes(REPORT.replace("\n", "\r\n").encode())
    os.chmod(report, 0o444)
    link = report.parent / "LINK.md"
    link.symlink_to(report)
    for path in (report, link):
        result = _splice_binary(path)
        assert result.returncode == 2
        (error,) = result.stderr.strip().splitlines()
        assert error.startswith(f"error: --report={path} is read-only (mode 0444")
        assert f"nothing was written. Make it writable (chmod u+w {report})" in error
    assert report.read_bytes() == REPORT.replace("\n", "\r\n").encode()
    assert stat.S_IMODE(os.stat(report).st_mode) == 0o444 and link.is_symlink()
    assert sorted(os.listdir(report.parent)) == ["LINK.md", "REPORT.md", "sub"]  # no temp file
    os.chmod(report, 0o644)
    report.write_text("<!-- splice sub/tables.md#Missing -->\n<!-- end splice -->\n")
    os.chmod(report, 0o444)
    with pytest.raises(runs.OutputPathError, match="is read-only"):
        report_splice.splice_file(str(report))


def test_the_reproduction_report_shows_the_committed_tables():
    """results/REPRODUCTION.md's spliced regions equal the committed tables.md sections: after a
    report binary ran, `python -m experiments.splice_report --report=results/REPRODUCTION.md`."""
    path = os.path.join(REPO_ROOT, "results", "REPRODUCTION.md")
    assert report_splice.stale_regions(path) == []
    with open(path, encoding="utf-8") as f:
        assert f.read().count("<!-- splice ") >= 5
