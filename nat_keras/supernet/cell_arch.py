"""The cell supernet's architecture vector, and how it maps to genotypes, graphs and plans.

`arch` is an int32 vector of `arch_size = 8 * B` entries (32 for B = 4):
for every genotype entry, normal cell first, then reduce, in genotype order
(node 0 slot 0, node 0 slot 1, node 1 slot 0, ...), the pair (input index,
op index):

    arch.reshape(2, B, 2, 2)[cell, node, slot] == (input, op)

where cell 0 is normal and 1 is reduce, input is 0 (c_{k-2}), 1 (c_{k-1}) or
2 + m (node m < node), and op indexes `op_list`. So `arch.reshape(-1, 2)`
lists `genotype.normal + genotype.reduce`, and `to_arch` / `to_genotype` are
exact inverses. A per-DAG-edge op vector cannot hold two entries on one
edge, hence pairs.

A policy sees a genotype as the ArchGraph of both cells (`graph_of`), whose
edges offer only the actions of the supernet's space that make an op of its
op list; `arch_of` runs a plan on such a graph back to an arch.

Example:
  >>> codec = CellArchCodec(DARTS_OPS, num_nodes=4, concat="full", space="nat",
  ...                       channels=20, spatial=32, owner="cell_supernet")
  >>> arch = codec.to_arch(PUBLISHED["DARTS"])
  >>> codec.to_genotype(arch) == PUBLISHED["DARTS"]
  True
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nat_keras import ops
from nat_keras.cells.cell_graph import arch_graph_to_genotype, genotype_to_arch_graph
from nat_keras.cells.cell_plan import apply_plan_to_genotype
from nat_keras.cells.genotype import CELLS, Entry, Genotype, GenotypeError, fully_concat, loose_end_concat
from nat_keras.cells.operations import NULL, SKIP_CONNECT, from_vocab
from nat_keras.graph.arch_graph import PLACEHOLDER, UNIT, ArchGraph
from nat_keras.plan import TransformPlan

CONCAT_RULES = ("full", "loose_end")
GRAPH_NAME = "cell_genotype"


@dataclasses.dataclass(frozen=True)
class CellArchCodec:
    """How one CellSupernet's arch vectors, genotypes, graphs and plans correspond.

    Attributes:
      op_list: the cell ops an arch's op indices index.
      num_nodes: B, intermediate nodes per cell.
      concat: "full" or "loose_end", the rule of the cells' concat lists.
      space: the NAT action space of the plans ("nat" or "nat++").
      channels: C of the first cells, which the graphs are costed for.
      spatial: the input resolution, which the graphs are costed for.
      owner: the supernet's name, for messages.
      num_cells: the supernet's depth: a graph edge costs what its copies
        in every cell of its type cost (`genotype_to_arch_graph(num_cells=
        ...)`), so budgets hold for the network, not for one cell. None:
        one copy of each cell at C.
      stem_multiplier: the supernet's stem has stem_multiplier * C channels,
        which the first cells' input preprocessing reads (costed with
        `num_cells`).

    Example:
      >>> codec.to_genotype(codec.to_arch(PUBLISHED["DARTS"])) == PUBLISHED["DARTS"]
      True
    """

    op_list: tuple[str, ...]
    num_nodes: int
    concat: str
    space: str
    channels: int
    spatial: int
    owner: str
    num_cells: int | None = None
    stem_multiplier: int = 3

    @functools.cached_property
    def op_index(self) -> dict[str, int]:
        """op -> its index in `op_list`."""
        return {op: k for k, op in enumerate(self.op_list)}

    @property
    def graph_kwargs(self) -> dict[str, Any]:
        """The `genotype_to_arch_graph` arguments of this supernet's graphs.

        Both cells, each edge costed as its copies in the supernet's
        network (`num_cells`; affine-free BN), shapes of the first copy.

        Example:
          >>> apply_plan_to_genotype(genotype, plan, **codec.graph_kwargs)
        """
        return {
            "cell": "both",
            "channels": self.channels,
            "spatial": self.spatial,
            "affine": False,
            "num_cells": self.num_cells,
            "stem_multiplier": self.stem_multiplier,
            "name": GRAPH_NAME,
        }

    def check_pairs(self, arch: np.ndarray) -> None:
        """Raise ValueError if an (input, op) pair of `arch` (of the right length) is out of range.

        Example:
          >>> codec.check_pairs(codec.to_arch(PUBLISHED["DARTS"]))  # no error
        """
        pairs = arch.reshape(2, self.num_nodes, 2, 2)
        for cell, which in enumerate(CELLS):
            for node in range(self.num_nodes):
                for slot in range(2):
                    source, op = (int(v) for v in pairs[cell, node, slot])
                    if not 0 <= source < 2 + node or not 0 <= op < len(self.op_list):
                        raise ValueError(
                            f"Supernet {self.owner!r}: {which} node {node} slot {slot} has (input, op) = "
                            f"({source}, {op}); input must be in 0..{node + 1} and op in "
                            f"0..{len(self.op_list) - 1} (an index into {list(self.op_list)})."
                        )

    def concat_of(self, entries: Sequence[Entry]) -> tuple[int, ...]:
        """The concat list the supernet computes for a cell of `entries` (its `concat` rule).

        Example:
          >>> codec.concat_of(PUBLISHED["DARTS"].normal)
          (2, 3, 4, 5)
        """
        if self.concat == "full":
            return fully_concat(self.num_nodes)
        return loose_end_concat(entries)

    def to_arch(self, genotype: Genotype) -> np.ndarray:
        """The arch vector of `genotype`.

        Raises:
          GenotypeError: the genotype has another number of nodes, an op
            outside `op_list`, or a concat list other than the `concat`
            rule gives.

        Example:
          >>> codec.to_arch(PUBLISHED["DARTS"])[:4]
          array([0, 3, 1, 3], dtype=int32)
        """
        if genotype.num_nodes != self.num_nodes:
            raise GenotypeError(
                f"Genotype has {genotype.num_nodes} nodes per cell; supernet {self.owner!r} has "
                f"{self.num_nodes} (CellSupernet(num_nodes=...))."
            )
        op_index = self.op_index
        arch: list[int] = []
        for which in CELLS:
            entries, concat = genotype.cell(which)
            expected = self.concat_of(entries)
            if tuple(concat) != expected:
                raise GenotypeError(
                    f"Genotype {which}_concat {list(concat)} is not what supernet {self.owner!r} "
                    f"(concat={self.concat!r}) computes for it, {list(expected)}; use a CellSupernet "
                    "with the genotype's concat rule."
                )
            for op, source in entries:
                if op not in op_index:
                    raise GenotypeError(
                        f"Genotype {which} cell uses op {op!r}, which is not in supernet {self.owner!r}'s "
                        f"op list {list(self.op_list)}."
                    )
                arch += [source, op_index[op]]
        return np.asarray(arch, dtype=np.int32)

    def to_genotype(self, arch: np.ndarray) -> Genotype:
        """The genotype of a checked arch vector (concat by the `concat` rule).

        Example:
          >>> codec.to_genotype(codec.to_arch(PUBLISHED["DARTS"])) == PUBLISHED["DARTS"]
          True
        """
        pairs = arch.reshape(2, -1, 2)
        cells = []
        for cell in range(2):
            entries = [(self.op_list[int(op)], int(source)) for source, op in pairs[cell]]
            cells.append((entries, self.concat_of(entries)))
        return Genotype(cells[0][0], cells[0][1], cells[1][0], cells[1][1])

    def graph_of(self, genotype: Genotype) -> ArchGraph:
        """The ArchGraph of `genotype`, each edge offering the actions that make an op of `op_list`.

        Edge ids are "normal/node{i}_edge{slot}" (`genotype_to_arch_graph(
        cell="both")`); an edge keeps an action of `space` only if its
        result is in `op_list`, so every plan drawn from the graph runs.

        Raises:
          GenotypeError: the supernet cannot run `genotype` (see `to_arch`).

        Example:
          >>> codec.graph_of(PUBLISHED["DARTS"]).edge("normal/node0_edge0").actions
          ('keep', 'skip', 'none')
        """
        self.to_arch(genotype)  # raises if this supernet cannot run it
        graph = genotype_to_arch_graph(genotype, **self.graph_kwargs)
        allowed = set(ops.ACTION_SPACES[self.space])
        op_index = self.op_index
        edges = []
        for edge in graph.edges:
            if edge.kind in (UNIT, PLACEHOLDER):
                actions = tuple(
                    a
                    for a in edge.actions
                    if a == ops.KEEP or (a in allowed and result_op(edge.kind, edge.op, a) in op_index)
                )
                edge = dataclasses.replace(edge, actions=actions)
            edges.append(edge)
        return dataclasses.replace(graph, edges=tuple(edges))

    def genotype_of(self, graph: ArchGraph) -> Genotype:
        """The genotype of a graph of `graph_of` (read back from it).

        Raises:
          ValueError: the graph was not made for this supernet.

        Example:
          >>> codec.genotype_of(codec.graph_of(PUBLISHED["DARTS"])) == PUBLISHED["DARTS"]
          True
        """
        genotype = arch_graph_to_genotype(graph)
        if genotype_to_arch_graph(genotype, **self.graph_kwargs).fingerprint() != graph.fingerprint():
            raise ValueError(
                f"Graph {graph.name!r} was not made by supernet {self.owner!r} (other channels, input "
                "size or name); make it with supernet.graph_of(genotype) or supernet.input_graphs()."
            )
        return genotype

    def arch_of(self, graph: ArchGraph, plan: TransformPlan | Mapping[str, str]) -> np.ndarray:
        """The arch that runs `plan` applied to input `graph` (a graph of `graph_of`).

        Example:
          >>> codec.arch_of(codec.graph_of(PUBLISHED["DARTS"]), {"normal/node1_edge0": "skip"})
        """
        changed = apply_plan_to_genotype(self.genotype_of(graph), plan, **self.graph_kwargs)
        return self.to_arch(changed)


def result_op(kind: str, op: str, action: str) -> str:
    """The cell op an edge carries after `action`.

    Example:
      >>> result_op(UNIT, "sep_conv_3x3", ops.SKIP)
      'skip_connect'
    """
    if action == ops.KEEP:
        return NULL if kind == PLACEHOLDER else from_vocab(op)
    if action == ops.SKIP:
        return SKIP_CONNECT
    if action == ops.NONE:
        return NULL
    return action  # NAT++ targets are cell op names


__all__ = ["CONCAT_RULES", "GRAPH_NAME", "CellArchCodec", "result_op"]
