"""Shared test fixtures: quiet TF, deterministic seeds, the real-data folder."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The real MNIST / Fashion-MNIST / notMNIST files (see ../shared/data/MANIFEST.md);
# UQMIX_DATA_DIR overrides.  Tests that need them skip when the folder is absent.
SHARED_DATA_DIR = os.environ.get(
    "UQMIX_DATA_DIR", os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
)


@pytest.fixture
def shared_data_dir():
    if not os.path.isdir(os.path.join(SHARED_DATA_DIR, "mnist")):
        pytest.skip(f"real data not found at {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture(autouse=True)
def _seeded():
    import keras

    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def interrupted_after_first_epoch(monkeypatch):
    """A context manager: the training inside it is killed (KeyboardInterrupt) right after its
    first epoch's checkpoint, as a crash would; the interrupt is expected and swallowed."""
    import contextlib

    from uqmix import training

    original = training._EpochCheckpoint.on_epoch_end

    def crash(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt("killed after the first checkpoint")

    @contextlib.contextmanager
    def interrupted():
        monkeypatch.setattr(training._EpochCheckpoint, "on_epoch_end", crash)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(training._EpochCheckpoint, "on_epoch_end", original)

    return interrupted
