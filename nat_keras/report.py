"""Human-readable tables of ArchGraphs and plans.

Example:
  >>> print(nat_keras.format_graph(nat_keras.encode(model)))
  >>> print(nat_keras.format_plan(graph, plan))
"""

from __future__ import annotations

from collections.abc import Sequence

from nat_keras import ops
from nat_keras.graph import cost
from nat_keras.graph.arch_graph import ArchGraph, Shape
from nat_keras.graph.costs import edge_cost_after
from nat_keras.plan import TransformPlan, plan_cost, resolve

# NAT++ replacements are shown as "->op" so a row of actions stays readable.
_SHORT_ACTIONS = {ops.KEEP: "keep", ops.SKIP: "skip", ops.NONE: "none"}


def _shape(shape: Shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape) or "-"


def _actions(actions: Sequence[str]) -> str:
    return ",".join(_SHORT_ACTIONS.get(a, f"->{a}") for a in actions)


def _table(header: Sequence[str], rows: list[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_graph(graph: ArchGraph, *, placeholders: bool = True) -> str:
    """A table with one row per edge: op, shapes, stride, params, MACs, actions.

    Args:
      graph: the ArchGraph to show.
      placeholders: include placeholder null edges (often many).

    Example:
      >>> print(nat_keras.format_graph(nat_keras.encode(model)))
    """
    rows = []
    for edge in graph.edges:
        if edge.kind == "placeholder" and not placeholders:
            continue
        rows.append(
            [
                edge.id,
                edge.kind,
                f"{edge.src} -> {edge.dst}",
                edge.op,
                _shape(edge.input_shape),
                _shape(edge.output_shape),
                str(edge.stride),
                f"{edge.params:,}",
                f"{edge.macs:,}",
                _actions(edge.actions) + (f"  [{edge.note}]" if edge.protected and edge.note else ""),
            ]
        )
    header = ["edge", "kind", "nodes", "op", "in", "out", "s", "params", "MACs", "legal actions"]
    total = cost(graph)
    summary = (
        f"ArchGraph {graph.name!r}: {len(graph.nodes)} nodes, {len(graph.edges)} edges "
        f"({len(graph.transformable_edges())} transformable); {total.params:,} params, "
        f"{total.macs:,} MACs"
    )
    return summary + "\n" + _table(header, rows, right={6, 7, 8})


def format_plan(graph: ArchGraph, plan: TransformPlan) -> str:
    """A table of the edges a plan changes, with costs before and after.

    Example:
      >>> print(nat_keras.format_plan(graph, plan))
    """
    resolution = resolve(graph, plan)
    rows = []
    for edge_id, action in plan.actions.items():
        edge = graph.edge(edge_id)
        after = edge_cost_after(edge, action)
        live = "" if edge_id in resolution.live_edges or action == ops.NONE else " (dead)"
        rows.append(
            [
                edge_id,
                edge.op,
                action + live,
                f"{edge.params:,}",
                f"{after.params:,}",
                f"{edge.macs:,}",
                f"{after.macs:,}",
            ]
        )
    before, after = cost(graph), plan_cost(graph, plan)
    ratio = after.ratio(before)
    summary = (
        f"Plan for {graph.name!r}: {len(plan.actions)} of {len(graph.transformable_edges())} "
        f"transformable edges change. Params {before.params:,} -> {after.params:,} "
        f"({ratio['params']:.1%}), MACs {before.macs:,} -> {after.macs:,} ({ratio['macs']:.1%})."
    )
    if not rows:
        return summary
    header = ["edge", "op", "action", "params", "-> params", "MACs", "-> MACs"]
    return summary + "\n" + _table(header, rows, right={3, 4, 5, 6})
