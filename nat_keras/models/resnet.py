"""CIFAR ResNets (He et al., 2016) as Keras 3 functional models.

Depth 6n + 2: a 3x3 stem convolution with 16 filters, three stages of n basic
blocks with 16, 32 and 64 filters (the second and third stage start with
stride 2), global average pooling and one Dense layer. A basic block is
Conv3x3 (stride) -> BN -> ReLU -> Conv3x3 -> BN, added to the shortcut, then
ReLU. Where the block changes stride or width, the shortcut is a 1x1
convolution with BatchNormalization (option B); otherwise it is the identity.
"""

from __future__ import annotations

import keras

from nat_keras.errors import ConfigError
from nat_keras.models.width import check_width, scale_filters

STAGE_FILTERS: tuple[int, ...] = (16, 32, 64)


def _conv(
    filters: int,
    kernel_size: int,
    strides: int,
    name: str,
    regularizer: keras.regularizers.Regularizer | None,
) -> keras.layers.Conv2D:
    """A bias-free, same-padded Conv2D (it is always followed by BN)."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_regularizer=regularizer,
        name=name,
    )


def _basic_block(
    x: keras.KerasTensor,
    filters: int,
    strides: int,
    prefix: str,
    regularizer: keras.regularizers.Regularizer | None,
) -> keras.KerasTensor:
    """One basic block; layer names start with `prefix`."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides, f"{prefix}_shortcut_conv", regularizer)(x)
        shortcut = keras.layers.BatchNormalization(name=f"{prefix}_shortcut_bn")(shortcut)
    y = _conv(filters, 3, strides, f"{prefix}_conv1", regularizer)(x)
    y = keras.layers.BatchNormalization(name=f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv(filters, 3, 1, f"{prefix}_conv2", regularizer)(y)
    y = keras.layers.BatchNormalization(name=f"{prefix}_bn2")(y)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_relu2")(y)


def resnet(
    *,
    depth: int,
    input_shape: tuple[int | None, ...] = (32, 32, 3),
    num_classes: int = 10,
    name: str | None = None,
    weight_decay: float | None = None,
    width: float = 1.0,
) -> keras.Model:
    """Builds a CIFAR ResNet of depth 6n + 2.

    Layers are named `stem_conv`, `stem_bn`, `stem_relu`, then for stage s
    (from 1) and block b (from 0) `stage{s}_block{b}_conv1`, `..._bn1`,
    `..._relu1`, `..._conv2`, `..._bn2`, `..._shortcut_conv`,
    `..._shortcut_bn` (projection blocks only), `..._add`, `..._relu2`, and
    finally `avg_pool` and `logits`.

    Args:
      depth: total depth 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...).
      input_shape: shape of one image, channels last.
      num_classes: number of output units.
      name: name of the returned model; defaults to `f"resnet{depth}"`.
      weight_decay: if set, an L2 penalty `weight_decay * sum(w**2)` on every
        convolution and Dense kernel (not on biases or BatchNormalization).
      width: multiplier of every convolution's filters (`nat_keras.models.width`):
        0.5 gives stages of 8, 16 and 32 filters, about a quarter of the MACs.

    Returns:
      A functional `keras.Model` whose output is the raw logits (no softmax),
      shape `(batch, num_classes)`.

    Raises:
      ConfigError: if `depth` is not of the form 6n + 2 with n >= 1, or `width`
        is not positive.

    Example:
      >>> model = resnet(depth=32)
      >>> model.name, model.output_shape
      ('resnet32', (None, 10))
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, ...); got {depth!r}.")
    width = check_width(width, name or f"resnet{depth}")
    stage_filters = [scale_filters(f, width) for f in STAGE_FILTERS]
    blocks_per_stage = (depth - 2) // 6
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None

    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv(stage_filters[0], 3, 1, "stem_conv", regularizer)(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate(stage_filters, start=1):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, filters, strides, f"stage{stage}_block{block}", regularizer)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def resnet8(
    *,
    input_shape: tuple[int | None, ...] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "resnet8",
    weight_decay: float | None = None,
    width: float = 1.0,
) -> keras.Model:
    """Builds the CIFAR ResNet-8 (1 block per stage, about 78K parameters).

    The smallest of the family: what smoke runs of the benchmarks and quick
    experiments use, where ResNet-20's graph tracing would dominate.

    Args:
      input_shape: shape of one image, channels last.
      num_classes: number of output units.
      name: name of the returned model.
      weight_decay: optional L2 factor on convolution and Dense kernels.
      width: multiplier of every convolution's filters (`nat_keras.models.width`).

    Returns:
      A functional `keras.Model` that outputs raw logits (no softmax).

    Example:
      >>> resnet8().count_params()
      78714
    """
    return resnet(
        depth=8,
        input_shape=input_shape,
        num_classes=num_classes,
        name=name,
        weight_decay=weight_decay,
        width=width,
    )


def resnet20(
    *,
    input_shape: tuple[int | None, ...] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "resnet20",
    weight_decay: float | None = None,
    width: float = 1.0,
) -> keras.Model:
    """Builds the CIFAR ResNet-20 (3 blocks per stage, about 0.27M parameters).

    Args:
      input_shape: shape of one image, channels last.
      num_classes: number of output units.
      name: name of the returned model.
      weight_decay: optional L2 factor on convolution and Dense kernels.
      width: multiplier of every convolution's filters (`nat_keras.models.width`).

    Returns:
      A functional `keras.Model` that outputs raw logits (no softmax).

    Example:
      >>> resnet20().output_shape
      (None, 10)
    """
    return resnet(
        depth=20,
        input_shape=input_shape,
        num_classes=num_classes,
        name=name,
        weight_decay=weight_decay,
        width=width,
    )


def resnet56(
    *,
    input_shape: tuple[int | None, ...] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "resnet56",
    weight_decay: float | None = None,
    width: float = 1.0,
) -> keras.Model:
    """Builds the CIFAR ResNet-56 (9 blocks per stage, about 0.85M parameters).

    Args:
      input_shape: shape of one image, channels last.
      num_classes: number of output units.
      name: name of the returned model.
      weight_decay: optional L2 factor on convolution and Dense kernels.
      width: multiplier of every convolution's filters (`nat_keras.models.width`).

    Returns:
      A functional `keras.Model` that outputs raw logits (no softmax).

    Example:
      >>> resnet56(num_classes=100).output_shape
      (None, 100)
    """
    return resnet(
        depth=56,
        input_shape=input_shape,
        num_classes=num_classes,
        name=name,
        weight_decay=weight_decay,
        width=width,
    )
