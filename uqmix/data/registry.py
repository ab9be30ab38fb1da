"""The dataset registry and ``load_arrays``: one call for every data set uqmix knows.

Sources, in order:
1. ``data_dir/<name>/`` when ``data_dir`` is given and that folder exists: the
   files as their authors publish them (layouts in ``DATASETS[name].layout``).
   A missing or corrupt file there is an error (no silent fallback).
2. tensorflow-datasets, for the sets it has (mnist, fashion_mnist, cifar10,
   cifar100, svhn), when there is no local folder (downloads once into tfds's
   own cache, ``~/tensorflow_datasets`` or ``TFDS_DATA_DIR``).
3. ``synthetic3`` / ``synthetic3_ood`` are generated (no files).
Nothing is cached by uqmix, in memory or on disk.

Result: images float32 [N, H, W, C] in [0, 1] (uint8 / 255; grayscale sets
have C = 1) and labels int64 [N].  Sets without class labels (the OOD image
folders, the synthetic OOD shell) have every label ``NO_LABEL`` = −1, so any
use of them as class indices fails loudly.  ``synthetic3`` is not an image
set: x is float32 [N, 2] raw coordinates (see ``uqmix.synthetic``).
"""

import dataclasses
import os
from typing import Callable, Optional

import numpy as np

