"""The weight-sharing supernet of NAT's cell space (docs/design.md section 2).

The network is DARTS' CIFAR network (`nat_keras.cells.build_network`): a
3x3 conv + BN stem, `num_cells` cells (reductions at 1/3 and 2/3 of the
depth, channels doubling there), global average pooling and a dense
classifier; the paper's supernet has 8 cells and C = 20. Inside the cells
every BN is affine-free, and every pooling op is followed by an affine-free
BN, as in the authors' `NASOp`.

Each cell is a full DAG: node i (0..B-1) may read any of its 2 + i earlier
states, and every edge (state j -> node i) holds its own copy of every op of
the op list (weights are per cell, as in DARTS; the architecture is shared by
the cells of a type). A genotype entry picks one (input, op) pair per node
*slot*; each node has two slots and sums them. Both slots of a node may read
the same input (the paper's input architectures do so three times out of four),
with the same or another op: they then run that edge's op(s), as the authors'
supernet does. The architecture is an int32 vector of those pairs (see
`cell_arch`).

How it runs. Per node, one switch picks both slots' inputs, and each slot
runs one switch over the op list, so only the chosen op runs and a new arch
needs no retrace (`cell_switch`). On 2 CPU cores the paper's supernet traces
and sets up its first training step in ~40 s; a step then costs
~1.05-1.15x that of the extracted network (benchmarks/cell_supernet_step.py).

Cell outputs. concat="full" (DARTS) concatenates every intermediate node.
concat="loose_end" (ENAS) keeps the channel count fixed and multiplies the
nodes some entry reads by zero (the authors' `NASCell`; null entries count
as reads, as in `loose_end_concat`); the standalone network concatenates only
the loose ends (see `cell_extract`), so both compute the same function.

The modules, in data-flow order: `cell_layout` (cells, sizes, stride
groups), `cell_kernels` (the op maths on packed weights), `packed_weights`
(the op weights of a node's edges), `cell_switch` (one entry's switches),
this one (the model), `cell_arch` (arch <-> genotype, graph and plan),
`cell_extract` (the standalone network).

Example:
  >>> supernet = CellSupernet(num_cells=8, channels=20)
  >>> arch = supernet.sample_arch(seed=0)
  >>> logits = supernet(images, arch=arch, training=False)
  >>> supernet.extract(arch)(images)   # the same logits, a plain functional model
  >>> supernet.arch_to_genotype(arch).num_nodes
  4
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras import ops
from nat_keras.cells.genotype import Genotype
from nat_keras.cells.operations import (
    BN_EPSILON,
    BN_MOMENTUM,
    NULL,
    SKIP_CONNECT,
    FactorizedReduce,
    ReLUConvBN,
)
from nat_keras.cells.sampler import sample_genotype
from nat_keras.errors import BudgetError, PlanError
from nat_keras.graph.arch_graph import ArchGraph
from nat_keras.graph.costs import Budget, graph_cost, minimum_cost
from nat_keras.plan import TransformPlan, resolve, sample_plan_within, sample_random_plan
from nat_keras.supernet.base import BUDGET_PROB, Supernet
from nat_keras.supernet.cell_arch import CONCAT_RULES, CellArchCodec
from nat_keras.supernet.cell_extract import extract_network
from nat_keras.supernet.cell_kernels import OpBodies
from nat_keras.supernet.cell_layout import CellSpec, layout_cells, resolve_op_list
from nat_keras.supernet.cell_switch import pick_inputs, run_slot
from nat_keras.supernet.packed_weights import Lookup, _NodeOps

# The largest per-edge change probability of an anchor's sampled plans (the
# probability itself is uniform below it, as for random search's plans).
ANCHOR_MAX_CHANGE = 0.5
# Draws of an anchor's plan before the anchor itself is taken (`_anchor_plan`).
ANCHOR_TRIES = 20


class CellSupernet(Supernet):
    """The weight-sharing supernet over NAT's cell space.

    Build it inside the `tf.distribute` strategy scope you train with. See
    `nat_keras.supernet.cell_arch` for the architecture vector.

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
      anchors: genotypes to be transformed later (of this supernet's node
        count and concat rule), whose neighbourhood `sample_genotype` also
        draws from (see `anchor_prob`).
      anchor_prob: the chance that `sample_genotype` (and so the trainer's
        architectures and `input_graphs`) returns a random plan of a random
        anchor (each edge changed with a probability drawn from [0, 0.5))
        instead of a uniformly random cell. 0, the paper's trainer, draws
        random cells only; see docs/design.md section 6 for why the
        paper's protocol here uses 0.5.
      budget: the budget the plans to score will meet, relative to each
        anchor's cost (needs `anchors`). A compact one (e.g.
        `Budget(macs_ratio=0.5)`) makes `budget_prob` of the trainer's
        architectures (`sample_arch`) random plans of a random anchor within
        it (`sample_plan_within`, as random search draws them; an anchor
        that cannot get down to the target is drawn at its floor,
        `Budget.within_reach`), since plans that far from an anchor are
        rarely drawn otherwise (docs/design.md section 6 measures what this
        does to the choices: their scores rise, their order does not). The
        policy's inputs (`input_graphs`) are drawn as without it. None or
        `Budget()`: the trainer draws `sample_genotype`'s cells alone.
      budget_prob: how often a compact budget's plans train (see `budget`).
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
        anchors: Sequence[Genotype] = (),
        anchor_prob: float = 0.0,
        budget: Budget | None = None,
        budget_prob: float = BUDGET_PROB,
        name: str | None = None,
    ):
        super().__init__(name=name or "cell_supernet")
        ops.check_space(space, where=f"CellSupernet {self.name!r}")
        if concat not in CONCAT_RULES:
            raise ValueError(f"concat must be one of {CONCAT_RULES}, got {concat!r}.")
        if channels < 2 or channels % 2:
            raise ValueError(f"channels must be even and >= 2 (FactorizedReduce halves it), got {channels}.")
        if num_nodes < 1 or num_cells < 1:
            raise ValueError(f"num_nodes and num_cells must be >= 1, got {num_nodes} and {num_cells}.")
        self.op_list = resolve_op_list(op_list)
        if NULL not in self.op_list or SKIP_CONNECT not in self.op_list:
            raise ValueError(
                f"op_list {list(self.op_list)} needs 'null' and 'skip_connect': NAT's actions produce them."
            )
        self.num_nodes, self.num_cells, self.channels = int(num_nodes), int(num_cells), int(channels)
        self.num_classes, self.image_shape = int(num_classes), tuple(int(d) for d in input_shape)
        self.stem_multiplier, self.space, self.concat, self.pool_bn = stem_multiplier, space, concat, pool_bn
        self._entries = 2 * self.num_nodes  # genotype entries per cell
        self._specs = layout_cells(self.num_cells, self.channels, self.image_shape[:2])
        # How arch vectors, genotypes, graphs and plans correspond (cell_arch).
        self.arch_codec = CellArchCodec(
            self.op_list,
            self.num_nodes,
            concat,
            space,
            self.channels,
            self.image_shape[0],
            self.name,
            num_cells=self.num_cells,
            stem_multiplier=stem_multiplier,
        )
        if not 0.0 <= anchor_prob <= 1.0 or (anchor_prob and not anchors):
            raise ValueError(
                f"CellSupernet {self.name!r}: anchor_prob must be in [0, 1] and needs anchors, got "
                f"{anchor_prob} with {len(anchors)} anchors."
            )
        self.anchors, self.anchor_prob = tuple(anchors), float(anchor_prob)
        # Their graphs, made once (GenotypeError here for an anchor of another structure).
        self._anchor_graphs = [self.graph_of(genotype) for genotype in self.anchors]
        compact = budget is not None and budget.is_compact
        if not 0.0 <= budget_prob <= 1.0 or (compact and not anchors):
            raise ValueError(
                f"CellSupernet {self.name!r}: budget_prob must be in [0, 1], and a compact budget needs "
                f"anchors (its plans are an anchor's), got {budget_prob} with {len(anchors)} anchors."
            )
        self.budget = budget if compact else None
        self.budget_prob = float(budget_prob)
        # Each anchor's budget: the target, or the anchor's floor if that is above it.
        self._anchor_budgets = [
            self.budget.within_reach(minimum_cost(graph, space), graph_cost(graph)) if compact else None
            for graph in self._anchor_graphs
        ]

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
        self._lists = Lookup({"preprocess": preprocess, "ops": op_layers})
        self._edge_ops = Lookup(index)
        self._bodies = OpBodies(pool_bn)
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

    @property
    def cell_specs(self) -> list[CellSpec]:
        """The cells' static facts (`cell_layout.CellSpec`), in order."""
        return self._specs

    def node_ops(self, cell: int, node: int, group: int) -> _NodeOps:
        """The packed op weights of the edges of stride group `group` into `node` of `cell`."""
        return self._edge_ops.entries[(cell, node, group)]

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

    def _cell(self, spec: CellSpec, s0: Any, s1: Any, arch: list[Any], batch: Any, training: bool) -> Any:
        states = [
            self.preprocess[2 * spec.index](s0, training=training),
            self.preprocess[2 * spec.index + 1](s1, training=training),
        ]
        zeros_shape = tf.stack([batch, *spec.out_hw, spec.channels])
        for node in range(self.num_nodes):
            sources = [arch[4 * node], arch[4 * node + 2]]
            ops_ = [arch[4 * node + 1], arch[4 * node + 3]]
            groups = spec.groups(node)
            layers = [self.node_ops(spec.index, node, g) for g in range(len(groups))]
            picked = pick_inputs(groups, states, sources)
            summands = [
                run_slot(layers, self._bodies, self.op_list, spec.channels, picked[slot], sources[slot],
                         ops_[slot], zeros_shape, training)
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

    # -- architectures (see cell_arch) ----------------------------------------

    @property
    def arch_size(self) -> int:
        """8 * num_nodes: an (input, op) pair per genotype entry, both cells."""
        return 2 * 2 * self._entries

    def check_arch(self, arch: Any) -> np.ndarray:
        """`arch` as an int32 vector (ValueError on a wrong shape or an index out of range)."""
        arch = super().check_arch(arch)
        self.arch_codec.check_pairs(arch)
        return arch

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
        return self.arch_codec.to_arch(genotype)

    def arch_to_genotype(self, arch: Any) -> Genotype:
        """The genotype of an arch vector (concat by this supernet's rule).

        Example:
          >>> supernet.arch_to_genotype(supernet.sample_arch(0)).num_nodes == supernet.num_nodes
          True
        """
        return self.arch_codec.to_genotype(self.check_arch(arch))

    def sample_genotype(self, seed: Any = None) -> Genotype:
        """An input architecture beta: inputs and ops uniform per entry, no null.

        With `anchor_prob`, that often a random plan of an anchor instead.

        Example:
          >>> supernet = CellSupernet(anchors=[PUBLISHED["DARTS"]], anchor_prob=1.0)
          >>> supernet.sample_genotype(0).num_nodes
          4
        """
        rng = seed
        if self.anchor_prob:
            rng = np.random.default_rng(seed)
            if rng.random() < self.anchor_prob:
                return self._anchor_plan(rng)
        return sample_genotype(
            rng,
            ops=self.op_list,
            num_nodes=self.num_nodes,
            exclude_null=True,
            concat="full" if self.concat == "full" else "loose",
        )

    def _anchor_plan(self, rng: np.random.Generator) -> Genotype:
        """A random NAT plan of a random anchor that is itself a valid input.

        A plan may leave an input of a cell feeding only nodes that no longer
        reach the cell's output (a skip from c_{k-2} into a node whose only
        reader became null); the genotype then builds, but its own graph
        fails `resolve` under its keep-all plan, so no policy could start
        from it. Such draws are drawn again; after `ANCHOR_TRIES` the anchor
        itself is returned.
        """
        index = rng.integers(len(self.anchors))
        graph = self._anchor_graphs[index]
        for _ in range(ANCHOR_TRIES):
            change = rng.uniform(0.0, ANCHOR_MAX_CHANGE)
            plan = sample_random_plan(graph, rng, space=self.space, change_prob=change)
            genotype = self.arch_to_genotype(self.arch_of(graph, plan))
            drawn = self.graph_of(genotype)
            try:
                resolve(drawn, TransformPlan.keep_all(drawn, space=self.space))
            except PlanError:
                continue
            return genotype
        return self.anchors[index]

    def sample_arch(self, seed: Any = None) -> np.ndarray:
        """The arch of `sample_genotype(seed)`, as the paper's trainer draws them; with a
        compact `budget`, `budget_prob` of the time a random plan of an anchor within it.

        Example:
          >>> np.array_equal(supernet.sample_arch((0, 5)), supernet.sample_arch((0, 5)))
          True
        """
        if self.budget is not None:  # without one, the draws of `seed` as before
            rng = np.random.default_rng(seed)
            if rng.random() < self.budget_prob:
                index = rng.integers(len(self.anchors))
                graph = self._anchor_graphs[index]
                try:
                    plan = sample_plan_within(graph, rng, self._anchor_budgets[index], space=self.space)
                    return self.arch_of(graph, plan)
                except BudgetError:
                    pass  # fit_to_budget stalled above the target (repair undid its moves): a usual draw
        return self.genotype_to_arch(self.sample_genotype(seed))

    # -- graphs and plans -----------------------------------------------------

    def graph_of(self, genotype: Genotype) -> ArchGraph:
        """The ArchGraph a policy transforms for input `genotype`.

        Both cells in one graph (`genotype_to_arch_graph(cell="both")`, edge
        ids "normal/node{i}_edge{slot}"), each edge costed as all its copies
        in this supernet's cells (affine-free BN), so a `Budget` holds for
        the whole network. Each edge offers only the
        actions of `space` whose result is in `op_list`, so every plan
        drawn from it runs on this supernet.

        Example:
          >>> graph = supernet.graph_of(PUBLISHED["DARTS"])
          >>> supernet.arch_of(graph, TransformPlan.keep_all(graph))  # == genotype_to_arch(DARTS)
        """
        return self.arch_codec.graph_of(genotype)

    def genotype_of(self, graph: ArchGraph) -> Genotype:
        """The genotype of a graph of `graph_of` / `input_graphs` (read back from it).

        Raises:
          ValueError: the graph was not made for this supernet.
        """
        return self.arch_codec.genotype_of(graph)

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
        return self.arch_codec.arch_of(graph, plan)

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
        return extract_network(self, arch)


__all__ = ["CONCAT_RULES", "CellSupernet"]
