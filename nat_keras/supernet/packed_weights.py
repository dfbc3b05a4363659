"""The weights of every op on every DAG edge into a node, packed into a few variables.

Every edge (state j -> node i) of a cell holds its own copy of every op of
the op list (weights are per cell, as in DARTS). `_NodeOps` keeps those of
the edges into one node that share a stride (a `cell_layout.StrideGroup`):
one row per edge, the ops' weights laid out op after op in `op_list` order
(`Piece`s). A slot takes its edge's row with a one-hot product and hands an
op its segment (`cell_kernels.op_forward`); extraction reads a row back by
the operations layer's weight paths (`row_weights`).

Example:
  >>> layer = _NodeOps(DARTS_OPS, 4, 1, 3, pool_bn=True)
  >>> layer.build((None, 8, 8, 4))
  >>> layer.kernels.shape[0], layer.has_op("skip_connect")
  (3, False)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras import ops
from nat_keras.cells.operations import BN_MOMENTUM, NULL, SKIP_CONNECT
from nat_keras.supernet.cell_kernels import op_pieces


@dataclasses.dataclass
class Lookup:
    """Python-side look-ups, kept out of Keras' attribute tracking."""

    entries: dict[Any, Any]


@dataclasses.dataclass(frozen=True)
class Piece:
    """Where one weight of one op sits in a packed row: [offset, offset + size)."""

    key: str  # the operations layer's weight path below the layer ("depthwise1/kernel"), or a BN's prefix
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


