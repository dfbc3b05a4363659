"""The DARTS CIFAR network of a genotype, as a Keras 3 functional model.

The network of the authors' `NetworkCIFAR` (guoyongcs/NAT evaluate_model.py,
from DARTS): a 3x3 conv + BN stem of `stem_multiplier * channels` channels,
`num_cells` cells with reduction cells at 1/3 and 2/3 of the depth (where the
channels double), global average pooling and a dense classifier. Each cell
preprocesses its inputs to C channels (c_{k-2} by a FactorizedReduce when the
previous cell reduced, by a 1x1 ReLUConvBN otherwise; c_{k-1} by a 1x1
ReLUConvBN), sums two op outputs per node, and concatenates the nodes of its
concat list. Ops on edges from the cell inputs of a reduction cell have
stride 2.

What differs from the authors' code, on purpose:

- `null` entries add nothing, so they are not built (the authors add
  `x * 0`); a node whose entries are all `null` is a `Zero` layer. Inputs or
  nodes that reach no output are left out of the model, so a hand-made cell's
  c_{k-2}, fed only to null edges, has no preprocessing layer.
- Stride-1 `skip_connect` edges pass the tensor itself (no layer), so an
  encoder sees a plain shortcut.
- The auxiliary head is a second model output, computed in inference too
  (ignore it there); the authors compute it in training only.
- Drop-path layers exist only when `drop_path_rate > 0`; their rate is fixed
  at build time (DARTS raises it linearly over the epochs: rebuild, or set
  each `DropPath.rate` before compiling).

Layer names are deterministic: "stem_conv", "cell3_preprocess0",
"cell3_node1_edge0_sep_conv_3x3", "cell3_node1_edge0_drop_path",
"cell3_node1_add", "cell3_concat", "aux_...", "global_pool", "logits".

Example:
  >>> model = build_network(PUBLISHED["DARTS"], channels=16, num_cells=8)
  >>> model.output_shape
  (None, 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from nat_keras.cells.genotype import Entry, Genotype
from nat_keras.cells.operations import (
    NULL,
    SKIP_CONNECT,
    DropPath,
    FactorizedReduce,
    ReLUConvBN,
    Zero,
    make_op,
)

AUX_MIN_SPATIAL = 8  # the auxiliary head pools 5x5 / 3 and then convolves 2x2


def reduction_cells(num_cells: int) -> tuple[int, ...]:
    """Indices of the reduction cells: 1/3 and 2/3 of the depth, as DARTS.

    Example:
      >>> reduction_cells(8), reduction_cells(20)
      ((2, 5), (6, 13))
    """
    return tuple(sorted({num_cells // 3, 2 * num_cells // 3}))


class _Cell:
    """Builds one cell's layers on two input tensors (a helper, not a layer)."""

    def __init__(
        self,
        index: int,
        entries: Sequence[Entry],
        concat: Sequence[int],
        *,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        drop_path_rate: float,
        affine: bool,
    ):
        self.prefix = f"cell{index}"
        self.entries, self.concat = list(entries), list(concat)
        self.channels, self.reduction, self.reduction_prev = channels, reduction, reduction_prev
        self.drop_path_rate, self.affine = drop_path_rate, affine

    def __call__(self, s0: Any, s1: Any) -> Any:
        raw = {0: s0, 1: s1}
        states: dict[int, Any] = {}

        def state(index: int) -> Any:
            # Inputs are preprocessed on first use only: an input that feeds
            # nothing but null edges gets no layer.
            if index not in states:
                if index == 0 and self.reduction_prev:
                    layer = FactorizedReduce(
                        self.channels, affine=self.affine, name=f"{self.prefix}_preprocess0"
                    )
                else:
                    layer = ReLUConvBN(
                        self.channels, 1, affine=self.affine, name=f"{self.prefix}_preprocess{index}"
                    )
                states[index] = layer(raw[index])
            return states[index]

        for node in range(len(self.entries) // 2):
            pair = self.entries[2 * node : 2 * node + 2]
            summands = []
            for slot, (op, index) in enumerate(pair):
                if op == NULL:
                    continue
                summands.append(self._edge(node, slot, op, index, state(index)))
            if not summands:
                op, index = pair[0]
                stride = 2 if self.reduction and index < 2 else 1
                summands.append(Zero(strides=stride, name=f"{self.prefix}_node{node}_zero")(state(index)))
            if len(summands) == 1:
                states[2 + node] = summands[0]
            else:
                states[2 + node] = keras.layers.Add(name=f"{self.prefix}_node{node}_add")(summands)
        outputs = [states[i] for i in self.concat]
        if len(outputs) == 1:
            return outputs[0]
        return keras.layers.Concatenate(name=f"{self.prefix}_concat")(outputs)

    def _edge(self, node: int, slot: int, op: str, index: int, x: Any) -> Any:
        stride = 2 if self.reduction and index < 2 else 1
        if op == SKIP_CONNECT and stride == 1:
            return x  # DARTS applies no drop-path to identities either
        base = f"{self.prefix}_node{node}_edge{slot}"
        layer = make_op(op, self.channels, stride, affine=self.affine, name=f"{base}_{op}")
        y = layer(x)
        if self.drop_path_rate > 0:
            y = DropPath(self.drop_path_rate, name=f"{base}_drop_path")(y)
        return y


def _auxiliary_head(x: Any, num_classes: int) -> Any:
    """DARTS' CIFAR auxiliary head (assumes an 8x8 input, as at 2/3 depth)."""
    if x.shape[1] is not None and x.shape[1] < AUX_MIN_SPATIAL:
        raise ValueError(
            f"The auxiliary head needs a feature map of at least {AUX_MIN_SPATIAL}x{AUX_MIN_SPATIAL} at "
            f"2/3 depth; this network has {x.shape[1]}x{x.shape[2]}. Use a larger input_shape or "
            "auxiliary=False."
        )
    x = keras.layers.ReLU(name="aux_relu0")(x)
    x = keras.layers.AveragePooling2D(5, strides=3, padding="valid", name="aux_pool")(x)
    x = keras.layers.Conv2D(128, 1, use_bias=False, name="aux_conv1")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="aux_bn1")(x)
    x = keras.layers.ReLU(name="aux_relu1")(x)
    x = keras.layers.Conv2D(768, 2, use_bias=False, name="aux_conv2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="aux_bn2")(x)
    x = keras.layers.ReLU(name="aux_relu2")(x)
    x = keras.layers.Flatten(name="aux_flatten")(x)
    return keras.layers.Dense(num_classes, name="aux_logits")(x)


def build_network(
    genotype: Genotype,
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    channels: int = 20,
    num_cells: int = 8,
    stem_multiplier: int = 3,
    auxiliary: bool = False,
    drop_path_rate: float = 0.0,
    affine: bool = True,
    name: str | None = None,
) -> keras.Model:
    """The DARTS CIFAR network of `genotype` (see the module docstring).

    Args:
      genotype: the normal and reduction cells.
      num_classes: classifier outputs (logits, no softmax).
      input_shape: (height, width, channels) of the images.
      channels: C of the first cells (doubled at each reduction; even, since
        FactorizedReduce halves it).
      num_cells: cells in all (the paper: 20 for the final networks, 8 for
        the supernet).
      stem_multiplier: the stem has stem_multiplier * channels channels.
      auxiliary: add DARTS' auxiliary head at 2/3 depth as a second output.
      drop_path_rate: DARTS' drop-path probability on non-identity ops.
      affine: BN with scale and offset inside the cells (the stem and the
        auxiliary head always have them, as in the authors' code).
      name: the model's name (default "nat_cell_network").

    Returns:
      A functional keras.Model: images -> logits, or [logits, aux_logits]
      with `auxiliary`.

    Example:
      >>> model = build_network(PUBLISHED["ENAS"], channels=8, num_cells=5, auxiliary=True)
      >>> [tuple(s) for s in model.output_shape]
      [(None, 10), (None, 10)]
    """
    if channels < 2 or channels % 2:
        raise ValueError(f"channels must be even and >= 2 (FactorizedReduce halves it), got {channels}.")
    if num_cells < 1:
        raise ValueError(f"num_cells must be >= 1, got {num_cells}.")
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Conv2D(stem_multiplier * channels, 3, padding="same", use_bias=False, name="stem_conv")(
        inputs
    )
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="stem_bn")(x)
    reductions = reduction_cells(num_cells)
    aux_cell = 2 * num_cells // 3
    s0 = s1 = x
    c_curr, reduction_prev, aux_logits = channels, False, None
    for index in range(num_cells):
        reduction = index in reductions
        if reduction:
            c_curr *= 2
        entries, concat = genotype.cell("reduce" if reduction else "normal")
        cell = _Cell(
            index,
            entries,
            concat,
            channels=c_curr,
            reduction=reduction,
            reduction_prev=reduction_prev,
            drop_path_rate=drop_path_rate,
            affine=affine,
        )
        s0, s1 = s1, cell(s0, s1)
        reduction_prev = reduction
        if auxiliary and index == aux_cell:
            aux_logits = _auxiliary_head(s1, num_classes)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(s1)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    outputs: Any = [logits, aux_logits] if auxiliary else logits
    return keras.Model(inputs, outputs, name=name or "nat_cell_network")


__all__ = ["build_network", "reduction_cells"]
