"""uqmix.report_output: the report binaries and ``aggregate`` never replace the user's files.

A report folder (``--output_dir``, ``--figures_dir``) without the marker ``uqmix_report.json``
that already holds a file the report would write is refused before any work, naming the files;
a folder with the marker is regenerated.  ``aggregate.json`` carries its own format field."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.test_mixture_report import ALL_EVALUATIONS, FULL_STUDY, write_study
from tests.test_pn_report import _metrics, _write
from uqmix import __version__, report_output, runs
from uqmix.studies import mixture_report, pn_report

MARKER = report_output.REPORT_MARKER


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def _pn_sweep(tmp_path):
    root = str(tmp_path / "pn_sweep")
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        _write(root, "mnist_rkl", seed, _metrics(rng))
    return root


def _mixture_sweep(tmp_path):
    root = str(tmp_path / "mixture_sweep")
    study = {name: FULL_STUDY[name] for name in ("a_ml", "b_vi", "e_ml")}
    write_study(root, study, seeds=[0, 1], evaluations=ALL_EVALUATIONS[:4])
    return root


def _users_folder(path, files):
    """The user's own files ({name: bytes}) in ``path``; returns a snapshot to compare with."""
    os.makedirs(path, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(path, name), "wb") as handle:
            handle.write(data)
    return _snapshot(path)


def _snapshot(path):
    snapshot = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as handle:
            snapshot[name] = handle.read()
    return snapshot


USERS_REPORT = {
    "tables.md": b"# my hand-written tables\n",
    "summary.json": b'{"mine": 1}\n',
    "attack_curves.png": b"my figure",
}


def test_pn_report_binary_leaves_the_users_folder_byte_identical(tmp_path):
    """The reproduction: --output_dir=<a folder with the user's tables.md, summary.json,
    attack_curves.png> exited 0 and replaced all three."""
    user = str(tmp_path / "my_paper")
    before = _users_folder(user, USERS_REPORT)
    result = _run(
        "experiments.pn_report", f"--sweep_root={_pn_sweep(tmp_path)}", f"--output_dir={user}"
    )
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: --output_dir={user} already holds ")
    assert "attack_curves.png, summary.json, tables.md" in error
    assert "Choose another --output_dir, or move them out of" in error
    assert not [line for line in result.stdout.splitlines() if line.startswith("wrote")]
    assert _snapshot(user) == before


@pytest.mark.parametrize("report", [pn_report, mixture_report], ids=["pn", "mixture"])
def test_refused_before_the_runs_are_read(report, tmp_path):
    """The folder is checked first: a sweep root that does not even exist is not reached."""
    user = str(tmp_path / "my_paper")
    before = _users_folder(user, {"tables.md": b"mine\n"})
    with pytest.raises(runs.OutputPathError, match=r"already holds tables\.md, which"):
        report.write_report(str(tmp_path / "no_such_sweep"), user)
    assert _snapshot(user) == before


@pytest.mark.parametrize(
    "report, sweep, figure",
    [
        (pn_report, _pn_sweep, "attack_curves.png"),
        (pn_report, _pn_sweep, "attack_curves_cw.png"),
        (mixture_report, _mixture_sweep, "accuracy_vs_lambda.png"),
        (mixture_report, _mixture_sweep, "robustness_cleverhans4-frozen.png"),
    ],
    ids=["pn", "pn per method", "mixture", "mixture per protocol"],
)
def test_figures_dir_with_the_users_figure_is_refused(report, sweep, figure, tmp_path):
    root = sweep(tmp_path)
    figures, out = str(tmp_path / "my_figures"), str(tmp_path / "out")
    before = _users_folder(figures, {figure: b"my figure", "notes.txt": b"mine"})
    with pytest.raises(runs.OutputPathError) as error:
        report.write_report(root, out, figures_dir=figures)
    assert f"--figures_dir={figures} already holds {figure}, which" in str(error.value)
    assert "Choose another --figures_dir, or move it out of" in str(error.value)
    assert _snapshot(figures) == before and not os.path.exists(out)


