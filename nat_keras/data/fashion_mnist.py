"""Fashion-MNIST from its original IDX files, found without a network.

Fashion-MNIST (Xiao et al. 2017) has 60,000 training and 10,000 test 28x28
grey images of 10 kinds of clothing: hard enough to leave room for a better
architecture (plain CNNs reach about 0.92, the best published about 0.96-0.97),
small enough for a CPU. The files are looked for in:

1. `data_dir`, when given (the four `*-ubyte.gz` files, or a `fashion-mnist`
   folder inside it);
2. Debian's `dataset-fashion-mnist` package (`apt-get install
   dataset-fashion-mnist`), which installs the original files in
   `/usr/share/datasets/fashion-mnist`.

`load_splits("fashion_mnist")` reads TFDS' `fashion_mnist` instead when it is
prepared in the data directory, and raises `FashionMnistNotFoundError` with
both ways to get the data when neither source has it (docs/design.md
section 7).

Example:
  >>> arrays = load_fashion_mnist_arrays()
  >>> arrays.x_train.shape, arrays.y_test.shape
  ((60000, 28, 28, 1), (10000,))
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Literal

import numpy as np

from nat_keras.data.idx import read_idx
from nat_keras.data.tfds_source import DatasetNotPreparedError
from nat_keras.errors import NatKerasError

DEBIAN_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class FashionMnistNotFoundError(DatasetNotPreparedError):
    """The Fashion-MNIST IDX files are neither in `data_dir` nor where Debian installs them.

    A `DatasetNotPreparedError` (so a `NatKerasError` and a
    `FileNotFoundError`), as for an unprepared TFDS dataset.
    """


@dataclasses.dataclass(frozen=True)
class FashionMnistArrays:
    """Fashion-MNIST as read-only numpy arrays.

    Attributes:
      x_train: float32 `[60000, 28, 28, 1]` images in [0, 1] (uint8 0..255
        when loaded with `dtype="uint8"`).
      y_train: int32 `[60000]` labels 0..9 (`CLASS_NAMES`).
      x_test: float32 `[10000, 28, 28, 1]` test images.
      y_test: int32 `[10000]` test labels.
      directory: where the files were read from.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    directory: str


def find_directory(data_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """The first folder holding all four files, or None (see the module docstring).

    Example:
      >>> find_directory()
      PosixPath('/usr/share/datasets/fashion-mnist')
    """
    candidates = []
    if data_dir is not None:
        candidates += [pathlib.Path(data_dir), pathlib.Path(data_dir) / "fashion-mnist"]
    candidates.append(DEBIAN_DIR)
    for directory in candidates:
        if all((directory / name).is_file() for name in FILES.values()):
            return directory
    return None


def not_found_message(data_dir: str | os.PathLike | None, *, tfds_data_dir: str | None = None) -> str:
    """Says where Fashion-MNIST was looked for and every way to get it.

    Args:
      data_dir: the `data_dir` the files were looked for in, if any.
      tfds_data_dir: the TFDS data directory where `fashion_mnist` was found
        not prepared; None when TFDS was not looked at.

    Example:
      >>> "apt-get install dataset-fashion-mnist" in not_found_message(None)
      True
    """
    looked = ([str(data_dir)] if data_dir is not None else []) + [str(DEBIAN_DIR)]
    where = f"Fashion-MNIST's IDX files ({', '.join(FILES.values())}) are not in {' or '.join(looked)}"
    if tfds_data_dir is not None:
        where += (
            f", nor is TFDS' fashion_mnist prepared in data_dir={tfds_data_dir!r}; downloading was not "
            "asked for (download=False), so nat_keras did not try the network"
        )
    tfds_build = f"tfds build fashion_mnist --data_dir={tfds_data_dir or '<data_dir>'}"
    return "\n".join(
        [
            where + ".",
            "To get it, any one of:",
            "  - `apt-get install dataset-fashion-mnist` (Debian / Ubuntu) installs the files in "
            f"{DEBIAN_DIR}, found with no option;",
            "  - download the four files from https://github.com/zalandoresearch/fashion-mnist into a "
            "folder and pass it as data_dir=...;",
            f"  - prepare TFDS' fashion_mnist: `{tfds_build}` with network access, or load again with "
            "download=True.",
        ]
    )


@functools.lru_cache(maxsize=2)
def load_fashion_mnist_arrays(
    data_dir: str | None = None, *, dtype: Literal["float32", "uint8"] = "float32"
) -> FashionMnistArrays:
    """Read Fashion-MNIST's four IDX files into arrays.

    Args:
      data_dir: a folder with the files; None looks only where Debian's
        `dataset-fashion-mnist` package puts them.
      dtype: `"float32"` for images in [0, 1]; `"uint8"` for the stored
        values 0..255, a quarter of the memory (what `load_splits` feeds its
        pipeline, like TFDS' decoded images).

    Returns:
      A `FashionMnistArrays`; cached, so its arrays are read-only.

    Raises:
      FashionMnistNotFoundError: the files are in neither place; the message
        says how to get them.
      nat_keras.data.idx.IdxFormatError: a file is damaged.

    Example:
      >>> load_fashion_mnist_arrays("/data/fashion-mnist").x_train.dtype
      dtype('float32')
    """
    if dtype not in ("float32", "uint8"):
        raise ValueError(f"dtype must be 'float32' or 'uint8', got {dtype!r}.")
    directory = find_directory(data_dir)
    if directory is None:
        raise FashionMnistNotFoundError(not_found_message(data_dir))
    images = {key: read_idx(directory / FILES[key], expected_rank=3) for key in ("x_train", "x_test")}
    labels = {key: read_idx(directory / FILES[key], expected_rank=1) for key in ("y_train", "y_test")}
    for split in ("train", "test"):
        if len(images[f"x_{split}"]) != len(labels[f"y_{split}"]):
            raise NatKerasError(
                f"Fashion-MNIST in {directory}: {len(images[f'x_{split}'])} {split} images but "
                f"{len(labels[f'y_{split}'])} labels; the files do not belong together."
            )

    def scaled(stored: np.ndarray) -> np.ndarray:
        stored = stored[..., np.newaxis]
        return stored if dtype == "uint8" else (stored / np.float32(255)).astype(np.float32)

    arrays = FashionMnistArrays(
        x_train=scaled(images["x_train"]),
        y_train=labels["y_train"].astype(np.int32),
        x_test=scaled(images["x_test"]),
        y_test=labels["y_test"].astype(np.int32),
        directory=str(directory),
    )
    for array in (arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test):
        array.setflags(write=False)
    return arrays
