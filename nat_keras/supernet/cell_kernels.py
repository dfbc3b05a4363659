"""The cell ops' maths on packed weights: one pure function per op, traced once per shape.

`op_forward` computes what an op's `nat_keras.cells.operations` layer
computes, step for step (affine-free BN; pools followed by a BN when
`pool_bn`), with the op's weights handed over as flat segments of a packed
row (`packed_weights`): `op_pieces` says which weights an op has and in
what order. Inference computes exactly what the standalone layers compute.
In training the BNs run fused and return their batch statistics, so that
the caller moves the chosen edge's moving statistics after the switch (the
op bodies stay pure, hence shareable); the moving variance takes the
unbiased batch variance, as the authors' PyTorch BN does (Keras' BN takes
the biased one).

`OpBodies` wraps `op_forward` in one `tf.function` per (op, channels,
stride, training): every slot of every node and cell with the same shapes
calls one traced body (and one gradient).

Example:
  >>> kernels, bns = op_pieces("sep_conv", 3, channels=4, strides=1, pool_bn=True)
  >>> [key for key, _ in kernels], bns
  (['depthwise1/kernel', 'pointwise1/kernel', 'depthwise2/kernel', 'pointwise2/kernel'], ['bn1', 'bn2'])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras import ops
from nat_keras.cells.operations import BN_EPSILON, NULL, SKIP_CONNECT


def op_pieces(
    family: str, kernel: int, channels: int, strides: int, pool_bn: bool
) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
    """(kernels, BN prefixes) of an op, named as its `nat_keras.cells.operations` layer names them.

    Example:
      >>> op_pieces("conv", 3, channels=4, strides=1, pool_bn=False)
      ([('conv/kernel', (3, 3, 4, 4))], ['bn'])
    """
    c, k = channels, kernel
    if family == "conv":
        return [("conv/kernel", (k, k, c, c))], ["bn"]
    if family == "sep_conv":
        kernels = []
        for i in (1, 2):
            kernels += [(f"depthwise{i}/kernel", (k, k, c, 1)), (f"pointwise{i}/kernel", (1, 1, c, c))]
        return kernels, ["bn1", "bn2"]
    if family == "dil_conv":
        return [("depthwise/kernel", (k, k, c, 1)), ("pointwise/kernel", (1, 1, c, c))], ["bn"]
    if family == SKIP_CONNECT:
        if strides == 1:
            return [], []
        return [("conv1/kernel", (1, 1, c, c // 2)), ("conv2/kernel", (1, 1, c, c // 2))], ["bn"]
    if family == NULL:
        return [], []
    return [], (["bn"] if pool_bn else [])


def op_forward(
    op: str,
    channels: int,
    strides: int,
    pool_bn: bool,
    training: bool,
    x: Any,
    kernels: Any,
    means: Any,
    variances: Any,
) -> tuple[Any, Any]:
    """Cell op `op` on `x`, with its weights given as packed segments.

    The maths of the op's `nat_keras.cells.operations` layer, step for step
    (affine-free BN; pools with a BN when `pool_bn`). A pure function of its
    tensors: one trace of it serves every edge, node and cell of the same
    shapes (see `OpBodies`).

    Returns:
      (output, batch statistics): in training, the concatenated (mean,
      variance) of the op's BNs, in their order (None if it has none); in
      inference, None.

    Example:
      >>> y, stats = op_forward("max_pool_3x3", 4, 1, False, False, x, None, None, None)
    """
    family, k = ops.parse_op(op) or (op, 1)
    kernel_pieces, bn_prefixes = op_pieces(family, k, channels, strides, pool_bn)
    w: dict[str, Any] = {}
    if kernel_pieces:
        sizes = [int(np.prod(shape)) for _, shape in kernel_pieces]
        parts = tf.split(kernels, sizes)
        w = {key: tf.reshape(part, shape) for (key, shape), part in zip(kernel_pieces, parts)}
    if bn_prefixes and not training:
        means = tf.split(means, len(bn_prefixes))
        variances = tf.split(variances, len(bn_prefixes))
    batch_means, batch_variances = [], []

    def bn(y: Any, i: int) -> Any:
        if training:
            # One fused op (and one for its gradient) instead of ~20: the
            # training graph holds every op of every slot, so BN was most of it.
            ones = tf.ones((channels,), y.dtype)
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                y, ones, tf.zeros_like(ones), epsilon=BN_EPSILON, is_training=True
            )
            batch_means.append(mean)
            batch_variances.append(variance)
            return y
        # Inference: exactly what keras.layers.BatchNormalization computes.
        return keras.ops.batch_normalization(y, means[i], variances[i], axis=-1, epsilon=BN_EPSILON)

    s = strides
    if family == "conv":
        x = bn(keras.ops.conv(keras.ops.relu(x), w["conv/kernel"], strides=s, padding="same"), 0)
    elif family == "sep_conv":
        for i in (1, 2):
            x = keras.ops.depthwise_conv(
                keras.ops.relu(x), w[f"depthwise{i}/kernel"], strides=s if i == 1 else 1, padding="same"
            )
            x = bn(keras.ops.conv(x, w[f"pointwise{i}/kernel"]), i - 1)
    elif family == "dil_conv":
        x = keras.ops.relu(x)
        if s > 1:  # as DilConv: subsample (its 1x1 max pool, as a slice), then an undilated depthwise conv
            x = x[:, ::s, ::s, :]
        x = keras.ops.depthwise_conv(
            x, w["depthwise/kernel"], padding="same", dilation_rate=1 if s > 1 else 2
        )
        x = bn(keras.ops.conv(x, w["pointwise/kernel"]), 0)
    elif family == SKIP_CONNECT:  # strided: FactorizedReduce
        x = keras.ops.relu(x)
        pad_h, pad_w = x.shape[1] % 2, x.shape[2] % 2
        if pad_h or pad_w:
            x = keras.ops.pad(x, [[0, 0], [pad_h, 0], [pad_w, 0], [0, 0]])
        left = keras.ops.conv(x, w["conv1/kernel"], strides=2)
        right = keras.ops.conv(x[:, 1:, 1:, :], w["conv2/kernel"], strides=2)
        x = bn(keras.ops.concatenate([left, right], axis=-1), 0)
    elif family == "max_pool":
        x = _max_pool_fn(k, s)(x) if training else keras.ops.max_pool(x, k, strides=s, padding="same")
        if bn_prefixes:
            x = bn(x, 0)
    else:
        x = keras.ops.average_pool(x, k, strides=s, padding="same")
        if bn_prefixes:
            x = bn(x, 0)
    if not batch_means:
        return x, None
    # Statistics feed only the moving averages: no gradient (nor its graph).
    return x, (tf.stop_gradient(tf.concat(batch_means, 0)), tf.stop_gradient(tf.concat(batch_variances, 0)))


@functools.cache
def _max_pool_fn(size: int, strides: int) -> Callable[[Any], Any]:
    """`size` x `size` max pooling ("same") whose gradient recomputes the pool.

    oneDNN's fast MaxPoolGrad needs its forward op in the same graph, and a
    switch branch's backward is a graph of its own: without the recomputation
    TF's generic MaxPoolGrad took 40% of a training step of the paper's
    supernet on CPU.
    """
    window, steps = [1, size, size, 1], [1, strides, strides, 1]

    @tf.custom_gradient
    def max_pool(x: Any) -> tuple[Any, Callable[[Any], Any]]:
        def gradient(dy: Any) -> Any:
            again = tf.nn.max_pool2d(x, window, steps, "SAME")
            return tf.raw_ops.MaxPoolGrad(
                orig_input=x, orig_output=again, grad=dy, ksize=window, strides=steps, padding="SAME"
            )

        return tf.nn.max_pool2d(x, window, steps, "SAME"), gradient

    return max_pool


class OpBodies:
    """One `tf.function` per (op, channels, stride, training), shared by every slot.

    Called from inside a switch branch, it becomes a function call there:
    every slot of the same shapes reuses one traced body (and one gradient),
    instead of tracing its own copy of every op. Eagerly, the plain function.
    """

    def __init__(self, pool_bn: bool):
        self.pool_bn = pool_bn
        self._functions: dict[tuple[str, int, int, bool], Any] = {}

    def __call__(self, op: str, channels: int, strides: int, training: bool, *args: Any) -> tuple[Any, Any]:
        if tf.executing_eagerly():
            return op_forward(op, channels, strides, self.pool_bn, training, *args)
        key = (op, channels, strides, training)
        if key not in self._functions:
            self._functions[key] = tf.function(
                functools.partial(op_forward, op, channels, strides, self.pool_bn, training), autograph=False
            )
        return self._functions[key](*args)


__all__ = ["OpBodies", "op_forward", "op_pieces"]
