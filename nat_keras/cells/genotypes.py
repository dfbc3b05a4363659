"""Cell genotypes as data, the published cells, and their ArchGraph form.

A `Genotype` is DARTS' description of a cell network: a normal and a
reduction cell, each a list of (op, input_index) pairs, two per intermediate
node (pairs 2i and 2i + 1 feed node i + 2), and the nodes concatenated into
the cell's output. Index 0 is the cell input c_{k-2}, 1 is c_{k-1}, 2 + i is
intermediate node i. The authors' genotypes (guoyongcs/NAT, guoyongcs/NATv2)
write triples (op, input, node); `Genotype.from_triples` reads those.

`PUBLISHED` holds the cells of the authors' `genotypes.py` files, before and
after NAT (v1, "NAT_") and NAT++ ("NATv2_"), under the authors' names.

`genotype_to_arch_graph` turns a cell into NAT's DAG (`nat_keras.ArchGraph`)
so that the policy and plans work on cells as on any encoded model:

- nodes: the cell inputs "c_{k-2}" and "c_{k-1}" (merge "input"), the
  intermediate nodes "node0".."node{B-1}" (merge "sum") and the cell output
  "c_{k}" (merge "concat"), fed by protected identity edges from the
  concatenated nodes in concat order;
- edges: one per genotype entry, with id "node{i}_edge{j}" (j = 0, 1, the
  entry's position; the id does not depend on the op, so a plan's keys stay
  meaningful across genotypes). A `null` entry is a placeholder edge (kind
  "placeholder", op "null", actions keep / skip: NAT's N -> S adds a skip
  there); every other entry is a unit edge whose op is the op's
  `nat_keras.ops` name (`skip_connect` is "skip", sized ops keep their
  names), with stride 2 on the edges from the inputs of a reduction cell, and
  params / MACs of the `operations` layers (`op_cost`).

Legal actions of a unit edge: keep; skip (O -> S) unless it is a skip
already; none (O -> N: every cell node has a second input edge, which is the
encoder's rule too; a plan nulling both inputs of a node makes it a zero
node, which `apply_plan_to_genotype` allows as the authors' code does, see
their NAT_R2); and NAT++'s cheaper ops (`nat_keras.ops.cheaper_targets`).
Like the authors' code these ignore cost (a skip on a stride-2 edge is a
FactorizedReduce, which may cost more than a pooling): pass
`only_cheaper=True` to keep only actions costing no more params and MACs
than the edge's op, or enforce a `nat_keras.Budget` on the whole plan.

Example:
  >>> g = PUBLISHED["DARTS"]
  >>> graph = genotype_to_arch_graph(g, cell="both")
  >>> arch_graph_to_genotype(graph) == g
  True
  >>> Genotype.from_json(g.to_json()) == g
  True
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nat_keras import ops
from nat_keras.cells.operations import ALL_OPS, NULL, SKIP_CONNECT, from_vocab, op_cost, to_vocab
from nat_keras.errors import NatKerasError, PlanError
from nat_keras.graph.arch_graph import (
    IDENTITY,
    MERGE_CONCAT,
    MERGE_INPUT,
    MERGE_SUM,
    PLACEHOLDER,
    UNIT,
    ArchGraph,
    Edge,
    Node,
)

Entry = tuple[str, int]
CELLS = ("normal", "reduce")
INPUT_IDS = ("c_{k-2}", "c_{k-1}")
OUTPUT_ID = "c_{k}"
_EDGE_ID = re.compile(r"^(?:(normal|reduce)/)?node(\d+)_edge([01])$")


class GenotypeError(NatKerasError, ValueError):
    """A genotype (or a cell graph) is malformed."""


# ---------------------------------------------------------------------------
# Concat rules.


def fully_concat(num_nodes: int) -> tuple[int, ...]:
    """DARTS' rule: the cell output concatenates every intermediate node.

    Example:
      >>> fully_concat(4)
      (2, 3, 4, 5)
    """
    return tuple(range(2, 2 + num_nodes))


def loose_end_concat(cell: Sequence[Entry], *, ignore_null: bool = False) -> tuple[int, ...]:
    """ENAS' rule: the cell output concatenates the nodes no other node uses.

    Args:
      cell: (op, input_index) pairs, two per node.
      ignore_null: whether a `null` entry does not count as a use. The
        authors' supernet counts every entry (the default here).

    Example:
      >>> loose_end_concat(PUBLISHED["ENAS"].reduce)
      (2, 3, 6)
    """
    used = {index for op, index in cell if not (ignore_null and op == NULL)}
    return tuple(node for node in range(2, 2 + len(cell) // 2) if node not in used)


# ---------------------------------------------------------------------------
# The genotype.


def _entries(cell: Iterable[Any], what: str) -> tuple[Entry, ...]:
    entries = []
    for entry in cell:
        if len(entry) != 2:
            raise GenotypeError(f"Genotype {what}: entry {entry!r} is not an (op, input_index) pair.")
        op, index = entry
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise GenotypeError(f"Genotype {what}: entry {entry!r} has a non-integer input index.")
        entries.append((str(op), int(index)))
    return tuple(entries)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A DARTS-style cell network: a normal and a reduction cell.

    Attributes:
      normal: (op, input_index) pairs of the normal cell, two per node; pairs
        2i and 2i + 1 feed node i + 2; index 0 is c_{k-2}, 1 is c_{k-1}.
      normal_concat: node indices (2..B+1) concatenated into the output.
      reduce / reduce_concat: the same for the reduction cell.

    Both cells have the same number of nodes B. Lists are stored as tuples,
    so genotypes are hashable and compare by value.

    Example:
      >>> g = Genotype(normal=[("skip_connect", 0), ("sep_conv_3x3", 1)], normal_concat=[2],
      ...              reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)], reduce_concat=[2])
      >>> g.num_nodes
      1
    """

    normal: tuple[Entry, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Entry, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        for cell in CELLS:
            object.__setattr__(self, cell, _entries(getattr(self, cell), cell))
            object.__setattr__(self, f"{cell}_concat", tuple(int(i) for i in getattr(self, f"{cell}_concat")))
        self.validate()

    # -- checks ---------------------------------------------------------------

    def validate(self) -> None:
        """Raise GenotypeError if a cell is malformed.

        Checks: two entries per node, the same number of nodes in both cells,
        known ops (`operations.ALL_OPS`), input indices below 2 + the node's
        index, and concat lists of distinct intermediate nodes.
        """
        for cell in CELLS:
            entries, concat = getattr(self, cell), getattr(self, f"{cell}_concat")
            if not entries or len(entries) % 2:
                raise GenotypeError(
                    f"Genotype {cell} cell has {len(entries)} entries; it needs two per node."
                )
            for position, (op, index) in enumerate(entries):
                node = position // 2
                if op not in ALL_OPS:
                    raise GenotypeError(
                        f"Genotype {cell} cell, node {node + 2}: unknown op {op!r}; ops are {list(ALL_OPS)}."
                    )
                if not 0 <= index < 2 + node:
                    raise GenotypeError(
                        f"Genotype {cell} cell, node {node + 2}: input index {index} must be in "
                        f"0..{node + 1} (the cell inputs and earlier nodes)."
                    )
            nodes = range(2, 2 + len(entries) // 2)
            if not concat or len(set(concat)) != len(concat) or any(i not in nodes for i in concat):
                raise GenotypeError(
                    f"Genotype {cell}_concat {list(concat)} must list distinct nodes out of {list(nodes)}."
                )
        sizes = {len(self.normal), len(self.reduce)}
        if len(sizes) != 1:
            raise GenotypeError(
                f"Genotype cells differ in size ({len(self.normal)} normal vs {len(self.reduce)} "
                "reduce entries); both cells need the same number of nodes."
            )

    @property
    def num_nodes(self) -> int:
        """B, the number of intermediate nodes of each cell."""
        return len(self.normal) // 2

    def cell(self, which: str) -> tuple[tuple[Entry, ...], tuple[int, ...]]:
        """(entries, concat) of the "normal" or the "reduce" cell."""
        if which not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {which!r}.")
        return getattr(self, which), getattr(self, f"{which}_concat")

    def ops_used(self) -> tuple[str, ...]:
        """The distinct ops of both cells, in first-use order."""
        return tuple(dict.fromkeys(op for op, _ in (*self.normal, *self.reduce)))

    def uses_only(self, op_list: Iterable[str]) -> bool:
        """Whether every op of the genotype is in `op_list` (e.g. DARTS_OPS)."""
        allowed = set(op_list)
        return all(op in allowed for op in self.ops_used())

    def replace_cell(
        self, which: str, entries: Sequence[Entry], concat: Sequence[int] | None = None
    ) -> Genotype:
        """A copy with one cell's entries (and optionally concat) replaced."""
        _, old_concat = self.cell(which)
        return dataclasses.replace(
            self,
            **{which: tuple(entries), f"{which}_concat": tuple(old_concat if concat is None else concat)},
        )

    # -- the authors' format -----------------------------------------------------

    @classmethod
    def from_triples(
        cls,
        normal: Iterable[tuple[str, int, int]],
        normal_concat: Iterable[int],
        reduce: Iterable[tuple[str, int, int]],
        reduce_concat: Iterable[int],
    ) -> Genotype:
        """A genotype from the authors' (op, input, node) triples.

        Triples must come sorted by node, two per node, as in their code.

        Example:
          >>> Genotype.from_triples([("conv_3x3", 1, 2), ("null", 0, 2)], [2],
          ...                       [("conv_3x3", 1, 2), ("null", 0, 2)], [2]).normal
          (('conv_3x3', 1), ('null', 0))
        """
        cells = {}
        for which, triples in (("normal", normal), ("reduce", reduce)):
            pairs = []
            for position, (op, index, node) in enumerate(triples):
                if node != 2 + position // 2:
                    raise GenotypeError(
                        f"{which} triple {(op, index, node)!r} at position {position} should feed node "
                        f"{2 + position // 2}: triples must be sorted by node, two per node."
                    )
                pairs.append((op, index))
            cells[which] = pairs
        return cls(cells["normal"], tuple(normal_concat), cells["reduce"], tuple(reduce_concat))

    def to_triples(self, which: str) -> list[tuple[str, int, int]]:
        """One cell as the authors' (op, input, node) triples."""
        entries, _ = self.cell(which)
        return [(op, index, 2 + position // 2) for position, (op, index) in enumerate(entries)]

    # -- serialisation ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "normal": [list(e) for e in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(e) for e in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """A genotype from `to_dict` output (pairs) or the authors' triples."""
        try:
            cells = {cell: [tuple(e) for e in data[cell]] for cell in CELLS}
            concats = {cell: list(data[f"{cell}_concat"]) for cell in CELLS}
        except KeyError as missing:
            raise GenotypeError(f"Genotype data lacks the field {missing}.") from None
        if all(len(e) == 3 for cell in CELLS for e in cells[cell]):
            return cls.from_triples(cells["normal"], concats["normal"], cells["reduce"], concats["reduce"])
        return cls(cells["normal"], concats["normal"], cells["reduce"], concats["reduce"])

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        return cls.from_dict(json.loads(text))


# ---------------------------------------------------------------------------
# The published cells, transcribed from the authors' genotypes.py files:
# guoyongcs/NAT/genotypes.py (NAT v1) and guoyongcs/NATv2/genotypes.py (NAT++),
# as (op, input, node) triples exactly as written there. The two files agree
# on every cell they share. NAONet (NATv2) is left out: it uses ops outside
# the op lists (conv_1x3_3x1, conv_1x7_7x1, avg_pool_2x2, max_pool_2x2).

_SOURCES: dict[str, tuple[list, list, list, list]] = {
    # DARTS (V2) and NAT's transformation of it.
    "DARTS": (
        [("sep_conv_3x3", 0, 2), ("sep_conv_3x3", 1, 2), ("sep_conv_3x3", 0, 3), ("sep_conv_3x3", 1, 3),
         ("sep_conv_3x3", 1, 4), ("skip_connect", 0, 4), ("skip_connect", 0, 5), ("dil_conv_3x3", 2, 5)],
        [2, 3, 4, 5],
        [("max_pool_3x3", 0, 2), ("max_pool_3x3", 1, 2), ("skip_connect", 2, 3), ("max_pool_3x3", 1, 3),
         ("max_pool_3x3", 0, 4), ("skip_connect", 2, 4), ("skip_connect", 2, 5), ("max_pool_3x3", 1, 5)],
        [2, 3, 4, 5],
    ),
    "NAT_DARTS": (
        [("sep_conv_3x3", 0, 2), ("sep_conv_3x3", 1, 2), ("skip_connect", 0, 3), ("sep_conv_3x3", 1, 3),
         ("skip_connect", 1, 4), ("skip_connect", 0, 4), ("skip_connect", 0, 5), ("dil_conv_3x3", 2, 5)],
        [2, 3, 4, 5],
        [("max_pool_3x3", 0, 2), ("skip_connect", 1, 2), ("skip_connect", 2, 3), ("skip_connect", 1, 3),
         ("max_pool_3x3", 0, 4), ("null", 2, 4), ("skip_connect", 2, 5), ("max_pool_3x3", 1, 5)],
        [2, 3, 4, 5],
    ),
    "NATv2_DARTS": (
        [("sep_conv_3x3", 0, 2), ("sep_conv_3x3", 1, 2), ("null", 0, 3), ("skip_connect", 1, 3),
         ("dil_conv_3x3", 1, 4), ("skip_connect", 0, 4), ("skip_connect", 0, 5), ("dil_conv_3x3", 2, 5)],
        [2, 3, 4, 5],
        [("avg_pool_3x3", 0, 2), ("max_pool_3x3", 1, 2), ("skip_connect", 2, 3), ("skip_connect", 1, 3),
         ("avg_pool_3x3", 0, 4), ("skip_connect", 2, 4), ("skip_connect", 2, 5), ("max_pool_3x3", 1, 5)],
        [2, 3, 4, 5],
    ),
    # ENAS (loose-end concat).
    "ENAS": (
        [("sep_conv_3x3", 1, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("sep_conv_5x5", 1, 3),
         ("avg_pool_3x3", 0, 4), ("sep_conv_3x3", 1, 4), ("sep_conv_3x3", 0, 5), ("avg_pool_3x3", 1, 5),
         ("avg_pool_3x3", 0, 6), ("sep_conv_5x5", 1, 6)],
        [2, 3, 4, 5, 6],
        [("sep_conv_5x5", 0, 2), ("avg_pool_3x3", 1, 2), ("sep_conv_3x3", 1, 3), ("avg_pool_3x3", 1, 3),
         ("avg_pool_3x3", 1, 4), ("sep_conv_3x3", 1, 4), ("avg_pool_3x3", 1, 5), ("sep_conv_5x5", 4, 5),
         ("sep_conv_5x5", 0, 6), ("sep_conv_3x3", 5, 6)],
        [2, 3, 6],
    ),
    "NAT_ENAS": (
        [("sep_conv_3x3", 1, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("sep_conv_5x5", 1, 3),
         ("null", 0, 4), ("sep_conv_3x3", 1, 4), ("sep_conv_3x3", 0, 5), ("avg_pool_3x3", 1, 5),
         ("avg_pool_3x3", 0, 6), ("sep_conv_5x5", 1, 6)],
        [2, 3, 4, 5, 6],
        [("sep_conv_5x5", 0, 2), ("avg_pool_3x3", 1, 2), ("sep_conv_3x3", 1, 3), ("avg_pool_3x3", 1, 3),
         ("avg_pool_3x3", 1, 4), ("sep_conv_3x3", 1, 4), ("null", 1, 5), ("sep_conv_5x5", 4, 5),
         ("sep_conv_5x5", 0, 6), ("sep_conv_3x3", 5, 6)],
        [2, 3, 6],
    ),
    "NATv2_ENAS": (
        [("sep_conv_3x3", 1, 2), ("null", 1, 2), ("skip_connect", 0, 3), ("sep_conv_5x5", 1, 3),
         ("avg_pool_3x3", 0, 4), ("sep_conv_3x3", 1, 4), ("sep_conv_3x3", 0, 5), ("avg_pool_3x3", 1, 5),
         ("skip_connect", 0, 6), ("sep_conv_3x3", 1, 6)],
        [2, 3, 4, 5, 6],
        [("sep_conv_3x3", 0, 2), ("avg_pool_3x3", 1, 2), ("sep_conv_3x3", 1, 3), ("avg_pool_3x3", 1, 3),
         ("avg_pool_3x3", 1, 4), ("avg_pool_3x3", 1, 4), ("avg_pool_3x3", 1, 5), ("sep_conv_5x5", 4, 5),
         ("sep_conv_5x5", 0, 6), ("max_pool_3x3", 5, 6)],
        [2, 3, 6],
    ),
    # Hand-made cells: one block as a cell whose output is its last node;
    # the null entries from c_{k-2} are where NAT may add skips. "We make the
    # normal cell and the reduction cell the same for VGG and ResBlock" (the
    # authors' comment; VGG's reduction cell still ends in a max pool).
    "ResBlock": (
        [("null", 0, 2), ("skip_connect", 1, 2), ("null", 0, 3), ("conv_3x3", 2, 3), ("null", 0, 4),
         ("conv_3x3", 3, 4), ("skip_connect", 2, 5), ("skip_connect", 4, 5)],
        [5],
        [("null", 0, 2), ("skip_connect", 1, 2), ("null", 0, 3), ("conv_3x3", 2, 3), ("null", 0, 4),
         ("conv_3x3", 3, 4), ("skip_connect", 2, 5), ("skip_connect", 4, 5)],
        [5],
    ),
    "NAT_ResBlock": (
        [("null", 0, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("conv_3x3", 2, 3),
         ("skip_connect", 0, 4), ("conv_3x3", 3, 4), ("skip_connect", 2, 5), ("skip_connect", 4, 5)],
        [5],
        [("null", 0, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("conv_3x3", 2, 3),
         ("skip_connect", 0, 4), ("conv_3x3", 3, 4), ("skip_connect", 2, 5), ("skip_connect", 4, 5)],
        [5],
    ),
    "NATv2_ResBlock": (
        [("skip_connect", 0, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("conv_3x3", 2, 3),
         ("skip_connect", 0, 4), ("conv_3x3", 3, 4), ("skip_connect", 2, 5), ("skip_connect", 4, 5)],
        [5],
        [("skip_connect", 0, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("conv_3x3", 2, 3),
         ("skip_connect", 0, 4), ("sep_conv_3x3", 3, 4), ("skip_connect", 2, 5), ("skip_connect", 4, 5)],
        [5],
    ),
    "VGG": (
        [("null", 0, 2), ("skip_connect", 1, 2), ("null", 0, 3), ("conv_3x3", 2, 3), ("null", 0, 4),
         ("conv_3x3", 3, 4), ("null", 0, 5), ("skip_connect", 4, 5)],
        [5],
        [("null", 0, 2), ("skip_connect", 1, 2), ("null", 0, 3), ("conv_3x3", 2, 3), ("null", 0, 4),
         ("conv_3x3", 3, 4), ("null", 0, 5), ("max_pool_3x3", 4, 5)],
        [5],
    ),
    "NAT_VGG": (
        [("skip_connect", 0, 2), ("skip_connect", 1, 2), ("null", 0, 3), ("conv_3x3", 2, 3), ("null", 0, 4),
         ("conv_3x3", 3, 4), ("skip_connect", 0, 5), ("skip_connect", 4, 5)],
        [5],
        [("skip_connect", 0, 2), ("skip_connect", 1, 2), ("null", 0, 3), ("conv_3x3", 2, 3), ("null", 0, 4),
         ("conv_3x3", 3, 4), ("skip_connect", 0, 5), ("skip_connect", 4, 5)],
        [5],
    ),
    "NATv2_VGG": (
        [("skip_connect", 0, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("conv_3x3", 2, 3),
         ("null", 0, 4), ("sep_conv_3x3", 3, 4), ("skip_connect", 0, 5), ("skip_connect", 4, 5)],
        [5],
        [("skip_connect", 0, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("conv_3x3", 2, 3),
         ("null", 0, 4), ("sep_conv_3x3", 3, 4), ("skip_connect", 0, 5), ("max_pool_3x3", 4, 5)],
        [5],
    ),
    # MobileNetV2 (only in NATv2's file; names spelled as there).
    "Mobilenetv2": (
        [("null", 0, 2), ("conv_1x1", 1, 2), ("null", 0, 3), ("sep_conv_3x3", 2, 3), ("null", 0, 4),
         ("conv_1x1", 3, 4), ("skip_connect", 1, 5), ("skip_connect", 4, 5)],
        [5],
        [("null", 0, 2), ("conv_1x1", 1, 2), ("null", 0, 3), ("sep_conv_3x3", 2, 3), ("null", 0, 4),
         ("conv_1x1", 3, 4), ("null", 0, 5), ("skip_connect", 4, 5)],
        [5],
    ),
    "NAT_MobileNetv2": (
        [("null", 0, 2), ("conv_1x1", 1, 2), ("null", 0, 3), ("sep_conv_3x3", 2, 3), ("skip_connect", 0, 4),
         ("conv_1x1", 3, 4), ("skip_connect", 1, 5), ("skip_connect", 4, 5)],
        [5],
        [("null", 0, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("sep_conv_3x3", 2, 3),
         ("null", 0, 4), ("conv_1x1", 3, 4), ("null", 0, 5), ("skip_connect", 4, 5)],
        [5],
    ),
    "NATv2_MobileNetv2": (
        [("null", 0, 2), ("conv_1x1", 1, 2), ("null", 0, 3), ("sep_conv_3x3", 2, 3), ("skip_connect", 0, 4),
         ("conv_1x1", 3, 4), ("skip_connect", 1, 5), ("skip_connect", 4, 5)],
        [5],
        [("null", 0, 2), ("skip_connect", 1, 2), ("skip_connect", 0, 3), ("sep_conv_3x3", 2, 3),
         ("null", 0, 4), ("conv_1x1", 3, 4), ("null", 0, 5), ("skip_connect", 4, 5)],
        [5],
    ),
    # Random architectures and NAT's transformations of them (NAT v1 file
    # only, concat range(2, 6)).
    "R1": (
        [("dil_conv_5x5", 1, 2), ("dil_conv_5x5", 1, 2), ("dil_conv_5x5", 1, 3), ("dil_conv_5x5", 2, 3),
         ("sep_conv_3x3", 0, 4), ("sep_conv_3x3", 3, 4), ("skip_connect", 1, 5), ("max_pool_3x3", 0, 5)],
        [2, 3, 4, 5],
        [("sep_conv_5x5", 0, 2), ("max_pool_3x3", 0, 2), ("skip_connect", 0, 3), ("sep_conv_3x3", 0, 3),
         ("conv_3x3", 0, 4), ("max_pool_3x3", 2, 4), ("avg_pool_3x3", 2, 5), ("conv_3x3", 3, 5)],
        [2, 3, 4, 5],
    ),
    "NAT_R1": (
        [("skip_connect", 1, 2), ("dil_conv_5x5", 1, 2), ("null", 1, 3), ("dil_conv_5x5", 2, 3),
         ("sep_conv_3x3", 0, 4), ("sep_conv_3x3", 3, 4), ("skip_connect", 1, 5), ("max_pool_3x3", 0, 5)],
        [2, 3, 4, 5],
        [("sep_conv_5x5", 0, 2), ("max_pool_3x3", 0, 2), ("skip_connect", 0, 3), ("sep_conv_3x3", 0, 3),
         ("skip_connect", 0, 4), ("skip_connect", 2, 4), ("skip_connect", 2, 5), ("conv_3x3", 3, 5)],
        [2, 3, 4, 5],
    ),
    "R2": (
        [("max_pool_3x3", 1, 2), ("dil_conv_3x3", 0, 2), ("sep_conv_5x5", 2, 3), ("avg_pool_3x3", 2, 3),
         ("dil_conv_5x5", 0, 4), ("skip_connect", 3, 4), ("sep_conv_3x3", 1, 5), ("max_pool_3x3", 3, 5)],
        [2, 3, 4, 5],
        [("conv_3x3", 1, 2), ("avg_pool_3x3", 1, 2), ("max_pool_3x3", 0, 3), ("dil_conv_5x5", 0, 3),
         ("max_pool_3x3", 0, 4), ("skip_connect", 0, 4), ("dil_conv_5x5", 4, 5), ("skip_connect", 4, 5)],
        [2, 3, 4, 5],
    ),
    "NAT_R2": (
        [("max_pool_3x3", 1, 2), ("dil_conv_3x3", 0, 2), ("null", 2, 3), ("null", 2, 3),
         ("dil_conv_5x5", 0, 4), ("null", 3, 4), ("sep_conv_3x3", 1, 5), ("max_pool_3x3", 3, 5)],
        [2, 3, 4, 5],
        [("skip_connect", 1, 2), ("avg_pool_3x3", 1, 2), ("skip_connect", 0, 3), ("dil_conv_5x5", 0, 3),
         ("null", 0, 4), ("skip_connect", 0, 4), ("dil_conv_5x5", 4, 5), ("skip_connect", 4, 5)],
        [2, 3, 4, 5],
    ),
    "R3": (
        [("conv_3x3", 0, 2), ("skip_connect", 0, 2), ("conv_3x3", 0, 3), ("max_pool_3x3", 0, 3),
         ("sep_conv_5x5", 1, 4), ("sep_conv_3x3", 3, 4), ("avg_pool_3x3", 4, 5), ("avg_pool_3x3", 4, 5)],
        [2, 3, 4, 5],
        [("skip_connect", 0, 2), ("max_pool_3x3", 0, 2), ("sep_conv_5x5", 2, 3), ("avg_pool_3x3", 0, 3),
         ("skip_connect", 3, 4), ("max_pool_3x3", 2, 4), ("max_pool_3x3", 1, 5), ("sep_conv_5x5", 4, 5)],
        [2, 3, 4, 5],
    ),
    "NAT_R3": (
        [("conv_3x3", 0, 2), ("skip_connect", 0, 2), ("null", 0, 3), ("max_pool_3x3", 0, 3),
         ("null", 1, 4), ("null", 3, 4), ("avg_pool_3x3", 4, 5), ("null", 4, 5)],
        [2, 3, 4, 5],
        [("skip_connect", 0, 2), ("max_pool_3x3", 0, 2), ("sep_conv_5x5", 2, 3), ("avg_pool_3x3", 0, 3),
         ("null", 3, 4), ("skip_connect", 2, 4), ("max_pool_3x3", 1, 5), ("sep_conv_5x5", 4, 5)],
        [2, 3, 4, 5],
    ),
    "R4": (
        [("conv_3x3", 1, 2), ("sep_conv_3x3", 1, 2), ("conv_3x3", 2, 3), ("conv_3x3", 2, 3),
         ("sep_conv_3x3", 3, 4), ("conv_3x3", 0, 4), ("max_pool_3x3", 0, 5), ("max_pool_3x3", 4, 5)],
        [2, 3, 4, 5],
        [("sep_conv_3x3", 0, 2), ("sep_conv_5x5", 1, 2), ("skip_connect", 2, 3), ("sep_conv_3x3", 2, 3),
         ("sep_conv_5x5", 2, 4), ("conv_3x3", 1, 4), ("dil_conv_5x5", 2, 5), ("max_pool_3x3", 4, 5)],
        [2, 3, 4, 5],
    ),
    "NAT_R4": (
        [("conv_3x3", 1, 2), ("sep_conv_3x3", 1, 2), ("skip_connect", 2, 3), ("null", 2, 3),
         ("sep_conv_3x3", 3, 4), ("conv_3x3", 0, 4), ("max_pool_3x3", 0, 5), ("null", 4, 5)],
        [2, 3, 4, 5],
        [("sep_conv_3x3", 0, 2), ("sep_conv_5x5", 1, 2), ("skip_connect", 2, 3), ("sep_conv_3x3", 2, 3),
         ("skip_connect", 2, 4), ("conv_3x3", 1, 4), ("null", 2, 5), ("skip_connect", 4, 5)],
        [2, 3, 4, 5],
    ),
    "R5": (
        [("skip_connect", 0, 2), ("max_pool_3x3", 0, 2), ("max_pool_3x3", 2, 3), ("dil_conv_5x5", 0, 3),
         ("max_pool_3x3", 2, 4), ("conv_3x3", 2, 4), ("conv_3x3", 0, 5), ("sep_conv_5x5", 2, 5)],
        [2, 3, 4, 5],
        [("dil_conv_5x5", 0, 2), ("avg_pool_3x3", 1, 2), ("sep_conv_5x5", 0, 3), ("avg_pool_3x3", 2, 3),
         ("conv_3x3", 0, 4), ("dil_conv_5x5", 0, 4), ("sep_conv_3x3", 0, 5), ("skip_connect", 4, 5)],
        [2, 3, 4, 5],
    ),
    "NAT_R5": (
        [("skip_connect", 0, 2), ("max_pool_3x3", 0, 2), ("null", 2, 3), ("dil_conv_5x5", 0, 3),
         ("null", 2, 4), ("conv_3x3", 2, 4), ("conv_3x3", 0, 5), ("sep_conv_5x5", 2, 5)],
        [2, 3, 4, 5],
        [("dil_conv_5x5", 0, 2), ("avg_pool_3x3", 1, 2), ("sep_conv_5x5", 0, 3), ("avg_pool_3x3", 2, 3),
         ("conv_3x3", 0, 4), ("null", 0, 4), ("skip_connect", 0, 5), ("skip_connect", 4, 5)],
        [2, 3, 4, 5],
    ),
}  # fmt: skip

PUBLISHED: dict[str, Genotype] = {name: Genotype.from_triples(*cells) for name, cells in _SOURCES.items()}

# Which published genotype NAT (v1) / NAT++ (v2) made from which source.
TRANSFORMED: dict[str, dict[str, str]] = {
    "DARTS": {"nat": "NAT_DARTS", "nat++": "NATv2_DARTS"},
    "ENAS": {"nat": "NAT_ENAS", "nat++": "NATv2_ENAS"},
    "ResBlock": {"nat": "NAT_ResBlock", "nat++": "NATv2_ResBlock"},
    "VGG": {"nat": "NAT_VGG", "nat++": "NATv2_VGG"},
    "Mobilenetv2": {"nat": "NAT_MobileNetv2", "nat++": "NATv2_MobileNetv2"},
    **{f"R{i}": {"nat": f"NAT_R{i}"} for i in range(1, 6)},
}


# ---------------------------------------------------------------------------
# Genotype <-> ArchGraph.


def _index_node(index: int, prefix: str) -> str:
    return prefix + (INPUT_IDS[index] if index < 2 else f"node{index - 2}")


def _edge_actions(
    op: str, stride: int, channels: int, spatial: int, affine: bool, only_cheaper: bool
) -> tuple[str, ...]:
    """NAT's legal actions for a unit edge carrying cell op `op` (see module docstring)."""
    own = op_cost(op, channels, strides=stride, spatial=spatial, affine=affine)
    candidates = [ops.KEEP, ops.NONE]
    if op != SKIP_CONNECT:
        candidates.append(ops.SKIP)
        candidates += [t for t in ops.cheaper_targets(to_vocab(op)) if t in ALL_OPS]
    actions = []
    for action in candidates:
        if only_cheaper and action not in (ops.KEEP, ops.NONE):
            target = SKIP_CONNECT if action == ops.SKIP else action
            new = op_cost(target, channels, strides=stride, spatial=spatial, affine=affine)
            if new.params > own.params or new.macs > own.macs:
                continue
        actions.append(action)
    return tuple(a for a in ops.ACTIONS if a in actions)


def _cell_parts(
    entries: Sequence[Entry],
    concat: Sequence[int],
    *,
    reduction: bool,
    channels: int,
    spatial: int,
    affine: bool,
    only_cheaper: bool,
    prefix: str,
) -> tuple[list[Node], list[Edge]]:
    """Nodes and edges of one cell (see the module docstring)."""
    out_spatial = -(-spatial // 2) if reduction else spatial
    in_shape = (spatial, spatial, channels)
    out_shape = (out_spatial, out_spatial, channels)
    num_nodes = len(entries) // 2
    nodes = [Node(id=prefix + i, shape=in_shape, merge=MERGE_INPUT, layer=prefix + i) for i in INPUT_IDS]
    nodes += [
        Node(id=f"{prefix}node{i}", shape=out_shape, merge=MERGE_SUM, layer=f"{prefix}node{i}")
        for i in range(num_nodes)
    ]
    output = prefix + OUTPUT_ID
    nodes.append(
        Node(
            id=output,
            shape=(out_spatial, out_spatial, channels * len(concat)),
            merge=MERGE_CONCAT,
            layer=output,
            is_output=True,
        )
    )
    edges: list[Edge] = []
    for position, (op, index) in enumerate(entries):
        node, slot = divmod(position, 2)
        stride = 2 if reduction and index < 2 else 1
        common = {
            "id": f"{prefix}node{node}_edge{slot}",
            "src": _index_node(index, prefix),
            "dst": f"{prefix}node{node}",
            "input_shape": in_shape if index < 2 else out_shape,
            "output_shape": out_shape,
            "stride": stride,
        }
        if op == NULL:
            actions = (ops.KEEP, ops.SKIP)
            if only_cheaper and op_cost(SKIP_CONNECT, channels, strides=stride, spatial=spatial).params:
                actions = (ops.KEEP,)
            edges.append(Edge(**common, slot=-1, kind=PLACEHOLDER, op=ops.NULL, actions=actions))
            continue
        cost = op_cost(
            op, channels, strides=stride, spatial=spatial if index < 2 else out_spatial, affine=affine
        )
        parsed = ops.parse_op(op)
        bn = (4 if affine else 2) * channels if cost.params else 0
        edges.append(
            Edge(
                **common,
                slot=slot,
                kind=UNIT,
                op=to_vocab(op),
                library="darts",
                kernel=parsed[1] if parsed else 0,
                dilation=2 if parsed and parsed[0] == "dil_conv" else 1,
                params=cost.params,
                # What a NAT++ replacement swaps out: the op without its (last) BN.
                primary_params=cost.params - bn,
                macs=cost.macs,
                actions=_edge_actions(
                    op, stride, channels, spatial if index < 2 else out_spatial, affine, only_cheaper
                ),
            )
        )
    for slot, index in enumerate(concat):
        src = _index_node(index, prefix)
        edges.append(
            Edge(
                id=f"{src}->{output}",
                src=src,
                dst=output,
                slot=slot,
                kind=IDENTITY,
                op=ops.IDENTITY,
                input_shape=out_shape,
                output_shape=out_shape,
                protected=True,
                note="cell output",
            )
        )
    return nodes, edges


def genotype_to_arch_graph(
    genotype: Genotype,
    *,
    cell: str = "normal",
    channels: int = 16,
    spatial: int = 32,
    affine: bool = True,
    only_cheaper: bool = False,
    name: str = "genotype",
) -> ArchGraph:
    """One cell (or both) of `genotype` as NAT's DAG.

    Args:
      genotype: the cells.
      cell: "normal", "reduce", or "both" (one graph, two components whose
        ids are prefixed "normal/" and "reduce/": what a policy deciding both
        cells at once reads, and what round-trips to the whole genotype).
      channels: C, the channels of the (preprocessed) cell inputs and of
        every node.
      spatial: height and width of the cell inputs (a reduction cell's nodes
        are half that).
      affine: cost the ops with affine BN (the final network) or not (the
        supernet).
      only_cheaper: keep only actions that cost no more than the edge's op.
      name: the graph's name (part of its fingerprint, hence of plans).

    Returns:
      An ArchGraph; `arch_graph_to_genotype` reads it back.

    Example:
      >>> graph = genotype_to_arch_graph(PUBLISHED["VGG"], channels=16)
      >>> graph.edge("node0_edge0").kind, graph.edge("node1_edge1").op
      ('placeholder', 'conv_3x3')
    """
    cells = CELLS if cell == "both" else (cell,)
    if cell != "both" and cell not in CELLS:
        raise ValueError(f"cell must be 'normal', 'reduce' or 'both', got {cell!r}.")
    if channels < 2 or channels % 2:
        raise ValueError(f"channels must be even and >= 2 (FactorizedReduce halves it), got {channels}.")
    nodes: list[Node] = []
    edges: list[Edge] = []
    for which in cells:
        entries, concat = genotype.cell(which)
        cell_nodes, cell_edges = _cell_parts(
            entries,
            concat,
            reduction=which == "reduce",
            channels=channels,
            spatial=spatial,
            affine=affine,
            only_cheaper=only_cheaper,
            prefix=f"{which}/" if cell == "both" else "",
        )
        nodes += cell_nodes
        edges += cell_edges
    prefixes = [f"{c}/" for c in cells] if cell == "both" else [""]
    return ArchGraph(
        name=name,
        nodes=tuple(nodes),
        edges=tuple(edges),
        inputs=tuple(p + i for p in prefixes for i in INPUT_IDS),
        outputs=tuple(p + OUTPUT_ID for p in prefixes),
    )


def _node_index(node_id: str) -> int:
    base = node_id.rsplit("/", 1)[-1]
    if base in INPUT_IDS:
        return INPUT_IDS.index(base)
    match = re.fullmatch(r"node(\d+)", base)
    if match is None:
        raise GenotypeError(f"Node {node_id!r} is not a cell node (c_{{k-2}}, c_{{k-1}}, node<i>).")
    return 2 + int(match.group(1))


def _read_cell(graph: ArchGraph, prefix: str) -> tuple[list[Entry], list[int]]:
    slots: dict[tuple[int, int], Entry] = {}
    for edge in graph.edges:
        match = _EDGE_ID.match(edge.id)
        if match is None or (match.group(1) or "") != prefix.rstrip("/"):
            continue
        node, slot = int(match.group(2)), int(match.group(3))
        if edge.kind == PLACEHOLDER or edge.op == ops.NULL:
            op = NULL
        else:
            try:
                op = from_vocab(edge.op)
            except ValueError:
                raise GenotypeError(
                    f"Graph {graph.name!r}: edge {edge.id!r} carries op {edge.op!r}, which is no cell op."
                ) from None
        slots[(node, slot)] = (op, _node_index(edge.src))
    num_nodes = len(slots) // 2
    missing = [f"node{n}_edge{s}" for n in range(num_nodes) for s in (0, 1) if (n, s) not in slots]
    if not slots or missing or len(slots) % 2:
        raise GenotypeError(
            f"Graph {graph.name!r} is not a cell graph{' (' + prefix.rstrip('/') + ')' if prefix else ''}: "
            f"missing edges {missing or 'node0_edge0'}; make it with genotype_to_arch_graph."
        )
    entries = [slots[(n, s)] for n in range(num_nodes) for s in (0, 1)]
    out_edges = sorted(graph.in_edges(prefix + OUTPUT_ID), key=lambda e: e.slot)
    concat = [_node_index(e.src) for e in out_edges]
    return entries, concat


def arch_graph_to_genotype(graph: ArchGraph, reduce_graph: ArchGraph | None = None) -> Genotype:
    """Read a genotype back from cell graphs.

    Args:
      graph: a graph of `genotype_to_arch_graph(..., cell="both")`, or the
        normal cell's graph when `reduce_graph` is given.
      reduce_graph: the reduction cell's graph (with a single-cell `graph`).

    Returns:
      The genotype: placeholder or `null` edges read as "null", "skip" as
      "skip_connect", other ops by name; concat from the output's edges.

    Raises:
      GenotypeError: the graph is not a cell graph, or a single-cell graph is
        given without the other cell.

    Example:
      >>> g = PUBLISHED["ENAS"]
      >>> arch_graph_to_genotype(genotype_to_arch_graph(g, cell="normal"),
      ...                        genotype_to_arch_graph(g, cell="reduce")) == g
      True
    """
    both = all(graph.has_edge(f"{c}/node0_edge0") for c in CELLS)
    if both:
        if reduce_graph is not None:
            raise GenotypeError("Pass either one graph of both cells or the normal and the reduce graphs.")
        normal, reduce = _read_cell(graph, "normal/"), _read_cell(graph, "reduce/")
    else:
        if reduce_graph is None:
            raise GenotypeError(
                f"Graph {graph.name!r} holds one cell; pass the other one as reduce_graph, or make one "
                "graph of both cells with genotype_to_arch_graph(..., cell='both')."
            )
        normal, reduce = _read_cell(graph, ""), _read_cell(reduce_graph, "")
    return Genotype(normal[0], normal[1], reduce[0], reduce[1])


def genotype_actions(source: Genotype, target: Genotype, *, cell: str = "both") -> dict[str, str]:
    """The NAT actions that turn `source` into `target`, by edge id.

    Edge ids are those of `genotype_to_arch_graph(source, cell=cell)`; only
    changed entries are named. A change to `null` is "none", to
    `skip_connect` is "skip", a null turned into anything else is "skip"
    only (NAT's N -> S), and any other change names the target op.

    Raises:
      GenotypeError: the genotypes differ in inputs or concat, which no NAT
        action changes.

    Example:
      >>> genotype_actions(PUBLISHED["DARTS"], PUBLISHED["NAT_DARTS"])["normal/node1_edge0"]
      'skip'
    """
    actions: dict[str, str] = {}
    for which in CELLS if cell == "both" else (cell,):
        (old, old_concat), (new, new_concat) = source.cell(which), target.cell(which)
        if [i for _, i in old] != [i for _, i in new] or old_concat != new_concat:
            raise GenotypeError(
                f"The {which} cells differ in their inputs or concat; NAT actions only change ops."
            )
        prefix = f"{which}/" if cell == "both" else ""
        for position, ((op, _), (new_op, _)) in enumerate(zip(old, new)):
            if op == new_op:
                continue
            if new_op == NULL:
                action = ops.NONE
            elif new_op == SKIP_CONNECT:
                action = ops.SKIP
            elif op == NULL:
                raise GenotypeError(
                    f"{which} entry {position}: a null edge can only become a skip, not {new_op!r}."
                )
            else:
                action = to_vocab(new_op)
            actions[f"{prefix}node{position // 2}_edge{position % 2}"] = action
    return actions


def _apply_actions(entries: Sequence[Entry], actions: Mapping[int, str]) -> list[Entry]:
    result = []
    for position, (op, index) in enumerate(entries):
        action = actions.get(position, ops.KEEP)
        if action == ops.KEEP:
            new = op
        elif action == ops.SKIP:
            new = SKIP_CONNECT
        elif action == ops.NONE:
            new = NULL
        else:
            new = from_vocab(action)
        result.append((new, index))
    return result


def apply_plan_to_genotype(
    genotype: Genotype,
    plan: Any,
    *,
    cell: str = "both",
    channels: int = 16,
    spatial: int = 32,
    affine: bool = True,
    only_cheaper: bool = False,
    name: str = "genotype",
) -> Genotype:
    """The genotype that `plan` makes of `genotype`.

    The plan is checked against the graph `genotype_to_arch_graph(genotype,
    cell=..., channels=..., ...)` (same keyword arguments): fingerprint,
    action space and each edge's legal actions. Unlike `TransformPlan.
    validate`, a node may end up with only null inputs (a zero node, as in
    the authors' NAT_R2) and c_{k-2} may feed nothing but null edges (the
    hand-made cells).

    Args:
      genotype: the source cells.
      plan: a `nat_keras.TransformPlan`, or a mapping edge id -> action (an
        action of `nat_keras.ops.ACTIONS`).
      cell / channels / spatial / affine / only_cheaper / name: as for
        `genotype_to_arch_graph`.

    Returns:
      The transformed genotype: keep leaves the op, skip makes it
      skip_connect, none makes it null, a NAT++ target replaces it.

    Raises:
      PlanError: the plan was made for another graph, or an action is not
        legal on its edge.

    Example:
      >>> darts = PUBLISHED["DARTS"]
      >>> apply_plan_to_genotype(darts, {"normal/node1_edge0": "skip"}).normal[2]
      ('skip_connect', 0)
    """
    from nat_keras.plan import TransformPlan

    graph = genotype_to_arch_graph(
        genotype,
        cell=cell,
        channels=channels,
        spatial=spatial,
        affine=affine,
        only_cheaper=only_cheaper,
        name=name,
    )
    if isinstance(plan, TransformPlan):
        if plan.fingerprint != graph.fingerprint():
            raise PlanError(
                f"This plan was made for graph {plan.graph_name!r} ({plan.fingerprint}), not for this "
                f"genotype's {cell!r} graph ({graph.fingerprint()}); use the same genotype and "
                "genotype_to_arch_graph arguments."
            )
        actions, allowed = dict(plan.actions), set(ops.ACTION_SPACES[plan.space])
    else:
        actions, allowed = dict(plan), set(ops.ACTIONS)
    per_cell: dict[str, dict[int, str]] = {c: {} for c in CELLS}
    for edge_id, action in actions.items():
        if not graph.has_edge(edge_id):
            raise PlanError(f"Plan names edge {edge_id!r}, which the {cell!r} cell graph does not have.")
        edge = graph.edge(edge_id)
        if action not in allowed or action not in edge.actions:
            raise PlanError(
                f"Edge {edge_id!r} (op {edge.op}) cannot take action {action!r}; its legal actions are "
                f"{[a for a in edge.actions if a in allowed]}."
            )
        match = _EDGE_ID.match(edge_id)
        if match is None:
            raise PlanError(f"Edge {edge_id!r} is not a genotype entry; it cannot change.")
        which = match.group(1) or cell
        per_cell[which][2 * int(match.group(2)) + int(match.group(3))] = action
    result = genotype
    for which in CELLS:
        if per_cell[which]:
            entries, _ = genotype.cell(which)
            result = result.replace_cell(which, _apply_actions(entries, per_cell[which]))
    return result


__all__ = [
    "PUBLISHED",
    "TRANSFORMED",
    "Genotype",
    "GenotypeError",
    "apply_plan_to_genotype",
    "arch_graph_to_genotype",
    "fully_concat",
    "genotype_actions",
    "genotype_to_arch_graph",
    "loose_end_concat",
]
