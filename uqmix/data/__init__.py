"""uqmix datasets: ``load_arrays`` (registry of raw-file, tfds and generated sources)
and the ``tf.data`` pipeline helpers.

Images are float32 [N, H, W, C] in [0, 1]; ``synthetic3`` is float32 [N, 2].
Modules: ``registry`` (names, sources, ``load_arrays``), ``idx`` / ``cifar`` /
``svhn`` / ``notmnist`` / ``image_folder`` (the published file formats),
``tfds_source`` (tensorflow-datasets), ``pipeline`` (``make_dataset``,
``zip_in_and_ood``, ``check_same_image_shape``, ``hold_out``).
"""

from uqmix.data.errors import DataFileError, DataSourceError
from uqmix.data.pipeline import (
    check_same_image_shape,
    hold_out,
    make_dataset,
    zip_in_and_ood,
)
from uqmix.data.registry import (
    DATASETS,
    NO_LABEL,
    get_spec,
    images_to_unit_float,
    known_names,
    load_arrays,
)

__all__ = [
    "DATASETS",
    "DataFileError",
    "DataSourceError",
    "NO_LABEL",
    "check_same_image_shape",
    "get_spec",
    "hold_out",
    "images_to_unit_float",
    "known_names",
    "load_arrays",
    "make_dataset",
    "zip_in_and_ood",
]