from uqmix import synthetic
from uqmix.data import cifar, svhn
from uqmix.data.errors import DataFileError, DataSourceError
from uqmix.data.files import find_file
from uqmix.data.idx import read_idx_pair
from uqmix.data.image_folder import read_image_folder
from uqmix.data.notmnist import read_notmnist
from uqmix.data.tfds_source import TFDS_NAMES, load_tfds
from uqmix.synthetic import NO_LABEL  # -1: "no class label"; one definition for all sets


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One registered data set.

    read_local(folder, split, check_counts) -> (uint8 images [N, H, W, C], int64 labels)
    generate(split) -> (float32 x, int64 y), for generated sets.
    """

    name: str
    splits: tuple
    description: str
    num_classes: Optional[int]  # None: no class labels (labels are NO_LABEL)
    image_shape: Optional[tuple] = None  # (H, W, C) when fixed
    counts: Optional[dict] = None  # published example count per split
    layout: str = ""
    source: str = ""
    read_local: Optional[Callable] = None
    generate: Optional[Callable] = None

    @property
    def tfds_name(self):
        return TFDS_NAMES.get(self.name)

    def help_text(self, folder):
        text = f"Expected layout of {folder}: {self.layout}\nGet the files from {self.source}."
        if self.tfds_name:
            text += (
                f" Or leave data_dir unset (or without a {self.name}/ folder) to download it "
                f"with tensorflow-datasets ({self.tfds_name})."
            )
        return text


def _idx_reader(counts):
    def read(folder, split, check_counts):
        prefix = {"train": "train", "test": "t10k"}[split]
        images = find_file(
            folder, [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte"]
        )
        labels = find_file(
            folder, [f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte"]
        )
        return read_idx_pair(images, labels, counts[split] if check_counts else None)

    return read


def _cifar_reader(fmt):
    def read(folder, split, check_counts):
        return cifar.read_cifar_split(folder, fmt, split, check_counts)

    return read


def _read_svhn(folder, split, check_counts):
    path = os.path.join(folder, svhn.SPLIT_FILES[split])
    return svhn.read_svhn_mat(path, svhn.SPLIT_COUNTS[split] if check_counts else None)


def _read_notmnist(folder, split, check_counts):
    return read_notmnist(folder)


def _read_ood_folder(folder, split, check_counts):
    """Split subfolder ``folder/<split>/`` if present; else the whole folder is "test"."""
    split_folder = os.path.join(folder, split)
    if os.path.isdir(split_folder):
        images = read_image_folder(split_folder, channels=3)
    elif split == "test":
        images = read_image_folder(folder, channels=3, exclude=("train",))
    else:
        raise DataFileError(
            split_folder,
            "folder not found (only the test split is the whole "
            "folder; other splits need their own subfolder)",
        )
    return images, np.full(images.shape[0], NO_LABEL, np.int64)


_IDX_LAYOUT = (
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz (IDX, gzip-compressed as published; uncompressed also "
    "accepted)"
)
_OOD_FOLDER_LAYOUT = (
    "image files (PNG/JPEG/...), all of one size, anywhere under the folder "
    "(e.g. the extracted {archive}); a train/ (and test/) subfolder makes a "
    "train split. Labels are -1 (no class)."
)
_MNIST_COUNTS = {"train": 60000, "test": 10000}


def _cifar_layout(fmt):
    names = ", ".join(name for files in fmt.split_files.values() for name, _ in files)
    return (
        f"{fmt.folder}/ with {names}"
        f" (the extracted binary version), or {fmt.archive} itself; never the pickled "
        f"{fmt.pickled_folder}/"
    )


def _cifar_counts(fmt):
    return {split: sum(count for _, count in files) for split, files in fmt.split_files.items()}


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "mnist",
            ("train", "test"),
            "MNIST handwritten digits, 28x28x1, 10 classes",
            num_classes=10,
            image_shape=(28, 28, 1),
            counts=_MNIST_COUNTS,
            layout=_IDX_LAYOUT,
            source="http://yann.lecun.com/exdb/mnist/ (mirrors: "
            "https://ossci-datasets.s3.amazonaws.com/mnist/)",
            read_local=_idx_reader(_MNIST_COUNTS),
        ),
        DatasetSpec(
            "fashion_mnist",
            ("train", "test"),
            "Fashion-MNIST (Zalando), 28x28x1, 10 classes",
            num_classes=10,
            image_shape=(28, 28, 1),
            counts=_MNIST_COUNTS,
            layout=_IDX_LAYOUT,
            source="https://github.com/zalandoresearch/fashion-mnist (data/fashion/)",
            read_local=_idx_reader(_MNIST_COUNTS),
        ),
        DatasetSpec(
            "notmnist",
            ("test",),
            "notMNIST letters A-J as 0-9, 28x28x1; OOD set for MNIST (test split only)",
            num_classes=10,
            image_shape=(28, 28, 1),
            layout="t10k-images-idx3-ubyte.gz + t10k-labels-idx1-ubyte.gz (IDX conversion), or the "
            "letter folders A/ .. J/ of notMNIST_small.tar.gz (directly or in notMNIST_small/)",
            source="http://yaroslavvb.blogspot.com/2011/09/notmnist-dataset.html (notMNIST_small.tar.gz)"
            " or, in IDX form, https://github.com/davidflanagan/notMNIST-to-MNIST",
            read_local=_read_notmnist,
        ),
        DatasetSpec(
            "cifar10",
            ("train", "test"),
            "CIFAR-10, 32x32x3, 10 classes",
            num_classes=10,
            image_shape=cifar.IMAGE_SHAPE,
            counts=_cifar_counts(cifar.CIFAR10),
            layout=_cifar_layout(cifar.CIFAR10),
            source="https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 binary version)",
            read_local=_cifar_reader(cifar.CIFAR10),
        ),
        DatasetSpec(
            "cifar100",
            ("train", "test"),
            "CIFAR-100, 32x32x3, 100 fine classes",
            num_classes=100,
            image_shape=cifar.IMAGE_SHAPE,
            counts=_cifar_counts(cifar.CIFAR100),
            layout=_cifar_layout(cifar.CIFAR100),
            source="https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-100 binary version)",
            read_local=_cifar_reader(cifar.CIFAR100),
        ),
        DatasetSpec(
            "svhn",
            ("train", "test", "extra"),
            "SVHN cropped digits, 32x32x3, 10 classes (digit 0 is label 0)",
            num_classes=10,
            image_shape=(32, 32, 3),
            counts=svhn.SPLIT_COUNTS,
            layout=", ".join(svhn.SPLIT_FILES.values()) + " (MATLAB v5 files as published)",
            source="http://ufldl.stanford.edu/housenumbers/ (Format 2: cropped digits)",
            read_local=_read_svhn,
        ),
        DatasetSpec(
            "lsun_resize",
            ("test", "train"),
            "LSUN scenes resized to 32x32x3 (ODIN); OOD test set, labels -1",
            num_classes=None,
            layout=_OOD_FOLDER_LAYOUT.format(archive="LSUN_resize.tar.gz"),
            source="the ODIN repository, https://github.com/facebookresearch/odin (LSUN_resize.tar.gz)",
            read_local=_read_ood_folder,
        ),
        DatasetSpec(
            "tim_resize",
            ("test", "train"),
            "TinyImageNet resized to 32x32x3 (ODIN); OOD test set, labels -1",
            num_classes=None,
            layout=_OOD_FOLDER_LAYOUT.format(archive="Imagenet_resize.tar.gz"),
            source="the ODIN repository, https://github.com/facebookresearch/odin "
            "(Imagenet_resize.tar.gz)",
            read_local=_read_ood_folder,
        ),
        DatasetSpec(
            "synthetic3",
            tuple(synthetic.SPLIT_SEEDS),
            "three overlapping 2-D Gaussian classes (x is [N, 2], not an image), generated",
            num_classes=3,
            counts={s: 3 * n for s, n in synthetic.SPLIT_NUM_PER_CLASS.items()},
            generate=synthetic.load_split,
        ),
        DatasetSpec(
            "synthetic3_ood",
            tuple(synthetic.SPLIT_SEEDS),
            "the OOD shell around synthetic3 (x is [N, 2], labels -1), generated",
            num_classes=None,
            counts={s: 3 * n for s, n in synthetic.SPLIT_NUM_PER_CLASS.items()},
            generate=lambda split: synthetic.load_split(split, ood=True),
        ),
    )
}


def known_names():
    """The registered data-set names, sorted."""
    return sorted(DATASETS)


def get_spec(name):
    """The ``DatasetSpec`` of ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Known datasets: {', '.join(known_names())}.")
    return DATASETS[name]


