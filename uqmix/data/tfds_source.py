"""TensorFlow Datasets as the source when no local copy is given (needs network once).

tfds downloads and prepares a set into its own cache, ``~/tensorflow_datasets``
by default (``TFDS_DATA_DIR`` changes it); uqmix itself writes nothing to disk.
``load_tfds`` is a thin call; the conversion of tfds's NumPy dict into uqmix's
arrays is ``tfds_to_arrays``, testable without network.
"""

import numpy as np

from uqmix.data.errors import DataSourceError

# uqmix name -> tfds name.  The others (notmnist, lsun_resize, tim_resize) are not in tfds.
TFDS_NAMES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "cifar10": "cifar10",
    "cifar100": "cifar100",  # "label" is the fine label (100 classes)
    "svhn": "svhn_cropped",  # labels already 0..9 (digit 0 is label 0)
}


def tfds_to_arrays(example, name, num_classes):
    """(uint8 images [N, H, W, C], int64 labels [N]) from a tfds NumPy dict.

    ``example`` is what ``tfds.as_numpy(tfds.load(..., batch_size=-1))`` gives:
    ``{"image": uint8 [N, H, W, C], "label": int [N], ...}``.
    """
    if not isinstance(example, dict) or "image" not in example or "label" not in example:
        keys = sorted(example) if isinstance(example, dict) else type(example).__name__
        raise DataSourceError(f"tfds {name}: expected a dict with 'image' and 'label', got {keys}.")
    images = np.asarray(example["image"])
    labels = np.asarray(example["label"])
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DataSourceError(
            f"tfds {name}: expected uint8 images [N, H, W, C], got {images.dtype} {images.shape}."
        )
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataSourceError(
            f"tfds {name}: expected {images.shape[0]} integer labels, got "
            f"{labels.dtype} {labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataSourceError(f"tfds {name}: labels outside 0..{num_classes - 1}.")
    return images, labels.astype(np.int64)


def load_tfds(name, split, num_classes):
    """(uint8 images, int64 labels) of uqmix set ``name`` / ``split`` via tfds (downloads)."""
    tfds_name = TFDS_NAMES[name]
    try:
        import tensorflow_datasets as tfds

        example = tfds.as_numpy(tfds.load(tfds_name, split=split, batch_size=-1))
    except Exception as err:  # import error, no network, download or preparation failure
        raise DataSourceError(
            f"Could not get {name!r} ({split}) from tensorflow-datasets ({tfds_name!r}): "
            f"{type(err).__name__}: {err}\nWithout network access, download the files once "
            f"and pass data_dir (the folder that holds {name}/)."
        ) from err
    return tfds_to_arrays(example, name, num_classes)