# The leading underscore is kept from when this class lived inside
# cell_space.py: its type name is visible (tests/test_batchnorm.py reads it).
class _NodeOps(keras.layers.Layer):
    """The weights of every op on the `count` DAG edges into one node that share a stride.

    Each edge (row) has its own weights for each op, packed into three
    variables: `kernels` (count, P), `moving_mean` and `moving_variance`
    (count, S), laid out op after op in `op_list` order. A slot picks an
    edge's row with a one-hot product (the row comes out exactly and its
    gradient is dense) and hands an op its segment.

    Why packed: a slot's switch then captures the same few tensors in every
    branch. `tf.switch_case` gives each branch a placeholder for every input
    that any branch captures, so one variable per (edge, op, weight) made
    tracing the paper's supernet take many minutes.
    """

    def __init__(
        self,
        op_list: Sequence[str],
        channels: int,
        strides: int,
        count: int,
        *,
        pool_bn: bool,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.op_list, self.channels, self.strides, self.count = tuple(op_list), channels, strides, count
        self.pool_bn = pool_bn
        # Read when a step is traced, like a Keras BN's (see nat_keras.supernet.batchnorm).
        self.momentum = BN_MOMENTUM
        # op -> (kernel pieces, BN pieces); P and S are the packed widths.
        layout: dict[str, tuple[list[Piece], list[Piece]]] = {}
        width = stats = 0
        for op in self.op_list:
            family, kernel = ops.parse_op(op) or (op, 1)
            kernels, bns = op_pieces(family, kernel, channels, strides, pool_bn)
            pieces = []
            for key, shape in kernels:
                pieces.append(Piece(key, shape, width))
                width += pieces[-1].size
            bn_pieces = []
            for prefix in bns:
                bn_pieces.append(Piece(prefix, (channels,), stats))
                stats += channels
            layout[op] = (pieces, bn_pieces)
        self._layout = Lookup(layout)
        self.width, self.stats = width, stats

    def build(self, input_shape: tuple) -> None:
        if self.width:
            self.kernels = self.add_weight(
                shape=(self.count, self.width), initializer=self._initialize, name="kernels"
            )
        if self.stats:
            self.moving_mean = self.add_weight(
                shape=(self.count, self.stats), initializer="zeros", trainable=False, name="moving_mean"
            )
            self.moving_variance = self.add_weight(
                shape=(self.count, self.stats), initializer="ones", trainable=False, name="moving_variance"
            )

    def _initialize(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        # Each piece as a lone Keras conv initialises its kernel (glorot
        # uniform with that kernel's fans). A fresh unseeded initializer per
        # piece: one Keras initializer called twice repeats its values.
        rows = []
        for _ in range(shape[0]):
            parts = [
                keras.ops.reshape(keras.initializers.GlorotUniform()(piece.shape, dtype=dtype), (-1,))
                for pieces, _ in self._layout.entries.values()
                for piece in pieces
            ]
            rows.append(keras.ops.concatenate(parts))
        return keras.ops.stack(rows)

    def has_op(self, op: str) -> bool:
        """Whether `op` computes anything here (not null, not a stride-1 skip)."""
        return op != NULL and not (op == SKIP_CONNECT and self.strides == 1)

    def rows(self, onehot: Any, training: bool) -> tuple[Any, Any, Any]:
        """(kernels, moving mean, moving variance) rows of the edge `onehot` picks (None: unused)."""
        pick = tf.expand_dims(onehot, 0)

        def row(variable: Any, width: int) -> Any:
            return tf.reshape(tf.matmul(pick, variable), [width])

        kernels = row(self.kernels, self.width) if self.width else None
        if training or not self.stats:
            return kernels, None, None
        return kernels, row(self.moving_mean, self.stats), row(self.moving_variance, self.stats)

    def segments(self, op: str, rows: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
        """The parts of the picked rows that hold `op`'s weights (what `cell_kernels.op_forward` takes)."""
        pieces, bn_pieces = self._layout.entries[op]
        kernels, means, variances = rows
        # tf.slice with Python bounds: two constants, where `vector[a:b]` makes ~10 ops.
        if pieces:
            start = pieces[0].offset
            kernels = tf.slice(kernels, [start], [pieces[-1].offset + pieces[-1].size - start])
        if bn_pieces and means is not None:
            start, size = bn_pieces[0].offset, len(bn_pieces) * self.channels
            means, variances = tf.slice(means, [start], [size]), tf.slice(variances, [start], [size])
        return (kernels if pieces else None), *((means, variances) if bn_pieces else (None, None))

    def padded_stats(self, op: str, stats: tuple[Any, Any] | None, dtype: Any) -> list[Any]:
        """An op's batch statistics placed at its columns of the (S,) statistics row."""
        _, bn_pieces = self._layout.entries[op]
        if stats is None:
            zeros = tf.zeros((self.stats,), dtype)
            return [zeros, zeros]
        start = bn_pieces[0].offset
        pad = [[start, self.stats - start - len(bn_pieces) * self.channels]]
        return [tf.pad(stats[0], pad), tf.pad(stats[1], pad)]

    def update_stats(self, columns: Any, onehot: Any, means: Any, variances: Any) -> None:
        """Move the picked edge's statistics at `columns` (bool (S,)), as a Keras BN moves its own.

        The moving variance takes the batch variance of the fused BN, which
        is unbiased (n / (n - 1)), as in the authors' PyTorch BN; Keras' BN
        takes the biased one.
        """
        chosen = tf.logical_and(tf.expand_dims(onehot, 1) > 0, columns[None, :])
        for variable, batch in ((self.moving_mean, means), (self.moving_variance, variances)):
            moved = variable * self.momentum + batch[None, :] * (1.0 - self.momentum)
            variable.assign(tf.where(chosen, moved, variable))

    def stats_columns(self) -> np.ndarray:
        """(len(op_list), S) bool: the statistics columns of each op."""
        table = np.zeros((len(self.op_list), self.stats), bool)
        for k, op in enumerate(self.op_list):
            for piece in self._layout.entries[op][1]:
                table[k, piece.offset : piece.offset + piece.size] = True
        return table

    def row_weights(self, op: str, row: int) -> dict[str, np.ndarray]:
        """Edge `row`'s weights of `op`, keyed like the operations layer's weight paths."""
        pieces, bn_pieces = self._layout.entries[op]
        values = {}
        if pieces:
            kernels = self.kernels.numpy()[row]
            for piece in pieces:
                values[piece.key] = kernels[piece.offset : piece.offset + piece.size].reshape(piece.shape)
        if bn_pieces:
            mean, variance = self.moving_mean.numpy()[row], self.moving_variance.numpy()[row]
            for piece in bn_pieces:
                span = slice(piece.offset, piece.offset + piece.size)
                values[f"{piece.key}/moving_mean"] = mean[span]
                values[f"{piece.key}/moving_variance"] = variance[span]
        return values

__all__ = ["Lookup", "Piece"]
