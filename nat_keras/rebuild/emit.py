"""The new layers a NAT action emits, shared by `rebuild` and the supernet.

Both build the same layers with the same names for the same (edge, action),
which is what lets `Supernet.extract` hand its weights to `apply_plan`'s model
layer by layer.

Example:
  >>> path = SkipPath(edge)          # identity, 1x1 projection or FactorizedReduce
  >>> y = path(x)
  >>> layer = replacement_layer(edge, "sep_conv_3x3")
"""

from __future__ import annotations

import re
from typing import Any

import keras

from nat_keras import ops
from nat_keras.errors import PlanError
from nat_keras.graph.arch_graph import Edge

PADDING_LAYERS = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D)


def layer_name(*parts: str) -> str:
    """A valid, readable Keras layer name ('/' and '@' are not allowed)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(parts))


class SkipPath:
    """The layers of a skip on `edge`: none when shapes agree, else a projection.

    Stride 1 with a channel change: 1x1 conv + BN. Stride 2: FactorizedReduce
    as in DARTS / NAT (two strided 1x1 convs of C_out/2, the second on the
    input shifted by one pixel, concatenated, then BN).
    """

    def __init__(self, edge: Edge):
        self.identity = edge.input_shape == edge.output_shape
        self.stride = edge.stride
        base = layer_name(edge.id, "skip")
        c_out = edge.output_shape[-1]
        self.layers: list[keras.Layer] = []
        if self.identity:
            return
        if edge.stride == 1:
            self.conv = keras.layers.Conv2D(c_out, 1, use_bias=False, name=f"{base}_conv")
            self.bn = keras.layers.BatchNormalization(name=f"{base}_bn")
            self.layers = [self.conv, self.bn]
            return
        half = c_out // 2
        self.conv1 = keras.layers.Conv2D(half, 1, strides=2, use_bias=False, name=f"{base}_conv1")
        # Shift by one pixel: pad first, then crop, so that a 1x1 map works too.
        self.pad = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{base}_pad")
        self.shift = keras.layers.Cropping2D(((1, 0), (1, 0)), name=f"{base}_shift")
        self.conv2 = keras.layers.Conv2D(half, 1, strides=2, use_bias=False, name=f"{base}_conv2")
        self.concat = keras.layers.Concatenate(name=f"{base}_concat")
        self.bn = keras.layers.BatchNormalization(name=f"{base}_bn")
        self.layers = [self.conv1, self.pad, self.shift, self.conv2, self.concat, self.bn]

    def __call__(self, x: Any) -> Any:
        # No explicit `training`: BN takes it from Keras' call context. Passing
        # training=None would overwrite the context for every later layer.
        if self.identity:
            return x
        if self.stride == 1:
            return self.bn(self.conv(x))
        right = self.conv2(self.shift(self.pad(x)))
        return self.bn(self.concat([self.conv1(x), right]))


def replacement_layer(edge: Edge, target: str) -> keras.Layer:
    """The primary layer NAT++ puts in place of `edge`'s op for `target`.

    Replacements use 'same' padding (the unit's own padding layers are
    dropped), the edge's stride and output channels, and keep a bias only if
    the source op had one.
    """
    parsed = ops.parse_op(target)
    if parsed is None or edge.primary < 0:
        raise PlanError(f"Edge {edge.id!r}: cannot replace its op by {target!r}.")
    family, kernel = parsed
    c_out = edge.output_shape[-1]
    name = layer_name(edge.id, "nat", target)
    if family == "conv":
        return keras.layers.Conv2D(
            c_out, kernel, strides=edge.stride, padding="same", use_bias=edge.bias, name=name
        )
    if family in ("sep_conv", "dil_conv"):
        return keras.layers.SeparableConv2D(
            c_out,
            kernel,
            strides=edge.stride,
            dilation_rate=2 if family == "dil_conv" else 1,
            padding="same",
            use_bias=edge.bias,
            name=name,
        )
    pool = keras.layers.MaxPooling2D if family == "max_pool" else keras.layers.AveragePooling2D
    return pool(kernel, strides=edge.stride, padding="same", name=name)


def is_padding(layer: Any) -> bool:
    return isinstance(layer, PADDING_LAYERS)
