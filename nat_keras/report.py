"""What a transform did: `TransformReport`, and human-readable tables of ArchGraphs and plans.

Example:
  >>> print(nat_keras.format_graph(nat_keras.encode(model)))
  >>> print(nat_keras.format_plan(graph, plan))
  >>> new_model.nat_report.save("out/report.json")
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from nat_keras import ops
from nat_keras.errors import NatKerasError
from nat_keras.graph import cost
from nat_keras.graph.arch_graph import ArchGraph, Shape
from nat_keras.graph.costs import Cost, edge_cost_after
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


REPORT_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TransformReport:
    """What `transform` did, attached to its result as `model.nat_report`.

    The report outlives the Python session: `to_json` / `from_json` (and
    `save` / `load`) keep everything in it, the source's ArchGraph included,
    so a saved report can be replayed (`apply_plan` with its plan), checked
    against a model (its graph's fingerprint) or handed to `nat_keras.export`.

    Attributes:
      model_name: the source model's name.
      plan: the chosen TransformPlan.
      graph: the source model's ArchGraph (the plan's edges are its edges).
      cost_before / cost_after: params and MACs of the source and the result.
      candidates: (plan, supernet accuracy on held-out data), best first:
        the sampled (or greedy) plans and, unless the budget rules it out,
        the source itself (the keep-all plan); empty without data.
      accuracy_before / accuracy_after: supernet accuracy of the source and of
        the chosen plan on held-out data (None without data).
      rewards: mean policy reward per search epoch (empty without data).
      history: the search's per-epoch means (`reward`, `baseline`, `entropy`,
        `cost_ratio`: lists, one value per epoch); empty without data and
        for the baselines.
      method: how the plan was chosen ("nat" or a baseline of
        `nat_keras.search.baselines.METHODS`).
      evaluations: supernet evaluations spent choosing it (0 without data).
      message: a one-line summary.

    Example:
      >>> report = new_model.nat_report
      >>> TransformReport.from_json(report.to_json()) == report
      True
    """

    model_name: str
    plan: TransformPlan
    graph: ArchGraph
    cost_before: Cost
    cost_after: Cost
    candidates: tuple[tuple[TransformPlan, float], ...] = ()
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    rewards: tuple[float, ...] = ()
    history: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    method: str = "nat"
    evaluations: int = 0
    message: str = ""

    def __str__(self) -> str:
        lines = [self.message, format_plan(self.graph, self.plan)]
        if self.accuracy_before is not None:
            lines.append(
                f"Supernet accuracy on held-out data: {self.accuracy_before:.4f} (source) -> "
                f"{self.accuracy_after:.4f} (transformed); {len(self.candidates)} candidates scored."
            )
        if self.rewards:
            lines.append("Mean reward per search epoch: " + ", ".join(f"{r:+.4f}" for r in self.rewards))
        return "\n".join(lines)

    # -- serialisation ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only."""
        return {
            "format_version": REPORT_FORMAT_VERSION,
            "model_name": self.model_name,
            "message": self.message,
            "plan": self.plan.to_dict(),
            "cost_before": self.cost_before.to_dict(),
            "cost_after": self.cost_after.to_dict(),
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "candidates": [{"plan": p.to_dict(), "score": float(s)} for p, s in self.candidates],
            "rewards": [float(r) for r in self.rewards],
            "history": {name: [float(v) for v in values] for name, values in self.history.items()},
            "method": self.method,
            "evaluations": int(self.evaluations),
            "graph": self.graph.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformReport:
        version = data.get("format_version")
        if version != REPORT_FORMAT_VERSION:
            raise NatKerasError(
                f"TransformReport format {version!r} is not supported (expected {REPORT_FORMAT_VERSION}); "
                "was it written by TransformReport.save of another nat_keras version?"
            )
        try:
            return cls(
                model_name=data["model_name"],
                plan=TransformPlan.from_dict(data["plan"]),
                graph=ArchGraph.from_dict(data["graph"]),
                cost_before=Cost(**data["cost_before"]),
                cost_after=Cost(**data["cost_after"]),
                candidates=tuple(
                    (TransformPlan.from_dict(entry["plan"]), float(entry["score"]))
                    for entry in data.get("candidates", ())
                ),
                accuracy_before=data.get("accuracy_before"),
                accuracy_after=data.get("accuracy_after"),
                rewards=tuple(float(r) for r in data.get("rewards", ())),
                history={name: tuple(values) for name, values in data.get("history", {}).items()},
                method=data.get("method", "nat"),
                evaluations=int(data.get("evaluations", 0)),
                message=data.get("message", ""),
            )
        except KeyError as missing:
            raise NatKerasError(
                f"TransformReport data lacks the field {missing}; was it written by TransformReport.save?"
            ) from None

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> TransformReport:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the report as JSON (`report.json` by convention)."""
        pathlib.Path(path).write_text(self.to_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TransformReport:
        return cls.from_json(pathlib.Path(path).read_text(encoding="utf-8"))
