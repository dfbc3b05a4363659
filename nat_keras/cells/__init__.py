"""NAT's cell search space: ops as Keras layers, genotypes as data, networks.

The paper's cells (Guo et al. 2019, docs/design.md section 2), in data-flow order:

- `operations`: the candidate ops (SepConv, DilConv, ReLUConvBN,
  FactorizedReduce, PoolBN, Identity, Zero, DropPath) as registered Keras 3
  layers, the op lists `DARTS_OPS`, `ENAS_OPS`, `NATPP_OPS`, and the `OPS`
  registry name -> (C, stride, affine) -> layer.
- `genotype`: the `Genotype` dataclass, its `Entry` pairs, the concat rules
  and `GenotypeError`.
- `published`: the authors' published cells (`PUBLISHED`, `TRANSFORMED`).
- `cell_graph`: genotypes to and from `ArchGraph`.
- `cell_plan`: the NAT actions between genotypes, and a `TransformPlan`
  applied to a genotype.
- `sampler`: random genotypes, as NAT's trainer draws its inputs.
- `network`: the DARTS CIFAR network of a genotype as a functional model.

Example:
  >>> from nat_keras import cells as ss
  >>> model = ss.build_network(ss.PUBLISHED["DARTS"], channels=16, num_cells=8)
  >>> graph = ss.genotype_to_arch_graph(ss.PUBLISHED["DARTS"], cell="both")
  >>> plan = {"normal/node1_edge0": "skip"}
  >>> ss.apply_plan_to_genotype(ss.PUBLISHED["DARTS"], plan).normal[2]
  ('skip_connect', 0)
"""

from nat_keras.cells.cell_graph import arch_graph_to_genotype, cell_copies, genotype_to_arch_graph
from nat_keras.cells.cell_plan import apply_plan_to_genotype, genotype_actions
from nat_keras.cells.genotype import CELLS, Genotype, GenotypeError, fully_concat, loose_end_concat
from nat_keras.cells.network import build_network, reduction_cells
from nat_keras.cells.operations import (
    ALL_OPS,
    DARTS_OPS,
    ENAS_OPS,
    NATPP_OPS,
    OP_LISTS,
    OPS,
    DilConv,
    DropPath,
    FactorizedReduce,
    Identity,
    PoolBN,
    ReLUConvBN,
    SepConv,
    Zero,
    from_vocab,
    make_op,
    op_cost,
    to_vocab,
)
from nat_keras.cells.published import PUBLISHED, TRANSFORMED
from nat_keras.cells.sampler import sample_genotype

__all__ = [
    "ALL_OPS",
    "CELLS",
    "DARTS_OPS",
    "ENAS_OPS",
    "NATPP_OPS",
    "OPS",
    "OP_LISTS",
    "PUBLISHED",
    "TRANSFORMED",
    "DilConv",
    "DropPath",
    "FactorizedReduce",
    "Genotype",
    "GenotypeError",
    "Identity",
    "PoolBN",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "apply_plan_to_genotype",
    "arch_graph_to_genotype",
    "build_network",
    "cell_copies",
    "from_vocab",
    "fully_concat",
    "genotype_actions",
    "genotype_to_arch_graph",
    "loose_end_concat",
    "make_op",
    "op_cost",
    "reduction_cells",
    "sample_genotype",
    "to_vocab",
]
