"""uqmix.data: published file formats (written here, tiny), sources, registry, pipelines."""

import gzip
import io
import os
import struct
import sys
import tarfile
import types

import numpy as np
import pytest
import tensorflow as tf

from uqmix import data
from uqmix.data import cifar, image_folder, tfds_source
from uqmix.data.errors import DataFileError, DataSourceError

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- file writers
# Independent encoders of the published formats (struct / raw bytes), not uqmix code.


def idx_bytes(array, magic_type=0x08):
    array = np.asarray(array, np.uint8)
    header = struct.pack(">BBBB", 0, 0, magic_type, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write(path, payload, compress=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    compress = path.endswith(".gz") if compress is None else compress
    with gzip.open(path, "wb") if compress else open(path, "wb") as handle:
        handle.write(payload)
    return path


def write_idx_set(folder, prefix, images, labels, suffix=".gz"):
    write(os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}"), idx_bytes(images))
    write(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}"), idx_bytes(labels))


def random_images(n, shape):
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def cifar_record_bytes(images, label_columns):
    """Records: label bytes, then the R, G and B planes, each 32x32 row-major."""
    out = bytearray()
    for i, image in enumerate(images):
        out += bytes(int(col[i]) for col in label_columns)
        for channel in range(3):
            out += image[:, :, channel].tobytes()
    return bytes(out)


@pytest.fixture
def idx_dir(tmp_path):
    images, labels = random_images(7, (28, 28)), RNG.integers(0, 10, 7).astype(np.uint8)
    labels[:2] = [0, 9]
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    write_idx_set(str(tmp_path / "mnist"), "train", images, labels)
    return tmp_path, images, labels


def assert_file_error(excinfo, *fragments):
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error:\n{message}"


# ------------------------------------------------------------------------ IDX


def test_idx_round_trip_gz_and_plain(idx_dir, tmp_path):
    root, images, labels = idx_dir
    x, y = data.load_arrays("mnist", "train", str(root), check_counts=False)
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (7, 28, 28, 1)
    np.testing.assert_array_equal(x[..., 0] * 255.0, images.astype(np.float32))
    assert x[0, 0, 0, 0] == 0.0 and x[0, 0, 1, 0] == 1.0
    np.testing.assert_array_equal(y, labels)
    # Uncompressed IDX files are accepted too.
    write_idx_set(str(tmp_path / "plain" / "fashion_mnist"), "t10k", images, labels, suffix="")
    x2, y2 = data.load_arrays("fashion_mnist", "test", str(tmp_path / "plain"), check_counts=False)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


def test_idx_published_counts_are_enforced(idx_dir):
    root, _, _ = idx_dir
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("mnist", "train", str(root))
    assert_file_error(
        excinfo,
        "train-images-idx3-ubyte.gz",
        "holds 7 images, expected 60000",
        "Expected layout",
        "yann.lecun.com",
    )


@pytest.mark.parametrize(
    "damage, fragment",
    [
        ("magic", "bad IDX magic number 0x00000903"),
        ("truncate_gzip", "truncated or corrupt"),
        ("short_payload", "truncated or corrupt"),
        ("not_gzip", "not a readable gzip file"),
        ("image_size", "images are (27, 28), expected (28, 28)"),
    ],
)
def test_corrupt_idx_images_name_the_file(idx_dir, damage, fragment):
    root, images, _ = idx_dir
    path = str(root / "mnist" / "train-images-idx3-ubyte.gz")
    payload = idx_bytes(images)
    if damage == "magic":
        write(path, b"\x00\x00\x09\x03" + payload[4:])
    elif damage == "truncate_gzip":
        with open(path, "rb") as handle:
            compressed = handle.read()
        write(path, compressed[: len(compressed) // 2], compress=False)
    elif damage == "short_payload":
        write(path, payload[:-10])
    elif damage == "not_gzip":
        write(path, payload, compress=False)
    elif damage == "image_size":
        write(path, idx_bytes(images[:, :27, :]))
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("mnist", "train", str(root), check_counts=False)
    assert_file_error(excinfo, path, fragment, "Expected layout")


def test_idx_label_problems(idx_dir):
    root, images, labels = idx_dir
    label_path = str(root / "mnist" / "train-labels-idx1-ubyte.gz")
    write(label_path, idx_bytes(np.array([3, 10, 1, 1, 1, 1, 1])))
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("mnist", "train", str(root), check_counts=False)
    assert_file_error(excinfo, label_path, "label 10 out of range")
    write(label_path, idx_bytes(labels[:5]))
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("mnist", "train", str(root), check_counts=False)
    assert_file_error(excinfo, label_path, "holds 5 labels", "holds 7 images")
    write(label_path, idx_bytes(images))  # an image file where labels belong
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("mnist", "train", str(root), check_counts=False)
    assert_file_error(excinfo, label_path, "0x00000801")


def test_missing_idx_file(idx_dir):
    root, _, _ = idx_dir
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("mnist", "test", str(root))
    assert_file_error(
        excinfo,
        os.path.join(str(root), "mnist", "t10k-images-idx3-ubyte.gz"),
        "file not found",
        "t10k-labels-idx1-ubyte.gz",
    )


# ---------------------------------------------------------------------- CIFAR


def _write_cifar10(folder, per_file=3):
    """Extracted cifar-10-batches-bin/ with tiny files; returns the expected arrays."""
    expected = {}
    for split, files in cifar.CIFAR10.split_files.items():
        xs, ys = [], []
        for name, _ in files:
            images, labels = random_images(per_file, (32, 32, 3)), RNG.integers(0, 10, per_file)
            write(
                os.path.join(folder, "cifar-10-batches-bin", name),
                cifar_record_bytes(images, [labels]),
            )
            xs.append(images)
            ys.append(labels)
        expected[split] = (np.concatenate(xs), np.concatenate(ys))
    return expected


def _tar_folder(folder, subfolder, archive_path):
    with tarfile.open(archive_path, "w:gz") as tar:
        tar.add(os.path.join(folder, subfolder), arcname=subfolder)


def test_cifar10_binary_folder_and_archive_round_trip(tmp_path):
    expected = _write_cifar10(str(tmp_path / "extracted" / "cifar10"))
    for split in ("train", "test"):
        x, y = data.load_arrays("cifar10", split, str(tmp_path / "extracted"), check_counts=False)
        assert x.shape == (len(expected[split][0]), 32, 32, 3)
        np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), expected[split][0])
        np.testing.assert_array_equal(y, expected[split][1])
    # The published .tar.gz, read in memory without extracting.
    os.makedirs(tmp_path / "archived" / "cifar10")
    _tar_folder(
        str(tmp_path / "extracted" / "cifar10"),
        "cifar-10-batches-bin",
        str(tmp_path / "archived" / "cifar10" / "cifar-10-binary.tar.gz"),
    )
    x, y = data.load_arrays("cifar10", "train", str(tmp_path / "archived"), check_counts=False)
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), expected["train"][0])
    np.testing.assert_array_equal(y, expected["train"][1])
    assert os.listdir(tmp_path / "archived" / "cifar10") == ["cifar-10-binary.tar.gz"]
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("cifar10", "train", str(tmp_path / "archived"))
    assert_file_error(
        excinfo, "data_batch_1.bin", "holds 3 records, expected 10000", "cs.toronto.edu"
    )


