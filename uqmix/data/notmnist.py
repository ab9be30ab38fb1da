"""notMNIST (Bulatov 2011), letters A–J as labels 0–9: the OOD set of MNIST models.

Two published forms are read, both a *test-style* set (there is no train split):
* IDX: ``t10k-images-idx3-ubyte.gz`` / ``t10k-labels-idx1-ubyte.gz`` as made by
  github.com/davidflanagan/notMNIST-to-MNIST (a 10,000-image subset of
  notMNIST_small, 1,000 per letter; ../shared/data/notmnist holds it);
* the per-letter PNG folders ``A/`` … ``J/`` of ``notMNIST_small.tar.gz``
  (18,724 readable 28×28 images), directly in the folder or in
  ``notMNIST_small/``.  The archive is known to contain a few empty/broken
  PNGs; those are skipped with a warning naming them.
The IDX form is used when its files are present.
"""

import os

from uqmix.data.errors import DataFileError
from uqmix.data.idx import read_idx_pair
from uqmix.data.image_folder import read_class_folders

LETTERS = tuple("ABCDEFGHIJ")
IDX_IMAGES = "t10k-images-idx3-ubyte.gz"
IDX_LABELS = "t10k-labels-idx1-ubyte.gz"
LETTER_SUBFOLDER = "notMNIST_small"


def read_notmnist(folder):
    """(uint8 images [N, 28, 28, 1], int64 labels [N] in 0..9) from ``folder``."""
    images_path = os.path.join(folder, IDX_IMAGES)
    if os.path.exists(images_path):
        return read_idx_pair(images_path, os.path.join(folder, IDX_LABELS))
    for root in (folder, os.path.join(folder, LETTER_SUBFOLDER)):
        if all(os.path.isdir(os.path.join(root, letter)) for letter in LETTERS):
            images, labels = read_class_folders(root, LETTERS, channels=1, skip_unreadable=True)
            if images.shape[1:3] != (28, 28):
                raise DataFileError(root, f"letter images are {images.shape[1:3]}, expected 28×28")
            return images, labels
    raise DataFileError(
        images_path,
        f"file not found, and no letter folders A..J in {folder} or "
        f"{os.path.join(folder, LETTER_SUBFOLDER)}",
    )
