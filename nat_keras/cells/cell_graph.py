"""Genotypes as NAT's DAG (`ArchGraph`), and back.

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
  params / MACs of the `operations` layers (`op_cost`): of one cell, or
  with `num_cells` summed over every copy of the cell in the network
  (`Edge.copies`), since one normal-cell edge stands for an op in each
  normal cell, at that cell's channels and resolution. With `num_cells` an
  edge's `layers` are then its op's layer in each copy, as `build_network`
  names them ("cell3_node1_edge0_sep_conv_3x3"; none for a stride-1 skip,
  which is no layer), so weights can be read per edge (LargeEdge's
  magnitudes, `nat_keras.search.baselines.edge_magnitudes`).

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
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nat_keras import ops
from nat_keras.cells.genotype import CELLS, Entry, Genotype, GenotypeError
from nat_keras.cells.network import reduction_cells
from nat_keras.cells.operations import ALL_OPS, NULL, SKIP_CONNECT, from_vocab, to_vocab
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
from nat_keras.graph.costs import Cost, cell_op_cost_over, cell_preprocess_cost

INPUT_IDS = ("c_{k-2}", "c_{k-1}")
OUTPUT_ID = "c_{k}"
# The id of a genotype entry's edge: ["normal/" | "reduce/"] "node<i>_edge<slot>".
EDGE_ID = re.compile(r"^(?:(normal|reduce)/)?node(\d+)_edge([01])$")


def _index_node(index: int, prefix: str) -> str:
    return prefix + (INPUT_IDS[index] if index < 2 else f"node{index - 2}")


def _copies_cost(op: str, stride: int, copies: Sequence[tuple[int, int]], affine: bool) -> Cost:
    """What cell op `op` (a genotype name) costs summed over an edge's copies."""
    return cell_op_cost_over(to_vocab(op), copies, strides=stride, affine=affine)


def _edge_actions(
    op: str, stride: int, copies: Sequence[tuple[int, int]], affine: bool, only_cheaper: bool
) -> tuple[str, ...]:
    """NAT's legal actions for a unit edge carrying cell op `op` (see module docstring)."""
    own = _copies_cost(op, stride, copies, affine)
    candidates = [ops.KEEP, ops.NONE]
    if op != SKIP_CONNECT:
        candidates.append(ops.SKIP)
        candidates += [t for t in ops.cheaper_targets(to_vocab(op)) if t in ALL_OPS]
    actions = []
    for action in candidates:
        if only_cheaper and action not in (ops.KEEP, ops.NONE):
            new = _copies_cost(SKIP_CONNECT if action == ops.SKIP else action, stride, copies, affine)
            if new.params > own.params or new.macs > own.macs:
                continue
        actions.append(action)
    return tuple(a for a in ops.ACTIONS if a in actions)