def test_cifar100_fine_labels_and_coarse_validation(tmp_path):
    folder = str(tmp_path / "cifar100" / "cifar-100-binary")
    images = random_images(4, (32, 32, 3))
    coarse, fine = np.array([0, 19, 5, 7]), np.array([99, 0, 42, 3])
    write(os.path.join(folder, "test.bin"), cifar_record_bytes(images, [coarse, fine]))
    x, y = data.load_arrays("cifar100", "test", str(tmp_path), check_counts=False)
    np.testing.assert_array_equal(y, fine)
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), images)
    write(os.path.join(folder, "test.bin"), cifar_record_bytes(images, [coarse + 1, fine]))
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("cifar100", "test", str(tmp_path), check_counts=False)
    assert_file_error(excinfo, "test.bin", "label byte 0 has value 20, expected 0..19")


def test_cifar_corrupt_truncated_missing_and_pickled(tmp_path):
    _write_cifar10(str(tmp_path / "cifar10"))
    batch = str(tmp_path / "cifar10" / "cifar-10-batches-bin" / "data_batch_3.bin")
    with open(batch, "rb") as handle:
        payload = handle.read()
    write(batch, payload[:-100])
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("cifar10", "train", str(tmp_path), check_counts=False)
    assert_file_error(excinfo, batch, "not a whole number of 3073-byte records")
    os.remove(batch)
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("cifar10", "train", str(tmp_path), check_counts=False)
    assert_file_error(excinfo, batch, "file not found")
    # Only the pickled version: refused with a hint, and nothing is unpickled.
    pickled = tmp_path / "pickled" / "cifar10" / "cifar-10-batches-py"
    os.makedirs(pickled)
    (pickled / "data_batch_1").write_bytes(b"\x80\x04not a real pickle")
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("cifar10", "train", str(tmp_path / "pickled"))
    assert_file_error(
        excinfo, "cifar-10-batches-py/ is the pickled Python version", "cifar-10-binary.tar.gz"
    )
    # A broken archive, and an archive lacking a member.
    archive = tmp_path / "badtar" / "cifar10" / "cifar-10-binary.tar.gz"
    write(str(archive), b"this is not a tar stream" * 10)
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("cifar10", "test", str(tmp_path / "badtar"), check_counts=False)
    assert_file_error(excinfo, str(archive), "not a readable tar archive")
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("cifar10", "test", str(tmp_path / "badtar"), check_counts=False)
    assert_file_error(excinfo, "cifar-10-batches-bin/test_batch.bin", "member missing")


