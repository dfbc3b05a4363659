"""The weight-sharing supernet of NAT's cell space (DESIGN.md section 2).

The network is DARTS' CIFAR network (`search_space.build_network`): a 3x3
conv + BN stem, `num_cells` cells (reductions at 1/3 and 2/3 of the depth,
channels doubling there), global average pooling and a dense classifier; the
paper's supernet has 8 cells and C = 20. Inside the cells every BN is
affine-free, and every pooling op is followed by an affine-free BN, as in the
authors' `NASOp`.

Each cell is a full DAG: node i (0..B-1) may read any of its 2 + i earlier
states, and every edge (state j -> node i) holds its own copy of every op of
the op list (weights are per cell, as in DARTS; the architecture is shared by
the cells of a type). A genotype entry picks one (input, op) pair per node
*slot*; each node has two slots and sums them. Both slots of a node may read
the same input (the paper's input architectures do so three times out of four),
with the same or another op: they then run that edge's op(s), as the authors'
supernet does.

The architecture vector. `arch` is an int32 vector of `arch_size = 8 * B`
entries (32 for B = 4): for every genotype entry, normal cell first, then
reduce, in genotype order (node 0 slot 0, node 0 slot 1, node 1 slot 0, ...),
the pair (input index, op index):

    arch.reshape(2, B, 2, 2)[cell, node, slot] == (input, op)

where cell 0 is normal and 1 is reduce, input is 0 (c_{k-2}), 1 (c_{k-1}) or
2 + m (node m < node), and op indexes `op_list`. So `arch.reshape(-1, 2)`
lists `genotype.normal + genotype.reduce`, and `genotype_to_arch` /
`arch_to_genotype` are exact inverses. A per-DAG-edge op vector cannot hold
two entries on one edge, hence pairs.

How it runs. Per node, one switch of identities picks both slots' input
states; each slot then runs one switch over the op list (`tf.switch_case`,
kept a functional Case op), so only the chosen op runs and a new arch needs
no retrace. The weights of every op on every edge into a node are packed by
edge (`_NodeOps`); a slot takes its edge's row with a one-hot product, and
the op bodies are traced once per shape and shared by all slots. Inference
computes exactly what the standalone layers compute. In training the BNs run
fused and the chosen edge's moving statistics move after the switch; the
moving variance takes the unbiased batch variance, as the authors' PyTorch BN
does (Keras' BN takes the biased one). On 2 CPU cores the paper's supernet
traces and sets up its first training step in ~40 s; a step then costs
~1.05-1.15x that of the extracted network (benchmarks/cell_supernet_step.py).

Cell outputs. concat="full" (DARTS) concatenates every intermediate node.
concat="loose_end" (ENAS) keeps the channel count fixed and multiplies the
nodes some entry reads by zero (the authors' `NASCell`; null entries count
as reads, as in `loose_end_concat`); the standalone network concatenates only
the loose ends, and `extract` hands it the matching slices of the next
layers' weights, so both compute the same function.

What `extract` returns is `build_network(genotype, affine=False)` with the
pools given their BN (see `pool_bn`) and this supernet's weights. It
preprocesses a cell input only if a non-null entry reads it; the supernet
always does, which changes no output.

Example:
  >>> supernet = CellSupernet(num_cells=8, channels=20)
  >>> arch = supernet.sample_arch(seed=0)
  >>> logits = supernet(images, arch=arch, training=False)
  >>> supernet.extract(arch)(images)   # the same logits, a plain functional model
  >>> supernet.arch_to_genotype(arch).num_nodes
  4
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras import compat, ops
from nat_keras.cells import (
    CELLS,
    Genotype,
    GenotypeError,
    apply_plan_to_genotype,
    arch_graph_to_genotype,
    fully_concat,
    genotype_to_arch_graph,
    loose_end_concat,
)
from nat_keras.cells.network import build_network, reduction_cells
from nat_keras.cells.operations import (
    ALL_OPS,
    BN_EPSILON,
    BN_MOMENTUM,
    NULL,
    OP_LISTS,
    SKIP_CONNECT,
    FactorizedReduce,
    PoolBN,
    ReLUConvBN,
    from_vocab,
)
from nat_keras.cells.sampler import sample_genotype
from nat_keras.graph.arch_graph import PLACEHOLDER, UNIT, ArchGraph
from nat_keras.plan import TransformPlan
from nat_keras.supernet.base import Supernet

CONCAT_RULES = ("full", "loose_end")
_OP_LIST_ALIASES = {"natpp": "nat++"}
GRAPH_NAME = "cell_genotype"


@dataclasses.dataclass
class _Lookup:
    """Python-side look-ups, kept out of Keras' attribute tracking."""

    entries: dict[Any, Any]


