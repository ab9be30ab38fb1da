"""Reading raw bytes from the files a dataset is published as (plain or gzip)."""

import gzip
import os
import zlib

from uqmix.data.errors import DataFileError


def find_file(folder, candidates):
    """The first of ``candidates`` (file names) that exists in ``folder``.

    Raises ``DataFileError`` naming the first (preferred) candidate when none exists.
    """
    for name in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    alternatives = ""
    if len(candidates) > 1:
        alternatives = f" (nor {', '.join(candidates[1:])})"
    raise DataFileError(os.path.join(folder, candidates[0]), f"file not found{alternatives}")


def read_bytes(path):
    """All bytes of ``path``, decompressed when it ends in ``.gz``.

    A missing file, an unreadable file or a broken/truncated gzip stream is a
    ``DataFileError`` naming the file.
    """
    if not os.path.isfile(path):
        raise DataFileError(path, "file not found")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        with open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as err:
        kind = "gzip file" if path.endswith(".gz") else "file"
        raise DataFileError(path, f"not a readable {kind}, truncated or corrupt ({err})") from None