# ----------------------------------------------------------------------- SVHN


def test_svhn_mat_round_trip_and_errors(tmp_path):
    import scipy.io

    images = random_images(5, (32, 32, 3))
    digits = np.array([0, 1, 9, 0, 5])
    mat_labels = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
    path = str(tmp_path / "svhn" / "test_32x32.mat")
    os.makedirs(os.path.dirname(path))
    scipy.io.savemat(path, {"X": images.transpose(1, 2, 3, 0), "y": mat_labels})
    x, y = data.load_arrays("svhn", "test", str(tmp_path), check_counts=False)
    assert x.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), images)
    np.testing.assert_array_equal(y, digits)
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("svhn", "test", str(tmp_path))
    assert_file_error(excinfo, path, "holds 5 images, expected 26032", "ufldl.stanford.edu")
    scipy.io.savemat(path, {"X": images.transpose(1, 2, 3, 0), "y": mat_labels - 1})
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("svhn", "test", str(tmp_path), check_counts=False)
    assert_file_error(excinfo, path, "labels 1..10")
    scipy.io.savemat(path, {"X": images.transpose(1, 2, 3, 0)})
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("svhn", "test", str(tmp_path), check_counts=False)
    assert_file_error(excinfo, path, "no variable 'y'")
    write(path, b"MATLAB garbage " * 20, compress=False)
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("svhn", "test", str(tmp_path), check_counts=False)
    assert_file_error(excinfo, path, "not a readable MATLAB .mat file")
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("svhn", "train", str(tmp_path), check_counts=False)
    assert_file_error(excinfo, str(tmp_path / "svhn" / "train_32x32.mat"), "file not found")


# ------------------------------------------------------------- image folders


def _save_png(path, array):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def test_notmnist_letter_folders_skip_broken_pngs(tmp_path):
    root = tmp_path / "notmnist" / "notMNIST_small"
    expected = {}
    for label, letter in enumerate("ABCDEFGHIJ"):
        for i in range(2):
            image = random_images(1, (28, 28))[0]
            path = str(root / letter / f"{letter}{i}.png")
            _save_png(path, image)
            expected[path] = (image, label)
    (root / "A" / "broken.png").write_bytes(b"")  # notMNIST_small holds such files
    with pytest.warns(UserWarning, match="Skipped 1 unreadable image file"):
        x, y = data.load_arrays("notmnist", "test", str(tmp_path))
    assert x.shape == (20, 28, 28, 1)
    ordered = sorted(expected)
    np.testing.assert_array_equal(
        np.round(x[..., 0] * 255).astype(np.uint8), np.stack([expected[p][0] for p in ordered])
    )
    np.testing.assert_array_equal(y, [expected[p][1] for p in ordered])
    with pytest.raises(ValueError, match="notmnist has splits test"):
        data.load_arrays("notmnist", "train", str(tmp_path))