@dataclasses.dataclass(frozen=True)
class _Group:
    """Inputs of one node that share a stride: states start .. start + count - 1."""

    start: int
    count: int
    stride: int
    in_hw: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class _CellSpec:
    """Static facts of one cell of the network."""

    index: int
    reduction: bool
    reduction_prev: bool
    channels: int
    in_hw: tuple[int, int]  # spatial size of the (preprocessed) cell inputs
    out_hw: tuple[int, int]  # spatial size of the nodes and the output

    def groups(self, node: int) -> tuple[_Group, ...]:
        """The inputs of `node` by stride: a reduction cell's inputs (stride 2), then the nodes."""
        if not self.reduction:
            return (_Group(0, 2 + node, 1, self.in_hw),)
        inputs = _Group(0, 2, 2, self.in_hw)
        return (inputs, _Group(2, node, 1, self.out_hw)) if node else (inputs,)


def _half(size: int) -> int:
    return (size + 1) // 2  # "same" stride-2 convs and FactorizedReduce round up


def _resolve_op_list(op_list: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(op_list, str):
        key = _OP_LIST_ALIASES.get(op_list, op_list)
        if key not in OP_LISTS:
            raise ValueError(f"Unknown op list {op_list!r}; use one of {[*OP_LISTS, 'natpp']} or a list.")
        return OP_LISTS[key]
    chosen = tuple(op_list)
    if len(set(chosen)) != len(chosen) or not chosen:
        raise ValueError(f"op_list must list distinct ops, got {list(chosen)}.")
    unknown = [op for op in chosen if op not in ALL_OPS]
    if unknown:
        raise ValueError(f"Unknown cell ops {unknown}; the cell ops are {list(ALL_OPS)}.")
    return chosen


@dataclasses.dataclass(frozen=True)
class _Piece:
    """Where one weight of one op sits in a packed row: [offset, offset + size)."""

    key: str  # the operations layer's weight path below the layer ("depthwise1/kernel"), or a BN's prefix
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def _op_pieces(
    family: str, kernel: int, channels: int, strides: int, pool_bn: bool
) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
    """(kernels, BN prefixes) of an op, named as its `search_space.operations` layer names them."""
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


def _op_forward(
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

    The maths of the op's `search_space.operations` layer, step for step
    (affine-free BN; pools with a BN when `pool_bn`). A pure function of its
    tensors: one trace of it serves every edge, node and cell of the same
    shapes (see `_Bodies`).

    Returns:
      (output, batch statistics): in training, the concatenated (mean,
      variance) of the op's BNs, in their order (None if it has none); in
      inference, None.
    """
    family, k = ops.parse_op(op) or (op, 1)
    kernel_pieces, bn_prefixes = _op_pieces(family, k, channels, strides, pool_bn)
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


class _Bodies:
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
            return _op_forward(op, channels, strides, self.pool_bn, training, *args)
        key = (op, channels, strides, training)
        if key not in self._functions:
            self._functions[key] = tf.function(
                functools.partial(_op_forward, op, channels, strides, self.pool_bn, training), autograph=False
            )
        return self._functions[key](*args)


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
        layout: dict[str, tuple[list[_Piece], list[_Piece]]] = {}
        width = stats = 0
        for op in self.op_list:
            family, kernel = ops.parse_op(op) or (op, 1)
            kernels, bns = _op_pieces(family, kernel, channels, strides, pool_bn)
            pieces = []
            for key, shape in kernels:
                pieces.append(_Piece(key, shape, width))
                width += pieces[-1].size
            bn_pieces = []
            for prefix in bns:
                bn_pieces.append(_Piece(prefix, (channels,), stats))
                stats += channels
            layout[op] = (pieces, bn_pieces)
        self._layout = _Lookup(layout)
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
        """The parts of the picked rows that hold `op`'s weights (what `_op_forward` takes)."""
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


class CellSupernet(Supernet):
    """The weight-sharing supernet over NAT's cell space.

    Build it inside the `tf.distribute` strategy scope you train with. See the
    module docstring for the architecture vector.

    Args:
      op_list: "darts" (DARTS_OPS), "enas" (ENAS_OPS), "natpp" / "nat++"
        (NATPP_OPS), or a sequence of cell op names.
      num_nodes: B, intermediate nodes per cell (4 for DARTS, 5 for ENAS).
      num_cells: cells in all (8 in the paper's supernet).
      channels: C of the first cells (even; doubled at each reduction).
      num_classes: classifier outputs (logits).
      input_shape: (height, width, channels) of the images.
      stem_multiplier: the stem has stem_multiplier * channels channels.
      space: the NAT action space of the plans it runs: "nat" (keep / skip /
        none) or "nat++" (also cheaper ops; only those in `op_list` are
        offered, so use op_list="natpp" to get them all).
      concat: "full" or "loose_end" (see the module docstring).
      pool_bn: put an affine-free BN after each pooling op (the authors'
        supernet does); the extracted network gets the same.
      name: the model's name.

    Example:
      >>> supernet = CellSupernet(num_cells=5, channels=8, input_shape=(16, 16, 3))
      >>> supernet.arch_size
      32
      >>> arch = supernet.genotype_to_arch(nat_keras.cells.PUBLISHED["DARTS"])
    """

    def __init__(
        self,
        *,
        op_list: str | Sequence[str] = "darts",
        num_nodes: int = 4,
        num_cells: int = 8,
        channels: int = 20,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (32, 32, 3),
        stem_multiplier: int = 3,
        space: str = "nat",
        concat: str = "full",
        pool_bn: bool = True,
        name: str | None = None,
    ):
        super().__init__(name=name or "cell_supernet")
        if space not in ops.ACTION_SPACES:
            raise ValueError(f"Unknown action space {space!r}; use one of {list(ops.ACTION_SPACES)}.")
        if concat not in CONCAT_RULES:
            raise ValueError(f"concat must be one of {CONCAT_RULES}, got {concat!r}.")
        if channels < 2 or channels % 2:
            raise ValueError(f"channels must be even and >= 2 (FactorizedReduce halves it), got {channels}.")
        if num_nodes < 1 or num_cells < 1:
            raise ValueError(f"num_nodes and num_cells must be >= 1, got {num_nodes} and {num_cells}.")
        self.op_list = _resolve_op_list(op_list)
        if NULL not in self.op_list or SKIP_CONNECT not in self.op_list:
            raise ValueError(
                f"op_list {list(self.op_list)} needs 'null' and 'skip_connect': NAT's actions produce them."
            )
        self.num_nodes, self.num_cells, self.channels = int(num_nodes), int(num_cells), int(channels)
        self.num_classes, self.image_shape = int(num_classes), tuple(int(d) for d in input_shape)
        self.stem_multiplier, self.space, self.concat, self.pool_bn = stem_multiplier, space, concat, pool_bn
        self._op_index = {op: k for k, op in enumerate(self.op_list)}
        self._entries = 2 * self.num_nodes  # genotype entries per cell
        self._specs = self._cell_specs()

        # Layers are built with explicit shapes (no dummy forward pass): every
        # op of every edge exists from the start, so the optimizer and the
        # checkpoint see all of them before the first step.
        height, width, depth = self.image_shape
        stem_channels = stem_multiplier * self.channels
        self.stem_conv = keras.layers.Conv2D(
            stem_channels, 3, padding="same", use_bias=False, name="stem_conv"
        )
        self.stem_conv.build((None, height, width, depth))
        self.stem_bn = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="stem_bn"
        )
        self.stem_bn.build((None, height, width, stem_channels))
        preprocess: list[Any] = []
        op_layers: list[_NodeOps] = []
        # (cell, node, stride group) -> the _NodeOps of those edges.
        index: dict[tuple[int, int, int], _NodeOps] = {}
        # (spatial, channels) of the states s0, s1 feeding the next cell.
        prev_prev = prev = ((height, width), stem_channels)
        for spec in self._specs:
            c = spec.channels
            if spec.reduction_prev:
                pre0 = FactorizedReduce(c, affine=False, name=f"cell{spec.index}_preprocess0")
            else:
                pre0 = ReLUConvBN(c, 1, affine=False, name=f"cell{spec.index}_preprocess0")
            pre1 = ReLUConvBN(c, 1, affine=False, name=f"cell{spec.index}_preprocess1")
            pre0.build((None, *prev_prev[0], prev_prev[1]))
            pre1.build((None, *prev[0], prev[1]))
            preprocess += [pre0, pre1]
            for node in range(self.num_nodes):
                for g, group in enumerate(spec.groups(node)):
                    last = group.start + group.count - 1
                    layer = _NodeOps(
                        self.op_list,
                        c,
                        group.stride,
                        group.count,
                        pool_bn=pool_bn,
                        name=f"cell{spec.index}_node{node}_from{group.start}to{last}",
                    )
                    layer.build((None, *group.in_hw, c))
                    op_layers.append(layer)
                    index[(spec.index, node, g)] = layer
            prev_prev, prev = prev, (spec.out_hw, c * self.num_nodes)
        # One attribute per layer: Keras 3 tracks layers held in a list, but
        # tf.train.Checkpoint (what SupernetTrainer saves) does not see them.
        for layer in [*preprocess, *op_layers]:
            setattr(self, layer.name, layer)
        self._lists = _Lookup({"preprocess": preprocess, "ops": op_layers})
        self._edge_ops = _Lookup(index)
        self._bodies = _Bodies(pool_bn)
        self.global_pool = keras.layers.GlobalAveragePooling2D(name="global_pool")
        self.classifier = keras.layers.Dense(self.num_classes, name="logits")
        self.classifier.build((None, prev[1]))
        self.built = True

    @property
    def preprocess(self) -> list[Any]:
        """The cells' input layers: cell c's are entries 2c and 2c + 1."""
        return self._lists.entries["preprocess"]

    @property
    def op_layers(self) -> list[_NodeOps]:
        """The packed op weights, one layer per (cell, node, stride group)."""
        return self._lists.entries["ops"]

    def _cell_specs(self) -> list[_CellSpec]:
        reductions = reduction_cells(self.num_cells)
        hw = self.image_shape[:2]
        channels, reduction_prev, specs = self.channels, False, []
        for index in range(self.num_cells):
            reduction = index in reductions
            if reduction:
                channels *= 2
            out_hw = (_half(hw[0]), _half(hw[1])) if reduction else hw
            specs.append(_CellSpec(index, reduction, reduction_prev, channels, hw, out_hw))
            hw, reduction_prev = out_hw, reduction
        return specs

    # -- forward ------------------------------------------------------------

    def call(self, inputs: Any, arch: Any = None, training: Any = None) -> Any:
        if arch is None:
            raise ValueError(
                f"CellSupernet {self.name!r} needs an architecture: call it as supernet(x, arch=arch) "
                "with an arch of sample_arch() or genotype_to_arch()."
            )
        # Raw TF ops below, not keras.ops: this code is traced once per slot
        # and branch, and keras.ops' conveniences add graph ops at each call.
        arch = tf.cast(tf.convert_to_tensor(arch), tf.int32)
        values = tf.unstack(arch, num=self.arch_size)  # one op gives every entry
        training = bool(training)
        x = self.stem_bn(self.stem_conv(inputs), training=training)
        batch = tf.shape(x)[0]
        s0 = s1 = x
        for spec in self._specs:
            offset = (1 if spec.reduction else 0) * 2 * self._entries
            cell_arch = values[offset : offset + 2 * self._entries]
            s0, s1 = s1, self._cell(spec, s0, s1, cell_arch, batch, training)
        return self.classifier(self.global_pool(s1))

    def _cell(self, spec: _CellSpec, s0: Any, s1: Any, arch: list[Any], batch: Any, training: bool) -> Any:
        states = [
            self.preprocess[2 * spec.index](s0, training=training),
            self.preprocess[2 * spec.index + 1](s1, training=training),
        ]
        zeros_shape = tf.stack([batch, *spec.out_hw, spec.channels])
        for node in range(self.num_nodes):
            sources = [arch[4 * node], arch[4 * node + 2]]
            ops_ = [arch[4 * node + 1], arch[4 * node + 3]]
            picked = self._pick(spec, node, states, sources)
            summands = [
                self._slot(spec, node, picked[slot], sources[slot], ops_[slot], zeros_shape, training)
                for slot in range(2)
            ]
            states.append(summands[0] + summands[1])
        nodes = states[2:]
        if self.concat == "loose_end":
            # A node read by any entry of this cell (null ones too) is no loose
            # end: zero it, keeping the channel count fixed (authors' NASCell).
            inputs = tf.stack(arch[0::2])
            ids = np.arange(2, 2 + self.num_nodes, dtype=np.int32)
            used = tf.reduce_any(tf.equal(inputs[:, None], ids[None, :]), axis=0)
            keep = tf.unstack(1.0 - tf.cast(used, nodes[0].dtype), num=self.num_nodes)
            nodes = [n * k for n, k in zip(nodes, keep)]
        return tf.concat(nodes, axis=-1) if len(nodes) > 1 else nodes[0]

    def _pick(self, spec: _CellSpec, node: int, states: list[Any], sources: list[Any]) -> list[list[Any]]:
        """Per slot and stride group: (input tensor, row, one-hot row) of the slot's source.

        One switch per group picks both slots' inputs at once (identities:
        free at run time). Its gradient fills every state it did not pick
        with zeros, so two per-slot switches would write twice as many
        zero tensors, a tenth of a step in the paper's supernet.
        """
        picked: list[list[Any]] = [[], []]
        for group in spec.groups(node):
            members = states[group.start : group.start + group.count]
            rows = [tf.clip_by_value(source - group.start, 0, group.count - 1) for source in sources]
            if group.count == 1:
                inputs = [members[0], members[0]]
            else:
                pairs = [
                    _select(members[a], members[b]) for a in range(group.count) for b in range(group.count)
                ]
                inputs = list(tf.switch_case(rows[0] * group.count + rows[1], pairs))
            for slot in range(2):
                onehot = tf.one_hot(rows[slot], group.count, dtype=inputs[slot].dtype)
                picked[slot].append((inputs[slot], rows[slot], onehot))
        return picked

    def _slot(
        self,
        spec: _CellSpec,
        node: int,
        picked: list[Any],
        source: Any,
        op: Any,
        zeros_shape: Any,
        training: bool,
    ) -> Any:
        """One genotype entry: op `op` on state `source`, and only that op runs.

        `picked` holds, per stride group, the input and the edge's row
        (`_pick`). A one-hot product takes the edge's weights; one switch over
        (group, op) runs the op. In training, each branch also returns its BN
        batch statistics, and the picked edge's moving statistics move after
        the switch (so the op bodies stay pure and shareable).
        """
        groups = spec.groups(node)
        num_ops = len(self.op_list)
        layers = [self._edge_ops.entries[(spec.index, node, g)] for g in range(len(groups))]
        rows = [layer.rows(onehot, training) for layer, (_, _, onehot) in zip(layers, picked)]
        in_group = tf.cast(source >= 2, tf.int32) if len(groups) > 1 else 0
        tracked = [g for g, layer in enumerate(layers) if training and layer.stats]

        def branch(g: int, k: int) -> Callable[[], Any]:
            layer, op_name, x = layers[g], self.op_list[k], picked[g][0]

            def run() -> Any:
                stats = None
                if layer.has_op(op_name):
                    segments = layer.segments(op_name, rows[g])
                    y, stats = self._bodies(op_name, spec.channels, layer.strides, training, x, *segments)
                elif op_name == SKIP_CONNECT:  # stride 1
                    y = x
                else:
                    y = tf.zeros(zeros_shape, x.dtype)
                moved = []
                for h in tracked:
                    moved += layers[h].padded_stats(op_name, stats if h == g else None, x.dtype)
                return (y, *moved)

            return run

        outputs = compat.functional_switch_case(
            in_group * num_ops + op, [branch(g, k) for g in range(len(groups)) for k in range(num_ops)]
        )
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for i, h in enumerate(tracked):
            columns = tf.gather(layers[h].stats_columns(), op)
            if len(groups) > 1:
                columns = tf.logical_and(columns, tf.equal(in_group, h))
            layers[h].update_stats(columns, picked[h][2], outputs[1 + 2 * i], outputs[2 + 2 * i])
        return outputs[0]

    # -- architectures ------------------------------------------------------

    @property
    def arch_size(self) -> int:
        """8 * num_nodes: an (input, op) pair per genotype entry, both cells."""
        return 2 * 2 * self._entries

    def check_arch(self, arch: Any) -> np.ndarray:
        """`arch` as an int32 vector (ValueError on a wrong shape or an index out of range)."""
        arch = super().check_arch(arch)
        pairs = arch.reshape(2, self.num_nodes, 2, 2)
        for cell, which in enumerate(CELLS):
            for node in range(self.num_nodes):
                for slot in range(2):
                    source, op = (int(v) for v in pairs[cell, node, slot])
                    if not 0 <= source < 2 + node or not 0 <= op < len(self.op_list):
                        raise ValueError(
                            f"Supernet {self.name!r}: {which} node {node} slot {slot} has (input, op) = "
                            f"({source}, {op}); input must be in 0..{node + 1} and op in "
                            f"0..{len(self.op_list) - 1} (an index into {list(self.op_list)})."
                        )
        return arch

    def _concat_of(self, entries: Sequence[tuple[str, int]]) -> tuple[int, ...]:
        if self.concat == "full":
            return fully_concat(self.num_nodes)
        return loose_end_concat(entries)

    def genotype_to_arch(self, genotype: Genotype) -> np.ndarray:
        """The arch vector of `genotype`.

        Raises:
          GenotypeError: the genotype has another number of nodes, an op
            outside `op_list`, or a concat list other than this supernet's
            rule gives (`concat`).

        Example:
          >>> arch = supernet.genotype_to_arch(PUBLISHED["DARTS"])
          >>> supernet.arch_to_genotype(arch) == PUBLISHED["DARTS"]
          True
        """
        if genotype.num_nodes != self.num_nodes:
            raise GenotypeError(
                f"Genotype has {genotype.num_nodes} nodes per cell; supernet {self.name!r} has "
                f"{self.num_nodes} (CellSupernet(num_nodes=...))."
            )
        arch: list[int] = []
        for which in CELLS:
            entries, concat = genotype.cell(which)
            expected = self._concat_of(entries)
            if tuple(concat) != expected:
                raise GenotypeError(
                    f"Genotype {which}_concat {list(concat)} is not what supernet {self.name!r} "
                    f"(concat={self.concat!r}) computes for it, {list(expected)}; use a CellSupernet "
                    "with the genotype's concat rule."
                )
            for op, source in entries:
                if op not in self._op_index:
                    raise GenotypeError(
                        f"Genotype {which} cell uses op {op!r}, which is not in supernet {self.name!r}'s "
                        f"op list {list(self.op_list)}."
                    )
                arch += [source, self._op_index[op]]
        return np.asarray(arch, dtype=np.int32)

    def arch_to_genotype(self, arch: Any) -> Genotype:
        """The genotype of an arch vector (concat by this supernet's rule).

        Example:
          >>> supernet.arch_to_genotype(supernet.sample_arch(0)).num_nodes == supernet.num_nodes
          True
        """
        pairs = self.check_arch(arch).reshape(2, -1, 2)
        cells = []
        for cell in range(2):
            entries = [(self.op_list[int(op)], int(source)) for source, op in pairs[cell]]
            cells.append((entries, self._concat_of(entries)))
        return Genotype(cells[0][0], cells[0][1], cells[1][0], cells[1][1])

    def sample_genotype(self, seed: Any = None) -> Genotype:
        """An input architecture beta: inputs and ops uniform per entry, no null."""
        return sample_genotype(
            seed,
            ops=self.op_list,
            num_nodes=self.num_nodes,
            exclude_null=True,
            concat="full" if self.concat == "full" else "loose",
        )

    def sample_arch(self, seed: Any = None) -> np.ndarray:
        """The arch of `sample_genotype(seed)`, as the paper's trainer draws them.

        Example:
          >>> np.array_equal(supernet.sample_arch((0, 5)), supernet.sample_arch((0, 5)))
          True
        """
        return self.genotype_to_arch(self.sample_genotype(seed))

    # -- graphs and plans -----------------------------------------------------

    def _graph_kwargs(self) -> dict[str, Any]:
        return {
            "cell": "both",
            "channels": self.channels,
            "spatial": self.image_shape[0],
            "affine": False,
            "name": GRAPH_NAME,
        }

    def graph_of(self, genotype: Genotype) -> ArchGraph:
        """The ArchGraph a policy transforms for input `genotype`.

        Both cells in one graph (`genotype_to_arch_graph(cell="both")`, edge
        ids "normal/node{i}_edge{slot}"), costed for the first cells (C
        channels, input resolution, affine-free BN). Each edge offers only the
        actions of `space` whose result is in `op_list`, so every plan
        drawn from it runs on this supernet.

        Example:
          >>> graph = supernet.graph_of(PUBLISHED["DARTS"])
          >>> supernet.arch_of(graph, TransformPlan.keep_all(graph))  # == genotype_to_arch(DARTS)
        """
        self.genotype_to_arch(genotype)  # raises if this supernet cannot run it
        graph = genotype_to_arch_graph(genotype, **self._graph_kwargs())
        allowed = set(ops.ACTION_SPACES[self.space])
        edges = []
        for edge in graph.edges:
            if edge.kind in (UNIT, PLACEHOLDER):
                actions = tuple(
                    a
                    for a in edge.actions
                    if a == ops.KEEP or (a in allowed and _result_op(edge.kind, edge.op, a) in self._op_index)
                )
                edge = dataclasses.replace(edge, actions=actions)
            edges.append(edge)
        return dataclasses.replace(graph, edges=tuple(edges))

    def genotype_of(self, graph: ArchGraph) -> Genotype:
        """The genotype of a graph of `graph_of` / `input_graphs` (read back from it).

        Raises:
          ValueError: the graph was not made for this supernet.
        """
        genotype = arch_graph_to_genotype(graph)
        if genotype_to_arch_graph(genotype, **self._graph_kwargs()).fingerprint() != graph.fingerprint():
            raise ValueError(
                f"Graph {graph.name!r} was not made by supernet {self.name!r} (other channels, input "
                "size or name); make it with supernet.graph_of(genotype) or supernet.input_graphs()."
            )
        return genotype

    def input_graphs(self, rng: Any, count: int) -> list[ArchGraph]:
        """`count` input architectures beta (`sample_genotype`), as graphs.

        Args:
          rng: a numpy Generator (advanced in place) or a seed.
          count: how many.

        Example:
          >>> graphs = supernet.input_graphs(np.random.default_rng(0), 2)
          >>> supernet.genotype_of(graphs[0]).num_nodes
          4
        """
        rng = np.random.default_rng(rng)
        return [self.graph_of(self.sample_genotype(rng)) for _ in range(count)]

    def arch_of(self, graph: ArchGraph, plan: TransformPlan | Mapping[str, str]) -> np.ndarray:
        """The arch that runs `plan` applied to input `graph`.

        The graph carries its genotype (`arch_graph_to_genotype`), so graphs
        survive JSON round trips and resumed runs; no look-up table is kept.

        Raises:
          ValueError: the graph is not this supernet's.
          PlanError: the plan was made for another graph or has illegal actions.
          GenotypeError: the plan makes an op outside `op_list`.

        Example:
          >>> arch = supernet.arch_of(graph, {"normal/node1_edge0": "skip"})
        """
        genotype = self.genotype_of(graph)
        changed = apply_plan_to_genotype(genotype, plan, **self._graph_kwargs())
        return self.genotype_to_arch(changed)

    # -- extraction -----------------------------------------------------------

    def extract(self, arch: Any) -> keras.Model:
        """The standalone network of `arch`, carrying this supernet's weights.

        `build_network(arch_to_genotype(arch), affine=False)` (pools followed
        by an affine-free BN when `pool_bn`), whose inference output equals
        `self(x, arch=arch, training=False)`. Weights go across by (cell,
        node, slot, op): slot s of node i reading input j with op k gets the
        weights of this supernet's op k on edge j -> i; with loose-end
        concat, the layers after a cell get the rows of its loose ends.

        Example:
          >>> model = supernet.extract(supernet.sample_arch(0))
          >>> model.fit(...)   # fine-tune from the shared weights
        """
        genotype = self.arch_to_genotype(arch)
        model = build_network(
            genotype,
            num_classes=self.num_classes,
            input_shape=self.image_shape,
            channels=self.channels,
            num_cells=self.num_cells,
            stem_multiplier=self.stem_multiplier,
            affine=False,
            name=f"{self.name}_extract",
        )
        if self.pool_bn:
            model = _with_pool_bn(model)
        present = {layer.name for layer in model.layers}
        _copy(self.stem_conv, model.get_layer("stem_conv"))
        _copy(self.stem_bn, model.get_layer("stem_bn"))
        # Channels of each cell's output that the standalone network keeps.
        kept: list[np.ndarray | None] = [None, None]  # s0, s1 (the stem: all)
        for spec in self._specs:
            which = "reduce" if spec.reduction else "normal"
            entries, concat = genotype.cell(which)
            for p, rows in enumerate(kept):
                name = f"cell{spec.index}_preprocess{p}"
                if name in present:
                    _copy(self.preprocess[2 * spec.index + p], model.get_layer(name), rows=rows)
            for position, (op, source) in enumerate(entries):
                node, slot = divmod(position, 2)
                groups = spec.groups(node)
                g = next(i for i, group in enumerate(groups) if source < group.start + group.count)
                layer = self._edge_ops.entries[(spec.index, node, g)]
                if not layer.has_op(op):
                    continue
                values = layer.row_weights(op, source - groups[g].start)
                target = model.get_layer(f"cell{spec.index}_node{node}_edge{slot}_{op}")
                # Weight paths are "<layer>/<sublayer>/<name>"; the keys drop "<layer>/".
                target.set_weights([values[v.path.split("/", 1)[1]] for v in target.weights])
            rows = None
            if tuple(concat) != fully_concat(self.num_nodes):
                c = spec.channels
                rows = np.concatenate([np.arange((n - 2) * c, (n - 1) * c) for n in concat])
            kept = [kept[1], rows]
        _copy(self.classifier, model.get_layer("logits"), rows=kept[1])
        return model


def _select(first: Any, second: Any) -> Callable[[], tuple[Any, Any]]:
    return lambda: (first, second)


def _result_op(kind: str, op: str, action: str) -> str:
    """The cell op an edge carries after `action`."""
    if action == ops.KEEP:
        return NULL if kind == PLACEHOLDER else from_vocab(op)
    if action == ops.SKIP:
        return SKIP_CONNECT
    if action == ops.NONE:
        return NULL
    return action  # NAT++ targets are cell op names


def _with_pool_bn(model: keras.Model) -> keras.Model:
    """`model` with an affine-free BN after every pool, as the supernet's pools have."""
    if not any(isinstance(layer, PoolBN) for layer in model.layers):
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, PoolBN):
            config = {**config, "batch_norm": True, "affine": False}
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def _copy(source: keras.layers.Layer, target: keras.layers.Layer, rows: np.ndarray | None = None) -> None:
    """Copy weights between layers of the same structure.

    `rows` selects input channels of the target, where the source reads all
    of a loose-end cell's (zero-filled) channels: axis 2 of 1x1 conv kernels,
    axis 0 of dense kernels.
    """
    values = source.get_weights()
    if rows is not None:
        values = [v[:, :, rows, :] if v.ndim == 4 else v[rows] if v.ndim == 2 else v for v in values]
    target.set_weights(values)


__all__ = ["CONCAT_RULES", "CellSupernet"]
