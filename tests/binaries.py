"""Running an experiment binary as a user does, for the end-to-end tests."""

import os
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def run_binary(module, args, timeout=300):
    """``python -m module *args`` from the repository root with TF's own log level (the tests'
    TF_CPP_MIN_LOG_LEVEL removed, so logging noise shows); asserts exit code 0 and returns the
    ``subprocess.CompletedProcess`` (text stdout / stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def info_log_lines(result):
    """The TF / absl INFO lines of a run's stdout and stderr (a binary prints none)."""
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if re.match(r"I\d{4} ", line) or "INFO" in line
    ]
