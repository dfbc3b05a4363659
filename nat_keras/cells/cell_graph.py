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
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nat_keras import ops
from nat_keras.cells.genotype import CELLS, Entry, Genotype, GenotypeError
from nat_keras.cells.operations import ALL_OPS, NULL, SKIP_CONNECT, from_vocab, op_cost, to_vocab
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

INPUT_IDS = ("c_{k-2}", "c_{k-1}")
OUTPUT_ID = "c_{k}"
# The id of a genotype entry's edge: ["normal/" | "reduce/"] "node<i>_edge<slot>".
EDGE_ID = re.compile(r"^(?:(normal|reduce)/)?node(\d+)_edge([01])$")


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


__all__ = ["EDGE_ID", "INPUT_IDS", "OUTPUT_ID", "arch_graph_to_genotype", "genotype_to_arch_graph"]
