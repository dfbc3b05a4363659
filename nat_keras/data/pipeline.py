"""Per-example preprocessing and the batching pipeline.

Every image is first brought to the configured size: bilinear resizing, or
zero padding for images stored smaller than the dataset's default size
(Fashion-MNIST's 28x28 to 32x32). Training examples: small images (digits,
Fashion-MNIST, CIFAR) get the paper's pad-4 + random crop and, where the
dataset allows it, a random horizontal flip;
ImageNet gets an Inception-style random resized crop and a flip. Then a grey
image is repeated to the configured channels, every image is standardised
per channel and, if asked, a cutout square is zeroed
(after normalisation, as in DARTS / NAT's code, so the square is the mean
colour). Evaluation examples are only resized (ImageNet: shorter side to
size / 0.875, centre crop) and standardised.

All randomness is stateless and seeded per example from one
`tf.data.Dataset.random(seed)` stream, so a pipeline built twice with the
same seed yields the same batches, epoch after epoch, while each epoch
differs from the last. The shuffle and that stream are built as in a fresh
process (`compat.without_tf_global_seed`), so they depend on `seed` alone,
not on a global seed that `keras.utils.set_random_seed` left behind.

Example:
  >>> import tensorflow as tf
  >>> image = tf.ones([32, 32, 3])
  >>> cutout(image, length=16, seed=tf.constant([1, 2])).shape
  TensorShape([32, 32, 3])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import tensorflow as tf

from nat_keras import compat

# Bumped whenever the same seed starts to yield other batches, so that caches
# of results (the benchmarks' rows) can tell data orders apart. 2: the shuffle
# and augmentation no longer take the process's global seed.
PIPELINE_VERSION = 2

# ImageNet evaluation resizes the shorter side to size / 0.875 (256 for 224)
# and takes the central square: the usual protocol.
IMAGENET_CENTER_CROP_FRACTION = 0.875
# Inception-style random resized crop (also torchvision's defaults).
RESIZED_CROP_AREA_RANGE = (0.08, 1.0)
RESIZED_CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)

Example = tuple[tf.Tensor, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How one dataset's examples are turned into model inputs.

    Attributes:
      image_size: height and width of the output images.
      crop: `"pad"` (pad + random crop of decoded images) or `"resized"`
        (random resized crop of encoded JPEGs, ImageNet).
      fit: how a decoded image of another size is brought to `image_size`:
        `"resize"` (bilinear) or `"pad"` (zero padding, centred, as
        Fashion-MNIST's 28x28 images are put in 32x32; a larger image is
        centre-cropped).
      channels: channels of the output images; a grey image is repeated to
        them. None keeps the image's channels.
      crop_padding: zero padding before the random crop (`"pad"` only); 0
        turns the crop off.
      flip: whether training images are flipped left-right at random.
      cutout: side of the cutout square; 0 turns cutout off.
      mean: per-channel mean of [0, 1] images, one value per output
        channel; None: no normalisation.
      std: per-channel standard deviation; None: no normalisation.
      decode: turns an encoded image into a uint8 image before caching
        (TFDS `"pad"` datasets); None when images come decoded (digits) or
        are decoded by the crop itself (`"resized"`).
    """

    image_size: int
    crop: Literal["pad", "resized"] = "pad"
    fit: Literal["resize", "pad"] = "resize"
    channels: int | None = None
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    decode: Callable[[tf.Tensor], tf.Tensor] | None = None


def to_unit_float(image: tf.Tensor) -> tf.Tensor:
    """Integer images in [0, 255] (or float images in [0, 1]) to float32 in [0, 1].

    Example:
      >>> float(to_unit_float(tf.constant([255], tf.uint8))[0])
      1.0
    """
    if image.dtype.is_integer:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def fit_image(image: tf.Tensor, size: int, *, fit: Literal["resize", "pad"] = "resize") -> tf.Tensor:
    """Brings a float image to `size` x `size`, by resizing or by centred zero padding.

    Args:
      image: a `[H, W, C]` image with static height and width.
      size: height and width of the result.
      fit: `"resize"` (bilinear, antialiased) or `"pad"` (zero padding,
        centred; an image larger than `size` is centre-cropped).

    Returns:
      The image at `size`; `image` itself when it already is.

    Example:
      >>> fit_image(tf.ones([28, 28, 1]), 32, fit="pad").shape
      TensorShape([32, 32, 1])
    """
    if image.shape[0] == size and image.shape[1] == size:
        return image
    if fit == "pad":
        return tf.image.resize_with_crop_or_pad(image, size, size)
    return tf.image.resize(image, (size, size), method="bilinear", antialias=True)


