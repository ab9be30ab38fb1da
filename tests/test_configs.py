"""Every flagfile in experiments/configs/ names only flags its binary has and passes validation."""

import glob
import os

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


def test_every_binary_has_flagfiles():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"smoke.cfg", "synthetic_rkl.cfg", "mixture_mnist_ml.cfg", "cifar10_rkl.cfg"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_flagfile_parses_and_validates(path):
    flag_values = flags.FlagValues()
    experiment = _experiment_of(path)
    options_binary.define_flags(experiment, flag_values)
    flag_values(["prog", f"--flagfile={path}"])  # unknown flags or bad values raise here
    config = {name: flag_values[name].value for name, _, _ in experiment.OPTIONS}
    experiment.validate_config(config)
