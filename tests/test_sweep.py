"""Sweep runner and aggregator: resumable grid, mean ± std over seeds."""

import os
import statistics
import subprocess
import sys

import pytest

from uqmix import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flagfile(tmp_path, name, text):
    path = tmp_path / f"{name}.cfg"
    path.write_text(text)
    return str(path)


def test_sweep_runs_grid_skips_done_and_aggregates(tmp_path):
    a = _flagfile(tmp_path, "a", "--scale=1.0\n")
    b = _flagfile(tmp_path, "b", "--scale=2.0\n")
    root = str(tmp_path / "out")
    planned = sweep.plan([a, b], [1, 2, 4], root)
    assert len(planned) == 6
    old = os.getcwd()
    os.chdir(REPO)
    try:
        lines = []
        assert sweep.run_sweep("tests.fake_experiment", planned, parallel=2, log=lines.append) == []
        assert len(lines) == 6
        again = []
        sweep.run_sweep("tests.fake_experiment", planned, log=again.append)
        assert again == ["6 of 6 runs already done; skipping them."]
    finally:
        os.chdir(old)
    table = sweep.aggregate(sweep.collect(root))
    entry = table["b"]["test.accuracy"]
    assert entry["n"] == 3
    assert entry["mean"] == pytest.approx(statistics.mean([2, 4, 8]))
    assert entry["std"] == pytest.approx(statistics.stdev([2, 4, 8]))
    text = sweep.markdown_table(table, ["test.accuracy"], digits=2)
    assert "| a | 2.33 ± 1.53 (3) |" in text


def test_sweep_reports_failures_and_bad_plans(tmp_path):
    bad = _flagfile(tmp_path, "bad", "--fail\n")
    planned = sweep.plan([bad], [0], str(tmp_path / "out"))
    old = os.getcwd()
    os.chdir(REPO)
    try:
        failures = sweep.run_sweep("tests.fake_experiment", planned, log=lambda _: None)
    finally:
        os.chdir(old)
    assert [f.name for f in failures] == ["bad"]
    with pytest.raises(ValueError, match="not found"):
        sweep.plan([str(tmp_path / "missing.cfg")], [0], "x")
    with pytest.raises(ValueError, match="distinct"):
        sweep.plan([bad, bad], [0], "x")


def _run_module(*args):
    """``python -m *args`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_sweep_binaries_end_to_end(tmp_path):
    a = _flagfile(tmp_path, "a", "--scale=3.0\n")
    root = str(tmp_path / "out")
    result = _run_module(
        "experiments.sweep",
        "--binary=tests.fake_experiment",
        f"--flagfiles={a}",
        "--seeds=1,2",
        f"--output_root={root}",
    )
    assert result.returncode == 0, result.stderr
    result = _run_module("experiments.aggregate", f"--output_root={root}", "--keys=test.accuracy")
    assert result.returncode == 0, result.stderr
    assert "4.5000 ± 2.1213 (2)" in result.stdout
    assert os.path.exists(os.path.join(root, "aggregate.json"))
    # --extra_flag passes one flag whole, commas and all; --extra_flags splits at commas
    shifted = str(tmp_path / "shifted")
    result = _run_module(
        "experiments.sweep",
        "--binary=tests.fake_experiment",
        f"--flagfiles={a}",
        "--seeds=1,2",
        f"--output_root={shifted}",
        "--extra_flags=--scale=2.0",
        "--extra_flag=--offsets=10,20",
        "--extra_flag=--offsets=1,2",
    )
    assert result.returncode == 0, result.stderr
    table = sweep.aggregate(sweep.collect(shifted))
    assert table["a"]["test.accuracy"]["mean"] == pytest.approx(2.0 * 1.5 + 3.0)  # last wins


def test_render_markdown_table_and_lookup():
    text = sweep.render_markdown_table(["a", "b"], [["1", "2"], ["3", "4"]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]
    with pytest.raises(ValueError, match="2 cells, the header 3"):
        sweep.render_markdown_table(["a", "b", "c"], [["1", "2"]])
    metrics = {"attacks": {"white_box": {"jsr": [0.1, 0.2]}}, "error": 0.01}
    assert sweep.lookup(metrics, "attacks", "white_box", "jsr") == [0.1, 0.2]
    assert sweep.lookup(metrics, "error") == 0.01
    assert sweep.lookup(metrics, "attacks", "black_box", "jsr") is None
    assert sweep.lookup(metrics, "error", "deeper") is None


def test_print_commands_gives_the_local_runner_s_commands_for_unfinished_runs(tmp_path):
    """--print_commands: one `cd CWD && command` line per run still to do, shell-quoted (a
    folder with a space and a quote), finished runs skipped by the local runner's record
    check; running the lines in a shell finishes the sweep."""
    folder = tmp_path / "my configs 'x'"
    folder.mkdir()
    a = _flagfile(folder, "a", "--scale=2.0\n")
    root = str(folder / "out")
    common = [
        "experiments.sweep",
        "--binary=tests.fake_experiment",
        f"--flagfiles={a}",
        "--seeds=1,2",
        f"--output_root={root}",
        "--extra_flag=--offsets=10,20",
    ]
    result = _run_module(*common, "--print_commands")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    planned = sweep.plan([a], [1, 2], root)
    expected = [
        f"cd {REPO} && "
        + " ".join(
            __import__("shlex").quote(part)
            for part in [
                sys.executable,
                "-m",
                "tests.fake_experiment",
                f"--flagfile={r.flagfile}",
                f"--seed={r.seed}",
                f"--output_dir={r.output_dir}",
                "--resume",
                "--offsets=10,20",
            ]
        )
        for r in planned
    ]
    assert lines == expected
    assert not os.path.exists(root)  # printing runs nothing
    # finish seed 1 with the printed command itself, in a shell
    done = subprocess.run(lines[0], shell=True, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _run_module(*common, "--print_commands").stdout.strip().splitlines() == lines[1:]
    # the local runner agrees: seed 1 is done, only seed 2 runs
    result = _run_module(*common)
    assert result.returncode == 0 and "1 of 2 runs already done" in result.stdout
    assert _run_module(*common, "--print_commands").stdout.strip() == ""
    table = sweep.aggregate(sweep.collect(root))
    assert table["a"]["test.accuracy"]["mean"] == pytest.approx(2.0 * 1.5 + 30.0)


def test_training_cache_does_not_change_a_run_s_record(tmp_path):
    """A run made with --training_cache and one made without are the same result: the flag
    is volatile, so neither makes the other's finished run stale."""
    from uqmix import options, runs
    from uqmix.studies import mixture_experiment

    flagfile = os.path.join(REPO, "experiments", "configs", "mixture_mnist_ml_frozen.cfg")
    (run,) = sweep.plan([flagfile], [0], str(tmp_path / "out"))
    binary = "experiments.mixture_mnist"
    cache = ["--training_cache=runs/training_cache"]
    without = sweep.requested_record(binary, mixture_experiment, run)
    with_cache = sweep.requested_record(binary, mixture_experiment, run, cache)
    assert with_cache == without and "training_cache" not in without["flags"]
    args = sweep.run_args(run, cache)
    config = mixture_experiment.validate_config(
        options.config_from_args(mixture_experiment.OPTIONS, args)
    )
    runs.prepare_output_dir(run.output_dir, config, resume=True, binary=binary)
    runs.atomic_write_json(os.path.join(run.output_dir, runs.METRICS_FILE), {"test": {}})
    assert sweep.status(run, without) == (sweep.DONE, [])
    assert sweep.status(run, with_cache) == (sweep.DONE, [])
