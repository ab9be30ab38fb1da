"""The bad-input catalogue (issue 12): every row is one hostile or careless input.

Each table below is a list of rows; a new case is a new row.  Binaries are
exercised in-process (``experiments.options_binary.main_for`` on a fresh
``FlagValues``) where possible; ``SUBPROCESS_CASES`` prove the exit codes of
real processes.  The expected outcome of every row is what the README
promises: exit 1 for bad flags, 2 for bad data or an output folder that
cannot be used, 3 for divergence; one line naming the flag or file, no
traceback, nothing deleted or half-written.

All three experiment binaries (``cifar_rkl`` = ``uqmix.studies.pn_experiment``,
``mixture_mnist`` = ``uqmix.studies.mixture_experiment``, ``synthetic_rkl`` =
``uqmix.studies.synthetic_experiment``) run through ``experiments.options_binary``.
"""

import gzip
import io
import json
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from scipy import special

from experiments import options_binary
from tests import fake_experiment
from tests.lock_helpers import held_by_another_process
from uqmix import dirichlet, runs, sweep
from uqmix.data import cifar, files, idx
from uqmix.data.errors import DataFileError
from uqmix.objectives import dirichlet_losses, mixture_losses
from uqmix.predictive import SampledPredictive
from uqmix.studies import (
    mixture_experiment,
    mixture_report,
    pn_experiment,
    pn_report,
    synthetic_experiment,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNWRITABLE = "/proc/uqmix-no-such-run"  # /proc refuses new files, even to root
F32_MAX = float(np.finfo(np.float32).max)


def _main(experiment, *args):
    """Runs ``experiment``'s binary main in-process on a fresh FlagValues; returns its code."""
    flag_values = flags.FlagValues()
    options_binary.define_flags(experiment, flag_values)
    flag_values(["binary", *args])
    return options_binary.main_for(experiment, flag_values)(["binary"])


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# -- 1. flags: one validation pass, exit 1 naming the flag ----------------------------------------
FLAG_CASES = [
    (pn_experiment, ["--attack_eps=inf"], "--attack_eps must be a finite number"),
    (pn_experiment, ["--attack_eps=nan"], "--attack_eps must be a finite number"),
    (pn_experiment, ["--attack_eps=2"], r"--attack_eps must be in \[0, 1\]"),
    (
        pn_experiment,
        ["--attack_eps=0.1", "--attack_eps_iter=0.2"],
        r"--attack_eps_iter must be in \[0, --attack_eps=0.1\]",
    ),
    (pn_experiment, ["--learning_rate=inf"], "--learning_rate must be a finite number"),
    (
        pn_experiment,
        ["--target_concentration=inf"],
        "--target_concentration must be a finite number",
    ),
    (pn_experiment, ["--adv_epsilon_stddev=inf"], "--adv_epsilon_stddev must be a finite"),
    (pn_experiment, ["--clip_norm=inf"], "--clip_norm must be a finite number"),
    (pn_experiment, ["--width_multiplier=nan"], "--width_multiplier must be a finite number"),
    (mixture_experiment, ["--detection_eps=inf"], "--detection_eps must be a finite number"),
    (mixture_experiment, ["--detection_eps=1.5"], r"--detection_eps must be in \(0, 1\]"),
    (mixture_experiment, ["--learning_rate=inf"], "--learning_rate must be a finite number"),
    (mixture_experiment, ["--weight_decay=inf"], "--weight_decay must be a finite number"),
    (mixture_experiment, ["--prior_variance=nan"], "--prior_variance must be a finite number"),
    (mixture_experiment, ["--pgd_eps_iter_ratio=inf"], "--pgd_eps_iter_ratio must be a finite"),
    (
        mixture_experiment,
        ["--robustness_epsilons=0,2"],
        r"--robustness_epsilons must be in \[0, 1\]",
    ),
    (
        mixture_experiment,
        ["--training_cache=runs/training_cache", "--strategy=multi_worker"],
        "--training_cache cannot be used with --strategy=multi_worker",
    ),
    (
        synthetic_experiment,
        ["--target_concentration=inf"],
        "--target_concentration must be a finite number",
    ),
    (synthetic_experiment, ["--learning_rate=nan"], "--learning_rate must be a finite number"),
    (synthetic_experiment, ["--losses=reverse_kl,reverse_kl"], "--losses lists a loss twice"),
    (
        synthetic_experiment,
        ["--strategy=multi_worker", "--steps_per_execution=25"],
        "--strategy=multi_worker needs --steps_per_execution=1",
    ),
    (synthetic_experiment, ["--strategy=gpu"], "Unknown --strategy 'gpu'"),
    (fake_experiment, ["--scale=inf"], "--scale must be a finite number"),
]


@pytest.mark.parametrize(
    "experiment, args, message",
    FLAG_CASES,
    ids=[f"{e.__name__.split('.')[-1]}{a}" for e, a, _ in FLAG_CASES],
)
def test_bad_flag_exits_1_naming_it(experiment, args, message, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(app.UsageError, match=message):
        _main(experiment, f"--output_dir={out}", *args)
    assert not out.exists()  # nothing ran


# -- 2. output paths: exit 2 with one line, before any work ---------------------------------------
def _file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("keep me")
    return str(path)


def _foreign_folder(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "saved_model.pb").write_text("another model")
    return str(folder)


PATH_CASES = [  # (option, path maker, message)
    ("output_dir", _file, "--output_dir=.* is a file, not a folder"),
    ("output_dir", lambda tmp: os.path.join(_file(tmp), "run"), "cannot be created: .* is a file"),
    ("output_dir", lambda tmp: UNWRITABLE, "not writable"),
    ("export_dir", _file, "--export_dir=.* is a file, not a folder"),
    ("export_dir", _foreign_folder, "--export_dir=.* holds files that are not an export of this"),
    ("export_dir", str, "--export_dir=.* is the run folder .* or contains it"),
    ("training_cache", _file, "--training_cache=.* is a file, not a folder"),
]


@pytest.mark.parametrize(
    "experiment",
    [pn_experiment, mixture_experiment, synthetic_experiment, fake_experiment],
    ids=["cifar_rkl", "mixture_mnist", "synthetic_rkl", "fake"],
)
@pytest.mark.parametrize(
    "option, make_path, message", PATH_CASES, ids=[f"{o}-{m}" for o, _, m in PATH_CASES]
)
def test_unusable_output_path_exits_2_in_one_line(
    experiment, option, make_path, message, tmp_path, capsys
):
    if option not in {name for name, _, _ in experiment.OPTIONS}:
        pytest.skip(f"{experiment.__name__} has no --{option}")
    path = make_path(tmp_path)
    args = [f"--{option}={path}"]
    if option != "output_dir":
        args.append(f"--output_dir={tmp_path / 'run'}")
    assert _main(experiment, *args) == 2
    assert re.search(message, _one_error_line(capsys))
    if os.path.isfile(os.path.join(str(tmp_path), "a_file")):
        assert (tmp_path / "a_file").read_text() == "keep me"
    if (tmp_path / "models").is_dir():
        assert (tmp_path / "models" / "saved_model.pb").read_text() == "another model"
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0555 folder")
def test_read_only_output_folder_exits_2(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert _main(fake_experiment, f"--output_dir={folder}") == 2
        assert "not writable" in _one_error_line(capsys)
    finally:
        folder.chmod(0o755)


def test_output_path_message_names_the_flag(tmp_path, capsys):
    path = _file(tmp_path)
    assert _main(fake_experiment, f"--output_dir={path}") == 2
    assert _one_error_line(capsys) == (
        f"error: --output_dir={path} is a file, not a folder; choose another path."
    )


# -- 3. --overwrite never deletes what is not a uqmix run -----------------------------------------
@pytest.fixture
def no_rmtree(monkeypatch):
    """Fails the test instead of deleting anything, should a guard not hold."""

    def refuse(path, *args, **kwargs):
        raise AssertionError(f"rmtree({path}) was called")

    monkeypatch.setattr(runs.shutil, "rmtree", refuse)


def _run_folder(path):
    """A folder holding a finished fake run (marker, config.json, flags.cfg, metrics.json)."""
    fake_experiment.run(fake_experiment.validate_config({"output_dir": str(path)}))
    return path


def test_overwrite_refuses_a_folder_without_a_run(tmp_path, capsys, no_rmtree):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_text("precious")
    assert _main(fake_experiment, f"--output_dir={folder}", "--overwrite") == 2
    line = _one_error_line(capsys)
    assert f"refusing to delete {folder}" in line and "holds no uqmix run" in line
    assert (folder / "holiday.jpg").read_text() == "precious"


PROTECTED_CASES = [  # (name, how to point at the run folder, expected reason)
    ("cwd", lambda run, mp: (mp.chdir(run), ".")[1], "the working directory"),
    (
        "ancestor of cwd",
        lambda run, mp: (mp.chdir(run / "sub"), str(run))[1],
        "a folder containing the working directory",
    ),
    ("home", lambda run, mp: (mp.setenv("HOME", str(run)), str(run))[1], "the home directory"),
]


@pytest.mark.parametrize(
    "name, target, reason", PROTECTED_CASES, ids=[n for n, _, _ in PROTECTED_CASES]
)
def test_overwrite_never_deletes_cwd_home_or_ancestors_even_of_a_run(
    name, target, reason, tmp_path, monkeypatch, capsys, no_rmtree
):
    run = _run_folder(tmp_path / "run")
    (run / "sub").mkdir()
    output_dir = target(run, monkeypatch)
    assert _main(fake_experiment, f"--output_dir={output_dir}", "--overwrite") == 2
    assert f"it is {reason}" in _one_error_line(capsys)
    assert (run / runs.METRICS_FILE).exists()


def test_synthetic_rkl_refuses_a_run_folder_in_use(tmp_path, capsys, no_rmtree):
    run = _run_folder(tmp_path / "run")
    with held_by_another_process(run) as holder:
        assert _main(synthetic_experiment, f"--output_dir={run}", "--overwrite") == 2
        assert f"is in use by another process (pid {holder.pid} on " in _one_error_line(capsys)
    assert (run / runs.METRICS_FILE).exists()


def test_remove_run_dir_refuses_a_filesystem_root(no_rmtree):
    with pytest.raises(runs.OutputPathError, match="it is a filesystem root"):
        runs.remove_run_dir("/")


def test_overwrite_replaces_marked_and_pre_marker_runs(tmp_path):
    marked = _run_folder(tmp_path / "marked")
    assert (marked / runs.RUN_MARKER).exists()
    legacy = _run_folder(tmp_path / "legacy")
    (legacy / runs.RUN_MARKER).unlink()  # a run made before the marker: config.json + flags.cfg
    for folder in (marked, legacy):
        (folder / "stale.txt").write_text("x")
        assert _main(fake_experiment, f"--output_dir={folder}", "--overwrite", "--seed=3") == 0
        assert not (folder / "stale.txt").exists()
        assert json.loads((folder / runs.METRICS_FILE).read_text())["test"]["accuracy"] == 3.0


def test_foreign_folder_error_does_not_advise_overwrite(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(runs.ConfigMismatchError) as error:
        runs.prepare_output_dir(str(tmp_path), {"a": 1})
    assert "holds no uqmix run" in str(error.value) and "or --overwrite" not in str(error.value)


def _tree_bytes(folder):
    return {
        os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read()
        for d, _, names in os.walk(folder)
        for n in names
    }


@pytest.mark.parametrize(
    "files",
    [
        {"model.keras": "MY OWN MODEL", "metrics.json": '{"mine": 1}', "notes.txt": "keep"},
        {"config.json": '{"mine": 1}', "log.txt": "their log"},  # config.json alone: not a run
    ],
)
def test_resume_into_a_folder_that_holds_no_uqmix_run_is_refused_untouched(tmp_path, capsys, files):
    """--resume continues a uqmix run; it never adopts (and writes over) someone else's folder."""
    folder = tmp_path / "my_project"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    before = _tree_bytes(folder)
    assert _main(fake_experiment, f"--output_dir={folder}", "--resume") == 2
    line = _one_error_line(capsys)
    assert "holds no uqmix run" in line and "with --resume too" in line
    assert _tree_bytes(folder) == before


@pytest.mark.parametrize("locks", ["fcntl", "no fcntl"])  # no fcntl: Windows
def test_resume_accepts_a_folder_holding_only_a_sweeps_log(tmp_path, monkeypatch, locks):
    """A sweep locks the run folder, then appends log.txt, before the binary writes its record;
    a run stopped in between (say, refused for its data) is continued by the next sweep with
    --resume.  The user's own folder holding a log.txt (no uqmix lock file) is not adopted.
    Where nothing can be locked, the lock file is still created (it marks the claim)."""
    if locks == "no fcntl":
        monkeypatch.setattr(runs.run_lock, "fcntl", None)
    folder = tmp_path / "seed_0"
    folder.mkdir()
    (folder / "log.txt").write_text("an earlier attempt\n")
    assert _main(fake_experiment, f"--output_dir={folder}", "--resume") == 2  # not locked by us
    assert sorted(os.listdir(folder)) == ["log.txt"]
    with runs.run_lock.holding(str(folder)):
        runs.run_lock.lock(str(folder))  # as the sweep does before opening the log
    assert _main(fake_experiment, f"--output_dir={folder}") == 2  # without --resume: refused
    assert _main(fake_experiment, f"--output_dir={folder}", "--resume") == 0
    assert (folder / runs.METRICS_FILE).exists()
    assert (folder / "log.txt").read_text() == "an earlier attempt\n"


def test_run_record_has_binary_every_flag_and_version(tmp_path):
    run = _run_folder(tmp_path / "run")
    record = runs.read_record(str(run))
    assert record["uqmix_version"] == __import__("uqmix").__version__
    assert record["binary"] == runs.main_binary()
    expected = {
        k: v
        for k, v in fake_experiment.validate_config({"output_dir": str(run)}).items()
        if k not in runs.VOLATILE_KEYS
    }
    assert record["flags"] == expected


# -- 4. divergence: exit 3 ------------------------------------------------------------------------
class _Diverging:
    OPTIONS = fake_experiment.OPTIONS
    validate_config = staticmethod(fake_experiment.validate_config)

    @staticmethod
    def run(config):
        from uqmix.training import TrainingDivergedError

        raise TrainingDivergedError("Training diverged (loss nan) at epoch 1, batch 1; stopped.")


def test_divergence_exits_3_in_one_line(tmp_path, capsys):
    assert _main(_Diverging, f"--output_dir={tmp_path / 'run'}") == 3
    assert "Training diverged" in _one_error_line(capsys)


def test_synthetic_rkl_divergence_exits_3_in_one_line(tmp_path, capsys):
    """A real divergence (learning rate 1e30) of the default job: exit 3, not a traceback."""
    code = _main(
        synthetic_experiment,
        f"--output_dir={tmp_path / 'run'}",
        "--losses=reverse_kl",
        "--learning_rate=1e30",
        "--train_steps=20",
        "--steps_per_epoch=10",
        "--steps_per_execution=5",
        "--verbose=0",
    )
    assert code == 3
    assert "Training diverged" in _one_error_line(capsys)
    assert not (tmp_path / "run" / runs.METRICS_FILE).exists()


# -- 5. sweeps: stale results are never reused silently -------------------------------------------
def _sweep(tmp_path, text, **kwargs):
    flagfile = tmp_path / "cfg.cfg"
    flagfile.write_text(text)
    planned = sweep.plan([str(flagfile)], [0, 1], str(tmp_path / "root"))
    return planned, sweep.triage("tests.fake_experiment", planned, log=lambda line: None, **kwargs)


def _finish(planned, monkeypatch):
    """Finishes the runs in-process, recorded as made by the sweep's binary."""
    monkeypatch.setattr(runs, "main_binary", lambda: "tests.fake_experiment")
    for run in planned:
        fake_experiment.run(
            fake_experiment.validate_config(
                {"output_dir": run.output_dir, "seed": run.seed, "resume": True}
            )
        )


SWEEP_CASES = [  # (name, flagfile text of the finished runs, of the request, expected)
    ("changed flag", "--scale=1.0\n", "--scale=2.0\n", r"scale: 1\.0 → 2\.0"),
    ("added flag", "", "--offsets=1\n", r'offsets: \[\] → \["1"\]'),
]


@pytest.mark.parametrize(
    "name, before, after, message", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES]
)
def test_sweep_refuses_a_finished_run_of_another_record(
    name, before, after, message, tmp_path, monkeypatch
):
    planned, todo = _sweep(tmp_path, before)
    assert len(todo) == 2
    _finish(planned, monkeypatch)
    assert _sweep(tmp_path, before)[1] == []  # same record: done
    with pytest.raises(sweep.StaleRunsError, match=message) as error:
        _sweep(tmp_path, after)
    assert "--redo_stale" in str(error.value) and "seed_0" in str(error.value)
    _, todo = _sweep(tmp_path, after, redo_stale=True)
    assert [r.seed for r in todo] == [0, 1] and not os.path.exists(todo[0].output_dir)


def test_sweep_treats_metrics_without_a_record_as_stale(tmp_path):
    planned, _ = _sweep(tmp_path, "")
    os.makedirs(planned[0].output_dir)
    runs.atomic_write_json(os.path.join(planned[0].output_dir, runs.METRICS_FILE), {"a": 1})
    with pytest.raises(sweep.StaleRunsError, match="no run record"):
        _sweep(tmp_path, "")


@pytest.mark.parametrize(
    "text, message",
    [
        ("--scale=abc\n", "bad flags"),
        ("--no_such_flag=1\n", "bad flags"),
        ("--scale=inf\n", "--scale must be a finite"),
    ],
)
def test_sweep_checks_every_run_s_flags_before_running(text, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        _sweep(tmp_path, text)
    assert not (tmp_path / "root").exists()


def test_sweep_refuses_an_unknown_binary():
    with pytest.raises(ValueError, match="no such module"):
        sweep.experiment_of("experiments.no_such_binary")


# -- 6. aggregate and reports: bad data named, outputs all or none --------------------------------
def _metrics(seed=0):
    return {
        "dataset": "mnist",
        "model": "ml",
        "label": "ML λ=1 σ²=1",
        "kl_weight": 1.0,
        "prior_variance": 1.0,
        "test": {"accuracy": 0.9 + 0.01 * seed},
        "error": 0.1,
    }


def _study(tmp_path, *seeds):
    root = tmp_path / "root"
    for seed in seeds:
        folder = root / "cfg" / f"seed_{seed}"
        folder.mkdir(parents=True)
        runs.atomic_write_json(str(folder / runs.METRICS_FILE), _metrics(seed))
    return root


def _json_list(root):
    (root / "cfg" / "seed_0" / runs.METRICS_FILE).write_text("[1, 2]")


def _corrupt(root):
    (root / "cfg" / "seed_0" / runs.METRICS_FILE).write_text('{"error": 0.1,')


def _seed_abc(root):
    (root / "cfg" / "seed_abc").mkdir()


def _record(folder, config):
    """Gives a finished run's ``folder`` (metrics.json only) the record a binary would have
    written first (marker, config.json, flags.cfg)."""
    metrics = (folder / runs.METRICS_FILE).read_bytes()
    (folder / runs.METRICS_FILE).unlink()
    with runs.run_lock.holding(str(folder)):
        runs.prepare_output_dir(str(folder), config)
    (folder / runs.METRICS_FILE).write_bytes(metrics)


def _mixed(root):
    for seed, scale in ((0, 1.0), (1, 2.0)):
        _record(root / "cfg" / f"seed_{seed}", {"seed": seed, "scale": scale})


COLLECT_CASES = [  # (name, how to spoil the study, message)
    ("JSON list", _json_list, r"seed_0/metrics\.json: expected a JSON object, got a JSON list"),
    ("corrupt JSON", _corrupt, r"seed_0/metrics\.json: corrupt JSON"),
    ("seed_abc", _seed_abc, r"seed_abc: a run folder must be named seed_<integer>"),
    ("mixed configurations", _mixed, r"mixes runs of different configurations: .*scale: 1\.0 → 2"),
]


@pytest.mark.parametrize(
    "reader",
    [sweep.collect, mixture_report.load_study, pn_report.load_study],
    ids=["aggregate", "mixture_report", "pn_report"],
)
@pytest.mark.parametrize("name, spoil, message", COLLECT_CASES, ids=[c[0] for c in COLLECT_CASES])
def test_sweep_readers_name_the_bad_file(reader, name, spoil, message, tmp_path):
    root = _study(tmp_path, 0, 1)
    spoil(root)
    with pytest.raises(ValueError, match=message):
        reader(str(root))


def test_seeds_differing_only_in_seed_are_one_configuration(tmp_path):
    root = _study(tmp_path, 0, 1)
    for seed in (0, 1):
        _record(
            root / "cfg" / f"seed_{seed}", {"seed": seed, "scale": 1.0, "output_dir": f"x{seed}"}
        )
    assert sorted(sweep.collect(str(root))["cfg"]) == [0, 1]


REPORT_OUTPUT_CASES = [  # (name, report writer, how to spoil the outputs, message)
    (
        "mixture figures_dir is a file",
        mixture_report.write_report,
        lambda out, tmp: {"figures_dir": _file(tmp)},
        "--figures_dir=.* is a file",
    ),
    (
        "pn figures_dir is a file",
        pn_report.write_report,
        lambda out, tmp: {"figures_dir": _file(tmp)},
        "--figures_dir=.* is a file",
    ),
    (
        "mixture output_dir unwritable",
        mixture_report.write_report,
        lambda out, tmp: {"output_dir": UNWRITABLE},
        "not writable",
    ),
    (
        "pn summary.json is a folder",
        pn_report.write_report,
        lambda out, tmp: (os.makedirs(os.path.join(out, "summary.json")), {})[1],
        "is a folder",
    ),
    (
        "mixture summary.json is a folder",
        mixture_report.write_report,
        lambda out, tmp: (os.makedirs(os.path.join(out, "summary.json")), {})[1],
        "is a folder",
    ),
]


@pytest.mark.parametrize(
    "name, write, spoil, message", REPORT_OUTPUT_CASES, ids=[c[0] for c in REPORT_OUTPUT_CASES]
)
def test_reports_write_all_outputs_or_none(name, write, spoil, message, tmp_path):
    root = _study(tmp_path, 0, 1)
    out = str(tmp_path / "out")
    os.makedirs(out)
    arguments = {"output_dir": out, "figures_dir": None, **spoil(out, tmp_path)}
    with pytest.raises(runs.OutputPathError, match=message):
        write(str(root), arguments["output_dir"], figures_dir=arguments["figures_dir"])
    assert sorted(os.listdir(out)) in ([], ["summary.json"])  # no tables.md, no temp file
    # and the same call with usable folders writes every file
    report = write(str(root), str(tmp_path / "good"))
    assert all(os.path.isfile(p) for p in report["written"])


# -- 7. data files: decompression bounded by the header -------------------------------------------
def _idx_bomb(path, extra_bytes):
    header = bytes((0, 0, 8, 3)) + np.array([1, 28, 28], ">u4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + bytes(28 * 28) + bytes(extra_bytes))
    return str(path)


def test_idx_reading_stops_at_the_size_its_header_declares(tmp_path, monkeypatch):
    path = _idx_bomb(tmp_path / "bomb-idx3-ubyte.gz", 20_000_000)  # 20 MB of zeros, ~20 kB gz
    requested = []
    original = gzip.GzipFile.read

    def recording_read(self, size=-1):
        requested.append(size)
        return original(self, size)

    monkeypatch.setattr(gzip.GzipFile, "read", recording_read)
    with pytest.raises(DataFileError, match="bomb-idx3-ubyte.gz: holds more than the 784 bytes"):
        idx.read_idx_images(path)
    assert requested and all(0 <= size <= 28 * 28 + 1 for size in requested), requested


def test_idx_of_the_declared_size_still_reads(tmp_path):
    images = idx.read_idx_images(_idx_bomb(tmp_path / "ok-idx3-ubyte.gz", 0), expected_count=1)
    assert images.shape == (1, 28, 28, 1)


_TINY_CIFAR = cifar.CifarFormat(
    folder="tiny",
    archive="tiny.tar.gz",
    split_files={"test": (("test.bin", 2),)},
    label_classes=(10,),
    label_index=0,
    pickled_folder="tiny-py",
)


def _records(count):
    return bytes(count * _TINY_CIFAR.record_bytes)


def _tar_with(root, data):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("tiny/test.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (root / "tiny.tar.gz").write_bytes(buffer.getvalue())


def _bin_with(root, data):
    (root / "tiny").mkdir()
    (root / "tiny" / "test.bin").write_bytes(data)


@pytest.mark.parametrize(
    "write, message",
    [
        (_tar_with, r"tiny.tar.gz:tiny/test.bin: tar header says 9219 bytes, more than the 6146"),
        (_bin_with, r"test.bin: holds more than the 6146 bytes"),
    ],
    ids=["tar member", "extracted file"],
)
def test_cifar_reading_stops_at_the_published_record_count(write, message, tmp_path):
    write(tmp_path, _records(3))
    with pytest.raises(DataFileError, match=message):
        cifar.read_cifar_split(str(tmp_path), _TINY_CIFAR, "test", check_counts=False)
    (tmp_path / "ok").mkdir()
    write(tmp_path / "ok", _records(2))
    x, y = cifar.read_cifar_split(str(tmp_path / "ok"), _TINY_CIFAR, "test")
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [0, 0]


def test_read_limited_never_asks_for_more_than_limit_plus_one():
    sizes = []

    class Handle:
        def read(self, size=-1):
            sizes.append(size)
            return bytes(min(size, 100)) if size >= 0 else bytes(100)

    assert files.read_limited(Handle(), "f", 100, "x") == bytes(100)
    with pytest.raises(DataFileError, match="more than the 99 bytes"):
        files.read_limited(Handle(), "f", 99, "x")
    assert sizes == [101, 100]


# -- 8. library API -------------------------------------------------------------------------------
LOGITS = [1e4, 1e8, 1e30, F32_MAX]


@pytest.mark.parametrize("z", LOGITS + [-z for z in LOGITS], ids=str)
def test_logit_clip_holds_for_every_finite_float32(z):
    x = tf.constant([z, 0.5, -2.0], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        log_alpha = dirichlet.log_alpha_from_logits(x)
        weighted = tf.reduce_sum(log_alpha * tf.constant([1.0, 2.0, 3.0]))
    bound = dirichlet.LOG_ALPHA_BOUND
    np.testing.assert_array_equal(log_alpha.numpy(), [np.sign(z) * bound, 0.5, -2.0])
    np.testing.assert_array_equal(tape.gradient(weighted, x).numpy(), [1.0, 2.0, 3.0])


def _reverse_kl_float64(log_alpha, target):
    """KL(Dir(α) ‖ Dir(β)) in float64 (closed form)."""
    alpha = np.exp(np.asarray(log_alpha, np.float64))
    a0, b0 = alpha.sum(), np.sum(target)
    return (
        special.gammaln(a0)
        - special.gammaln(alpha).sum()
        - special.gammaln(b0)
        + special.gammaln(target).sum()
        + np.sum((alpha - target) * (special.digamma(alpha) - special.digamma(a0)))
    )


@pytest.mark.parametrize("z", [1e9, 1e30, F32_MAX, -1e9])
def test_reverse_kl_ood_loss_stays_clipped_with_finite_gradients(z):
    logits = tf.constant([[z, 0.0, 0.0]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = dirichlet_losses.reverse_kl_loss(logits, None, 100.0, concentration=1.0)
    gradient = tape.gradient(loss, logits).numpy()
    clipped = [np.clip(z, -30.0, 30.0), 0.0, 0.0]
    expected = _reverse_kl_float64(clipped, np.ones(3))
    assert float(loss[0]) == pytest.approx(expected, rel=1e-3)
    assert float(loss[0]) > 1.0  # far from a flat Dirichlet (old code: ~5e-7 at z >= 1e9)
    assert np.all(np.isfinite(gradient)) and np.any(gradient != 0)


def test_nan_logits_are_a_clear_error():
    with pytest.raises(ValueError, match="logits contain NaN"):
        dirichlet.log_alpha_from_logits([0.0, np.nan])


@pytest.mark.parametrize(
    "make",
    [
        lambda: SampledPredictive(np.zeros([0, 2, 3], np.float32)),
        lambda: SampledPredictive.from_logits(np.zeros([0, 2, 3], np.float32)),
    ],
    ids=["probs", "from_logits"],
)
def test_sampled_predictive_needs_a_sample(make):
    with pytest.raises(ValueError, match="at least one sample"):
        make()


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [0.0, 5.0]], ids=str)
def test_mixture_loss_refuses_out_of_range_labels(labels):
    logits = tf.zeros([2, 2, 3])
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, num_classes\)"):
        mixture_losses.sample_log_likelihoods(tf.constant(labels), logits)
    compiled = tf.function(mixture_losses.sample_log_likelihoods)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be class indices"):
        compiled(tf.constant(labels), logits)


def test_mixture_loss_in_range_labels_unchanged():
    logits = tf.random.stateless_normal([2, 3, 4], seed=[1, 2])
    labels = [0, 3, 1]
    expected = tf.nn.log_softmax(logits).numpy()[:, np.arange(3), labels]
    np.testing.assert_allclose(
        mixture_losses.sample_log_likelihoods(tf.constant(labels), logits).numpy(),
        expected,
        rtol=1e-6,
    )


# -- 9. result files: modes, atomic model, time over resumes --------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_result_files_get_the_umask_mode(umask, tmp_path):
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain", "w"):
            pass
        expected = os.stat(tmp_path / "plain").st_mode & 0o777
        runs.atomic_write_json(str(tmp_path / "m.json"), {"a": 1})
        runs.atomic_write_files({str(tmp_path / "t.md"): b"x"})
    finally:
        os.umask(old)
    for name in ("m.json", "t.md"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected


def test_model_keras_is_written_atomically(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / "model.keras")
    runs.atomic_save_model(model, path)
    loaded = keras.models.load_model(path)
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    before = open(path, "rb").read()

    class Broken(keras.Sequential):
        def save(self, filepath, *args, **kwargs):
            with open(filepath, "wb") as handle:
                handle.write(b"half a zip")
            raise OSError("disk full")

    broken = Broken([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(OSError, match="disk full"):
        runs.atomic_save_model(broken, path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["model.keras"]


def test_train_seconds_add_up_over_resumes(tmp_path):
    spent = [12.5, 3.25, 0.5]
    totals = [runs.add_seconds(str(tmp_path), "train_seconds", s) for s in spent]
    assert totals == [sum(spent[: k + 1]) for k in range(len(spent))]
    assert json.loads((tmp_path / runs.TIMING_FILE).read_text()) == {"train_seconds": 16.25}


# -- 10. real processes: the exit codes -----------------------------------------------------------
def _run(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=240
    )


def _no_traceback(result):
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


def test_subprocess_mixture_mnist_exit_codes(tmp_path):
    result = _run(
        "experiments.mixture_mnist", "--detection_eps=inf", f"--output_dir={tmp_path / 'run'}"
    )
    assert result.returncode == 1 and "--detection_eps must be a finite number" in result.stderr
    _no_traceback(result)
    path = _file(tmp_path)
    result = _run("experiments.mixture_mnist", f"--output_dir={path}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --output_dir={path} is a file, not a folder; choose another path."
    )
    _no_traceback(result)


def test_subprocess_aggregate_and_report_exit_codes(tmp_path):
    root = _study(tmp_path, 0)
    result = _run("experiments.aggregate", f"--output_root={root}", "--digits=-3")
    assert result.returncode == 1 and "digits" in result.stderr
    _json_list(root)
    result = _run("experiments.aggregate", f"--output_root={root}")
    assert result.returncode == 2 and "expected a JSON object" in result.stderr
    _no_traceback(result)
    root = _study(tmp_path / "b", 0, 1)
    out = tmp_path / "out"
    result = _run(
        "experiments.mixture_report",
        f"--sweep_root={root}",
        f"--output_dir={out}",
        f"--figures_dir={_file(tmp_path)}",
    )
    assert result.returncode == 2 and "--figures_dir" in result.stderr
    assert not out.exists()
    _no_traceback(result)


def test_subprocess_sweep_exit_codes(tmp_path):
    flagfile = tmp_path / "cfg.cfg"
    flagfile.write_text("--scale=1.0\n")
    common = [
        "experiments.sweep",
        "--binary=tests.fake_experiment",
        f"--flagfiles={flagfile}",
        "--seeds=0",
    ]
    result = _run(*common, f"--output_root={UNWRITABLE}")
    assert result.returncode == 2 and "--output_root" in result.stderr
    _no_traceback(result)
    root = tmp_path / "root"
    assert _run(*common, f"--output_root={root}").returncode == 0
    flagfile.write_text("--scale=2.0\n")
    result = _run(*common, f"--output_root={root}")
    assert result.returncode == 2 and "scale: 1.0 → 2.0" in result.stderr
    _no_traceback(result)
    assert _run(*common, f"--output_root={root}", "--redo_stale").returncode == 0
    metrics = json.loads((root / "cfg" / "seed_0" / runs.METRICS_FILE).read_text())
    assert (
        metrics["test"]["accuracy"] == 0.0
        and runs.read_record(str(root / "cfg" / "seed_0"))["flags"]["scale"] == 2.0
    )
