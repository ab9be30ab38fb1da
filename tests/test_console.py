"""uqmix.console: the INFO-line filter, "Training <model> (i/n)" and progress lines."""

import io

import pytest

from uqmix import console

# Lines TensorFlow 2.21 prints while its libraries load (copied from a real run).
LOAD_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796038634.915229   26639 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1796037765.090094    6478 cpu_feature_guard.cc:227] This TensorFlow binary "
    "is optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "I1130 12:01:02.123456  4242 cudart_stub.cc:31] Could not find cuda drivers",
]
KEPT = [
    "E0000 00:00:1796038646.262289   26639 cuda_platform.cc:52] failed call to cuInit",
    "W1130 12:01:02.123456  4242 file.cc:1] a warning",
    "Epoch 1/2",
    "Information about the run",
    "Traceback (most recent call last):",
]


@pytest.mark.parametrize("line", LOAD_NOISE)
def test_info_lines_are_noise(line):
    assert console.is_noise(line)


@pytest.mark.parametrize("line", KEPT)
def test_warnings_errors_and_our_lines_are_kept(line):
    assert not console.is_noise(line)


def test_announce_names_the_model_and_its_position():
    stream = io.StringIO()
    assert console.announce("reverse_kl", 2, 2, stream=stream) == "Training reverse_kl (2/2)"
    assert console.announce("model", 1, 1, stream=stream) == "Training model"
    assert stream.getvalue().splitlines() == ["Training reverse_kl (2/2)", "Training model"]


def test_progress_is_silent_when_not_verbose():
    stream = io.StringIO()
    console.progress("attacking", enabled=0, stream=stream)
    assert stream.getvalue() == ""
    console.progress("attacking", enabled=2, stream=stream)
    assert stream.getvalue().endswith("] attacking\n")
