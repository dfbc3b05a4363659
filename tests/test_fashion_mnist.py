"""The IDX reader on files the test writes, and the real Fashion-MNIST files when installed."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

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
