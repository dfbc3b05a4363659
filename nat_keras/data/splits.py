"""`load_splits`: the data a NAT search and the final training run on.

NAT splits the training set in two (docs/design.md sections 2 and 7): 40% trains the
supernet weights w, 60% trains the policy theta (it is where rewards are
measured). The test split is returned apart and is never used for search.

The split is by example index: a permutation seeded by `DataConfig.seed`
picks `round(weight_fraction * N)` indices for the weight part, the rest is
the policy part. So the parts are disjoint, the same for the same seed, a
random (not contiguous) sample, and the same code serves numpy arrays
(digits, Fashion-MNIST's IDX files) and TFDS (examples read in a fixed order,
then filtered by index).

Fashion-MNIST comes from TFDS when `fashion_mnist` is prepared in the data
directory, else from its IDX files (`data_dir`, or Debian's
`dataset-fashion-mnist`), else, with `download=True` only, from a TFDS
download; both sources feed the same uint8 28x28x1 images to the pipeline,
which pads them to 32x32x3 by default (docs/design.md section 7).

Which parts are shuffled and augmented:

  part      shuffled  augmented                      used for
  weights   yes       yes (`augment`)                supernet weights w
  policy    yes       no (`augment_policy` to opt in) policy theta, rewards
  train     yes       yes (`augment`)                final training (weights + policy)
  test      no        no                             final accuracy only

A `tf.data.Dataset` of the user's own goes through `split` instead: each
example is assigned by a seeded hash of its inputs, so the parts stay
disjoint however the dataset reshuffles between epochs.

Example:
  >>> splits = load_splits("digits", batch_size=32)
  >>> splits.num_weights_examples, splits.num_policy_examples, splits.num_test_examples
  (575, 862, 360)
  >>> images, labels = next(iter(splits.weights))
  >>> images.shape
  TensorShape([32, 32, 32, 3])
  >>> mine = split(my_dataset.shuffle(1000).batch(32), seed=0)   # weights / policy by content
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from nat_keras.data import digits as digits_lib
from nat_keras.data import fashion_mnist as fashion_mnist_lib
from nat_keras.data import tfds_source
from nat_keras.data.config import DataConfig
from nat_keras.data.pipeline import Preprocessing
from nat_keras.data.pipeline import batched as batched_pipeline
from nat_keras.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

# Each part draws shuffles and augmentations from its own seed stream.
_STREAM_OFFSETS = {"weights": 0, "policy": 1, "train": 2, "test": 3}


@dataclasses.dataclass(frozen=True)
class NatSplits:
    """The batched parts of one dataset, as `load_splits` and `split` return them.

    From `load_splits`, every dataset yields `(float32 images [B, H, W, C],
    int32 labels [B])` and every field is set. From `split` (a dataset of
    the user's own) the parts yield what the dataset yields, `test` is None
    (no test split is given, and search never reads one), and what cannot be
    known without reading the whole dataset is None: the example counts,
    `mean`, `std` and `config`, and `num_classes` / `image_shape` unless the
    dataset's element spec shows them.

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
    test: tf.data.Dataset | None
    train: tf.data.Dataset
    num_classes: int | None
    image_shape: tuple[int, ...] | None
    num_weights_examples: int | None
    num_policy_examples: int | None
    num_test_examples: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    config: DataConfig | None

    @property
    def num_train_examples(self) -> int | None:
        """Examples in the whole training split (`weights` + `policy`); None if unknown."""
        if self.num_weights_examples is None or self.num_policy_examples is None:
            return None
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
        return batched_pipeline(
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


def _channel_stats(config: DataConfig, mean: Any, std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) with one value per output channel: a grey dataset's single value is repeated."""
    channels = config.resolved_channels
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) == 1 and channels > 1:
        mean, std = mean * channels, std * channels
    return mean[:channels], std[:channels]


def _preprocessing(config: DataConfig, mean: Any, std: Any, **options: Any) -> Preprocessing:
    """The per-example preprocessing `config` asks for, normalised with (mean, std)."""
    spec = config.spec
    # Stored images smaller than the default size are padded to it, not
    # resized: the pixels stay the original ones (Fashion-MNIST 28 -> 32).
    padded = spec.stored_size is not None and config.resolved_image_size == spec.image_size
    return Preprocessing(
        image_size=config.resolved_image_size,
        crop=spec.crop,
        fit="pad" if padded else "resize",
        channels=config.resolved_channels,
        crop_padding=config.crop_padding,
        flip=config.resolved_flip,
        cutout=config.cutout,
        mean=mean if config.normalize else None,
        std=std if config.normalize else None,
        **options,
    )


def _image_shape(config: DataConfig) -> tuple[int, int, int]:
    return (config.resolved_image_size, config.resolved_image_size, config.resolved_channels)


def _from_arrays(
    config: DataConfig,
    *,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> NatSplits:
    """NAT's parts of a dataset held in numpy arrays (digits, Fashion-MNIST's IDX files)."""
    mean, std = _channel_stats(config, mean, std)
    if config.train_examples is not None and config.train_examples < len(y_train):
        # A seeded sample, in the split's own order.
        order = np.random.default_rng(config.seed).permutation(len(y_train))
        chosen = np.sort(order[: config.train_examples])
        x_train, y_train = x_train[chosen], y_train[chosen]
    mask = weight_mask(len(y_train), weight_fraction=config.weight_fraction, seed=config.seed)

    def slices(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((images, labels))

    parts = _build_parts(
        config,
        preprocessing=_preprocessing(config, mean, std),
        weights=slices(x_train[mask], y_train[mask]),
        policy=slices(x_train[~mask], y_train[~mask]),
        train=slices(x_train, y_train),
        test=slices(x_test, y_test),
    )
    return NatSplits(
        **parts,
        num_classes=config.spec.num_classes,
        image_shape=_image_shape(config),
        num_weights_examples=int(mask.sum()),
        num_policy_examples=int((~mask).sum()),
        num_test_examples=len(y_test),
        mean=mean,
        std=std,
        config=config,
    )


def _load_digits(config: DataConfig) -> NatSplits:
    arrays = digits_lib.load_digits_arrays(image_size=config.resolved_image_size)
    mean, std = arrays.channel_stats()
    # The digits are grey repeated to three channels; channels=1 keeps one.
    channels = config.resolved_channels
    return _from_arrays(
        config,
        x_train=arrays.x_train[..., :channels],
        y_train=arrays.y_train,
        x_test=arrays.x_test[..., :channels],
        y_test=arrays.y_test,
        mean=mean,
        std=std,
    )


def _load_tfds(config: DataConfig, builder: tfds.core.DatasetBuilder | None = None) -> NatSplits:
    """NAT's parts of a TFDS dataset; `builder` is a prepared builder, None prepares one."""
    spec = config.spec
    assert spec.mean is not None and spec.std is not None  # Every TFDS spec records them.
    mean, std = _channel_stats(config, spec.mean, spec.std)
    builder = builder if builder is not None else tfds_source.prepared_builder(config)
    train, num_train = tfds_source.read_split(builder, spec.train_split)
    test, num_test = tfds_source.read_split(builder, spec.test_split)
    if config.train_examples is not None and config.train_examples < num_train:
        # TFDS shuffled the examples into its files when it prepared them: the first N are a sample.
        train, num_train = train.take(config.train_examples), config.train_examples
    preprocessing = _preprocessing(
        config,
        mean,
        std,
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
        image_shape=_image_shape(config),
        num_weights_examples=int(mask.sum()),
        num_policy_examples=int((~mask).sum()),
        num_test_examples=num_test,
        mean=mean,
        std=std,
        config=config,
    )


def _load_tfds_or_idx(config: DataConfig) -> NatSplits:
    """Fashion-MNIST: TFDS if prepared, else the IDX files, else a download if asked for, else an error."""
    builder = tfds_source.builder_if_prepared(config)
    if builder is not None:
        return _load_tfds(config, builder)
    if fashion_mnist_lib.find_directory(config.data_dir) is not None:
        spec = config.spec
        assert spec.mean is not None and spec.std is not None
        # uint8, like TFDS' decoded images: a quarter of float32's memory in
        # the arrays and in the cache; the pipeline scales them to [0, 1].
        arrays = fashion_mnist_lib.load_fashion_mnist_arrays(config.data_dir, dtype="uint8")
        return _from_arrays(
            config,
            x_train=arrays.x_train,
            y_train=arrays.y_train,
            x_test=arrays.x_test,
            y_test=arrays.y_test,
            mean=spec.mean,
            std=spec.std,
        )
    if config.download:
        return _load_tfds(config)  # Downloads and prepares through TFDS.
    raise fashion_mnist_lib.FashionMnistNotFoundError(
        fashion_mnist_lib.not_found_message(config.data_dir, tfds_data_dir=tfds_source.tfds_data_dir(config))
    )


def load_splits(name: str | None = None, *, config: DataConfig | None = None, **options: Any) -> NatSplits:
    """Loads a dataset as NAT's weight / policy / test parts, batched and prefetched.

    Args:
      name: the dataset, one of `nat_keras.data.DATASETS` ("cifar10",
        "cifar100", "digits", "fashion_mnist", "imagenet2012"); None keeps
        `config.name` ("digits" by default, which needs no network).
        "fashion_mnist" is read from TFDS when prepared in `data_dir`, else
        from its IDX files (in `data_dir`, or where Debian's
        `dataset-fashion-mnist` installs them), and is 32x32x3 by default
        (28x28 grey, padded and repeated) so that the CIFAR networks take it;
        `image_size=28, channels=1` gives the native images.
      config: a `DataConfig`; None means the defaults.
      **options: `DataConfig` fields that override `config` (`batch_size`,
        `data_dir`, `download`, `cutout`, `seed`, `image_size`, `channels`,
        ...).

    Returns:
      A `NatSplits` whose datasets yield `(float32 [B, H, W, C], int32 [B])`,
      `[H, W, C]` being `NatSplits.image_shape`.

    Raises:
      ValueError: on an unknown dataset name or option (the message lists the
        valid ones) or an invalid option value.
      DatasetNotPreparedError: if a TFDS dataset is not prepared in its data
        directory and `download` is False; raised at once, with the command
        that prepares it. For Fashion-MNIST, the subclass
        `FashionMnistNotFoundError` when neither TFDS nor the IDX files have
        it, naming every way to get it.

    Example:
      >>> splits = load_splits("cifar10", data_dir="/data/tfds", cutout=16)
      >>> splits.num_weights_examples, splits.num_policy_examples
      (20000, 30000)
      >>> load_splits("fashion_mnist").image_shape   # Debian's dataset-fashion-mnist installed
      (32, 32, 3)
    """
    config = config or DataConfig()
    if name is not None:
        options = {"name": name, **options}
    if options:
        config = config.replace(**options)
    source = config.spec.source
    if source == "sklearn":
        return _load_digits(config)
    if source == "tfds_or_idx":
        return _load_tfds_or_idx(config)
    return _load_tfds(config)


# Buckets of the per-example hash: the weight fraction is honoured to 1e-6.
_HASH_BUCKETS = 1 << 20
# Second half of the hash key: keeps these hashes apart from other seeded uses.
_HASH_SALT = 0x4E41545F53504C54  # "NAT_SPLT"


def split(
    dataset: tf.data.Dataset,
    *,
    weights_fraction: float = 0.4,
    seed: int = 0,
    batched: bool | None = None,
) -> NatSplits:
    """Splits a dataset of the user's own into supernet-weight and policy parts.

    Each example goes to the weight part when a hash of its inputs, keyed by
    `seed`, falls in the first `weights_fraction` of the hash range (SipHash,
    `tf.strings.to_hash_bucket_strong`, of the serialized input tensors). The
    assignment depends on an example's content only, never on its position,
    so it is the same in every epoch however the dataset reshuffles, and the
    two parts never share an example. Identical inputs land in the same part.
    Random augmentation inside `dataset` changes the content, hence the
    assignment: pass the dataset before augmenting.

    A dataset of batches is unbatched, split, and batched again with its own
    batch size (a static batch size stays static: `drop_remainder`); a
    dataset of examples gives parts of examples.

    Args:
      dataset: a `tf.data.Dataset` of `(inputs, labels)` (or `(inputs,
        labels, sample_weights)`) examples or batches; `inputs` may be a
        tensor or a structure of tensors (multi-input models).
      weights_fraction: share of examples for the supernet weights, in (0, 1).
      seed: keys the hash; another seed gives another assignment.
      batched: whether elements are batches; None detects it: batches when
        every component has rank >= 1 and all share one leading dimension
        (unknown or equal). Pass it when examples could pass for batches,
        e.g. 8x8 images with one-hot labels of 8 classes.

    Returns:
      A `NatSplits` whose `weights` and `policy` are the two parts, `train`
      is `dataset` itself (for fine-tuning on all of it), `test` is None, and
      the counts, `mean`, `std` and `config` are None (unknown without
      reading the data); `num_classes` is set for one-hot labels and
      `image_shape` for a single input tensor of rank 3.

    Raises:
      ConfigError: `dataset` is not a tf.data.Dataset, `weights_fraction` is
        not in (0, 1), `seed` is negative, or a batched dataset is empty.

    Example:
      >>> data = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(1000).batch(32)
      >>> parts = nat_keras.data.split(data, seed=0)
      >>> new_model = nat_keras.transform(model, data=parts)
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ConfigError(
            f"split() takes a tf.data.Dataset of (inputs, labels) examples or batches, got "
            f"{type(dataset).__name__}."
        )
    if not 0.0 < weights_fraction < 1.0:
        raise ConfigError(f"split(): weights_fraction must be in (0, 1), got {weights_fraction!r}.")
    if int(seed) < 0:
        raise ConfigError(f"split(): seed must be a non-negative integer, got {seed!r}.")
    batched = _looks_batched(dataset.element_spec) if batched is None else batched
    examples, batch_size, static = dataset, None, False
    if batched:
        batch_size, static = _batch_size(dataset)
        examples = dataset.unbatch()
    threshold = tf.constant(round(weights_fraction * _HASH_BUCKETS), tf.int64)
    key = [int(seed), _HASH_SALT]

    def in_weights(*element: Any) -> tf.Tensor:
        inputs = element[0] if len(element) >= 2 else element
        content = tf.strings.reduce_join([tf.io.serialize_tensor(t) for t in tf.nest.flatten(inputs)])
        return tf.strings.to_hash_bucket_strong(content, _HASH_BUCKETS, key) < threshold

    def part(keep: bool) -> tf.data.Dataset:
        chosen = examples.filter(lambda *e: tf.equal(in_weights(*e), keep))
        if batched:
            chosen = chosen.batch(batch_size, drop_remainder=static)
        return chosen.prefetch(tf.data.AUTOTUNE)

    num_classes, image_shape = _shapes_shown(examples.element_spec)
    return NatSplits(
        weights=part(True),
        policy=part(False),
        test=None,
        train=dataset,
        num_classes=num_classes,
        image_shape=image_shape,
        num_weights_examples=None,
        num_policy_examples=None,
        num_test_examples=None,
        mean=None,
        std=None,
        config=None,
    )


def _looks_batched(spec: Any) -> bool:
    shapes = [leaf.shape for leaf in tf.nest.flatten(spec)]
    if not shapes or any(shape.rank is None or shape.rank == 0 for shape in shapes):
        return False
    return len({shape[0] for shape in shapes}) == 1


def _batch_size(dataset: tf.data.Dataset) -> tuple[int, bool]:
    """(batch size, whether it is static) of a dataset of batches."""
    leading = tf.nest.flatten(dataset.element_spec)[0].shape[0]
    if leading is not None:
        return int(leading), True
    for element in dataset.take(1):
        return int(tf.shape(tf.nest.flatten(element)[0])[0]), False
    raise ConfigError("split() got an empty dataset; pass the (inputs, labels) batches to split.")


def _shapes_shown(spec: Any) -> tuple[int | None, tuple[int, ...] | None]:
    """(num_classes, image_shape) as far as an example's element spec shows them."""
    if not isinstance(spec, tuple) or len(spec) < 2:
        return None, None
    inputs, labels = spec[0], spec[1]
    num_classes = None
    if isinstance(labels, tf.TensorSpec) and labels.shape.rank == 1 and (labels.shape[0] or 0) > 1:
        num_classes = int(labels.shape[0])  # one-hot rows
    image_shape = None
    if isinstance(inputs, tf.TensorSpec) and inputs.shape.rank == 3 and inputs.shape.is_fully_defined():
        image_shape = tuple(int(d) for d in inputs.shape)
    return num_classes, image_shape