def images_to_unit_float(images):
    """float32 images in [0, 1] from uint8 ones: x = u / 255 (exact at 0 and 255)."""
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}.")
    return np.divide(images, np.float32(255.0), dtype=np.float32)


def _check_result(spec, split, x, y, where, check_counts):
    """Final checks of what any source delivered (shape, count, label range)."""
    problems = []
    if spec.image_shape is not None and x.shape[1:] != spec.image_shape:
        problems.append(f"images have shape {x.shape[1:]}, expected {spec.image_shape}")
    if y.shape != (x.shape[0],):
        problems.append(f"{y.shape[0]} labels for {x.shape[0]} examples")
    expected = (spec.counts or {}).get(split)
    if check_counts and expected is not None and x.shape[0] != expected:
        problems.append(f"{x.shape[0]} examples, expected {expected}")
    if spec.num_classes is None:
        if np.any(y != NO_LABEL):
            problems.append(f"labels must all be {NO_LABEL}")
    elif y.size and (y.min() < 0 or y.max() >= spec.num_classes):
        problems.append(f"labels outside 0..{spec.num_classes - 1}")
    if problems:
        raise DataSourceError(f"{spec.name} ({split}) from {where}: {'; '.join(problems)}.")


def load_arrays(name, split, data_dir=None, *, use_tfds=True, check_counts=True):
    """(x, y) of data set ``name``, ``split``.

    x: float32 [N, H, W, C] in [0, 1] for image sets; float32 [N, 2] for
    synthetic3 / synthetic3_ood.  y: int64 [N] (−1 for sets without labels).
    Splits: mnist, fashion_mnist, cifar10, cifar100: train, test; svhn: train,
    test, extra; notmnist: test; lsun_resize, tim_resize: test (train with a
    train/ subfolder); synthetic3(_ood): train, test.

    data_dir: folder holding ``<name>/`` with the published files (see
      ``DATASETS[name].layout``); when it has no ``<name>/``, tfds is used.
    use_tfds: allow tensorflow-datasets (network) when there is no local copy.
    check_counts: compare example counts with the published ones (keep True;
      False only reads small files in the published formats, e.g. in tests).
    Raises ``ValueError`` (``DataFileError`` / ``DataSourceError``) for an
    unknown name or split, a missing/corrupt file, or no available source.
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise ValueError(f"{name} has splits {', '.join(spec.splits)}; got {split!r}.")
    if spec.generate is not None:
        x, y = spec.generate(split)
        _check_result(spec, split, x, y, "the generator", check_counts)
        return x, y
    folder = None
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
        if not os.path.isdir(data_dir):
            raise DataSourceError(f"data_dir {data_dir} does not exist or is not a folder.")
        folder = os.path.join(data_dir, name)
    if folder is not None and os.path.isdir(folder):
        try:
            images, labels = spec.read_local(folder, split, check_counts)
        except DataFileError as err:
            raise err.with_help(spec.help_text(folder)) from None
        where = folder
    elif spec.tfds_name and use_tfds:
        try:
            images, labels = load_tfds(name, split, spec.num_classes)
        except DataSourceError as err:
            if folder is None:
                raise
            raise DataSourceError(
                f"No local copy: {folder} does not exist.\n{err}\n{spec.help_text(folder)}"
            ) from err.__cause__
        where = f"tensorflow-datasets {spec.tfds_name}"
    else:
        reason = "no data_dir was given" if folder is None else f"{folder} does not exist"
        tfds_note = (
            " (tensorflow-datasets download disabled)"
            if spec.tfds_name
            else " and tensorflow-datasets does not have it"
        )
        target = folder or os.path.join("<data_dir>", name)
        raise DataSourceError(
            f"{name} needs local files: {reason}{tfds_note}.\n{spec.help_text(target)}"
        )
    _check_result(spec, split, images, labels, where, check_counts)
    return images_to_unit_float(images), labels