def test_notmnist_idx_form_and_missing_layout(tmp_path):
    images, labels = random_images(4, (28, 28)), np.array([0, 3, 9, 2], np.uint8)
    write_idx_set(str(tmp_path / "idx" / "notmnist"), "t10k", images, labels)
    x, y = data.load_arrays("notmnist", "test", str(tmp_path / "idx"))
    np.testing.assert_array_equal(np.round(x[..., 0] * 255).astype(np.uint8), images)
    np.testing.assert_array_equal(y, labels)
    os.makedirs(tmp_path / "empty" / "notmnist" / "A")
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("notmnist", "test", str(tmp_path / "empty"))
    assert_file_error(
        excinfo, "t10k-images-idx3-ubyte.gz", "no letter folders A..J", "notMNIST_small.tar.gz"
    )


def test_ood_image_folder_labels_splits_and_sizes(tmp_path):
    root = tmp_path / "lsun_resize" / "LSUN_resize"
    test_images = random_images(3, (32, 32, 3))
    for i, image in enumerate(test_images):
        _save_png(str(root / f"img{i}.png"), image)
    (root / "notes.txt").write_text("not an image")
    x, y = data.load_arrays("lsun_resize", "test", str(tmp_path))
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), test_images)
    np.testing.assert_array_equal(y, [data.NO_LABEL] * 3)
    with pytest.raises(DataFileError, match="train.*folder not found"):
        data.load_arrays("lsun_resize", "train", str(tmp_path))
    # A train/ subfolder makes a train split and is excluded from "test".
    train_image = random_images(1, (32, 32, 3))[0]
    _save_png(str(tmp_path / "lsun_resize" / "train" / "t.png"), train_image)
    x_train, _ = data.load_arrays("lsun_resize", "train", str(tmp_path))
    np.testing.assert_array_equal(np.round(x_train[0] * 255).astype(np.uint8), train_image)
    assert data.load_arrays("lsun_resize", "test", str(tmp_path))[0].shape[0] == 3
    # Grayscale files are converted to RGB; mixed sizes are an error naming the file.
    gray = random_images(1, (32, 32))[0]
    _save_png(str(root / "img3_gray.png"), gray)
    x, _ = data.load_arrays("lsun_resize", "test", str(tmp_path))
    np.testing.assert_array_equal(
        np.round(x[3] * 255).astype(np.uint8), np.repeat(gray[..., None], 3, axis=-1)
    )
    _save_png(str(root / "img4_big.png"), random_images(1, (36, 36, 3))[0])
    with pytest.raises(DataFileError) as excinfo:
        data.load_arrays("lsun_resize", "test", str(tmp_path))
    assert_file_error(excinfo, "img4_big.png", "(36, 36)", "same size", "ODIN")
    # Unreadable images in OOD sets are errors (not skipped).
    os.remove(root / "img4_big.png")
    (root / "img5.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataFileError, match="img5.png: unreadable or corrupt image"):
        data.load_arrays("lsun_resize", "test", str(tmp_path))


def test_empty_image_folder(tmp_path):
    os.makedirs(tmp_path / "tim_resize")
    with pytest.raises(DataFileError, match="no image files"):
        data.load_arrays("tim_resize", "test", str(tmp_path))
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        image_folder.read_images([], channels=2)


# ------------------------------------------------------------ tfds and sources


def test_tfds_dict_conversion():
    images = random_images(6, (32, 32, 3))
    labels = np.array([0, 1, 2, 3, 4, 9])
    x, y = tfds_source.tfds_to_arrays({"image": images, "label": labels, "id": None}, "svhn", 10)
    np.testing.assert_array_equal(x, images)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(DataSourceError, match="'image' and 'label'"):
        tfds_source.tfds_to_arrays({"image": images}, "svhn", 10)
    with pytest.raises(DataSourceError, match="uint8 images"):
        tfds_source.tfds_to_arrays(
            {"image": images.astype(np.float32), "label": labels}, "svhn", 10
        )
    with pytest.raises(DataSourceError, match="labels outside 0..9"):
        tfds_source.tfds_to_arrays({"image": images, "label": labels + 1}, "svhn", 10)
    with pytest.raises(DataSourceError, match="6 integer labels"):
        tfds_source.tfds_to_arrays({"image": images, "label": labels[:5]}, "svhn", 10)


def _fake_tfds(monkeypatch, load):
    calls = []

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return load(name, **kwargs)

    module = types.SimpleNamespace(load=fake_load, as_numpy=lambda tree: tree)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    return calls


def test_tfds_source_used_without_local_copy(monkeypatch, tmp_path):
    images = random_images(4, (32, 32, 3))
    calls = _fake_tfds(
        monkeypatch, lambda name, **kw: {"image": images, "label": np.array([1, 2, 3, 0])}
    )
    x, y = data.load_arrays("svhn", "extra", check_counts=False)
    assert calls == [("svhn_cropped", {"split": "extra", "batch_size": -1})]
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), images)
    np.testing.assert_array_equal(y, [1, 2, 3, 0])
    # data_dir without a cifar10/ folder falls back to tfds too; counts are checked there.
    with pytest.raises(DataSourceError, match="4 examples, expected 10000"):
        data.load_arrays("cifar10", "test", str(tmp_path))
    assert calls[-1][0] == "cifar10"


