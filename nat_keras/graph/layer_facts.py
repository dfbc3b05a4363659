"""Step 2 of encoding: what one layer call is, as an edge records it.

Per primary layer: its op name (`nat_keras.ops` vocabulary: "conv_3x3",
"sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3", "dense", ...), stride,
kernel, dilation, groups, bias, params and MACs. MACs come only from
`nat_keras.graph.costs.conv_macs`, the one MAC formula.

Example:
  >>> fields = primary_fields(conv_call, traced.shapes)  # ResNet-20's stem conv
  >>> fields["op"], fields["stride"]
  ('conv_3x3', 1)
"""

from __future__ import annotations

from typing import Any

import keras

from nat_keras import ops
from nat_keras.graph.costs import conv_macs, spatial_positions
from nat_keras.graph.trace import LayerCall


def layer_params(call: LayerCall) -> int:
    """The number of weights of the call's layer (0 for what is not a Keras layer).

    Example:
      >>> layer_params(conv_call)  # ResNet-20's stem conv: == conv_call.layer.count_params()
      432
    """
    layer = call.layer
    if not isinstance(layer, keras.layers.Layer):
        return 0
    return sum(_weight_size(w) for w in layer.weights)


def _weight_size(weight: Any) -> int:
    size = 1
    for dim in weight.shape:
        size *= int(dim)
    return size


def _pair(value: Any) -> int:
    """The first entry of an int-or-tuple layer option."""
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


def primary_fields(call: LayerCall, shapes: dict[int, tuple]) -> dict[str, Any]:
    """Op type, stride, kernel, groups, params and MACs of a primary layer.

    Args:
      call: a call whose role is primary (`units.role`).
      shapes: tensor key -> shape, of the traced model.

    Returns:
      Edge fields: "op", "primary_params", "bias", "macs", and, as the layer
      has them, "kernel", "stride", "dilation", "groups".

    Example:
      >>> primary_fields(conv_call, traced.shapes)["macs"]  # ResNet-20's stem conv: 32 * 32 * 27 * 16
      442368
    """
    layer = call.layer
    in_shape, out_shape = shapes[call.inputs[0]], shapes[call.outputs[0]]
    c_in = in_shape[-1] or 0
    c_out = out_shape[-1] or 0
    positions = spatial_positions(out_shape)
    fields: dict[str, Any] = {
        "primary_params": layer_params(call),
        "bias": bool(getattr(layer, "use_bias", False)),
    }
    if isinstance(layer, keras.layers.Dense):
        inner_positions = spatial_positions(in_shape)
        return {**fields, "op": ops.DENSE, "macs": conv_macs(inner_positions, 1, c_in, c_out)}
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        family = "max_pool" if isinstance(layer, keras.layers.MaxPooling2D) else "avg_pool"
        kernel = _pair(layer.pool_size)
        return {
            **fields,
            "op": _sized_op(family, layer.pool_size),
            "kernel": kernel,
            "stride": _pair(layer.strides),
            "macs": 0,
        }
    kernel = _pair(layer.kernel_size)
    # The full kernel size: non-square and 1-D kernels count exactly.
    kernel_size = tuple(int(k) for k in layer.kernel_size)
    dilation = _pair(layer.dilation_rate)
    stride = _pair(layer.strides)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        multiplier = layer.depth_multiplier
        return {
            **fields,
            "op": _sized_op("depthwise", layer.kernel_size),
            "kernel": kernel,
            "stride": stride,
            "dilation": dilation,
            "groups": c_in,
            "macs": conv_macs(positions, kernel_size, c_in, c_in * multiplier, groups=c_in),
        }
    if isinstance(layer, keras.layers.SeparableConv2D):
        family = "sep_conv" if dilation == 1 else "dil_conv"
        multiplier = layer.depth_multiplier
        depthwise = conv_macs(positions, kernel_size, c_in, c_in * multiplier, groups=c_in)
        return {
            **fields,
            "op": _sized_op(family, layer.kernel_size),
            "kernel": kernel,
            "stride": stride,
            "dilation": dilation,
            "macs": depthwise + conv_macs(positions, 1, c_in * multiplier, c_out),
        }
    groups = int(getattr(layer, "groups", 1))
    is_1d = isinstance(layer, keras.layers.Conv1D)
    return {
        **fields,
        "op": f"conv1d_{kernel}" if is_1d else _sized_op("conv", layer.kernel_size),
        "kernel": kernel,
        "stride": stride,
        "dilation": dilation,
        "groups": groups,
        "macs": conv_macs(positions, kernel_size, c_in, c_out, groups),
    }


def _sized_op(family: str, size: Any) -> str:
    sizes = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if len(set(sizes)) == 1:
        return ops.op_name(family, int(sizes[0]))
    return f"{family}_" + "x".join(str(int(s)) for s in sizes)


__all__ = ["layer_params", "primary_fields"]
