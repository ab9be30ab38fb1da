"""CIFAR-10 / CIFAR-100 in their *binary* versions (never the pickled Python version).

Each record is the label byte(s) followed by 3072 pixel bytes: 1024 red, 1024
green, 1024 blue, each a 32×32 image in row-major order.  CIFAR-10 records have
one label byte (0–9); CIFAR-100 records have two, coarse (0–19) then fine
(0–99).  Files are read from the extracted folder (``cifar-10-batches-bin/``,
``cifar-100-binary/``) or, without extracting anything to disk, straight from
the published ``.tar.gz``.  No file or archive member is read beyond the
published record count × record size (the tar header's member size is checked
before reading), so a decompression bomb is refused, not read into memory.
"""

import dataclasses
import os
import tarfile
import zlib

import numpy as np

from uqmix.data.errors import DataFileError
from uqmix.data.files import read_bytes

IMAGE_SHAPE = (32, 32, 3)
PIXEL_BYTES = 32 * 32 * 3


@dataclasses.dataclass(frozen=True)
class CifarFormat:
    """How one CIFAR variant is published in binary form."""

    folder: str  # folder inside the archive
    archive: str  # published archive name
    split_files: dict  # split -> tuple of (file name, records in that file)
    label_classes: tuple  # number of classes of each label byte, in record order
    label_index: int  # which label byte is returned
    pickled_folder: str  # the pickled version's folder, refused with a hint

    @property
    def record_bytes(self):
        return len(self.label_classes) + PIXEL_BYTES


CIFAR10 = CifarFormat(
    folder="cifar-10-batches-bin",
    archive="cifar-10-binary.tar.gz",
    split_files={
        "train": tuple((f"data_batch_{i}.bin", 10000) for i in range(1, 6)),
        "test": (("test_batch.bin", 10000),),
    },
    label_classes=(10,),
    label_index=0,
    pickled_folder="cifar-10-batches-py",
)

# Coarse (20 superclasses) then fine (100 classes); the fine label is returned.
CIFAR100 = CifarFormat(
    folder="cifar-100-binary",
    archive="cifar-100-binary.tar.gz",
    split_files={"train": (("train.bin", 50000),), "test": (("test.bin", 10000),)},
    label_classes=(20, 100),
    label_index=1,
    pickled_folder="cifar-100-python",
)


def parse_cifar_records(data, fmt, path, expected_records=None):
    """(uint8 images [N, 32, 32, 3], int64 labels [N]) from the bytes of one binary file."""
    if len(data) == 0 or len(data) % fmt.record_bytes:
        raise DataFileError(
            path,
            f"{len(data)} bytes is not a whole number of {fmt.record_bytes}-byte records "
            f"({len(fmt.label_classes)} label byte(s) + {PIXEL_BYTES} pixels); truncated, "
            "corrupt, or not the binary version",
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, fmt.record_bytes)
    if expected_records is not None and records.shape[0] != expected_records:
        raise DataFileError(path, f"holds {records.shape[0]} records, expected {expected_records}")
    for index, num_classes in enumerate(fmt.label_classes):
        column = records[:, index]
        if column.max() >= num_classes:
            raise DataFileError(
                path,
                f"label byte {index} has value {int(column.max())}, expected "
                f"0..{num_classes - 1} (corrupt, or not the binary version)",
            )
    labels = records[:, fmt.label_index].astype(np.int64)
    planes = records[:, len(fmt.label_classes) :].reshape(-1, 3, 32, 32)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels


def _read_members(archive_path, member_limits):
    """{member name: bytes} for the wanted members of a tar archive, in one pass, in memory.

    member_limits: {member name: most bytes it may hold}; a larger member (by its tar
    header) is refused before it is read.
    """
    found = {}
    try:
        with tarfile.open(archive_path, "r:*") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if name in member_limits and member.isfile():
                    if member.size > member_limits[name]:
                        raise DataFileError(
                            f"{archive_path}:{name}",
                            f"tar header says {member.size} bytes, "
                            f"more than the {member_limits[name]} bytes of the published records "
                            "(corrupt, or a decompression bomb); not read",
                        )
                    found[name] = tar.extractfile(member).read(member_limits[name])
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataFileError(
            archive_path, f"not a readable tar archive, truncated or corrupt ({err})"
        ) from None
    for name in member_limits:
        if name not in found:
            raise DataFileError(f"{archive_path}:{name}", "member missing from the archive")
    return found


def _source_bytes(root, fmt, files):
    """{file name: (path for errors, bytes)} from the extracted folder, or the archive.

    files: (file name, published record count) pairs; nothing is read past
    count × ``fmt.record_bytes``.
    """
    limits = {name: count * fmt.record_bytes for name, count in files}
    file_names = [name for name, _ in files]
    for folder in (os.path.join(root, fmt.folder), root):
        if os.path.isfile(os.path.join(folder, file_names[0])):
            return {
                n: (os.path.join(folder, n), read_bytes(os.path.join(folder, n), limits[n]))
                for n in file_names
            }
    archive = os.path.join(root, fmt.archive)
    if os.path.isfile(archive):
        members = {f"{fmt.folder}/{n}": n for n in file_names}
        data = _read_members(archive, {m: limits[n] for m, n in members.items()})
        return {n: (f"{archive}:{m}", data[m]) for m, n in members.items()}
    problem = "file not found"
    if os.path.exists(os.path.join(root, fmt.pickled_folder)):
        problem += (
            f"; {fmt.pickled_folder}/ is the pickled Python version, which uqmix never "
            "unpickles: use the binary version"
        )
    raise DataFileError(
        os.path.join(root, fmt.folder, file_names[0]),
        f"{problem} (nor {os.path.join(root, fmt.archive)})",
    )


def read_cifar_split(root, fmt, split, check_counts=True):
    """(uint8 images [N, 32, 32, 3], int64 labels [N]) of ``split`` from folder ``root``.

    check_counts: compare each file's record count with the published one.
    """
    files = fmt.split_files[split]
    sources = _source_bytes(root, fmt, files)
    images, labels = [], []
    for name, count in files:
        path, data = sources[name]
        x, y = parse_cifar_records(data, fmt, path, count if check_counts else None)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)
