"""Every flagfile in experiments/configs/ names only flags its binary has and passes validation."""

import glob
import os
import re
import shutil
import subprocess

import pytest
from absl import flags

from experiments import options_binary
from tests.conftest import REPO_ROOT
from uqmix.studies import mixture_experiment, pn_experiment, synthetic_experiment

CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "experiments", "configs", "*.cfg")))


def _experiment_of(path):
    name = os.path.basename(path)
    if name.startswith("mixture_"):
        return mixture_experiment
    if name.startswith("synthetic_rkl"):
        return synthetic_experiment
    return pn_experiment


def _parsed(path):
    flag_values = flags.FlagValues()
    experiment = _experiment_of(path)
    options_binary.define_flags(experiment, flag_values)
    flag_values(["prog", f"--flagfile={path}"])
    return {name: flag_values[name].value for name, _, _ in experiment.OPTIONS}


def test_every_binary_has_flagfiles():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"smoke.cfg", "synthetic_rkl.cfg", "mixture_mnist_ml.cfg", "cifar10_rkl.cfg"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_flagfile_parses_and_validates(path):
    _experiment_of(path).validate_config(_parsed(path))  # unknown flags or bad values raise


def test_reproduction_plan_names_existing_flagfiles_and_refuses_unknown_blocks():
    """results/reproduce.sh under DRY_RUN prints every block's commands; each flagfile they name
    exists, every block has a sweep and a report, and an unknown block is refused before any."""
    script = os.path.join(REPO_ROOT, "results", "reproduce.sh")
    blocks = [str(b) for b in range(1, 10)]
    result = subprocess.run(
        ["bash", script, *blocks],
        env=dict(os.environ, DRY_RUN="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split("== block ")[1:]
    assert [part.split(" ", 1)[0] for part in printed] == blocks
    for part in printed:
        assert "experiments.sweep" in part and "_report --sweep_root=results/runs/" in part
    named = set(re.findall(r"experiments/configs/[\w.]+\.cfg", result.stdout))
    assert len(named) >= 30
    missing = [path for path in named if not os.path.isfile(os.path.join(REPO_ROOT, path))]
    assert not missing, missing
    refused = subprocess.run(
        ["bash", script, "2", "10"],
        env=dict(os.environ, DRY_RUN="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "no block 10" in refused.stderr
    assert "== block" not in refused.stdout


def _run_reproduction_copy(tmp_path, fake_python, *blocks):
    """Runs a copy of results/reproduce.sh in ``tmp_path`` (its own results/ and runs/) for
    ``blocks``, with PYTHON a bash stand-in whose body is ``fake_python``."""
    (tmp_path / "results").mkdir(exist_ok=True)
    script = tmp_path / "results" / "reproduce.sh"
    shutil.copy(os.path.join(REPO_ROOT, "results", "reproduce.sh"), script)
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!/usr/bin/env bash\n{fake_python}\n")
    fake.chmod(0o755)
    return subprocess.run(
        ["bash", str(script), *blocks],
        env=dict(os.environ, PYTHON=str(fake)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_reproduction_block_goes_on_past_a_failed_sweep(tmp_path):
    """A sweep that fails does not end its block: the block's other sweep and its report still
    run, the block is reported FAILED, the next block runs, and the exit code is 1.  The script
    runs from a copy (its own empty results/ and runs/), with PYTHON a stand-in that logs every
    command and fails the sweep of mnist_kl.cfg (the block's first)."""
    log = tmp_path / "commands.log"
    result = _run_reproduction_copy(
        tmp_path, f'echo "$*" >> {log}\ncase "$*" in *mnist_kl.cfg*) exit 4 ;; esac', "2", "9"
    )
    assert result.returncode == 1, result.stderr
    assert "== failed (exit code 4): " in result.stderr
    assert "== block 2 FAILED (exit code 1)" in result.stderr
    assert "block 9 FAILED" not in result.stderr
    assert "failed blocks: 2" in result.stderr
    commands = log.read_text().splitlines()
    assert [c.split()[1] for c in commands] == [
        "experiments.sweep",  # block 2: the failing sweep,
        "experiments.sweep",  # the block's second sweep all the same,
        "experiments.pn_report",  # and its report,
        "experiments.splice_report",  # spliced into REPRODUCTION.md
        "experiments.sweep",  # block 9
        "experiments.pn_report",
        "experiments.splice_report",
    ]
    assert "mnist_kl.cfg" in commands[0] and "--training_processes" not in commands[0]
    assert "mnist_rkl_adv.cfg" in commands[1] and "--training_processes=2" in commands[1]
    assert "mnist_mc_dropout.cfg" in commands[4]


def test_block_6_runs_pn_rkl_adv_seeds_alone_without_black_box_transfer(tmp_path):
    """Block 6: PN-KL and DNN-ADV two at a time with one thread each; PN-RKL and the DNN with
    black-box transfer, their two networks by two processes; PN-RKL-ADV (its source would not
    fit a session here) without black-box transfer, one run with two threads."""
    log = tmp_path / "commands.log"
    result = _run_reproduction_copy(
        tmp_path, f'echo "$TF_NUM_INTRAOP_THREADS $TF_NUM_INTEROP_THREADS $*" >> {log}', "6"
    )
    assert result.returncode == 0, result.stderr
    sweeps = [line for line in log.read_text().splitlines() if "experiments.sweep" in line]
    assert len(sweeps) == 3
    pairs, blackbox, alone = sweeps
    assert pairs.startswith("1 1 ") and "mnist_kl.cfg,experiments/configs/mnist_dnn_adv" in pairs
    assert "--parallel=1" not in pairs and "--blackbox_transfer" not in pairs
    assert blackbox.startswith("1 1 ") and "--training_processes=2" in blackbox
    assert "--blackbox_transfer=true" in blackbox and "mnist_rkl_adv" not in blackbox
    assert "mnist_rkl.cfg" in blackbox and "mnist_dnn.cfg" in blackbox
    assert alone.startswith("2 2 ") and alone.endswith(
        "--flagfiles=experiments/configs/mnist_rkl_adv.cfg"
    )
    assert "--parallel=1" in alone and "--blackbox_transfer" not in alone
    assert "--seeds=1,2" in alone and "--training_processes" not in alone


def test_reproduction_restores_committed_runs_into_missing_folders_only(tmp_path):
    """On a fresh clone the finished runs exist only in results/runs/: reproduce.sh copies each
    one's four record files back into runs/ (so the sweep skips it after checking its record)
    when its runs/ folder does not exist, and leaves an existing folder (an unfinished run's
    checkpoints) untouched."""
    files = ("metrics.json", "flags.cfg", "config.json", "uqmix_run.json")
    for seed in (0, 1):
        committed = tmp_path / "results" / "runs" / "pn_full" / "mnist_rkl" / f"seed_{seed}"
        committed.mkdir(parents=True)
        for name in files:
            (committed / name).write_text(f"{name} of seed {seed}")
    unfinished = tmp_path / "runs" / "pn_full" / "mnist_rkl" / "seed_1"
    unfinished.mkdir(parents=True)
    (unfinished / "checkpoint").write_text("epoch 3")
    result = _run_reproduction_copy(tmp_path, "exit 0", "9")
    assert result.returncode == 0, result.stderr
    assert "restored 1 finished runs" in result.stdout
    restored = tmp_path / "runs" / "pn_full" / "mnist_rkl" / "seed_0"
    for name in files:
        assert (restored / name).read_text() == f"{name} of seed 0"
    assert sorted(os.listdir(unfinished)) == ["checkpoint"]


PN_STUDY_CONFIGS = [
    p
    for p in CONFIGS
    if os.path.basename(p).startswith(("mnist_", "cifar10_", "cifar100_", "svhn_"))
]


@pytest.mark.parametrize("path", PN_STUDY_CONFIGS, ids=os.path.basename)
def test_prior_network_study_attacks_every_model_with_kl_pmf(path):
    """The paper's adaptive attack (Fig. 5: targeted MIM, KL-PMF) is the same for every model
    compared, Prior Networks and baselines alike."""
    config = _parsed(path)
    if config["attack"]:
        assert (config["attack_method"], config["attack_criterion"]) == ("mim", "kl_pmf")