@pytest.mark.parametrize(
    "report, sweep", [(pn_report, _pn_sweep), (mixture_report, _mixture_sweep)]
)
def test_a_folder_of_other_files_gets_the_report_and_keeps_them(report, sweep, tmp_path):
    figures, out = str(tmp_path / "figures"), str(tmp_path / "out")
    _users_folder(figures, {"notes.txt": b"mine", "my_plot.png": b"my figure"})
    written = report.write_report(sweep(tmp_path), out, figures_dir=figures)["written"]
    assert os.path.join(figures, MARKER) in written and os.path.join(out, MARKER) in written
    assert _snapshot(figures)["notes.txt"] == b"mine"
    assert _snapshot(figures)["my_plot.png"] == b"my figure"
    with open(os.path.join(out, MARKER), encoding="utf-8") as handle:
        assert json.load(handle) == {
            "binary": report.BINARY,
            "uqmix_version": __version__,
            "files": {  # every file written there but the marker, with its SHA-256
                os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
                for p in written
                if os.path.dirname(p) == out and os.path.basename(p) != MARKER
            },
        }
    listed = runs.read_json_object(os.path.join(figures, MARKER))["files"]
    assert "notes.txt" not in listed and "my_plot.png" not in listed


def test_a_marked_folder_is_regenerated(tmp_path):
    root, out = _pn_sweep(tmp_path), str(tmp_path / "out")
    first = pn_report.write_report(root, out)
    assert sorted(os.listdir(out)) == ["attack_curves.png", "summary.json", "tables.md", MARKER]
    assert first["written"][-1] == os.path.join(out, MARKER)
    # the files another report kind wrote count too: what the marker lists is uqmix's
    with open(os.path.join(out, "robustness.png"), "wb") as handle:
        handle.write(b"png")
    listed = dict(
        runs.read_json_object(os.path.join(out, MARKER))["files"],
        **{"robustness.png": hashlib.sha256(b"png").hexdigest(), "gone.png": "0" * 64},
    )
    runs.atomic_write_json(
        os.path.join(out, MARKER),
        {"binary": mixture_report.BINARY, "uqmix_version": "0", "files": listed},
    )
    second = pn_report.write_report(root, out)
    assert second["written"] == first["written"]
    with open(os.path.join(out, "tables.md"), encoding="utf-8") as handle:
        assert handle.read() == second["tables"]
    marker = runs.read_json_object(os.path.join(out, MARKER))
    assert marker["binary"] == pn_report.BINARY
    # a listed file no longer there is dropped from the list
    assert sorted(marker["files"]) == [
        "attack_curves.png",
        "robustness.png",
        "summary.json",
        "tables.md",
    ]


def test_a_report_file_the_user_edited_is_not_replaced(tmp_path):
    """The marker holds each written file's SHA-256: tables.md edited by hand since is the
    user's now, refused, kept byte for byte."""
    root, out = _pn_sweep(tmp_path), str(tmp_path / "out")
    pn_report.write_report(root, out)
    with open(os.path.join(out, "tables.md"), "a", encoding="utf-8") as handle:
        handle.write("\nMy notes on these numbers.\n")
    before = _snapshot(out)
    with pytest.raises(runs.OutputPathError, match="already holds tables.md, which .* as they"):
        pn_report.write_report(root, out)
    assert _snapshot(out) == before


@pytest.mark.parametrize("when", ["before the report", "after the report"])
def test_a_marked_folder_keeps_a_user_file_its_marker_does_not_list(when, tmp_path):
    """The marker covers the files uqmix reports wrote, not the folder: the user's own
    attack_curves.png in a folder mixture_report marked (or added to a pn_report folder
    later, under a name the report writes) is refused, never replaced."""
    root, figures = _pn_sweep(tmp_path), str(tmp_path / "paper_figures")
    if when == "before the report":
        report_output.write_report_files(
            {os.path.join(figures, "robustness.png"): b"png"}, mixture_report.BINARY
        )
    else:
        pn_report.write_report(root, str(tmp_path / "out"), figures_dir=figures)
        os.remove(os.path.join(figures, "attack_curves.png"))
        runs.atomic_write_json(  # as if this report kind had never written that name
            os.path.join(figures, MARKER),
            dict(runs.read_json_object(os.path.join(figures, MARKER)), files={}),
        )
    with open(os.path.join(figures, "attack_curves.png"), "wb") as handle:
        handle.write(b"MY OWN FIGURE")
    before = _snapshot(figures)
    with pytest.raises(
        runs.OutputPathError, match="already holds attack_curves.png, which .* not list it"
    ):
        pn_report.write_report(root, str(tmp_path / "out2"), figures_dir=figures)
    assert _snapshot(figures) == before


