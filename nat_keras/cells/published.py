"""The published cells: the authors' genotypes before and after NAT, under their names.

`PUBLISHED` holds the cells of the authors' `genotypes.py` files, before and
after NAT (v1, "NAT_") and NAT++ ("NATv2_"); `TRANSFORMED` says which
published genotype NAT / NAT++ made from which source.

Example:
  >>> PUBLISHED[TRANSFORMED["DARTS"]["nat"]].normal[2]
  ('skip_connect', 0)
"""

from __future__ import annotations

from nat_keras.cells.genotype import Genotype

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


__all__ = ["PUBLISHED", "TRANSFORMED"]
