"""Random cell architectures, as NAT's trainer draws its input architectures.

The authors' `ArchMaster` in "force uniform" mode draws, for each node, two
inputs uniformly among the cell inputs and the earlier nodes (independently,
so both may be the same) and two ops uniformly from the op list without its
last entry, `null` ("beta sampled uniformly without null", docs/design.md section 2).

Example:
  >>> g = sample_genotype(0)
  >>> g == sample_genotype(0), g.num_nodes, "null" in g.ops_used()
  (True, 4, False)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nat_keras.cells.genotype import Entry, Genotype, fully_concat, loose_end_concat
from nat_keras.cells.operations import ALL_OPS, DARTS_OPS, NULL

CONCAT_RULES = ("full", "loose")


def _sample_cell(
    rng: np.random.Generator, op_list: Sequence[str], num_nodes: int, concat: str
) -> tuple[list[Entry], tuple[int, ...]]:
    entries: list[Entry] = []
    for node in range(num_nodes):
        for _ in range(2):
            index = int(rng.integers(node + 2))
            op = op_list[int(rng.integers(len(op_list)))]
            entries.append((op, index))
    rule = fully_concat(num_nodes) if concat == "full" else loose_end_concat(entries)
    return entries, rule


def sample_genotype(
    rng_or_seed: np.random.Generator | int | None = None,
    *,
    ops: Sequence[str] = DARTS_OPS,
    num_nodes: int = 4,
    exclude_null: bool = True,
    concat: str = "full",
) -> Genotype:
    """A random genotype: inputs and ops drawn uniformly per edge.

    Args:
      rng_or_seed: a numpy Generator (advanced in place), a seed, or None for
        fresh entropy. Equal seeds give equal genotypes.
      ops: the op list to draw from (DARTS_OPS, ENAS_OPS, NATPP_OPS, ...).
      num_nodes: B, intermediate nodes per cell (4 for DARTS, 5 for ENAS).
      exclude_null: leave `null` out of the draw, as the paper's trainer does.
      concat: "full" (DARTS: all intermediate nodes) or "loose" (ENAS: the
        nodes no other node uses; every entry counts as a use, as in the
        authors' supernet).

    Returns:
      A Genotype whose normal and reduction cells are drawn independently.

    Raises:
      ValueError: an unknown op or concat rule, or nothing left to draw.

    Example:
      >>> from nat_keras.cells import ENAS_OPS
      >>> sample_genotype(7, ops=ENAS_OPS, num_nodes=5, concat="loose").num_nodes
      5
    """
    if concat not in CONCAT_RULES:
        raise ValueError(f"concat must be one of {CONCAT_RULES}, got {concat!r}.")
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}.")
    unknown = [op for op in ops if op not in ALL_OPS]
    if unknown:
        raise ValueError(f"Unknown ops {unknown}; the cell ops are {list(ALL_OPS)}.")
    op_list = [op for op in ops if not (exclude_null and op == NULL)]
    if not op_list:
        raise ValueError(f"No op left to sample from {list(ops)} (exclude_null={exclude_null}).")
    rng = np.random.default_rng(rng_or_seed)
    normal, normal_concat = _sample_cell(rng, op_list, num_nodes, concat)
    reduce, reduce_concat = _sample_cell(rng, op_list, num_nodes, concat)
    return Genotype(normal, normal_concat, reduce, reduce_concat)


__all__ = ["CONCAT_RULES", "sample_genotype"]
