"""`load_splits`: the data a NAT search and the final training run on.

NAT splits the training set in two (DESIGN.md section 2): 40% trains the
supernet weights w, 60% trains the policy theta (it is where rewards are
measured). The test split is returned apart and is never used for search.

The split is by example index: a permutation seeded by `DataConfig.seed`
picks `round(weight_fraction * N)` indices for the weight part, the rest is
the policy part. So the parts are disjoint, the same for the same seed, a
random (not contiguous) sample, and the same code serves digits (numpy
arrays) and TFDS (examples read in a fixed order, then filtered by index).

Which parts are shuffled and augmented:

  part      shuffled  augmented                      used for
  weights   yes       yes (`augment`)                supernet weights w
  policy    yes       no (`augment_policy` to opt in) policy theta, rewards
  train     yes       yes (`augment`)                final training (weights + policy)
  test      no        no                             final accuracy only

Example:
  >>> splits = load_splits("digits", batch_size=32)
  >>> splits.num_weights_examples, splits.num_policy_examples, splits.num_test_examples
  (575, 862, 360)
  >>> images, labels = next(iter(splits.weights))
  >>> images.shape
  TensorShape([32, 32, 32, 3])
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from nat_keras.data import digits as digits_lib
from nat_keras.data import tfds_source
from nat_keras.data.config import DataConfig
from nat_keras.data.pipeline import Preprocessing, batched

# Each part draws shuffles and augmentations from its own seed stream.
_STREAM_OFFSETS = {"weights": 0, "policy": 1, "train": 2, "test": 3}


@dataclasses.dataclass(frozen=True)
class NatSplits:
    """The batched parts of one dataset, as `load_splits` returns them.

    Every dataset yields `(float32 images [B, H, W, C], int32 labels [B])`.

    Attributes:
      weights: the supernet-weight part of the training split, shuffled and
        augmented.
      policy: the policy part (the rest of the training split), shuffled, not
        augmented unless `config.augment_policy`.
      test: the test split, in order, not augmented; never for search.
      train: the whole training split (weights + policy), shuffled and
        augmented, for training the transformed model at the end.
      num_classes: number of labels.
      image_shape: `(H, W, C)` of one image.
      num_weights_examples: examples in `weights`.
      num_policy_examples: examples in `policy`.
      num_test_examples: examples in `test`.
      mean: the per-channel mean used for normalisation.
      std: the per-channel standard deviation used for normalisation.
      config: the `DataConfig` these splits were loaded with.
    """

    weights: tf.data.Dataset
    policy: tf.data.Dataset
    test: tf.data.Dataset
    train: tf.data.Dataset
    num_classes: int
    image_shape: tuple[int, int, int]
    num_weights_examples: int
    num_policy_examples: int
    num_test_examples: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    config: DataConfig

    @property
    def num_train_examples(self) -> int:
        """Examples in the whole training split (`weights` + `policy`)."""
        return self.num_weights_examples + self.num_policy_examples


def weight_mask(num_examples: int, *, weight_fraction: float, seed: int) -> np.ndarray:
    """Says which training examples belong to the supernet-weight part.

    Args:
      num_examples: size of the training split.
      weight_fraction: share for the weight part, in (0, 1).
      seed: seed of the permutation.

    Returns:
      A bool array of length `num_examples`, True for the
      `round(weight_fraction * num_examples)` weight examples (at least one
      example in each part when there are two or more).

    Example:
      >>> int(weight_mask(10, weight_fraction=0.4, seed=0).sum())
      4
    """
    num_weights = round(weight_fraction * num_examples)
    if num_examples >= 2:
        num_weights = min(max(num_weights, 1), num_examples - 1)
    chosen = np.random.default_rng(seed).permutation(num_examples)[:num_weights]
    mask = np.zeros(num_examples, dtype=bool)
    mask[chosen] = True
    return mask


def _select(dataset: tf.data.Dataset, mask: np.ndarray, keep: bool) -> tf.data.Dataset:
    """Keeps the examples whose position in `dataset` has `mask == keep`."""
    mask_tensor = tf.constant(mask if keep else ~mask)
    return (
        dataset.enumerate()
        .filter(lambda index, example: tf.gather(mask_tensor, index))
        .map(lambda index, example: example)
    )


def _build_parts(
    config: DataConfig,
    *,
    preprocessing: Preprocessing,
    weights: tf.data.Dataset,
    policy: tf.data.Dataset,
    train: tf.data.Dataset,
    test: tf.data.Dataset,
) -> dict[str, tf.data.Dataset]:
    cache = config.resolved_cache

    def part(dataset: tf.data.Dataset, name: str, *, augment: bool, shuffle: bool) -> tf.data.Dataset:
        return batched(
            dataset,
            preprocessing=preprocessing,
            batch_size=config.batch_size if name in ("weights", "train") else config.resolved_eval_batch_size,
            augment=augment,
            shuffle=shuffle,
            seed=config.seed * len(_STREAM_OFFSETS) + _STREAM_OFFSETS[name],
            shuffle_buffer=config.shuffle_buffer,
            cache=cache,
            drop_remainder=config.drop_remainder and name != "test",
        )

    return {
        "weights": part(weights, "weights", augment=config.augment, shuffle=True),
        "policy": part(policy, "policy", augment=config.augment and config.augment_policy, shuffle=True),
        "train": part(train, "train", augment=config.augment, shuffle=True),
        "test": part(test, "test", augment=False, shuffle=False),
    }


def _preprocessing(config: DataConfig, mean: Any, std: Any, **options: Any) -> Preprocessing:
    """The per-example preprocessing `config` asks for, normalised with (mean, std)."""
    return Preprocessing(
        image_size=config.resolved_image_size,
        crop=config.spec.crop,
        crop_padding=config.crop_padding,
        flip=config.resolved_flip,
        cutout=config.cutout,
        mean=mean if config.normalize else None,
        std=std if config.normalize else None,
        **options,
    )


def _load_digits(config: DataConfig) -> NatSplits:
    spec = config.spec
    arrays = digits_lib.load_digits_arrays(image_size=config.resolved_image_size)
    mean, std = arrays.channel_stats()
    preprocessing = _preprocessing(config, mean, std)
    mask = weight_mask(len(arrays.y_train), weight_fraction=config.weight_fraction, seed=config.seed)

    def slices(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((images, labels))

    parts = _build_parts(
        config,
        preprocessing=preprocessing,
        weights=slices(arrays.x_train[mask], arrays.y_train[mask]),
        policy=slices(arrays.x_train[~mask], arrays.y_train[~mask]),
        train=slices(arrays.x_train, arrays.y_train),
        test=slices(arrays.x_test, arrays.y_test),
    )
    return NatSplits(
        **parts,
        num_classes=spec.num_classes,
        image_shape=(config.resolved_image_size, config.resolved_image_size, spec.channels),
        num_weights_examples=int(mask.sum()),
        num_policy_examples=int((~mask).sum()),
        num_test_examples=len(arrays.y_test),
        mean=mean,
        std=std,
        config=config,
    )


def _load_tfds(config: DataConfig) -> NatSplits:
    spec = config.spec
    assert spec.mean is not None and spec.std is not None  # Every TFDS spec records them.
    builder = tfds_source.prepared_builder(config)
    train, num_train = tfds_source.read_split(builder, spec.train_split)
    test, num_test = tfds_source.read_split(builder, spec.test_split)
    preprocessing = _preprocessing(
        config,
        spec.mean,
        spec.std,
        # Small images are decoded once and cached; ImageNet's are decoded by
        # the crop itself, which reads only the crop window.
        decode=tfds_source.decode_image_fn(builder) if spec.crop == "pad" else None,
    )
    mask = weight_mask(num_train, weight_fraction=config.weight_fraction, seed=config.seed)
    parts = _build_parts(
        config,
        preprocessing=preprocessing,
        weights=_select(train, mask, keep=True),
        policy=_select(train, mask, keep=False),
        train=train,
        test=test,
    )
    return NatSplits(
        **parts,
        num_classes=spec.num_classes,
        image_shape=(config.resolved_image_size, config.resolved_image_size, spec.channels),
        num_weights_examples=int(mask.sum()),
        num_policy_examples=int((~mask).sum()),
        num_test_examples=num_test,
        mean=spec.mean,
        std=spec.std,
        config=config,
    )


def load_splits(name: str | None = None, *, config: DataConfig | None = None, **options: Any) -> NatSplits:
    """Loads a dataset as NAT's weight / policy / test parts, batched and prefetched.

    Args:
      name: the dataset, one of `nat_keras.data.DATASETS` ("digits",
        "cifar10", "cifar100", "imagenet2012"); None keeps `config.name`
        ("digits" by default, which needs no network).
      config: a `DataConfig`; None means the defaults.
      **options: `DataConfig` fields that override `config` (`batch_size`,
        `data_dir`, `download`, `cutout`, `seed`, ...).

    Returns:
      A `NatSplits` whose datasets yield `(float32 [B, H, W, 3], int32 [B])`.

    Raises:
      ValueError: on an unknown dataset name or option (the message lists the
        valid ones) or an invalid option value.
      DatasetNotPreparedError: if a TFDS dataset is not prepared in its data
        directory and `download` is False; raised at once, with the command
        that prepares it.

    Example:
      >>> splits = load_splits("cifar10", data_dir="/data/tfds", cutout=16)
      >>> splits.num_weights_examples, splits.num_policy_examples
      (20000, 30000)
    """
    config = config or DataConfig()
    if name is not None:
        options = {"name": name, **options}
    if options:
        config = config.replace(**options)
    if config.spec.source == "sklearn":
        return _load_digits(config)
    return _load_tfds(config)
