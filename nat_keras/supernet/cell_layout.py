"""The static layout of the cell supernet: its cells, their sizes, and which edges share weights.

The network is DARTS' CIFAR network (`nat_keras.cells.build_network`):
`num_cells` cells, reductions at 1/3 and 2/3 of the depth (`reduction_cells`),
the channels doubling and the spatial size halving there. Inside a cell,
node i (0..B-1) reads any of its 2 + i earlier states; the edges into a node
that share a stride (a reduction cell's two inputs: stride 2; the earlier
nodes: stride 1) keep their weights in one packed layer (see
`packed_weights`), so a node has one or two stride groups.

Example:
  >>> specs = layout_cells(num_cells=3, channels=4, image_hw=(8, 8))
  >>> [spec.reduction for spec in specs], specs[1].out_hw
  ([False, True, True], (4, 4))
  >>> [(g.start, g.count, g.stride) for g in specs[1].groups(2)]
  [(0, 2, 2), (2, 2, 1)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from nat_keras.cells.network import reduction_cells
from nat_keras.cells.operations import ALL_OPS, OP_LISTS

_OP_LIST_ALIASES = {"natpp": "nat++"}


@dataclasses.dataclass(frozen=True)
class StrideGroup:
    """Inputs of one node that share a stride: states start .. start + count - 1."""

    start: int
    count: int
    stride: int
    in_hw: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """Static facts of one cell of the network."""

    index: int
    reduction: bool
    reduction_prev: bool
    channels: int
    in_hw: tuple[int, int]  # spatial size of the (preprocessed) cell inputs
    out_hw: tuple[int, int]  # spatial size of the nodes and the output

    def groups(self, node: int) -> tuple[StrideGroup, ...]:
        """The inputs of `node` by stride: a reduction cell's inputs (stride 2), then the nodes.

        Example:
          >>> [(g.start, g.count) for g in CellSpec(0, False, False, 4, (8, 8), (8, 8)).groups(1)]
          [(0, 3)]
        """
        if not self.reduction:
            return (StrideGroup(0, 2 + node, 1, self.in_hw),)
        inputs = StrideGroup(0, 2, 2, self.in_hw)
        return (inputs, StrideGroup(2, node, 1, self.out_hw)) if node else (inputs,)


def _half(size: int) -> int:
    return (size + 1) // 2  # "same" stride-2 convs and FactorizedReduce round up


def layout_cells(num_cells: int, channels: int, image_hw: tuple[int, int]) -> list[CellSpec]:
    """The cells of the network, in order.

    Args:
      num_cells: cells in all.
      channels: C of the first cells (doubled at each reduction).
      image_hw: (height, width) of the images (the stem keeps them).

    Example:
      >>> [spec.channels for spec in layout_cells(8, 20, (32, 32))]
      [20, 20, 40, 40, 40, 80, 80, 80]
    """
    reductions = reduction_cells(num_cells)
    hw = tuple(image_hw)
    reduction_prev, specs = False, []
    for index in range(num_cells):
        reduction = index in reductions
        if reduction:
            channels *= 2
        out_hw = (_half(hw[0]), _half(hw[1])) if reduction else hw
        specs.append(CellSpec(index, reduction, reduction_prev, channels, hw, out_hw))
        hw, reduction_prev = out_hw, reduction
    return specs


def resolve_op_list(op_list: str | Sequence[str]) -> tuple[str, ...]:
    """The cell ops an `op_list` argument names: a list's name, or the ops themselves.

    Example:
      >>> resolve_op_list("natpp") == OP_LISTS["nat++"]
      True
    """
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


__all__ = ["CellSpec", "StrideGroup", "layout_cells", "resolve_op_list"]
