"""Reading raw bytes from the files a dataset is published as (plain or gzip)."""

import contextlib
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


@contextlib.contextmanager
def open_data(path):
    """A binary handle on ``path``, decompressing when it ends in ``.gz``.

    A missing file, an unreadable file or a broken/truncated gzip stream (while
    opening or while reading inside the ``with`` block) is a ``DataFileError``
    naming the file.
    """
    if not os.path.isfile(path):
        raise DataFileError(path, "file not found")
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as handle:
            yield handle
    except (OSError, EOFError, zlib.error) as err:
        kind = "gzip file" if path.endswith(".gz") else "file"
        raise DataFileError(path, f"not a readable {kind}, truncated or corrupt ({err})") from None


def read_limited(handle, path, limit, what):
    """At most ``limit`` bytes from ``handle``; a ``DataFileError`` when there are more (the
    size ``what`` promises is exceeded: corrupt, or a decompression bomb).  Reads at most
    ``limit + 1`` bytes, never the whole stream."""
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise DataFileError(
            path,
            f"holds more than the {limit} bytes {what} (corrupt, or a "
            "decompression bomb); stopped reading",
        )
    return data


def read_bytes(path, max_bytes=None):
    """The bytes of ``path``, decompressed when it ends in ``.gz``.

    max_bytes: the most the format allows (known from a header or the published
    record count); more is a ``DataFileError`` and reading stops there, so a
    decompression bomb is never read whole.  Errors as ``open_data``.
    """
    with open_data(path) as handle:
        if max_bytes is None:
            return handle.read()
        return read_limited(handle, path, max_bytes, "its format allows")
