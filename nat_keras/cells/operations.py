"""The candidate operations of NAT's cell search space, as Keras 3 layers.

Each op is a registered, serialisable Keras layer made only of standard Keras
layers inside, so networks built from them save to and load from `.keras`
files. The ops follow the authors' PyTorch `operations.py` (guoyongcs/NAT and
guoyongcs/NATv2, which inherit DARTS'):

- `SepConv`: (ReLU, depthwise k, 1x1, BN) twice; the first depthwise carries
  the stride.
- `DilConv`: ReLU, depthwise k with dilation 2, 1x1, BN.
- `ReLUConvBN`: ReLU, conv k, BN (the `conv_kxk` ops and the cells' 1x1
  preprocessing).
- `FactorizedReduce`: ReLU, two stride-2 1x1 convs of C/2 (the second on the
  input shifted by one pixel), concat, BN (`skip_connect` on a stride-2 edge).
- `PoolBN`: max / avg pooling, followed by a BN where asked (the supernet's
  pools, as in DARTS' and NAT's `NASOp`; the final networks' pools have none).
- `Identity` and `Zero` (NAT's `null`: zeros, subsampled on stride-2 edges).

`affine=False` turns off the BN scale and offset: the supernet's "affine-free
BN" of the paper. BN momentum and epsilon are PyTorch's defaults (0.1 / 1e-5,
i.e. Keras momentum 0.9), as in the authors' code.

Padding is Keras "same". On stride-2 edges TF pads only at the bottom / right,
so sampling positions sit one pixel off the authors' symmetric PyTorch padding;
shapes, parameters and MACs are the same.

Every op layer carries what an encoder needs: `nat_op` (the op's name in the
NAT lists, a key of `OPS`), `strides`, and `count_macs(input_shape,
output_shape)` counting conv MACs as `nat_keras.graph.costs` does
(H_out * W_out * k * k * C_in * C_out / groups; a depthwise conv counts
k * k * C per output position; BN, pooling and additions count none).

Example:
  >>> op = OPS["sep_conv_3x3"](16, 2, True)
  >>> y = op(keras.ops.zeros((1, 32, 32, 16)))
  >>> tuple(y.shape), op.count_params(), op.count_macs((32, 32, 16), (16, 16, 16))
  ((1, 16, 16, 16), 928, 204800)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from nat_keras import ops
from nat_keras.graph.costs import Cost, cell_op_cost

# The op lists, in the authors' order (their index is the op id of an
# architecture). DARTS / NAT v1: guoyongcs/NAT genotypes.py
# NOT_LOOSE_END_PRIMITIVES; ENAS: LOOSE_END_PRIMITIVES; NAT++: guoyongcs/NATv2
# genotypes.py FULLY_CONCAT_PRIMITIVES (its LOOSE_END_PRIMITIVES is the same).
# `null` is last in each, which is what lets the authors sample "without null"
# by drawing from the first len - 1 ops.
DARTS_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "conv_3x3",
    "null",
)
ENAS_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "conv_1x1",
    "conv_3x3",
    "conv_5x5",
    "null",
)
NATPP_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "max_pool_5x5",
    "avg_pool_3x3",
    "avg_pool_5x5",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "conv_1x1",
    "conv_3x3",
    "conv_5x5",
    "null",
)
OP_LISTS: dict[str, tuple[str, ...]] = {"darts": DARTS_OPS, "enas": ENAS_OPS, "nat++": NATPP_OPS}
SKIP_CONNECT, NULL = "skip_connect", "null"

# BN settings of the authors' PyTorch code (nn.BatchNorm2d defaults).
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5


def _all_ops() -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for op_list in (NATPP_OPS, DARTS_OPS, ENAS_OPS):
        seen.update(dict.fromkeys(op_list))
    return tuple(seen)


ALL_OPS: tuple[str, ...] = _all_ops()


def to_vocab(op: str) -> str:
    """The `nat_keras.ops` vocabulary name of a NAT op name.

    Sized ops keep their names; `skip_connect` is `ops.IDENTITY` ("skip") and
    `null` is `ops.NULL`.

    Example:
      >>> to_vocab("skip_connect"), to_vocab("sep_conv_3x3")
      ('skip', 'sep_conv_3x3')
    """
    if op not in ALL_OPS:
        raise ValueError(f"Unknown cell op {op!r}; the cell ops are {list(ALL_OPS)}.")
    return {SKIP_CONNECT: ops.IDENTITY, NULL: ops.NULL}.get(op, op)


def from_vocab(op: str) -> str:
    """The NAT op name of a `nat_keras.ops` vocabulary name (inverse of `to_vocab`).

    Example:
      >>> from_vocab("skip")
      'skip_connect'
    """
    name = {ops.IDENTITY: SKIP_CONNECT, ops.NULL: NULL}.get(op, op)
    if name not in ALL_OPS:
        raise ValueError(f"Op {op!r} has no cell op; the cell ops are {list(ALL_OPS)}.")
    return name


def _bn(affine: bool, name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=affine, scale=affine, name=name
    )


def _bn_params(channels: int, affine: bool) -> int:
    # gamma and beta when affine; the moving mean and variance always count.
    return (4 if affine else 2) * channels


def _hw(shape: Sequence[int | None]) -> tuple[int, int, int]:
    """(H, W, C) of a channels-last shape, with or without its batch dimension."""
    shape = tuple(shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"count_macs needs a fully known (H, W, C) shape, got {shape}.")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _conv_macs(out_hw: tuple[int, int], kernel: int, c_in: int, c_out: int, groups: int = 1) -> int:
    """H_out * W_out * k * k * C_in * C_out / groups, as `nat_keras.graph.costs` counts."""
    return out_hw[0] * out_hw[1] * kernel * kernel * c_in * c_out // groups


def _build_chain(layers: Sequence[keras.layers.Layer], input_shape: tuple) -> tuple:
    """Build `layers` one after the other; returns the last output shape."""
    shape = tuple(input_shape)
    for layer in layers:
        if not layer.built:
            layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


class _CellOp(keras.layers.Layer):
    """Common base: metadata for encoders and the config of every cell op."""

    nat_op: str = ""

    def __init__(self, strides: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        if strides not in (1, 2):
            raise ValueError(f"{type(self).__name__} {self.name!r}: strides must be 1 or 2, got {strides}.")
        self.strides = int(strides)

    @property
    def op_type(self) -> str:
        """The op in `nat_keras.ops` vocabulary (`skip` for skip_connect)."""
        return to_vocab(self.nat_op)

    def count_macs(self, input_shape: Sequence[int | None], output_shape: Sequence[int | None]) -> int:
        """Conv multiply-adds for one example (see the module docstring)."""
        return 0

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "strides": self.strides}


@keras.saving.register_keras_serializable(package="nat_keras")
class ReLUConvBN(_CellOp):
    """ReLU, k x k conv (no bias), BN: the `conv_kxk` ops and 1x1 preprocessing.

    Args:
      channels: output channels.
      kernel_size: k.
      strides: 1 or 2.
      affine: BN with scale and offset (False: the supernet's affine-free BN).

    Example:
      >>> ReLUConvBN(16, 3)(keras.ops.zeros((2, 8, 8, 4))).shape
      (2, 8, 8, 16)
    """

    def __init__(self, channels: int, kernel_size: int, strides: int = 1, affine: bool = True, **kwargs: Any):
        super().__init__(strides=strides, **kwargs)
        self.channels, self.kernel_size, self.affine = int(channels), int(kernel_size), bool(affine)
        self.nat_op = ops.op_name("conv", self.kernel_size)
        self.relu = keras.layers.ReLU(name="relu")
        self.conv = keras.layers.Conv2D(
            self.channels, self.kernel_size, strides=self.strides, padding="same", use_bias=False, name="conv"
        )
        self.bn = _bn(self.affine, "bn")

    def build(self, input_shape: tuple) -> None:
        _build_chain([self.relu, self.conv, self.bn], input_shape)

    def call(self, x: Any, training: bool | None = None) -> Any:
        return self.bn(self.conv(self.relu(x)), training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return self.conv.compute_output_shape(input_shape)

    def count_macs(self, input_shape, output_shape) -> int:
        h, w, c_out = _hw(output_shape)
        c_in = _hw(input_shape)[2]
        return _conv_macs((h, w), self.kernel_size, c_in, c_out)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "affine": self.affine,
        }


@keras.saving.register_keras_serializable(package="nat_keras")
class SepConv(_CellOp):
    """(ReLU, depthwise k, 1x1 conv, BN) twice; the first depthwise is strided.

    The first 1x1 keeps the input's channels, the second maps to `channels`
    (as DARTS' SepConv(C_in, C_out)).

    Args:
      channels: output channels.
      kernel_size: k of both depthwise convs.
      strides: 1 or 2.
      affine: BN with scale and offset.

    Example:
      >>> SepConv(16, 5, strides=2)(keras.ops.zeros((2, 8, 8, 16))).shape
      (2, 4, 4, 16)
    """

    def __init__(self, channels: int, kernel_size: int, strides: int = 1, affine: bool = True, **kwargs: Any):
        super().__init__(strides=strides, **kwargs)
        self.channels, self.kernel_size, self.affine = int(channels), int(kernel_size), bool(affine)
        self.nat_op = ops.op_name("sep_conv", self.kernel_size)
        k = self.kernel_size
        self.relu1 = keras.layers.ReLU(name="relu1")
        self.depthwise1 = keras.layers.DepthwiseConv2D(
            k, strides=self.strides, padding="same", use_bias=False, name="depthwise1"
        )
        self.pointwise1: keras.layers.Conv2D | None = None  # needs C_in: made in build
        self.bn1 = _bn(self.affine, "bn1")
        self.relu2 = keras.layers.ReLU(name="relu2")
        self.depthwise2 = keras.layers.DepthwiseConv2D(k, padding="same", use_bias=False, name="depthwise2")
        self.pointwise2 = keras.layers.Conv2D(self.channels, 1, use_bias=False, name="pointwise2")
        self.bn2 = _bn(self.affine, "bn2")

    def build(self, input_shape: tuple) -> None:
        self.pointwise1 = keras.layers.Conv2D(int(input_shape[-1]), 1, use_bias=False, name="pointwise1")
        _build_chain(self._chain(), input_shape)

    def _chain(self) -> list[keras.layers.Layer]:
        return [
            self.relu1,
            self.depthwise1,
            self.pointwise1,
            self.bn1,
            self.relu2,
            self.depthwise2,
            self.pointwise2,
            self.bn2,
        ]

    def call(self, x: Any, training: bool | None = None) -> Any:
        x = self.bn1(self.pointwise1(self.depthwise1(self.relu1(x))), training=training)
        return self.bn2(self.pointwise2(self.depthwise2(self.relu2(x))), training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        shape = self.depthwise1.compute_output_shape(input_shape)
        return (*shape[:-1], self.channels)

    def count_macs(self, input_shape, output_shape) -> int:
        h, w, c_out = _hw(output_shape)
        c_in = _hw(input_shape)[2]
        k = self.kernel_size
        return (
            _conv_macs((h, w), k, c_in, c_in, groups=c_in)
            + _conv_macs((h, w), 1, c_in, c_in)
            + _conv_macs((h, w), k, c_in, c_in, groups=c_in)
            + _conv_macs((h, w), 1, c_in, c_out)
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "affine": self.affine,
        }


@keras.saving.register_keras_serializable(package="nat_keras")
class DilConv(_CellOp):
    """ReLU, depthwise k with dilation 2, 1x1 conv, BN.

    Keras forbids dilation > 1 together with strides > 1. On a stride-2 edge
    this layer first keeps every second row and column (a 1x1 max pooling of
    stride 2) and then runs an undilated depthwise k conv at stride 1. That is
    exactly the authors' dilated stride-2 conv (PyTorch padding (k-1)): its
    output i reads inputs 2i + 2j - (k-1), all even, i.e. row i + j - (k-1)/2
    of the subsampled map. It is also the dilated conv at stride 1 followed
    by a subsampling, at a quarter of the MACs; the MACs counted are those of
    the strided dilated conv, k * k * C per output position.

    Args:
      channels: output channels.
      kernel_size: k.
      strides: 1 or 2.
      affine: BN with scale and offset.
      dilation_rate: the dilation of the depthwise conv (2 in DARTS / NAT).

    Example:
      >>> DilConv(16, 3, strides=2)(keras.ops.zeros((2, 8, 8, 16))).shape
      (2, 4, 4, 16)
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        strides: int = 1,
        affine: bool = True,
        dilation_rate: int = 2,
        **kwargs: Any,
    ):
        super().__init__(strides=strides, **kwargs)
        self.channels, self.kernel_size, self.affine = int(channels), int(kernel_size), bool(affine)
        self.dilation_rate = int(dilation_rate)
        if self.strides > 1 and self.dilation_rate not in (1, self.strides):
            raise ValueError(
                f"DilConv {self.name!r}: a strided dilated conv is computed by subsampling first, "
                f"which needs dilation_rate == strides (or 1); got {self.dilation_rate} and {self.strides}."
            )
        self.nat_op = ops.op_name("dil_conv", self.kernel_size)
        self.relu = keras.layers.ReLU(name="relu")
        self.subsample = (
            keras.layers.MaxPooling2D(pool_size=1, strides=self.strides, name="subsample")
            if self.strides > 1
            else None
        )
        self.depthwise = keras.layers.DepthwiseConv2D(
            self.kernel_size,
            padding="same",
            dilation_rate=1 if self.strides > 1 else self.dilation_rate,
            use_bias=False,
            name="depthwise",
        )
        self.pointwise = keras.layers.Conv2D(self.channels, 1, use_bias=False, name="pointwise")
        self.bn = _bn(self.affine, "bn")

    def _chain(self) -> list[keras.layers.Layer]:
        chain = [self.relu, self.subsample, self.depthwise, self.pointwise, self.bn]
        return [layer for layer in chain if layer is not None]

    def build(self, input_shape: tuple) -> None:
        _build_chain(self._chain(), input_shape)

    def call(self, x: Any, training: bool | None = None) -> Any:
        x = self.relu(x)
        if self.subsample is not None:
            x = self.subsample(x)
        return self.bn(self.pointwise(self.depthwise(x)), training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        shape = tuple(input_shape)
        if self.subsample is not None:
            shape = self.subsample.compute_output_shape(shape)
        return (*shape[:-1], self.channels)

    def count_macs(self, input_shape, output_shape) -> int:
        h, w, c_out = _hw(output_shape)
        c_in = _hw(input_shape)[2]
        return _conv_macs((h, w), self.kernel_size, c_in, c_in, groups=c_in) + _conv_macs(
            (h, w), 1, c_in, c_out
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "affine": self.affine,
            "dilation_rate": self.dilation_rate,
        }


@keras.saving.register_keras_serializable(package="nat_keras")
class FactorizedReduce(_CellOp):
    """ReLU, two stride-2 1x1 convs of C/2 (the second shifted by a pixel), concat, BN.

    DARTS' reduction of a skip connection and of c_{k-2} after a reduction
    cell. An input of odd (known) height / width is first padded by one row /
    column at the top / left, as the authors do; an unknown size is taken as
    even.

    Args:
      channels: output channels (even).
      affine: BN with scale and offset.

    Example:
      >>> FactorizedReduce(16)(keras.ops.zeros((2, 8, 8, 4))).shape
      (2, 4, 4, 16)
    """

    nat_op = SKIP_CONNECT

    def __init__(self, channels: int, affine: bool = True, strides: int = 2, **kwargs: Any):
        super().__init__(strides=strides, **kwargs)
        if self.strides != 2:
            raise ValueError(f"FactorizedReduce {self.name!r} always has strides 2, got {strides}.")
        self.channels, self.affine = int(channels), bool(affine)
        if self.channels % 2:
            raise ValueError(
                f"FactorizedReduce {self.name!r} needs an even number of channels, got {channels}."
            )
        half = self.channels // 2
        self.relu = keras.layers.ReLU(name="relu")
        self.pad: keras.layers.ZeroPadding2D | None = None  # made in build for odd sizes
        self.conv1 = keras.layers.Conv2D(half, 1, strides=2, use_bias=False, name="conv1")
        self.shift = keras.layers.Cropping2D(((1, 0), (1, 0)), name="shift")
        self.conv2 = keras.layers.Conv2D(half, 1, strides=2, use_bias=False, name="conv2")
        self.concat = keras.layers.Concatenate(name="concat")
        self.bn = _bn(self.affine, "bn")

    def build(self, input_shape: tuple) -> None:
        height, width = input_shape[1], input_shape[2]
        pad_h = 1 if height is not None and height % 2 else 0
        pad_w = 1 if width is not None and width % 2 else 0
        if pad_h or pad_w:
            self.pad = keras.layers.ZeroPadding2D(((pad_h, 0), (pad_w, 0)), name="pad")
        shape = _build_chain([self.relu] + ([self.pad] if self.pad is not None else []), input_shape)
        left = _build_chain([self.conv1], shape)
        right = _build_chain([self.shift, self.conv2], shape)
        self.concat.build([left, right])
        _build_chain([self.bn], self.concat.compute_output_shape([left, right]))

    def call(self, x: Any, training: bool | None = None) -> Any:
        x = self.relu(x)
        if self.pad is not None:
            x = self.pad(x)
        out = self.concat([self.conv1(x), self.conv2(self.shift(x))])
        return self.bn(out, training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        def half(size):
            return None if size is None else (size + 1) // 2

        return (input_shape[0], half(input_shape[1]), half(input_shape[2]), self.channels)

    def count_macs(self, input_shape, output_shape) -> int:
        h, w, c_out = _hw(output_shape)
        c_in = _hw(input_shape)[2]
        return 2 * _conv_macs((h, w), 1, c_in, c_out // 2)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels, "affine": self.affine}


@keras.saving.register_keras_serializable(package="nat_keras")
class PoolBN(_CellOp):
    """k x k max or average pooling ("same" padding), optionally followed by BN.

    Average pooling ignores the padding (PyTorch's count_include_pad=False,
    which is what TF's "same" average pooling does). DARTS' and NAT's
    supernets put a BN after each pool (`batch_norm=True`), their final
    networks do not.

    Args:
      pool_type: "max" or "avg".
      pool_size: k.
      strides: 1 or 2.
      batch_norm: add a BN after the pool.
      affine: BN with scale and offset.

    Example:
      >>> PoolBN("avg", 3, strides=2)(keras.ops.zeros((2, 8, 8, 4))).shape
      (2, 4, 4, 4)
    """

    def __init__(
        self,
        pool_type: str,
        pool_size: int = 3,
        strides: int = 1,
        batch_norm: bool = False,
        affine: bool = True,
        **kwargs: Any,
    ):
        super().__init__(strides=strides, **kwargs)
        if pool_type not in ("max", "avg"):
            raise ValueError(f"PoolBN {self.name!r}: pool_type must be 'max' or 'avg', got {pool_type!r}.")
        self.pool_type, self.pool_size = pool_type, int(pool_size)
        self.batch_norm, self.affine = bool(batch_norm), bool(affine)
        self.nat_op = ops.op_name(f"{pool_type}_pool", self.pool_size)
        pool_cls = keras.layers.MaxPooling2D if pool_type == "max" else keras.layers.AveragePooling2D
        self.pool = pool_cls(self.pool_size, strides=self.strides, padding="same", name="pool")
        self.bn = _bn(self.affine, "bn") if self.batch_norm else None

    def build(self, input_shape: tuple) -> None:
        _build_chain([self.pool] + ([self.bn] if self.bn is not None else []), input_shape)

    def call(self, x: Any, training: bool | None = None) -> Any:
        x = self.pool(x)
        return self.bn(x, training=training) if self.bn is not None else x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return self.pool.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pool_type": self.pool_type,
            "pool_size": self.pool_size,
            "batch_norm": self.batch_norm,
            "affine": self.affine,
        }


@keras.saving.register_keras_serializable(package="nat_keras")
class Identity(_CellOp):
    """`skip_connect` on a stride-1 edge: returns its input.

    `build_network` passes the tensor itself instead of calling this layer, so
    that an encoder sees a plain shortcut; the layer exists for supernets and
    for models that want one layer per edge.

    Example:
      >>> Identity()(keras.ops.ones((1, 2, 2, 1))).shape
      (1, 2, 2, 1)
    """

    nat_op = SKIP_CONNECT

    def __init__(self, strides: int = 1, **kwargs: Any):
        super().__init__(strides=strides, **kwargs)
        if self.strides != 1:
            raise ValueError(
                f"Identity {self.name!r} has strides 1; use FactorizedReduce for a strided skip."
            )

    def call(self, x: Any) -> Any:
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="nat_keras")
class Zero(_CellOp):
    """NAT's `null` op: zeros shaped like the input, subsampled on stride-2 edges.

    Unlike the authors' `x.mul(0.)`, the zeros do not carry NaN / inf from the
    input and have no gradient path to it.

    Example:
      >>> Zero(strides=2)(keras.ops.ones((1, 5, 5, 3))).shape
      (1, 3, 3, 3)
    """

    nat_op = NULL

    def call(self, x: Any) -> Any:
        if self.strides > 1:
            x = x[:, :: self.strides, :: self.strides, :]
        return keras.ops.zeros_like(x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        def sub(size):
            return None if size is None else -(-size // self.strides)

        return (input_shape[0], sub(input_shape[1]), sub(input_shape[2]), input_shape[3])


@keras.saving.register_keras_serializable(package="nat_keras")
class DropPath(keras.layers.Layer):
    """Drop-path (DARTS, FractalNet): zero a whole example's path in training.

    In training each example's input is kept with probability 1 - rate and
    scaled by 1 / (1 - rate), or zeroed; at inference the layer is the
    identity. DARTS and NAT apply it to every op of a cell but the identity
    skips.

    Args:
      rate: the probability of dropping, in [0, 1).
      seed: seed of the layer's random draws.

    Example:
      >>> layer = DropPath(0.5, seed=0)
      >>> x = keras.ops.ones((4, 2, 2, 1))
      >>> bool(keras.ops.all(layer(x) == x))  # inference: identity
      True
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath {self.name!r}: rate must be in [0, 1), got {rate}.")
        self.rate, self.seed = float(rate), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x: Any, training: bool | None = None) -> Any:
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (keras.ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator) < keep
        return x * keras.ops.cast(mask, x.dtype) / keep

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


# ---------------------------------------------------------------------------
# Factories and costs.


def make_op(
    op: str,
    channels: int,
    strides: int = 1,
    *,
    affine: bool = True,
    pool_bn: bool = False,
    name: str | None = None,
) -> _CellOp:
    """The layer of cell op `op` on an edge of `channels` channels.

    Args:
      op: a NAT op name (see `ALL_OPS`).
      channels: the cell's channels C (ops map C to C).
      strides: 2 on the edges from the inputs of a reduction cell, else 1.
      affine: BN with scale and offset (False in the supernet).
      pool_bn: put a BN after pooling ops (True in the supernet).
      name: the layer's name.

    Returns:
      A registered Keras layer with `nat_op`, `strides` and `count_macs`.

    Example:
      >>> make_op("skip_connect", 16, 2, name="reduce_skip").__class__.__name__
      'FactorizedReduce'
    """
    kwargs: dict[str, Any] = {"name": name} if name is not None else {}
    if op == NULL:
        return Zero(strides=strides, **kwargs)
    if op == SKIP_CONNECT:
        if strides == 1:
            return Identity(**kwargs)
        return FactorizedReduce(channels, affine=affine, strides=strides, **kwargs)
    parsed = ops.parse_op(op) if op in ALL_OPS else None
    if parsed is None:
        raise ValueError(f"Unknown cell op {op!r}; the cell ops are {list(ALL_OPS)}.")
    family, kernel = parsed
    if family == "conv":
        return ReLUConvBN(channels, kernel, strides=strides, affine=affine, **kwargs)
    if family == "sep_conv":
        return SepConv(channels, kernel, strides=strides, affine=affine, **kwargs)
    if family == "dil_conv":
        return DilConv(channels, kernel, strides=strides, affine=affine, **kwargs)
    return PoolBN(family.split("_")[0], kernel, strides=strides, batch_norm=pool_bn, affine=affine, **kwargs)


def _factory(op: str) -> Callable[[int, int, bool], keras.layers.Layer]:
    def build(channels: int, stride: int, affine: bool) -> keras.layers.Layer:
        return make_op(op, channels, stride, affine=affine)

    build.__name__ = f"make_{op}"
    return build


# The authors' OPS: name -> (C, stride, affine) -> op. Pools without BN, as in
# their final networks (use make_op(..., pool_bn=True) for the supernet's).
OPS: dict[str, Callable[[int, int, bool], keras.layers.Layer]] = {op: _factory(op) for op in ALL_OPS}


def op_cost(
    op: str,
    channels: int,
    *,
    strides: int = 1,
    spatial: int | tuple[int, int] = 32,
    affine: bool = True,
    pool_bn: bool = False,
) -> Cost:
    """Params (as Keras counts them) and MACs of a cell op, without building it.

    Args:
      op: a NAT op name.
      channels: C (input and output channels).
      strides: the edge's stride.
      spatial: the input's height (and width), or (height, width).
      affine / pool_bn: as for `make_op`.

    Returns:
      A `nat_keras.Cost`; equal to the layer's `count_params()` and
      `count_macs(...)` (the formulas are `nat_keras.graph.costs.cell_op_cost`).

    Example:
      >>> op_cost("conv_3x3", 16, spatial=8)
      Cost(params=2368, macs=147456, adds=0)
    """
    options = {"strides": strides, "spatial": spatial, "affine": affine, "pool_bn": pool_bn}
    return cell_op_cost(to_vocab(op), channels, **options)


__all__ = [
    "ALL_OPS",
    "DARTS_OPS",
    "ENAS_OPS",
    "NATPP_OPS",
    "OPS",
    "OP_LISTS",
    "DilConv",
    "DropPath",
    "FactorizedReduce",
    "Identity",
    "PoolBN",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "from_vocab",
    "make_op",
    "op_cost",
    "to_vocab",
]
