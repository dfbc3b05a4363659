"""`DataConfig`: what data to load and how to feed it, as a frozen dataclass.

Options left as None take the dataset's default from its `DatasetSpec`
(image size, channels, horizontal flip, in-memory cache, evaluation batch
size), so one config reads right for digits, Fashion-MNIST, CIFAR and
ImageNet alike.

Example:
  >>> config = DataConfig(name="cifar10", cutout=16)
  >>> DataConfig.from_dict(config.to_dict()) == config
  True
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nat_keras.data.specs import DATASETS, DatasetSpec, get_spec
from nat_keras.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Options of `load_splits`; defaults follow the NAT paper.

    Attributes:
      name: the dataset, one of `nat_keras.data.DATASETS` ("cifar10",
        "cifar100", "digits", "fashion_mnist", "imagenet2012"). "digits"
        ships with scikit-learn and needs no network; "fashion_mnist" needs
        none once Debian's `dataset-fashion-mnist` is installed.
      data_dir: TFDS data directory; None means TFDS's default
        (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`). For "fashion_mnist"
        also a folder with its four `*-ubyte.gz` IDX files (or a
        `fashion-mnist` folder inside it). Unused for digits.
      download: whether a TFDS dataset that is not prepared may be downloaded
        and prepared. Off by default: offline, a download only fails after
        minutes of retries, so we fail at once and say how to prepare it.
      manual_dir: where the hand-downloaded files of a manual dataset
        (ImageNet's tar files) lie; None means `<data_dir>/downloads/manual`.
      batch_size: batch size of the training parts (64 in the paper).
      eval_batch_size: batch size of `policy` and `test`; None means
        `batch_size`.
      weight_fraction: share of the training split that trains the supernet
        weights; the rest trains the policy (0.4 in the paper).
      train_examples: use only this many examples of the training split (a
        subset fixed by `seed`: a seeded sample of array datasets, the first
        ones of a TFDS split, whose files TFDS shuffled when it prepared
        them); None uses all. For runs that must fit a time limit (`make
        demo`); the test split is always whole.
      seed: seed of the weight/policy split, of shuffling and of
        augmentation. The test split of digits does not depend on it.
      image_size: height and width of the output images; None means the
        dataset's (32 for digits, CIFAR and Fashion-MNIST, 224 for ImageNet).
        Fashion-MNIST's 28x28 images are zero-padded, centred, to 32 and
        resized to any other size.
      channels: channels of the output images, 1 or 3; None means the
        dataset's (3 everywhere, so the CIFAR networks take every dataset).
        1 keeps a grey dataset's (digits, Fashion-MNIST) single channel; 3
        repeats it.
      augment: whether the training parts (`weights`, `train`) are augmented.
      augment_policy: whether the `policy` part is augmented too. Off by
        default because rewards compare two architectures on the same batch
        and augmentation only adds noise there (the authors' code does
        augment it, as DARTS does; set this to match it).
      flip: random horizontal flips; None means the dataset's default (on
        for CIFAR, Fashion-MNIST and ImageNet, off for digits).
      crop_padding: pixels of zero padding before the random crop of small
        images (4 in the paper); 0 turns the crop off.
      cutout: side of the cutout square in pixels; 0 turns cutout off (16 is
        usual for CIFAR).
      normalize: whether images are standardised with the dataset's
        per-channel mean and std.
      shuffle_buffer: examples in the shuffle buffer of the training parts.
      cache: whether decoded training images are kept in memory; None means
        the dataset's default (on, except for ImageNet).
      drop_remainder: whether the last, smaller batch of the shuffled parts
        (`weights`, `policy`, `train`) is dropped, for static batch shapes.
        `test` always keeps every example.
    """

    name: str = "digits"
    data_dir: str | None = None
    download: bool = False
    manual_dir: str | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    weight_fraction: float = 0.4
    train_examples: int | None = None
    seed: int = 0
    image_size: int | None = None
    channels: int | None = None
    augment: bool = True
    augment_policy: bool = False
    flip: bool | None = None
    crop_padding: int = 4
    cutout: int = 0
    normalize: bool = True
    shuffle_buffer: int = 10_000
    cache: bool | None = None
    drop_remainder: bool = False

    def __post_init__(self) -> None:
        get_spec(self.name)  # Raises ValueError naming the valid datasets.
        positive = {"batch_size": self.batch_size, "shuffle_buffer": self.shuffle_buffer}
        if self.eval_batch_size is not None:
            positive["eval_batch_size"] = self.eval_batch_size
        if self.image_size is not None:
            positive["image_size"] = self.image_size
        if self.train_examples is not None:
            positive["train_examples"] = self.train_examples
        for field, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"DataConfig.{field} must be a positive int; got {value!r}.")
        for field, value in {"crop_padding": self.crop_padding, "cutout": self.cutout}.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"DataConfig.{field} must be an int >= 0 (0 turns it off); got {value!r}.")
        self._check_channels()
        if not 0.0 < self.weight_fraction < 1.0:
            raise ConfigError(
                "DataConfig.weight_fraction is the share of the training split that trains the "
                f"supernet weights and must lie strictly between 0 and 1; got {self.weight_fraction!r}."
            )

    def _check_channels(self) -> None:
        if self.channels is None:
            return
        if isinstance(self.channels, bool) or self.channels not in (1, 3):
            raise ConfigError(
                "DataConfig.channels must be None (the dataset's default), 1 (grey) or 3; "
                f"got {self.channels!r}."
            )
        if self.channels == 1 and not self.spec.grey:
            grey = ", ".join(sorted(name for name, spec in DATASETS.items() if spec.grey))
            raise ConfigError(
                f"DataConfig.channels=1 keeps a grey dataset grey, but {self.name!r} is in colour; "
                f"grey datasets: {grey}. Leave channels=None (3 channels) for {self.name!r}."
            )

    @property
    def spec(self) -> DatasetSpec:
        """The `DatasetSpec` of `name`."""
        return get_spec(self.name)

    @property
    def resolved_image_size(self) -> int:
        """`image_size`, or the dataset's default."""
        return self.image_size if self.image_size is not None else self.spec.image_size

    @property
    def resolved_channels(self) -> int:
        """`channels`, or the dataset's default.

        Example:
          >>> DataConfig(name="fashion_mnist", channels=1).resolved_channels
          1
        """
        return self.channels if self.channels is not None else self.spec.channels

    @property
    def resolved_flip(self) -> bool:
        """`flip`, or the dataset's default."""
        return self.flip if self.flip is not None else self.spec.flip

    @property
    def resolved_cache(self) -> bool:
        """`cache`, or the dataset's default."""
        return self.cache if self.cache is not None else self.spec.cache

    @property
    def resolved_eval_batch_size(self) -> int:
        """`eval_batch_size`, or `batch_size`."""
        return self.eval_batch_size if self.eval_batch_size is not None else self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """Returns the options as a JSON-ready dict.

        Example:
          >>> DataConfig(name="cifar10").to_dict()["batch_size"]
          64
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> DataConfig:
        """Builds a config from `to_dict`'s output (missing keys take defaults).

        Args:
          options: option names and values.

        Returns:
          The `DataConfig`.

        Raises:
          ValueError: on an unknown option name (the message lists the valid
            ones) or an invalid value.

        Example:
          >>> DataConfig.from_dict({"name": "cifar100", "cutout": 16}).cutout
          16
        """
        valid = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(f"Unknown DataConfig option(s) {unknown}; valid options: {sorted(valid)}.")
        return cls(**options)

    def replace(self, **changes: Any) -> DataConfig:
        """Returns a copy with `changes` applied, checking the option names.

        Example:
          >>> DataConfig().replace(name="cifar10").name
          'cifar10'
        """
        return type(self).from_dict({**self.to_dict(), **changes})
