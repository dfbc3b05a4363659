"""Steps 3 and 4 of encoding: placeholder edges, then each edge's legal actions.

3. Placeholder null edges join equal-shape nodes two edges apart (like the
   paper's c_{k-2} input), so NAT can add skips to plain chains
   (`with_placeholders`).
4. Legal actions come from shapes, the graph and local cost; stem, head,
   shared and opaque edges are protected (keep only) (`with_legal_actions`).

Example:
  >>> graph = with_legal_actions(with_placeholders(graph, span=2))  # ResNet-20's
  >>> graph.edge("stem_conv").actions   # a stem edge
  ('keep',)
"""

from __future__ import annotations

import collections
import dataclasses

from nat_keras import ops
from nat_keras.graph.arch_graph import (
    MERGE_CONCAT,
    MERGE_INPUT,
    MERGE_MULTIPLY,
    MERGE_NONE,
    MERGE_OTHER,
    MERGE_SUM,
    PLACEHOLDER,
    UNIT,
    ArchGraph,
    Edge,
    Node,
)
from nat_keras.graph.costs import Cost, edge_cost_after, skip_cost


def topological_edges(nodes: list[Node], edges: list[Edge]) -> list[Edge]:
    """Edges ordered by their destination node, then slot (placeholders last).

    Example:
      >>> topological_edges(list(graph.nodes), list(graph.edges)) == list(graph.edges)
      True
    """
    order = {node.id: i for i, node in enumerate(nodes)}
    return sorted(edges, key=lambda e: (order[e.dst], e.kind == PLACEHOLDER, e.slot, e.id))


def with_placeholders(graph: ArchGraph, span: int) -> ArchGraph:
    """Add null edges u -> v between equal-shape nodes 2..span edges apart.

    Example:
      >>> [e.id for e in with_placeholders(graph, 2).edges if e.kind == "placeholder"][:1]  # ResNet-20's
      ['null:stage1_block0_conv1->stage1_block1_conv1']
    """
    if span < 2:
        return graph
    new_edges: list[Edge] = []
    for node in graph.nodes:
        if node.merge not in (MERGE_NONE, MERGE_SUM) or node.is_output:
            continue
        existing = {e.src for e in graph.in_edges(node.id)}
        for src, distance in _ancestors_within(graph, node.id, span).items():
            source = graph.node(src)
            if (
                distance < 2
                or src in existing
                or source.merge == MERGE_INPUT
                or source.shape != node.shape
                or len(node.shape) < 2
            ):
                continue
            new_edges.append(
                Edge(
                    id=f"null:{src}->{node.id}",
                    src=src,
                    dst=node.id,
                    slot=-1,
                    kind=PLACEHOLDER,
                    op=ops.NULL,
                    input_shape=source.shape,
                    output_shape=node.shape,
                )
            )
    return dataclasses.replace(
        graph, edges=tuple(topological_edges(list(graph.nodes), [*graph.edges, *new_edges]))
    )


def _ancestors_within(graph: ArchGraph, node_id: str, span: int) -> dict[str, int]:
    """Ancestors of `node_id` by fewest edges, up to `span` edges back."""
    distance = {node_id: 0}
    frontier = collections.deque([node_id])
    while frontier:
        current = frontier.popleft()
        if distance[current] == span:
            continue
        for edge in graph.in_edges(current):
            if edge.kind == PLACEHOLDER or edge.src in distance:
                continue
            distance[edge.src] = distance[current] + 1
            frontier.append(edge.src)
    del distance[node_id]
    return distance


def with_legal_actions(graph: ArchGraph) -> ArchGraph:
    """Set each edge's protected flag and legal actions (see module docstring).

    Example:
      >>> with_legal_actions(graph).edge("stem_conv").actions   # ResNet-20's stem
      ('keep',)
    """
    inputs, outputs = set(graph.inputs), set(graph.outputs)
    in_degree = {n.id: len(graph.in_edges(n.id)) for n in graph.nodes}
    edges = []
    for edge in graph.edges:
        dst = graph.node(edge.dst)
        notes = [edge.note] if edge.note else []
        protected = edge.protected
        if edge.kind == PLACEHOLDER:
            edges.append(dataclasses.replace(edge, actions=(ops.KEEP, ops.SKIP)))
            continue
        if edge.src in inputs and edge.kind == UNIT:
            protected, notes = True, [*notes, "stem"]
        if edge.dst in outputs:
            protected, notes = True, [*notes, "head"]
        if edge.kind == UNIT and edge.op == ops.OTHER and not protected:
            protected, notes = True, [*notes, "no primary op"]
        if protected:
            edges.append(
                dataclasses.replace(edge, protected=True, actions=(ops.KEEP,), note="; ".join(notes))
            )
            continue
        actions = [ops.KEEP]
        if edge.kind == UNIT and skip_cost(edge) is not None and _fits(edge, skip_cost(edge)):
            actions.append(ops.SKIP)
        removable = dst.merge in (MERGE_SUM, MERGE_CONCAT) or (dst.merge == MERGE_NONE)
        if removable and in_degree[edge.dst] >= 2:
            actions.append(ops.NONE)
        if edge.kind == UNIT:
            for target in ops.cheaper_targets(edge.op):
                replaced = edge_cost_after(edge, target)
                if replaced is not None and _fits(edge, replaced):
                    actions.append(target)
        if dst.merge in (MERGE_MULTIPLY, MERGE_OTHER):
            # Shapes must stay exact for the layer that consumes the edge.
            actions = [a for a in actions if a != ops.NONE]
        edges.append(
            dataclasses.replace(
                edge, actions=tuple(a for a in ops.ACTIONS if a in actions), note="; ".join(notes)
            )
        )
    return dataclasses.replace(graph, edges=tuple(edges))


def _fits(edge: Edge, new: Cost) -> bool:
    return new.params <= edge.params and new.macs <= edge.macs


__all__ = ["topological_edges", "with_legal_actions", "with_placeholders"]
