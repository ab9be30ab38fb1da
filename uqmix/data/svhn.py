"""SVHN (cropped digits, "format 2") from the published MATLAB ``.mat`` files.

``train_32x32.mat`` / ``test_32x32.mat`` / ``extra_32x32.mat`` hold ``X``
(32, 32, 3, N) uint8 and ``y`` (N, 1) with labels 1–10, where 10 is the digit
0.  They are MATLAB v5 files, read with ``scipy.io.loadmat`` (SciPy comes with
scikit-learn; loadmat parses the MAT format and never unpickles).  Labels are
mapped 10 → 0, so label k is the digit k.
"""

import os

import numpy as np

from uqmix.data.errors import DataFileError

SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
SPLIT_COUNTS = {"train": 73257, "test": 26032, "extra": 531131}


def read_svhn_mat(path, expected_count=None):
    """(uint8 images [N, 32, 32, 3], int64 labels [N] in 0..9) from one SVHN ``.mat`` file."""
    if not os.path.isfile(path):
        raise DataFileError(path, "file not found")
    import scipy.io  # SciPy is installed with scikit-learn, a uqmix dependency.

    try:
        contents = scipy.io.loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise DataFileError(
            path, f"unsupported .mat version ({err}); expected the MATLAB v5 file SVHN publishes"
        ) from None
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, OSError...
        raise DataFileError(
            path,
            f"not a readable MATLAB .mat file, truncated or corrupt ({type(err).__name__}: {err})",
        ) from None
    for key in ("X", "y"):
        if key not in contents:
            raise DataFileError(
                path,
                f"no variable {key!r} in the .mat file; expected X "
                "(32, 32, 3, N) uint8 and y (N, 1) labels 1..10",
            )
    images, labels = contents["X"], contents["y"]
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DataFileError(path, f"X has shape {images.shape}, expected (32, 32, 3, N)")
    count = images.shape[3]
    if expected_count is not None and count != expected_count:
        raise DataFileError(path, f"holds {count} images, expected {expected_count}")
    if images.dtype != np.uint8:
        raise DataFileError(path, f"X has dtype {images.dtype}, expected uint8")
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != count:
        raise DataFileError(path, f"y holds {labels.shape[0]} labels but X holds {count} images")
    if not np.issubdtype(labels.dtype, np.number) or not np.all(np.isin(labels, np.arange(1, 11))):
        raise DataFileError(path, "y must hold the labels 1..10 (10 is the digit 0)")
    labels = labels.astype(np.int64) % 10
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2)), labels
