"""MobileNetV2 for CIFAR, as a Keras 3 functional model.

The CIFAR layout of common implementations (e.g. kuangliu/pytorch-cifar):
a stride-1 3x3 stem with 32 filters, seventeen inverted residual blocks, a
1x1 convolution to 1280 channels, global average pooling and one Dense layer.
Unlike the ImageNet network, the stem and the 24-channel stage use stride 1,
so only three stages downsample and a 32x32 image ends as a 4x4 feature map.

An inverted residual block is [Conv1x1 expand -> BN -> ReLU6] (left out when
the expansion is 1) -> DepthwiseConv2D 3x3 (stride) -> BN -> ReLU6 ->
Conv1x1 project -> BN, plus the input when the stride is 1 and the width is
unchanged.
"""

from __future__ import annotations

import keras

from nat_keras.models.width import check_width, scale_filters

# (expansion, output channels, number of blocks, stride of the first block).
MOBILENET_V2_CIFAR_CONFIG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280


def _pointwise(
    x: keras.KerasTensor,
    filters: int,
    prefix: str,
    regularizer: keras.regularizers.Regularizer | None,
    *,
    relu6: bool,
) -> keras.KerasTensor:
    """Conv1x1 (no bias) -> BN [-> ReLU6], named `{prefix}_conv/_bn/_relu`."""
    x = keras.layers.Conv2D(
        filters,
        1,
        use_bias=False,
        kernel_regularizer=regularizer,
        name=f"{prefix}_conv",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{prefix}_bn")(x)
    if relu6:
        x = keras.layers.ReLU(6.0, name=f"{prefix}_relu")(x)
    return x


def _inverted_residual(
    x: keras.KerasTensor,
    expansion: int,
    filters: int,
    strides: int,
    prefix: str,
    regularizer: keras.regularizers.Regularizer | None,
) -> keras.KerasTensor:
    """One inverted residual block; layer names start with `prefix`."""
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = _pointwise(y, expansion * in_channels, f"{prefix}_expand", regularizer, relu6=True)
    y = keras.layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_regularizer=regularizer,
        name=f"{prefix}_dw_conv",
    )(y)
    y = keras.layers.BatchNormalization(name=f"{prefix}_dw_bn")(y)
    y = keras.layers.ReLU(6.0, name=f"{prefix}_dw_relu")(y)
    y = _pointwise(y, filters, f"{prefix}_project", regularizer, relu6=False)
    if strides == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{prefix}_add")([x, y])
    return y


def mobilenet_v2(
    *,
    input_shape: tuple[int | None, ...] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "mobilenet_v2",
    weight_decay: float | None = None,
    width: float = 1.0,
) -> keras.Model:
    """Builds the CIFAR MobileNetV2 (about 2.2M parameters for 10 classes).

    Layers are named `stem_conv`, `stem_bn`, `stem_relu`, then for stage s
    (from 1, one per row of `MOBILENET_V2_CIFAR_CONFIG`) and block b (from 0)
    `stage{s}_block{b}_expand_conv/_bn/_relu` (expansion > 1 only),
    `..._dw_conv/_bn/_relu`, `..._project_conv/_bn` and `..._add` (residual
    blocks only), and finally `head_conv`, `head_bn`, `head_relu`, `avg_pool`
    and `logits`.

    Args:
      input_shape: shape of one image, channels last.
      num_classes: number of output units.
      name: name of the returned model.
      weight_decay: if set, an L2 penalty `weight_decay * sum(w**2)` on every
        convolution, depthwise and Dense kernel (not on biases or
        BatchNormalization).
      width: multiplier of the stem's and the blocks' filters
        (`nat_keras.models.width`; the `alpha` of `keras.applications`). As
        there, the 1280-channel head is kept for widths up to 1 and scaled
        above.

    Returns:
      A functional `keras.Model` whose output is the raw logits (no softmax),
      shape `(batch, num_classes)`.

    Example:
      >>> model = mobilenet_v2(num_classes=100)
      >>> model.output_shape
      (None, 100)
    """
    width = check_width(width, name)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Conv2D(
        scale_filters(STEM_FILTERS, width),
        3,
        padding="same",
        use_bias=False,
        kernel_regularizer=regularizer,
        name="stem_conv",
    )(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    for stage, (expansion, filters, num_blocks, first_stride) in enumerate(
        MOBILENET_V2_CIFAR_CONFIG, start=1
    ):
        for block in range(num_blocks):
            strides = first_stride if block == 0 else 1
            x = _inverted_residual(
                x,
                expansion,
                scale_filters(filters, width),
                strides,
                f"stage{stage}_block{block}",
                regularizer,
            )
    head_filters = HEAD_FILTERS if width <= 1.0 else scale_filters(HEAD_FILTERS, width)
    x = _pointwise(x, head_filters, "head", regularizer, relu6=True)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
