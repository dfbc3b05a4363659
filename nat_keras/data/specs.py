"""The datasets nat_keras can train on, and what each one needs.

A `DatasetSpec` is plain data: where the examples come from (scikit-learn,
TFDS, or TFDS else local IDX files), their shape and classes, the normalisation constants, and the
per-dataset defaults of the pipeline (horizontal flip, crop style, caching).
`DataConfig` (in `config.py`) says what a user asked for; the spec fills in
whatever the config leaves to the dataset.

Example:
  >>> from nat_keras.data import DATASETS
  >>> DATASETS["cifar10"].num_classes, DATASETS["cifar10"].image_shape
  (10, (32, 32, 3))
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from nat_keras.errors import ConfigError

# Per-channel statistics of the training images scaled to [0, 1]. CIFAR-10's
# are the constants of DARTS / NAT's code, so our inputs match the paper's.
CIFAR10_MEAN: tuple[float, float, float] = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD: tuple[float, float, float] = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN: tuple[float, float, float] = (0.50707516, 0.48654887, 0.44091784)
CIFAR100_STD: tuple[float, float, float] = (0.26733429, 0.25643846, 0.27615047)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Fashion-MNIST's are fixed constants, not computed at load time: the same
# numbers then serve both sources (TFDS, IDX files) with no pass over the
# data. Measured on the 60,000 training images of the original files.
FASHION_MNIST_MEAN: tuple[float] = (0.28604060,)
FASHION_MNIST_STD: tuple[float] = (0.35302425,)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What nat_keras knows about one supported dataset.

    Attributes:
      name: the name users pass (`"cifar10"`, ...).
      source: `"sklearn"` for the embedded digits, `"tfds"` for TensorFlow
        Datasets, `"tfds_or_idx"` for TFDS when the dataset is prepared in
        the data directory, else its original IDX files (Fashion-MNIST,
        docs/design.md section 7).
      num_classes: number of labels; labels are `0 .. num_classes - 1`.
      image_size: default height and width of the pipeline's images.
      channels: default channels of the pipeline's images (3 for every
        dataset, so that the paper's CIFAR / ImageNet models run on each).
      grey: whether the source images are grey, so that
        `DataConfig.channels=1` may keep them so (3 repeats the grey).
      stored_size: height and width of the stored images when they differ
        from `image_size`. At the default `image_size` they are zero-padded,
        centred (Fashion-MNIST: 28 -> 32, the border is the black
        background); any other `DataConfig.image_size` is reached by
        bilinear resizing.
      train_split: the split that is divided into a weight and a policy part.
      test_split: the held-out split, never used for search (ImageNet's
        labelled held-out split is "validation").
      mean: per-channel mean of the [0, 1] training images (one value for a
        grey dataset, repeated for every output channel); None means it is
        computed from the training split when loading (digits).
      std: per-channel standard deviation, like `mean`.
      flip: whether random horizontal flips are a sound augmentation (not for
        digits: a flipped 2 is no 2).
      crop: `"pad"`: pad then random crop, for small images (CIFAR);
        `"resized"`: Inception-style random resized crop of an encoded image
        (ImageNet).
      cache: whether decoded training images are cached in memory by default
        (small datasets only).
      tfds_name: the TFDS builder name, for `source` `"tfds"` and
        `"tfds_or_idx"`.
      manual_files: files a user must download by hand into the TFDS manual
        directory before the dataset can be prepared.
      homepage: where the data comes from, for error messages.
    """

    name: str
    source: Literal["sklearn", "tfds", "tfds_or_idx"]
    num_classes: int
    image_size: int
    channels: int = 3
    grey: bool = False
    stored_size: int | None = None
    train_split: str = "train"
    test_split: str = "test"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    flip: bool = True
    crop: Literal["pad", "resized"] = "pad"
    cache: bool = True
    tfds_name: str | None = None
    manual_files: tuple[str, ...] = ()
    homepage: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Default `(height, width, channels)` of the pipeline's images."""
        return (self.image_size, self.image_size, self.channels)


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        name="digits",
        source="sklearn",
        num_classes=10,
        image_size=32,
        grey=True,
        flip=False,
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        source="tfds",
        num_classes=10,
        image_size=32,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        tfds_name="cifar10",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": DatasetSpec(
        name="cifar100",
        source="tfds",
        num_classes=100,
        image_size=32,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        tfds_name="cifar100",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    # 32x32x3 by default (28x28 grey padded, grey repeated) so that the
    # reference networks (resnet20, ...) and the cell networks, built for
    # CIFAR, take it unchanged; `image_size=28, channels=1` gives the native
    # images. Flips are sound for clothing (a mirrored shoe is a shoe) and
    # standard for Fashion-MNIST, unlike for digits.
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        source="tfds_or_idx",
        num_classes=10,
        image_size=32,
        grey=True,
        stored_size=28,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        tfds_name="fashion_mnist",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "imagenet2012": DatasetSpec(
        name="imagenet2012",
        source="tfds",
        num_classes=1000,
        image_size=224,
        test_split="validation",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        crop="resized",
        # 1.28M decoded images do not fit in memory.
        cache=False,
        tfds_name="imagenet2012",
        manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
        homepage="https://image-net.org/download-images",
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """Returns the spec of a supported dataset.

    Args:
      name: one of the keys of `DATASETS`.

    Returns:
      The `DatasetSpec`.

    Raises:
      ValueError: if `name` is not a supported dataset; the message lists the
        valid names.

    Example:
      >>> get_spec("digits").flip
      False
    """
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(DATASETS))
        raise ConfigError(f"Unknown dataset {name!r}; valid names: {valid}.") from None