def _half(size: int) -> int:
    return -(-size // 2)


def cell_copies(num_cells: int, channels: int, spatial: int) -> dict[str, tuple[tuple[int, int], ...]]:
    """(channels, input height) of each normal and each reduction cell of a cell network.

    The layout of `build_network(..., channels=channels, num_cells=num_cells)`
    on `spatial` x `spatial` images: channels double and the resolution
    halves at each reduction cell (`reduction_cells`).

    Example:
      >>> cell_copies(5, 8, 32)
      {'normal': ((8, 32), (16, 16), (32, 8)), 'reduce': ((16, 32), (32, 16))}
    """
    copies: dict[str, list[tuple[int, int]]] = {which: [] for which in CELLS}
    reductions = reduction_cells(num_cells)
    for index in range(num_cells):
        if index in reductions:
            channels *= 2
            copies["reduce"].append((channels, spatial))
            spatial = _half(spatial)
        else:
            copies["normal"].append((channels, spatial))
    return {which: tuple(found) for which, found in copies.items()}


def preprocess_costs(
    genotype: Genotype,
    *,
    num_cells: int,
    channels: int,
    spatial: int,
    stem_multiplier: int = 3,
    affine: bool = True,
) -> dict[str, tuple[Cost, Cost]]:
    """What each cell type's input preprocessing costs, summed over its copies.

    Follows `build_network`: the stem has `stem_multiplier * channels`
    channels, a cell's output `len(concat) * C`; c_{k-2} is read through a
    FactorizedReduce after a reduction cell, else (like c_{k-1}) through a 1x1
    ReLUConvBN (`nat_keras.graph.costs.cell_preprocess_cost`).

    Returns:
      {"normal" | "reduce": (cost of c_{k-2}'s, cost of c_{k-1}'s)}, for the
      cell types the network has.

    Example:
      >>> costs = preprocess_costs(PUBLISHED["DARTS"], num_cells=5, channels=8, spatial=16)
      >>> sorted(costs), costs["normal"][1].params > 0
      (['normal', 'reduce'], True)
    """
    reductions = reduction_cells(num_cells)
    stem = (stem_multiplier * channels, spatial)  # (channels, height) of a raw cell input
    s0, s1 = stem, stem
    cell_channels, reduction_prev = channels, False
    totals: dict[str, tuple[Cost, Cost]] = {}
    for index in range(num_cells):
        reduction = index in reductions
        which = "reduce" if reduction else "normal"
        if reduction:
            cell_channels *= 2
        first = cell_preprocess_cost(s0[0], cell_channels, s0[1], factorized=reduction_prev, affine=affine)
        second = cell_preprocess_cost(s1[0], cell_channels, s1[1], factorized=False, affine=affine)
        before = totals.get(which, (Cost(0, 0), Cost(0, 0)))
        totals[which] = (before[0] + first, before[1] + second)
        _, concat = genotype.cell(which)
        s0, s1 = s1, (len(concat) * cell_channels, _half(s1[1]) if reduction else s1[1])
        reduction_prev = reduction
    return totals


def _cell_parts(
    entries: Sequence[Entry],
    concat: Sequence[int],
    *,
    reduction: bool,
    copies: Sequence[tuple[int, int]],
    affine: bool,
    only_cheaper: bool,
    prefix: str,
    input_costs: tuple[Cost, Cost] = (Cost(0, 0), Cost(0, 0)),
    cell_indices: Sequence[int] = (),
) -> tuple[list[Node], list[Edge]]:
    """Nodes and edges of one cell (see the module docstring).

    `copies` holds the (channels, input height) of each copy of the cell in
    the network; the shapes are those of the first, the costs sum over all.
    `input_costs` are the inputs' preprocessing (`preprocess_costs`), the
    input nodes' own cost; `cell_indices` the network's indices of the
    copies, which name the edges' layers.
    """
    channels, spatial = copies[0]
    out_spatial = _half(spatial) if reduction else spatial
    in_shape = (spatial, spatial, channels)
    out_shape = (out_spatial, out_spatial, channels)
    # The copies of an edge from an intermediate node run at the cell's output resolution.
    inner_copies = tuple((c, _half(h) if reduction else h) for c, h in copies)
    num_nodes = len(entries) // 2
    nodes = [
        Node(prefix + i, in_shape, MERGE_INPUT, layer=prefix + i, params=cost.params, macs=cost.macs)
        for i, cost in zip(INPUT_IDS, input_costs, strict=True)
    ]
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
    # One copy at the shapes' size needs no list (`Edge.copies`).
    listed = len(copies) > 1
    edges: list[Edge] = []
    for position, (op, index) in enumerate(entries):
        node, slot = divmod(position, 2)
        stride = 2 if reduction and index < 2 else 1
        edge_copies = tuple(copies) if index < 2 else inner_copies
        common = {
            "id": f"{prefix}node{node}_edge{slot}",
            "src": _index_node(index, prefix),
            "dst": f"{prefix}node{node}",
            "input_shape": in_shape if index < 2 else out_shape,
            "output_shape": out_shape,
            "stride": stride,
            "copies": edge_copies if listed else (),
        }
        if op == NULL:
            actions = (ops.KEEP, ops.SKIP)
            if only_cheaper and _copies_cost(SKIP_CONNECT, stride, edge_copies, True).params:
                actions = (ops.KEEP,)
            # library "darts": a skip here is costed as a DARTS skip over every copy of the edge.
            edges.append(
                Edge(**common, slot=-1, kind=PLACEHOLDER, op=ops.NULL, library="darts", actions=actions)
            )
            continue
        cost = _copies_cost(op, stride, edge_copies, affine)
        parsed = ops.parse_op(op)
        has_layer = not (op == SKIP_CONNECT and stride == 1)  # build_network passes identities through
        layers = tuple(f"cell{i}_node{node}_edge{slot}_{op}" for i in cell_indices) if has_layer else ()
        bn = (4 if affine else 2) * sum(c for c, _ in edge_copies) if cost.params else 0
        edges.append(
            Edge(
                **common,
                slot=slot,
                kind=UNIT,
                op=to_vocab(op),
                library="darts",
                layers=layers,
                kernel=parsed[1] if parsed else 0,
                dilation=2 if parsed and parsed[0] == "dil_conv" else 1,
                params=cost.params,
                # What a NAT++ replacement swaps out: the op without its (last) BN.
                primary_params=cost.params - bn,
                macs=cost.macs,
                actions=_edge_actions(op, stride, edge_copies, affine, only_cheaper),
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
    num_cells: int | None = None,
    stem_multiplier: int = 3,
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
      num_cells: cost each edge as all its copies in the network of
        `build_network(genotype, channels=channels, num_cells=num_cells)` on
        `spatial`-sized images (`cell_copies`: every normal cell at its own
        channels and resolution, likewise the reduction cells), so that a
        budget on the graph is a budget on that network; the shapes are
        then those of the first copy. A cell the network has none of is
        costed as one copy at `channels`. The inputs' preprocessing is then the
        input nodes' own cost (`Node.params` / `Node.macs`,
        `preprocess_costs`): the network builds it only for an input that a
        non-null op reads, and so does the cost of a graph or plan
        (`ArchGraph.in_use`, `nat_keras.plan_cost`), so a plan that makes a
        cell read c_{k-2} for the first time (a skip added in VGG, ResBlock
        or MobileNetV2) pays for its 1x1 conv (or FactorizedReduce) in every
        cell. Default: one copy of each cell at `channels` and `spatial`,
        what the cell alone costs, its inputs' preprocessing unknown and not
        counted.
      stem_multiplier: the network's stem has `stem_multiplier * channels`
        channels (with `num_cells`: the c_{k-2} / c_{k-1} channels of the
        first cells).
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
    if num_cells is not None and num_cells < 1:
        raise ValueError(f"num_cells must be >= 1 (or None: one copy of each cell), got {num_cells}.")
    layout = cell_copies(num_cells, channels, spatial) if num_cells is not None else {}
    indices: dict[str, list[int]] = {}
    if num_cells is not None:
        reductions = reduction_cells(num_cells)
        for index in range(num_cells):
            indices.setdefault("reduce" if index in reductions else "normal", []).append(index)
    input_costs = (
        preprocess_costs(
            genotype, num_cells=num_cells, channels=channels, spatial=spatial,
            stem_multiplier=stem_multiplier, affine=affine,
        )
        if num_cells is not None
        else {}
    )  # fmt: skip
    nodes: list[Node] = []
    edges: list[Edge] = []
    for which in cells:
        entries, concat = genotype.cell(which)
        cell_nodes, cell_edges = _cell_parts(
            entries,
            concat,
            reduction=which == "reduce",
            copies=layout.get(which) or ((channels, spatial),),
            affine=affine,
            only_cheaper=only_cheaper,
            prefix=f"{which}/" if cell == "both" else "",
            input_costs=input_costs.get(which, (Cost(0, 0), Cost(0, 0))),
            cell_indices=indices.get(which, ()),
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
        match = EDGE_ID.match(edge.id)
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


__all__ = [
    "EDGE_ID",
    "INPUT_IDS",
    "OUTPUT_ID",
    "arch_graph_to_genotype",
    "cell_copies",
    "genotype_to_arch_graph",
]