def test_failing_tfds_download_asks_for_data_dir(monkeypatch, tmp_path):
    def fail(name, **kwargs):
        raise ConnectionError("no network")

    _fake_tfds(monkeypatch, fail)
    with pytest.raises(DataSourceError) as excinfo:
        data.load_arrays("mnist", "train")
    assert_file_error(excinfo, "tensorflow-datasets", "no network", "pass data_dir")
    with pytest.raises(DataSourceError) as excinfo:
        data.load_arrays("fashion_mnist", "test", str(tmp_path))
    assert_file_error(
        excinfo,
        os.path.join(str(tmp_path), "fashion_mnist"),
        "does not exist",
        "no network",
        "t10k-images-idx3-ubyte.gz",
    )


def test_sources_that_need_local_files(monkeypatch, tmp_path):
    _fake_tfds(monkeypatch, lambda name, **kw: pytest.fail("tfds must not be called"))
    with pytest.raises(DataSourceError) as excinfo:
        data.load_arrays("notmnist", "test")
    assert_file_error(
        excinfo,
        "needs local files",
        "tensorflow-datasets does not have it",
        "notMNIST_small.tar.gz",
    )
    with pytest.raises(DataSourceError, match="download disabled"):
        data.load_arrays("mnist", "test", str(tmp_path), use_tfds=False)
    with pytest.raises(DataSourceError, match="does not exist or is not a folder"):
        data.load_arrays("mnist", "test", str(tmp_path / "nowhere"))


def test_unknown_name_and_split_list_the_known_ones():
    with pytest.raises(ValueError) as excinfo:
        data.load_arrays("imagenet", "train")
    for name in (
        "mnist",
        "fashion_mnist",
        "notmnist",
        "cifar10",
        "cifar100",
        "svhn",
        "synthetic3",
        "synthetic3_ood",
        "lsun_resize",
        "tim_resize",
    ):
        assert name in str(excinfo.value)
        assert name in data.known_names()
    with pytest.raises(ValueError, match="cifar10 has splits train, test; got 'validation'"):
        data.load_arrays("cifar10", "validation")


def test_images_to_unit_float_is_exact():
    values = np.arange(256, dtype=np.uint8)
    x = data.images_to_unit_float(values)
    np.testing.assert_array_equal(x, (values.astype(np.float64) / 255.0).astype(np.float32))
    assert x[0] == 0.0 and x[-1] == 1.0
    with pytest.raises(ValueError, match="uint8"):
        data.images_to_unit_float(values.astype(np.int32))


