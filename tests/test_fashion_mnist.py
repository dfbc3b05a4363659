"""Fashion-MNIST: the IDX reader, `load_splits("fashion_mnist")` from IDX files the tests write,
from TFDS through `tfds.testing.mock_data`, the error when neither has it, and the real files when
Debian's dataset-fashion-mnist is installed."""

from __future__ import annotations

import contextlib
import gzip
import time
from collections.abc import Iterator
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import nat_keras
from nat_keras import data
from nat_keras.data import fashion_mnist
from nat_keras.data.idx import IdxFormatError, read_idx, write_idx


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / name, images)
    back = read_idx(tmp_path / name, expected_rank=3)
    np.testing.assert_array_equal(back, images)
    assert back.dtype == np.uint8


def test_idx_header_is_big_endian_with_the_magic_numbers(tmp_path):
    write_idx(tmp_path / "l.gz", np.arange(3, dtype=np.uint8))
    write_idx(tmp_path / "i.gz", np.zeros((2, 28, 28), np.uint8))
    with gzip.open(tmp_path / "l.gz") as labels, gzip.open(tmp_path / "i.gz") as images:
        assert int.from_bytes(labels.read(4), "big") == 2049
        assert int.from_bytes(labels.read(4), "big") == 3
        assert int.from_bytes(images.read(4), "big") == 2051
        assert [int.from_bytes(images.read(4), "big") for _ in range(3)] == [2, 28, 28]


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "two zero bytes"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x07", "type 0x0d"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02\x07", r"promises \(2,\)"),
        (b"\x00\x00\x08\x02\x00\x00", "cut short"),
    ],
)
def test_malformed_idx_files_are_named(tmp_path, payload, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(payload)
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_wrong_rank_is_refused(tmp_path):
    write_idx(tmp_path / "labels", np.arange(4, dtype=np.uint8))
    with pytest.raises(IdxFormatError, match="expected 3 dimension"):
        read_idx(tmp_path / "labels", expected_rank=3)


def _write_fake_dataset(directory, train=6, test=4):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, size=(train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        write_idx(directory / fashion_mnist.FILES[key], array)
    return arrays


def test_arrays_from_a_data_dir(tmp_path):
    raw = _write_fake_dataset(tmp_path / "fashion-mnist")
    arrays = fashion_mnist.load_fashion_mnist_arrays(str(tmp_path))  # finds the sub-folder
    assert arrays.x_train.shape == (6, 28, 28, 1) and arrays.x_train.dtype == np.float32
    np.testing.assert_allclose(arrays.x_test[..., 0], raw["x_test"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(arrays.y_train, raw["y_train"])
    assert arrays.y_train.dtype == np.int32 and not arrays.x_train.flags.writeable


def test_mismatched_files_are_refused(tmp_path):
    _write_fake_dataset(tmp_path)
    write_idx(tmp_path / fashion_mnist.FILES["y_test"], np.zeros(3, np.uint8))
    with pytest.raises(fashion_mnist.NatKerasError, match="4 test images but 3 labels"):
        fashion_mnist.load_fashion_mnist_arrays(str(tmp_path))


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    missing = fashion_mnist.FashionMnistNotFoundError
    with pytest.raises(missing, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_fashion_mnist_arrays.__wrapped__(str(tmp_path))


@pytest.mark.skipif(fashion_mnist.find_directory() is None, reason="dataset-fashion-mnist is not installed")
def test_the_real_files():
    arrays = fashion_mnist.load_fashion_mnist_arrays()
    assert arrays.x_train.shape == (60000, 28, 28, 1)
    assert arrays.x_test.shape == (10000, 28, 28, 1)
    # Balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(arrays.y_train).tolist() == [6000] * 10
    assert np.bincount(arrays.y_test).tolist() == [1000] * 10
    assert arrays.x_train.min() >= 0.0 and arrays.x_train.max() <= 1.0
    assert 0.25 < float(arrays.x_train.mean()) < 0.35  # Fashion-MNIST's mean pixel is about 0.286


# ---------------------------------------------------------------- load_splits on IDX files

NUM_TRAIN, NUM_TEST = 50, 10  # 40/60 of 50: 20 weight and 30 policy examples.
PAD = 2  # 28 -> 32: two pixels each side.


@pytest.fixture
def idx_dir(tmp_path) -> tuple[str, dict[str, np.ndarray]]:
    """A data_dir with fake IDX files (no TFDS files), and the arrays written to it."""
    raw = _write_fake_dataset(tmp_path, train=NUM_TRAIN, test=NUM_TEST)
    return str(tmp_path), raw


@pytest.fixture
def no_download():
    """Turns any download attempt into a test failure instead of minutes of retries."""
    with mock.patch.object(
        tfds.core.DatasetBuilder, "download_and_prepare", side_effect=AssertionError("tried to download")
    ) as download_and_prepare:
        yield download_and_prepare


def _collect(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def _fingerprints(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def _padded(raw_images: np.ndarray, channels: int = 3) -> np.ndarray:
    """What the pipeline should make of stored uint8 28x28 images: [0, 1], padded to 32, repeated."""
    unit = raw_images.astype(np.float32) / np.float32(255)
    padded = np.pad(unit, [(0, 0), (PAD, PAD), (PAD, PAD)])
    return np.repeat(padded[..., np.newaxis], channels, axis=-1)


def test_idx_splits_are_32x32x3_padded_and_split_40_60(idx_dir, no_download):
    data_dir, raw = idx_dir
    splits = data.load_splits(
        "fashion_mnist", data_dir=data_dir, batch_size=8, augment=False, normalize=False
    )
    assert splits.image_shape == (32, 32, 3) and splits.num_classes == 10
    for part in (splits.weights, splits.policy, splits.train, splits.test):
        images, labels = next(iter(part))
        assert images.shape == (8, 32, 32, 3) and images.dtype == tf.float32
        assert labels.shape == (8,) and labels.dtype == tf.int32
    weights, weight_labels = _collect(splits.weights)
    policy, policy_labels = _collect(splits.policy)
    train, _ = _collect(splits.train)
    test, test_labels = _collect(splits.test)
    assert (splits.num_weights_examples, splits.num_policy_examples, splits.num_test_examples) == (20, 30, 10)
    assert (len(weights), len(policy), len(train), len(test)) == (20, 30, NUM_TRAIN, NUM_TEST)
    for labels in (weight_labels, policy_labels, test_labels):
        assert labels.min() >= 0 and labels.max() < 10
    # The test split is untouched and in file order: the stored images, centred in black 32x32.
    np.testing.assert_array_equal(test_labels, raw["y_test"])
    np.testing.assert_allclose(test, _padded(raw["x_test"]), atol=1e-6)
    assert not _fingerprints(weights) & _fingerprints(policy)
    assert _fingerprints(weights) | _fingerprints(policy) == _fingerprints(_padded(raw["x_train"]))
    no_download.assert_not_called()


@pytest.mark.parametrize(
    ("options", "shape"),
    [
        ({"image_size": 28, "channels": 1}, (28, 28, 1)),
        ({"channels": 1}, (32, 32, 1)),
        ({"image_size": 64}, (64, 64, 3)),
    ],
)
def test_idx_image_shape_options(idx_dir, options, shape):
    data_dir, raw = idx_dir
    splits = data.load_splits(
        "fashion_mnist", data_dir=data_dir, batch_size=4, augment=False, normalize=False, **options
    )
    assert splits.image_shape == shape
    for part in (splits.weights, splits.test):
        assert next(iter(part))[0].shape == (4, *shape)
    test, _ = _collect(splits.test)
    if shape[0] == 28:  # Native: exactly the stored pixels.
        np.testing.assert_allclose(test[..., 0], raw["x_test"] / 255.0, atol=1e-6)
    elif shape[0] == 32:  # Padded, not resized.
        np.testing.assert_allclose(test, _padded(raw["x_test"], channels=1), atol=1e-6)
    else:  # Resized: no black border, channels equal.
        assert np.all(test[:, :, 0].max(axis=(1, 2)) > 0.0)
        np.testing.assert_array_equal(test[..., 0], test[..., 2])


def test_idx_normalised_with_fashion_mnist_constants(idx_dir):
    data_dir, _ = idx_dir
    splits = data.load_splits("fashion_mnist", data_dir=data_dir, batch_size=4, augment=False)
    mean, std = data.specs.FASHION_MNIST_MEAN[0], data.specs.FASHION_MNIST_STD[0]
    assert splits.mean == (mean,) * 3 and splits.std == (std,) * 3
    test, _ = _collect(splits.test)
    unnormalised = data.load_splits(
        "fashion_mnist", data_dir=data_dir, batch_size=4, augment=False, normalize=False
    )
    plain, _ = _collect(unnormalised.test)
    # The fixed constants, not this fake data's statistics (uniform pixels, mean about 0.5).
    np.testing.assert_allclose(test, (plain - mean) / std, atol=1e-5)
    np.testing.assert_allclose(test[:, :PAD], -mean / std, rtol=1e-5)  # The black border.


def test_idx_weights_are_cropped_and_flipped_policy_and_test_are_not(idx_dir):
    data_dir, _ = idx_dir

    def first(part: str, **options) -> tuple[np.ndarray, np.ndarray]:
        splits = data.load_splits(
            "fashion_mnist", data_dir=data_dir, batch_size=20, normalize=False, **options
        )
        images, labels = next(iter(getattr(splits, part)))
        return images.numpy(), labels.numpy()

    plain, plain_labels = first("weights", augment=False)
    augmented, labels = first("weights")
    np.testing.assert_array_equal(labels, plain_labels)  # Same shuffle, changed images.
    assert np.any(augmented != plain, axis=(1, 2, 3)).mean() > 0.5
    # Without the crop, the only augmentation left is the flip: each image is itself or its mirror.
    flipped_only, _ = first("weights", crop_padding=0)
    mirrored = [np.array_equal(out, image[:, ::-1]) for out, image in zip(flipped_only, plain)]
    same = [np.array_equal(out, image) for out, image in zip(flipped_only, plain)]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)
    for part in ("policy", "test"):
        np.testing.assert_array_equal(first(part)[0], first(part, augment=False)[0])


def test_idx_splits_are_deterministic_for_a_seed(idx_dir):
    data_dir, _ = idx_dir

    def load(seed: int, **options) -> data.NatSplits:
        return data.load_splits("fashion_mnist", data_dir=data_dir, batch_size=8, seed=seed, **options)

    first, again = next(iter(load(3).weights)), next(iter(load(3).weights))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])

    def policy(seed: int) -> set[bytes]:
        return _fingerprints(_collect(load(seed, augment=False).policy)[0])

    assert policy(3) == policy(3)
    assert policy(3) != policy(4)


def test_idx_splits_feed_resnet20(idx_dir):
    data_dir, _ = idx_dir
    images, _ = next(iter(data.load_splits("fashion_mnist", data_dir=data_dir, batch_size=4).weights))
    assert tuple(nat_keras.models.resnet20(num_classes=10)(images).shape) == (4, 10)


# ---------------------------------------------------------------- neither source


@pytest.fixture
def no_debian_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian-package")


def test_neither_source_fails_fast_naming_every_way(tmp_path, no_debian_files, no_download):
    empty = tmp_path / "empty"
    empty.mkdir()
    start = time.monotonic()
    with pytest.raises(data.DatasetNotPreparedError) as raised:
        data.load_splits("fashion_mnist", data_dir=str(empty))
    assert time.monotonic() - start < 10  # No network retries.
    error, message = raised.value, str(raised.value)
    assert isinstance(error, fashion_mnist.FashionMnistNotFoundError)
    assert isinstance(error, nat_keras.NatKerasError) and isinstance(error, FileNotFoundError)
    assert "apt-get install dataset-fashion-mnist" in message
    assert f"tfds build fashion_mnist --data_dir={empty}" in message and "download=True" in message
    assert "data_dir=" in message and str(empty) in message and str(fashion_mnist.DEBIAN_DIR) in message
    assert all(name in message for name in fashion_mnist.FILES.values())
    no_download.assert_not_called()


# ---------------------------------------------------------------- TFDS, mocked

NUM_MOCK_EXAMPLES = 20


@contextlib.contextmanager
def mocked_tfds(*, prepared: bool = True) -> Iterator[None]:
    """Fake TFDS data from the dataset's code, as in tests/test_data.py (no files, no network)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE)
        )
        if prepared:
            stack.enter_context(mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True))
        yield


def test_prepared_tfds_is_read_before_idx_files(idx_dir, no_download):
    data_dir, _ = idx_dir  # IDX files with 50 training images are there too.
    with mocked_tfds():
        splits = data.load_splits("fashion_mnist", data_dir=data_dir, batch_size=4, augment=False)
        weights, weight_labels = _collect(splits.weights)
        policy, _ = _collect(splits.policy)
        test, test_labels = _collect(splits.test)
        native = data.load_splits(
            "fashion_mnist", data_dir=data_dir, batch_size=4, image_size=28, channels=1, normalize=False
        )
        native_images, _ = next(iter(native.weights))
        plain = data.load_splits(
            "fashion_mnist", data_dir=data_dir, batch_size=4, augment=False, normalize=False
        )
        plain_test, _ = _collect(plain.test)
    assert (splits.num_weights_examples, splits.num_policy_examples, splits.num_test_examples) == (8, 12, 20)
    assert (len(weights), len(policy), len(test)) == (8, 12, 20)
    assert splits.image_shape == (32, 32, 3) and weights.shape[1:] == (32, 32, 3)
    assert weights.dtype == np.float32 and weight_labels.dtype == np.int32
    assert test_labels.min() >= 0 and test_labels.max() < 10
    assert not _fingerprints(weights) & _fingerprints(policy)
    assert native.image_shape == (28, 28, 1) and native_images.shape == (4, 28, 28, 1)
    # TFDS' 28x28x1 images go through the same padding and grey repetition as the IDX ones.
    assert np.all(plain_test[:, :PAD] == 0.0) and np.all(plain_test[:, :, -PAD:] == 0.0)
    np.testing.assert_array_equal(plain_test[..., 0], plain_test[..., 1])
    no_download.assert_not_called()


def test_download_true_prepares_through_tfds_only_without_idx_files(tmp_path, idx_dir, no_debian_files):
    empty = tmp_path / "empty"
    empty.mkdir()
    with (
        mocked_tfds(prepared=False),
        mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare") as download_and_prepare,
    ):
        from_idx = data.load_splits("fashion_mnist", data_dir=idx_dir[0], download=True, batch_size=4)
        download_and_prepare.assert_not_called()  # The files are there: no network needed.
        downloaded = data.load_splits("fashion_mnist", data_dir=str(empty), download=True, batch_size=4)
        next(iter(downloaded.weights))
    download_and_prepare.assert_called_once()
    assert from_idx.num_train_examples == NUM_TRAIN and downloaded.num_train_examples == NUM_MOCK_EXAMPLES


# ---------------------------------------------------------------- the real files


@pytest.mark.skipif(fashion_mnist.find_directory() is None, reason="dataset-fashion-mnist is not installed")
def test_load_splits_on_the_real_files(tmp_path, no_download):
    # An empty data_dir: no TFDS files there, so the Debian files are read.
    splits = data.load_splits("fashion_mnist", data_dir=str(tmp_path), batch_size=64, eval_batch_size=1000)
    counts = (splits.num_weights_examples, splits.num_policy_examples, splits.num_test_examples)
    assert counts == (24_000, 36_000, 10_000)
    images, labels = next(iter(splits.weights))
    assert images.shape == (64, 32, 32, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32 and int(tf.reduce_min(labels)) >= 0 and int(tf.reduce_max(labels)) <= 9
    test, test_labels = _collect(splits.test)
    assert test.shape == (10_000, 32, 32, 3)
    assert np.bincount(test_labels).tolist() == [1000] * 10
    # Standardised with the constants measured on these very files: the centre is about mean 0, std 1.
    centre = test[:, PAD:-PAD, PAD:-PAD]
    assert abs(float(centre.mean())) < 0.05 and abs(float(centre.std()) - 1.0) < 0.05
    no_download.assert_not_called()
