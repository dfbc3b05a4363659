"""The embedded default dataset: scikit-learn's handwritten digits.

1,797 grey 8x8 images with values 0..16 ship inside scikit-learn, so they load
with no network. We scale them to [0, 1], resize them to the pipeline's size
(32x32 by default) and repeat the grey channel three times, so the paper's
CIFAR networks run on them unchanged. The train/test split is fixed (80/20,
stratified, seed 0) like a real dataset's, whatever seed a search uses.

Example:
  >>> arrays = load_digits_arrays(image_size=32)
  >>> arrays.x_train.shape, arrays.x_test.shape
  ((1437, 32, 32, 3), (360, 32, 32, 3))
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf

# A fixed split, as a published dataset has: results on different search
# seeds stay comparable because they share one test set.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
# Each pixel counts the set pixels of a 4x4 block of the 32x32 original
# bitmap, so 16 is the largest value.
DIGITS_MAX_VALUE = 16.0


@dataclasses.dataclass(frozen=True)
class DigitsArrays:
    """The digits, resized, as read-only numpy arrays.

    Attributes:
      x_train: float32 `[N, size, size, 3]` images in [0, 1].
      y_train: int32 `[N]` labels 0..9.
      x_test: float32 test images, like `x_train`.
      y_test: int32 test labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images, for normalisation."""
        mean = self.x_train.mean(axis=(0, 1, 2), dtype=np.float64)
        std = self.x_train.std(axis=(0, 1, 2), dtype=np.float64)
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)


@functools.lru_cache(maxsize=4)
def load_digits_arrays(*, image_size: int = 32) -> DigitsArrays:
    """Loads scikit-learn's digits as RGB float images of `image_size`.

    Args:
      image_size: height and width of the returned images (bilinear resize).

    Returns:
      A `DigitsArrays` with the fixed 80/20 stratified train/test split
      (1,437 / 360 examples). The arrays are read-only: the result is cached
      and shared between calls.

    Example:
      >>> load_digits_arrays(image_size=8).x_train.shape[1:]
      (8, 8, 3)
    """
    # Imported here: scikit-learn is only needed for this dataset.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / DIGITS_MAX_VALUE).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    if image_size != images.shape[1]:
        images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    images = np.clip(np.repeat(images, 3, axis=-1), 0.0, 1.0)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    arrays = DigitsArrays(
        x_train=np.ascontiguousarray(x_train),
        y_train=np.ascontiguousarray(y_train),
        x_test=np.ascontiguousarray(x_test),
        y_test=np.ascontiguousarray(y_test),
    )
    for array in dataclasses.astuple(arrays):
        array.setflags(write=False)
    return arrays
