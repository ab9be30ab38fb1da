"""The IDX format of MNIST, Fashion-MNIST and the notMNIST-to-MNIST conversion.

An IDX file is a big-endian header — two zero bytes, a type code (0x08 =
unsigned byte), the number of dimensions d — then d uint32 sizes, then the
values in C order.  Images are magic ``0x00000803`` (N, rows, cols), labels
``0x00000801`` (N).  Files are usually published gzip-compressed (``*.gz``).
Parsing is one ``numpy.frombuffer`` over the decompressed bytes.  Reading
stops at the size the header declares (``read_idx_bytes``): a longer stream
(corrupt, or a decompression bomb) is refused without being read whole.
"""

import numpy as np

from uqmix.data.errors import DataFileError
from uqmix.data.files import open_data, read_limited

IDX_UBYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def _declared_size(head):
    """Total bytes an IDX file with header bytes ``head`` must have; None when ``head`` is not
    a complete, valid header (``parse_idx`` then names the problem)."""
    if len(head) < 4 or head[:3] != bytes((0, 0, IDX_UBYTE)) or head[3] == 0:
        return None
    header = 4 + 4 * head[3]
    if len(head) < header:
        return None
    dims = np.frombuffer(head, dtype=">u4", count=head[3], offset=4)
    return header + int(np.prod(dims.astype(np.int64), dtype=np.int64))


def read_idx_bytes(path):
    """The bytes of an IDX file (``.gz`` or plain), read no further than its header's size."""
    with open_data(path) as handle:
        head = handle.read(4)
        if len(head) == 4 and head[:3] == bytes((0, 0, IDX_UBYTE)):
            head += handle.read(4 * head[3])
        size = _declared_size(head)
        if size is None:
            return head
        return head + read_limited(
            handle, path, size - len(head), f"after the header its header declares ({size} in all)"
        )


def parse_idx(data, path):
    """The uint8 array stored in IDX bytes ``data`` (``path`` names it in errors)."""
    if len(data) < 4:
        raise DataFileError(path, f"only {len(data)} bytes; too short for an IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE:
        magic = int.from_bytes(data[:4], "big")
        raise DataFileError(
            path,
            f"bad IDX magic number 0x{magic:08x}; expected 0x{IMAGES_MAGIC:08x} (images) "
            f"or 0x{LABELS_MAGIC:08x} (labels): two zero bytes, type 0x08 (unsigned "
            "byte), number of dimensions",
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataFileError(
            path, f"IDX header declares {ndim} dimensions but the file is too short"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataFileError(
            path,
            f"IDX header says shape {dims} ({expected} bytes in all) but the file has "
            f"{len(data)} bytes (truncated or corrupt)",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _check_magic(array, path, ndim, what):
    if array.ndim != ndim:
        magic = IMAGES_MAGIC if ndim == 3 else LABELS_MAGIC
        raise DataFileError(
            path,
            f"IDX file has {array.ndim} dimensions {array.shape}; {what} files have "
            f"magic 0x{magic:08x} ({ndim} dimensions)",
        )


def _check_count(count, expected_count, path, what):
    if expected_count is not None and count != expected_count:
        raise DataFileError(path, f"holds {count} {what}, expected {expected_count}")


def read_idx_images(path, expected_count=None, image_shape=(28, 28)):
    """uint8 images [N, rows, cols, 1] from an IDX image file (``.gz`` or plain).

    expected_count: the published number of images (None: any); image_shape:
    the expected (rows, cols) (None: any).
    """
    images = parse_idx(read_idx_bytes(path), path)
    _check_magic(images, path, 3, "image")
    _check_count(images.shape[0], expected_count, path, "images")
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        raise DataFileError(path, f"images are {images.shape[1:]}, expected {tuple(image_shape)}")
    return images[..., np.newaxis]


def read_idx_labels(path, expected_count=None, num_classes=10):
    """int64 labels [N] from an IDX label file, checked to lie in [0, num_classes)."""
    labels = parse_idx(read_idx_bytes(path), path)
    _check_magic(labels, path, 1, "label")
    _check_count(labels.shape[0], expected_count, path, "labels")
    if labels.size and labels.max() >= num_classes:
        raise DataFileError(
            path, f"label {int(labels.max())} out of range; expected 0..{num_classes - 1}"
        )
    return labels.astype(np.int64)


def read_idx_pair(
    images_path, labels_path, expected_count=None, image_shape=(28, 28), num_classes=10
):
    """(uint8 images [N, H, W, 1], int64 labels [N]) from matching IDX files."""
    images = read_idx_images(images_path, expected_count, image_shape)
    labels = read_idx_labels(labels_path, expected_count, num_classes)
    if images.shape[0] != labels.shape[0]:
        raise DataFileError(
            labels_path,
            f"holds {labels.shape[0]} labels but {images_path} holds {images.shape[0]} images",
        )
    return images, labels
