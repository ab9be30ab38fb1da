"""Folders of image files (PNG, JPEG, ...): the notMNIST letters and the OOD test sets.

Images are decoded with Pillow (installed with matplotlib, a uqmix dependency)
and converted to grayscale (``channels=1``) or RGB (``channels=3``).  Files are
read in sorted path order, so the result does not depend on the file system.
All images of one set must have one size: nothing is resized.
"""

import os
import warnings

import numpy as np

from uqmix.data.errors import DataFileError

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
_MODES = {1: "L", 3: "RGB"}


def list_image_files(folder, exclude=()):
    """Sorted paths of the image files under ``folder`` (recursively), skipping subfolders
    named in ``exclude`` at the top level."""
    if not os.path.isdir(folder):
        raise DataFileError(folder, "folder not found")
    paths = []
    for current, subdirs, files in os.walk(folder):
        if current == folder:
            subdirs[:] = [d for d in subdirs if d not in exclude]
        subdirs.sort()
        paths.extend(
            os.path.join(current, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return paths


def decode_image(path, channels):
    """uint8 array [H, W, channels] of one image file; ``DataFileError`` if unreadable."""
    from PIL import Image  # Pillow is installed with matplotlib.

    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image.convert(_MODES[channels]), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataFileError(path, f"unreadable or corrupt image ({err})") from None
    return array.reshape(array.shape[0], array.shape[1], channels)


def read_images(paths, channels, skip_unreadable=False):
    """uint8 images [N, H, W, channels] from ``paths`` and the list of paths kept.

    skip_unreadable: skip files that cannot be decoded (with a warning naming
    them) instead of raising; for published sets known to hold broken files.
    """
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}.")
    images, kept, skipped = [], [], []
    for path in paths:
        try:
            image = decode_image(path, channels)
        except DataFileError:
            if not skip_unreadable:
                raise
            skipped.append(path)
            continue
        if images and image.shape != images[0].shape:
            raise DataFileError(
                path,
                f"image is {image.shape[:2]} but {kept[0]} is {images[0].shape[:2]}; all "
                "images of a set must have the same size (uqmix does not resize)",
            )
        images.append(image)
        kept.append(path)
    if skipped:
        shown = ", ".join(os.path.basename(p) for p in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(
            f"Skipped {len(skipped)} unreadable image file(s): {shown}{more}.", stacklevel=2
        )
    if not images:
        return np.zeros((0, 0, 0, channels), np.uint8), kept
    return np.stack(images), kept


def read_image_folder(folder, channels, exclude=(), skip_unreadable=False):
    """uint8 images [N, H, W, channels] of all image files under ``folder``."""
    paths = list_image_files(folder, exclude)
    if not paths:
        raise DataFileError(folder, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    images, _ = read_images(paths, channels, skip_unreadable)
    if images.shape[0] == 0:
        raise DataFileError(folder, "none of the image files could be read")
    return images


def read_class_folders(folder, class_names, channels, skip_unreadable=False):
    """(uint8 images [N, H, W, C], int64 labels [N]): class k's images are in
    ``folder/class_names[k]/``; every class folder must exist and hold images."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_paths = list_image_files(os.path.join(folder, name))
        if not class_paths:
            raise DataFileError(os.path.join(folder, name), "no image files in the class folder")
        paths.extend(class_paths)
        labels.extend([label] * len(class_paths))
    images, kept = read_images(paths, channels, skip_unreadable)
    if images.shape[0] == 0:
        raise DataFileError(folder, "none of the image files could be read")
    label_of = dict(zip(paths, labels))
    return images, np.array([label_of[p] for p in kept], dtype=np.int64)
