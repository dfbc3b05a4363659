"""The `Genotype` type: a DARTS-style cell network as plain data, and its concat rules.

A `Genotype` is DARTS' description of a cell network: a normal and a
reduction cell, each a list of (op, input_index) pairs (`Entry`), two per
intermediate node (pairs 2i and 2i + 1 feed node i + 2), and the nodes
concatenated into the cell's output. Index 0 is the cell input c_{k-2}, 1 is
c_{k-1}, 2 + i is intermediate node i. The authors' genotypes
(guoyongcs/NAT, guoyongcs/NATv2) write triples (op, input, node);
`Genotype.from_triples` reads those.

Which nodes a cell concatenates follows one of two rules: DARTS' (every
node, `fully_concat`) or ENAS' (the loose ends, `loose_end_concat`).

Example:
  >>> g = Genotype(normal=[("skip_connect", 0), ("sep_conv_3x3", 1)], normal_concat=[2],
  ...              reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)], reduce_concat=[2])
  >>> Genotype.from_json(g.to_json()) == g
  True
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nat_keras.cells.operations import ALL_OPS, NULL
from nat_keras.errors import NatKerasError

Entry = tuple[str, int]
CELLS = ("normal", "reduce")


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


__all__ = ["CELLS", "Entry", "Genotype", "GenotypeError", "fully_concat", "loose_end_concat"]