# ---------------------------------------------------------------- real files

MANIFEST_LABEL_COUNTS = {
    ("mnist", "train"): [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    ("mnist", "test"): [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ("fashion_mnist", "train"): [6000] * 10,
    ("fashion_mnist", "test"): [1000] * 10,
    ("notmnist", "test"): [1000] * 10,
}
# Widely published per-pixel statistics of the training sets (x in [0, 1]).
PUBLISHED_TRAIN_MEAN_STD = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}


@pytest.mark.parametrize("name, split", sorted(MANIFEST_LABEL_COUNTS))
def test_real_files_load_with_published_counts(shared_data_dir, name, split):
    x, y = data.load_arrays(name, split, shared_data_dir, use_tfds=False)
    counts = MANIFEST_LABEL_COUNTS[(name, split)]
    assert x.shape == (sum(counts), 28, 28, 1) and x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y, minlength=10), counts)
    assert x.min() == 0.0 and x.max() == 1.0
    if split == "train" and name in PUBLISHED_TRAIN_MEAN_STD:
        mean, std = PUBLISHED_TRAIN_MEAN_STD[name]
        assert abs(float(x.mean()) - mean) < 5e-4 and abs(float(x.std()) - std) < 5e-4


# ------------------------------------------------------------------ pipeline


def _batches(dataset, count=None):
    items = dataset if count is None else dataset.take(count)
    return [
        tuple(np.asarray(t) for t in b) if isinstance(b, tuple) else np.asarray(b) for b in items
    ]


def test_make_dataset_seeded_order_across_epochs_and_resume():
    n, batch = 10, 4
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(n, dtype=np.int64)
    make = lambda seed: data.make_dataset(x, y, batch_size=batch, repeat=True, seed=seed)  # noqa
    tf.random.set_seed(1)
    assert int(make(7).cardinality()) == tf.data.INFINITE_CARDINALITY
    assert make(7).element_spec[0].shape == (batch, 3)  # static: every batch is full
    first = _batches(make(7), 15)  # 60 examples = 6 epochs
    tf.random.set_seed(99)  # TF's global seed must not matter
    second = _batches(make(7), 15)
    for (xa, ya), (xb, yb) in zip(first, second):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert all(xb.shape == (batch, 3) for xb, _ in first)
    stream = np.concatenate([yb for _, yb in first])
    np.testing.assert_array_equal(stream, np.concatenate([xb[:, 0] for xb, _ in first]))
    epochs = stream.reshape(6, n)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
    assert len({tuple(e) for e in epochs}) > 1, "epochs must be reshuffled"
    other = np.concatenate([yb for _, yb in _batches(make(8), 15)])
    assert not np.array_equal(other, stream)
    # Resume: a rebuilt dataset advanced by k batches continues the same stream.
    resumed = _batches(make(7).skip(6), 9)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in resumed]), stream[24:])


def test_make_dataset_single_epoch_options():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    plain = data.make_dataset(x, batch_size=4, shuffle=False, prefetch=False)
    assert int(plain.cardinality()) == 3
    np.testing.assert_array_equal(np.concatenate(_batches(plain))[:, 0], np.arange(10))
    assert [b.shape[0] for b in _batches(plain)] == [4, 4, 2]
    dropped = data.make_dataset(x, batch_size=4, drop_remainder=True, seed=3)
    assert int(dropped.cardinality()) == 2 and all(b.shape == (4, 1) for b in _batches(dropped))
    np.random.seed(5)
    unseeded_a = np.concatenate(_batches(data.make_dataset(x, batch_size=4)))
    np.random.seed(5)
    unseeded_b = np.concatenate(_batches(data.make_dataset(x, batch_size=4)))
    np.testing.assert_array_equal(unseeded_a, unseeded_b)
    np.testing.assert_array_equal(np.sort(unseeded_a[:, 0]), np.arange(10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(batch_size=2, y=np.zeros(3)), "x has 4 examples but y has 3"),
        (dict(batch_size=2, seed=-1), "seed must be an integer >= 0"),
        (dict(batch_size=8, drop_remainder=True), "leaves no batch"),
        (dict(batch_size=2, x=np.array([[0.0], [np.nan], [1.0], [2.0]])), "NaN or Inf"),
        (dict(batch_size=2, x=np.zeros((0, 2))), "non-empty"),
    ],
)
def test_make_dataset_bad_input(kwargs, message):
    kwargs = dict(kwargs)
    x = kwargs.pop("x", np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match=message):
        data.make_dataset(x, **kwargs)