def to_channels(image: tf.Tensor, channels: int | None) -> tf.Tensor:
    """Repeats a grey `[H, W, 1]` image to `channels`; other images pass unchanged.

    Raises:
      ValueError: `image` has neither 1 nor `channels` channels.

    Example:
      >>> to_channels(tf.ones([28, 28, 1]), 3).shape
      TensorShape([28, 28, 3])
    """
    have = image.shape[-1]
    if channels is None or have == channels:
        return image
    if have != 1:
        raise ValueError(f"Cannot turn {have}-channel images into {channels} channels; only grey repeats.")
    return tf.repeat(image, channels, axis=-1)


def pad_and_random_crop(image: tf.Tensor, *, padding: int, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pads `padding` pixels on each side, then crops the original size at random.

    Args:
      image: a `[H, W, C]` image with static shape.
      padding: pixels of padding; 0 returns `image` unchanged.
      seed: a `[2]` integer seed of the stateless crop.

    Returns:
      The shifted image, same shape as `image`.

    Example:
      >>> pad_and_random_crop(tf.ones([32, 32, 3]), padding=4, seed=tf.constant([0, 1])).shape
      TensorShape([32, 32, 3])
    """
    if padding == 0:
        return image
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.image.stateless_random_crop(padded, size=tf.shape(image), seed=seed)


def cutout(image: tf.Tensor, *, length: int, seed: tf.Tensor) -> tf.Tensor:
    """Zeroes a `length` x `length` square centred at a random pixel (DeVries & Taylor, 2017).

    As in the reference implementation the centre may lie anywhere in the
    image, so the square is clipped at the borders (between length/2 and
    length pixels per side).

    Args:
      image: a `[H, W, C]` image.
      length: side of the square; 0 returns `image` unchanged.
      seed: a `[2]` integer seed of the stateless centre draw.

    Returns:
      `image` with the square set to zero in every channel.

    Example:
      >>> out = cutout(tf.ones([32, 32, 3]), length=16, seed=tf.constant([3, 4]))
      >>> bool(tf.reduce_min(out) == 0.0)
      True
    """
    if length == 0:
        return image
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    center = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    center_y, center_x = center[0] % height, center[1] % width
    rows = tf.range(height)[:, tf.newaxis]
    cols = tf.range(width)[tf.newaxis, :]
    inside = (
        (rows >= center_y - length // 2)
        & (rows < center_y + length - length // 2)
        & (cols >= center_x - length // 2)
        & (cols < center_x + length - length // 2)
    )
    keep = tf.cast(~inside, image.dtype)[:, :, tf.newaxis]
    return image * keep


def normalize(image: tf.Tensor, *, mean: tuple[float, ...], std: tuple[float, ...]) -> tf.Tensor:
    """Standardises a float image per channel: `(image - mean) / std`.

    Example:
      >>> float(normalize(tf.fill([1, 1, 3], 0.5), mean=(0.5,) * 3, std=(0.25,) * 3)[0, 0, 0])
      0.0
    """
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def random_resized_crop(encoded: tf.Tensor, *, size: int, seed: tf.Tensor) -> tf.Tensor:
    """Decodes a random crop (8-100% of the area, aspect 3/4-4/3) of a JPEG and resizes it.

    Only the crop window is decoded (`decode_and_crop_jpeg`), which is what
    keeps an ImageNet input pipeline fast.

    Args:
      encoded: scalar string tensor, a JPEG.
      size: height and width of the result.
      seed: a `[2]` integer seed of the stateless window draw.

    Returns:
      A float32 `[size, size, 3]` image in [0, 1].
    """
    shape = tf.image.extract_jpeg_shape(encoded)
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
    begin, window, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=whole_image,
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=RESIZED_CROP_ASPECT_RANGE,
        area_range=RESIZED_CROP_AREA_RANGE,
        max_attempts=10,
        # When no window fits in 10 attempts this returns the whole image.
        use_image_if_no_bounding_boxes=True,
    )
    crop_window = tf.stack([begin[0], begin[1], window[0], window[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, crop_window, channels=3)
    image = tf.image.resize(to_unit_float(image), (size, size), method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def center_crop(encoded: tf.Tensor, *, size: int) -> tf.Tensor:
    """Decodes an image, resizes its shorter side to size / 0.875 and crops the centre.

    Args:
      encoded: scalar string tensor, an encoded image.
      size: height and width of the result.

    Returns:
      A float32 `[size, size, 3]` image in [0, 1].
    """
    image = to_unit_float(tf.io.decode_image(encoded, channels=3, expand_animations=False))
    shorter_side = round(size / IMAGENET_CENTER_CROP_FRACTION)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    scale = shorter_side / tf.minimum(height, width)
    new_size = tf.cast(tf.round(tf.stack([height * scale, width * scale])), tf.int32)
    image = tf.image.resize(image, tf.maximum(new_size, size), method="bilinear", antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, size, size)
    return tf.clip_by_value(image, 0.0, 1.0)


def _finish(image: tf.Tensor, preprocessing: Preprocessing) -> tf.Tensor:
    if preprocessing.mean is not None and preprocessing.std is not None:
        image = normalize(image, mean=preprocessing.mean, std=preprocessing.std)
    return image


def train_example(
    image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, preprocessing: Preprocessing
) -> Example:
    """Augments, standardises and (optionally) cuts out one training example.

    Args:
      image: a decoded image (`"pad"`) or an encoded JPEG (`"resized"`).
      label: its integer label.
      seed: a `[2]` integer seed; all random draws of this example derive
        from it.
      preprocessing: the dataset's `Preprocessing`.

    Returns:
      `(float32 [size, size, C] image, int32 label)`.
    """
    crop_seed, flip_seed, cutout_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    size = preprocessing.image_size
    if preprocessing.crop == "resized":
        image = random_resized_crop(image, size=size, seed=crop_seed)
    else:
        image = fit_image(to_unit_float(image), size, fit=preprocessing.fit)
        image = pad_and_random_crop(image, padding=preprocessing.crop_padding, seed=crop_seed)
    if preprocessing.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    # Repeated after the crop and flip, which then move one channel, not three.
    image = to_channels(image, preprocessing.channels)
    image = _finish(image, preprocessing)
    image = cutout(image, length=preprocessing.cutout, seed=cutout_seed)
    return image, tf.cast(label, tf.int32)


def eval_example(image: tf.Tensor, label: tf.Tensor, preprocessing: Preprocessing) -> Example:
    """Resizes (or centre-crops) and standardises one example, with no randomness.

    Returns:
      `(float32 [size, size, C] image, int32 label)`.
    """
    if preprocessing.crop == "resized":
        image = center_crop(image, size=preprocessing.image_size)
    else:
        image = fit_image(to_unit_float(image), preprocessing.image_size, fit=preprocessing.fit)
    image = to_channels(image, preprocessing.channels)
    return _finish(image, preprocessing), tf.cast(label, tf.int32)


def batched(
    dataset: tf.data.Dataset,
    *,
    preprocessing: Preprocessing,
    batch_size: int,
    augment: bool,
    shuffle: bool,
    seed: int,
    shuffle_buffer: int = 10_000,
    cache: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Turns `(image, label)` examples into prefetched model-ready batches.

    Order of stages: decode (TFDS small images) -> cache -> shuffle ->
    augment or evaluate-preprocess -> batch -> prefetch. Caching comes before
    the shuffle so every epoch reshuffles, and before augmentation so every
    epoch draws new crops.

    Args:
      dataset: examples `(image, label)`, images decoded or encoded as
        `preprocessing` expects.
      preprocessing: the dataset's `Preprocessing`.
      batch_size: examples per batch.
      augment: whether to apply the random training augmentation.
      shuffle: whether to reshuffle the examples each epoch.
      seed: seed of the shuffle and of the augmentation.
      shuffle_buffer: examples in the shuffle buffer.
      cache: whether to keep decoded examples in memory after the first
        epoch.
      drop_remainder: whether to drop a last, smaller batch.

    Returns:
      A `tf.data.Dataset` of `(float32 [B, H, W, C], int32 [B])` batches.

    Example:
      >>> examples = tf.data.Dataset.from_tensor_slices((tf.zeros([10, 32, 32, 3]), tf.zeros([10])))
      >>> batches = batched(examples, preprocessing=Preprocessing(image_size=32), batch_size=4,
      ...                   augment=True, shuffle=True, seed=0)
      >>> [int(labels.shape[0]) for _, labels in batches]
      [4, 4, 2]
    """
    autotune = tf.data.AUTOTUNE
    if preprocessing.decode is not None:
        decode = preprocessing.decode
        dataset = dataset.map(lambda image, label: (decode(image), label), num_parallel_calls=autotune)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        with compat.without_tf_global_seed():  # the order depends on `seed` alone
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if augment:
        # One [2] seed per example; a new stream every epoch, the same streams
        # for the same `seed`.
        with compat.without_tf_global_seed():
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda example, example_seed: train_example(*example, example_seed, preprocessing),
            num_parallel_calls=autotune,
        )
    else:
        dataset = dataset.map(
            lambda image, label: eval_example(image, label, preprocessing), num_parallel_calls=autotune
        )
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(autotune)
