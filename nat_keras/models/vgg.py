"""VGG-16 for CIFAR, as a Keras 3 functional model.

The CIFAR variant used as a hand-made reference network in the NAT paper:
thirteen 3x3 convolutions in five blocks (64, 64 | 128, 128 | 256 x3 |
512 x3 | 512 x3), each Conv2D (no bias) -> BatchNormalization -> ReLU, a 2x2
max pooling after every block, then global average pooling and one Dense
layer. On 32x32 inputs the last feature map is 1x1, so the pooling equals the
usual Flatten while also accepting larger inputs.
"""

from __future__ import annotations

import keras

from nat_keras.models.width import check_width, scale_filters

# Filters of the convolutions in each of the five blocks.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def vgg16(
    *,
    input_shape: tuple[int | None, ...] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "vgg16",
    weight_decay: float | None = None,
    width: float = 1.0,
) -> keras.Model:
    """Builds the CIFAR VGG-16 (about 14.7M parameters for 10 classes).

    Layers are named `block{b}_conv{i}`, `block{b}_bn{i}`, `block{b}_relu{i}`
    and `block{b}_pool` (b and i from 1), then `avg_pool` and `logits`.

    Args:
      input_shape: shape of one image, channels last. The spatial size must be
        at least 32 (five 2x2 poolings).
      num_classes: number of output units.
      name: name of the returned model.
      weight_decay: if set, an L2 penalty `weight_decay * sum(w**2)` on every
        convolution and Dense kernel (not on biases or BatchNormalization).
      width: multiplier of every convolution's filters (`nat_keras.models.width`):
        0.25 gives blocks of 16 to 128 filters, about 1/16 of the MACs.

    Returns:
      A functional `keras.Model` whose output is the raw logits
      (no softmax), shape `(batch, num_classes)`.

    Example:
      >>> model = vgg16(num_classes=100)
      >>> model.output_shape
      (None, 100)
    """
    width = check_width(width, name)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for block, filters_per_conv in enumerate(VGG16_BLOCKS, start=1):
        for conv, filters in enumerate(filters_per_conv, start=1):
            prefix = f"block{block}"
            x = keras.layers.Conv2D(
                scale_filters(filters, width),
                3,
                padding="same",
                use_bias=False,
                kernel_regularizer=regularizer,
                name=f"{prefix}_conv{conv}",
            )(x)
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn{conv}")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu{conv}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