def test_zip_in_and_ood_repeats_the_shorter():
    x_in = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y_in = np.arange(10, dtype=np.int64)
    x_ood = -np.arange(1, 5, dtype=np.float32).reshape(4, 1, 1, 1)
    in_ds = data.make_dataset(x_in, y_in, batch_size=2, shuffle=False)  # 5 batches
    ood_ds = data.make_dataset(x_ood, np.full(4, -1), batch_size=2, shuffle=False)  # 2
    zipped = list(data.zip_in_and_ood(in_ds, ood_ds))
    assert len(zipped) == 5
    for step, ((xi, xo), yi) in enumerate(zipped):
        np.testing.assert_array_equal(yi, [2 * step, 2 * step + 1])
        np.testing.assert_array_equal(xi[:, 0, 0, 0], yi.numpy().astype(np.float32))
        expected_ood = [-1.0, -2.0] if step % 2 == 0 else [-3.0, -4.0]
        np.testing.assert_array_equal(xo[:, 0, 0, 0], expected_ood)
    # OOD longer (x only): the in-domain set repeats.
    long_ood = data.make_dataset(np.zeros((14, 1, 1, 1), np.float32), batch_size=2)
    assert len(list(data.zip_in_and_ood(in_ds, long_ood))) == 7
    # Endless in-domain stream: the OOD set repeats forever.
    endless = data.make_dataset(x_in, y_in, batch_size=2, repeat=True, seed=0)
    zipped = data.zip_in_and_ood(endless, ood_ds)
    assert int(zipped.cardinality()) == tf.data.INFINITE_CARDINALITY
    assert len(list(zipped.take(9))) == 9


def test_zip_and_shape_checks_give_clear_errors():
    in_ds = data.make_dataset(
        np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int64), batch_size=2
    )
    rgb = data.make_dataset(np.zeros((4, 32, 32, 3), np.float32), batch_size=2)
    with pytest.raises(
        ValueError,
        match=r"in-domain inputs have shape \(28, 28, 1\).*OOD.*"
        r"\(32, 32, 3\)",
    ):
        data.zip_in_and_ood(in_ds, rgb)
    with pytest.raises(ValueError, match="must yield \\(x, y\\)"):
        data.zip_in_and_ood(rgb, rgb)
    with pytest.raises(ValueError, match="unknown length"):
        data.zip_in_and_ood(in_ds, in_ds.filter(lambda x, y: True))
    assert data.check_same_image_shape(np.zeros((2, 28, 28, 1)), in_ds) == (28, 28, 1)
    with pytest.raises(ValueError, match=r"mnist inputs have shape \(28, 28, 1\).*cifar10"):
        data.check_same_image_shape(
            np.zeros((2, 28, 28, 1)), np.zeros((2, 32, 32, 3)), "mnist", "cifar10"
        )


def test_hold_out_splits_off_the_last_examples():
    from uqmix.data import hold_out

    x, y = np.arange(20).reshape(10, 2), np.arange(10)
    x_train, y_train, x_val, y_val = hold_out(x, y, 3)
    np.testing.assert_array_equal(np.r_[x_train, x_val], x)
    np.testing.assert_array_equal(y_val, [7, 8, 9])
    assert len(x_train) == len(y_train) == 7
    assert hold_out(x, y, 0)[2:] == (None, None)
    with pytest.raises(ValueError, match=r"--validation_examples must be in \[0, 9\]"):
        hold_out(x, y, 10, "--validation_examples")