@pytest.mark.parametrize(
    "marker",
    [b'{"mine": 1}\n', b"not json", b'["binary", "uqmix_version"]'],
    ids=["foreign object", "not JSON", "JSON list"],
)
def test_a_file_named_like_the_marker_is_no_marker_and_is_kept(marker, tmp_path):
    user = str(tmp_path / "my_paper")
    before = _users_folder(user, {MARKER: marker})
    assert not report_output.is_report_dir(user)
    with pytest.raises(
        runs.OutputPathError, match=rf"already holds {MARKER}, which .* has no valid {MARKER}"
    ):
        pn_report.write_report(_pn_sweep(tmp_path), user)
    assert _snapshot(user) == before
    # nor one without the list of files written (what is uqmix's cannot be told)
    runs.atomic_write_json(
        os.path.join(user, MARKER), {"binary": pn_report.BINARY, "uqmix_version": "0"}
    )
    before = _snapshot(user)
    assert not report_output.is_report_dir(user)
    with pytest.raises(runs.OutputPathError, match=rf"already holds {MARKER}, which"):
        pn_report.write_report(_pn_sweep(tmp_path), user)
    assert _snapshot(user) == before


def test_write_report_files_checks_the_exact_paths(tmp_path):
    """The second check, at the moment of writing: a file that appeared after the first check
    (or a name its may-write test missed) in an unmarked folder is refused, nothing written."""
    folder = str(tmp_path / "out")
    before = _users_folder(folder, {"b.md": b"mine"})
    contents = {os.path.join(folder, "a.md"): b"a", os.path.join(folder, "b.md"): b"b"}
    with pytest.raises(
        runs.OutputPathError, match=r"out already holds b\.md, which .* another output folder"
    ):
        report_output.write_report_files(contents, "experiments.test")
    assert _snapshot(folder) == before
    fresh = str(tmp_path / "fresh")
    written = report_output.write_report_files({os.path.join(fresh, "a.md"): b"a"}, "x.y")
    assert written == [os.path.join(fresh, "a.md"), os.path.join(fresh, MARKER)]
    assert report_output.is_report_dir(fresh)


def test_aggregate_keeps_the_users_aggregate_json_and_replaces_its_own(tmp_path):
    root = tmp_path / "root"
    runs.atomic_write_json(
        str(root / "cfg" / "seed_0" / runs.METRICS_FILE), {"test": {"accuracy": 0.9}}
    )
    users = root / "aggregate.json"
    users.write_bytes(b'{"cfg": {"my": "numbers"}}\n')
    result = _run("experiments.aggregate", f"--output_root={root}")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {users} exists and is not an aggregate written by")
    assert "Move or rename it" in error
    assert users.read_bytes() == b'{"cfg": {"my": "numbers"}}\n'
    users.rename(root / "mine.json")
    for _ in range(2):  # written, then its own file replaced
        result = _run("experiments.aggregate", f"--output_root={root}")
        assert result.returncode == 0, result.stderr
        written = json.loads(users.read_text())
        assert written["uqmix_aggregate"] == report_output.AGGREGATE_FORMAT
        assert written["binary"] == "experiments.aggregate"
        assert written["configurations"]["cfg"]["test.accuracy"]["mean"] == pytest.approx(0.9)


def test_the_committed_report_folders_carry_the_marker():
    """results/<report>/ and results/figures/<report>/ were written by the report binaries: the
    binaries regenerate them (reproduce.sh) only because they are marked."""
    results = os.path.join(REPO_ROOT, "results")
    folders = [
        os.path.join(results, name)
        for name in os.listdir(results)
        if os.path.isfile(os.path.join(results, name, "tables.md"))
    ]
    figures = os.path.join(results, "figures")
    folders += [
        os.path.join(figures, name)
        for name in os.listdir(figures)
        if os.path.isdir(os.path.join(figures, name))
    ]
    assert len(folders) == 12
    for folder in folders:
        marker = runs.read_json_object(os.path.join(folder, MARKER))
        kind = "pn" if os.path.basename(folder).startswith("pn") else "mixture"
        assert marker["binary"] == f"experiments.{kind}_report", folder
        assert sorted(marker["files"]) == sorted(set(os.listdir(folder)) - {MARKER}), folder
        for name, digest in marker["files"].items():  # as written: regenerating may replace
            with open(os.path.join(folder, name), "rb") as handle:
                assert hashlib.sha256(handle.read()).hexdigest() == digest, (folder, name)
