"""Reading TFDS datasets, and failing fast when they are not prepared.

Offline, `tfds.load` of a dataset that is not prepared retries its download
for minutes before failing. We ask the builder whether its files are there
(`DatasetBuilder.is_prepared()`, which reads only the local data directory)
and, unless downloading was asked for, raise `DatasetNotPreparedError` at
once with the command that prepares the dataset.

Images are read still encoded (`tfds.decode.SkipDecoding`), so that the
weight/policy split can drop the other part's examples before the costly
decoding (it matters for ImageNet's 1.28M JPEGs).

Example:
  >>> from nat_keras.data.config import DataConfig
  >>> builder = prepared_builder(DataConfig(name="cifar10", data_dir="/data/tfds"))
  >>> images, count = read_split(builder, "test")
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from nat_keras.data.config import DataConfig
from nat_keras.data.specs import DatasetSpec
from nat_keras.errors import ConfigError, NatKerasError


class DatasetNotPreparedError(NatKerasError, FileNotFoundError):
    """A dataset's files are not where nat_keras looks, and it was not downloaded.

    For a TFDS dataset: not prepared in its data directory. Fashion-MNIST
    raises the subclass `FashionMnistNotFoundError` when neither TFDS nor its
    IDX files have it, so one `except DatasetNotPreparedError` serves every
    dataset.
    """


def default_manual_dir(builder: tfds.core.DatasetBuilder) -> str:
    """TFDS's default manual directory of a builder: `<data_dir>/downloads/manual`."""
    return os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")


def _missing_manual_files(spec: DatasetSpec, manual_dir: str) -> list[str]:
    return [name for name in spec.manual_files if not tf.io.gfile.exists(os.path.join(manual_dir, name))]


def _not_prepared_message(
    spec: DatasetSpec, builder: tfds.core.DatasetBuilder, manual_dir: str, *, download: bool
) -> str:
    """Says what is missing and the exact commands that prepare the dataset."""
    data_dir_root = os.fspath(builder.data_dir_root)
    where = (
        f"Dataset {spec.name!r} is not prepared in data_dir={data_dir_root!r} "
        f"(no TFDS files at {builder.data_dir})"
    )
    missing = _missing_manual_files(spec, manual_dir)
    if download:
        reason = (
            f", and download=True cannot prepare it: TFDS needs files downloaded by hand, missing from "
            f"the manual directory {manual_dir}: {', '.join(missing)}."
        )
    else:
        reason = ", and downloading was not asked for (download=False), so nat_keras did not try the network."
    lines = [where + reason, "To prepare it:"]
    if spec.manual_files:
        files = " and ".join(spec.manual_files)
        state = f"missing there now: {', '.join(missing)}" if missing else "they are there now"
        lines += [
            f"  1. Download {files} by hand from {spec.homepage} (registration needed) and put them "
            f"into the manual directory {manual_dir} ({state}).",
            f"  2. Run `tfds build {spec.tfds_name} --data_dir={data_dir_root} --manual_dir={manual_dir}`, "
            "or load again with download=True (and manual_dir=... if the files lie elsewhere).",
        ]
    else:
        lines += [
            f"  - run `tfds build {spec.tfds_name} --data_dir={data_dir_root}` on a machine with network "
            f"access (copy {os.path.join(data_dir_root, spec.tfds_name or spec.name)} here if that is "
            "another machine), or",
            "  - load again with download=True to let TFDS download and prepare it now.",
        ]
    lines.append('Without a network, name="digits" (scikit-learn\'s handwritten digits) works offline.')
    return "\n".join(lines)


def _builder(config: DataConfig) -> tfds.core.DatasetBuilder:
    spec = config.spec
    if spec.tfds_name is None:
        raise ConfigError(f"Dataset {spec.name!r} does not come from TFDS.")
    # `tfds.builder` only reads code and the local data directory (no GCS
    # look-up unless try_gcs=True), so this cannot hang offline.
    return tfds.builder(spec.tfds_name, data_dir=config.data_dir)


def builder_if_prepared(config: DataConfig) -> tfds.core.DatasetBuilder | None:
    """Returns the TFDS builder of `config.name` if its files are prepared, else None.

    It reads only the local data directory and never downloads, whatever
    `config.download` says: for datasets with another source to fall back on
    (Fashion-MNIST's IDX files), which is tried before any download.

    Example:
      >>> builder_if_prepared(DataConfig(name="fashion_mnist", data_dir="/nowhere")) is None
      True
    """
    # A dataset that is not prepared is expected here (the IDX files come next):
    # TFDS's warning about the version folder it did not find would only be noise.
    with _absl_level(logging.ERROR):
        builder = _builder(config)
        return builder if builder.is_prepared() else None


@contextlib.contextmanager
def _absl_level(level: int) -> Iterator[None]:
    """absl logging at most as verbose as `level` (absl: the lower, the quieter) inside the block."""
    before = logging.get_verbosity()
    logging.set_verbosity(min(before, level))
    try:
        yield
    finally:
        logging.set_verbosity(before)


def tfds_data_dir(config: DataConfig) -> str:
    """The TFDS data directory `config` reads (`data_dir`, or TFDS's default), for messages.

    Example:
      >>> tfds_data_dir(DataConfig(name="cifar10", data_dir="/data/tfds"))
      '/data/tfds'
    """
    return os.fspath(_builder(config).data_dir_root)


def prepared_builder(config: DataConfig) -> tfds.core.DatasetBuilder:
    """Returns the TFDS builder of `config.name`, prepared, or fails at once.

    Args:
      config: the data config; `name` must be a TFDS dataset.

    Returns:
      A `tfds.core.DatasetBuilder` whose data files are prepared.

    Raises:
      DatasetNotPreparedError: if the dataset is not prepared and
        `config.download` is False, or if a manual dataset (ImageNet) lacks
        its hand-downloaded files. The message names the dataset, the data
        directory and the `tfds build` command that prepares it.

    Example:
      >>> builder = prepared_builder(DataConfig(name="cifar10", download=True))
      >>> builder.info.features["label"].num_classes
      10
    """
    spec = config.spec
    builder = _builder(config)
    if builder.is_prepared():
        return builder
    manual_dir = config.manual_dir or default_manual_dir(builder)
    if not config.download or _missing_manual_files(spec, manual_dir):
        # With download=True and manual files missing TFDS would fail too, but
        # with a message that does not say which file is missing.
        raise DatasetNotPreparedError(
            _not_prepared_message(spec, builder, manual_dir, download=config.download)
        )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> tuple[tf.data.Dataset, int]:
    """Reads one split as `(encoded_image, label)` pairs in a fixed order.

    Args:
      builder: a prepared builder (see `prepared_builder`).
      split: the TFDS split name ("train", "test", "validation").

    Returns:
      The dataset of `(encoded image bytes, int64 label)` and its number of
      examples. File order is not shuffled: the weight/policy split selects
      examples by their position, which must be the same on every read.

    Example:
      >>> dataset, count = read_split(builder, "train")
    """
    dataset = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    count = int(dataset.cardinality())
    if count < 0:  # Unknown or infinite: fall back on the recorded split size.
        count = int(builder.info.splits[split].num_examples)
    return dataset, count


def decode_image_fn(builder: tfds.core.DatasetBuilder) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns the builder's own decoder of its encoded image feature.

    It gives decoded uint8 images with the static shape the dataset records
    (32x32x3 for CIFAR), which later stages rely on.
    """
    return builder.info.features["image"].decode_example
