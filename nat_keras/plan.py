"""TransformPlan: one NAT action per edge, the replayable record of a decision.

A plan names, for each edge of an ArchGraph, what happens to it: keep, skip,
none, or (NAT++) a cheaper op. Edges it does not name are kept. Plans carry the
graph's fingerprint so a plan made for one model is not applied to another.
`resolve` turns a plan into what the rebuild and the cost need: every edge's
action, which edges and nodes still reach an output, and whether the result is
a valid network.

Example:
  >>> graph = nat_keras.encode(model)
  >>> plan = nat_keras.TransformPlan.from_actions(graph, {"stage1_block0_conv2": "skip"})
  >>> plan.save("plan.json"); nat_keras.TransformPlan.load("plan.json") == plan
  True
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from nat_keras import ops
from nat_keras.errors import BudgetError, PlanError
from nat_keras.graph.arch_graph import (
    MERGE_CONCAT,
    MERGE_INPUT,
    MERGE_MULTIPLY,
    MERGE_OTHER,
    PLACEHOLDER,
    ArchGraph,
    Edge,
)
from nat_keras.graph.costs import Budget, Cost, adds, edge_cost_after, graph_cost, minimum_cost

PLAN_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TransformPlan:
    """What to do with each edge of one ArchGraph.

    Attributes:
      graph_name: name of the model the plan was made for.
      fingerprint: `ArchGraph.fingerprint()` of that model's graph.
      actions: edge id -> action, for the edges that change (others keep).
      space: the action space the plan was drawn from: "nat" or "nat++".
    """

    graph_name: str
    fingerprint: str
    actions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    space: str = "nat++"

    def __post_init__(self):
        ops.check_space(self.space, where="TransformPlan")
        # Keep only real changes, in a stable order, so equal plans compare equal.
        changes = {k: v for k, v in sorted(dict(self.actions).items()) if v != ops.KEEP}
        object.__setattr__(self, "actions", changes)

    # -- construction -------------------------------------------------------

    @classmethod
    def keep_all(cls, graph: ArchGraph, *, space: str = "nat++") -> TransformPlan:
        """The plan that changes nothing (rebuilds an equal model)."""
        return cls(graph.name, graph.fingerprint(), {}, space)

    @classmethod
    def from_actions(
        cls, graph: ArchGraph, actions: Mapping[str, str], *, space: str = "nat++"
    ) -> TransformPlan:
        """A plan for `graph`, validated against it.

        Raises:
          PlanError: an unknown edge, an action outside `space`, an action
            that is illegal on its edge, or a plan that breaks the network.
        """
        plan = cls(graph.name, graph.fingerprint(), dict(actions), space)
        plan.validate(graph)
        return plan

    def action(self, edge_id: str) -> str:
        return self.actions.get(edge_id, ops.KEEP)

    def with_actions(self, changes: Mapping[str, str]) -> TransformPlan:
        return dataclasses.replace(self, actions={**self.actions, **changes})

    # -- validation ----------------------------------------------------------

    def validate(self, graph: ArchGraph) -> Resolution:
        """Check this plan against `graph`; returns its resolution.

        Raises:
          PlanError: naming the edge or node at fault and how to fix it.
        """
        return resolve(graph, self)

    # -- serialisation ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "graph_name": self.graph_name,
            "fingerprint": self.fingerprint,
            "space": self.space,
            "actions": dict(self.actions),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformPlan:
        version = data.get("format_version", PLAN_FORMAT_VERSION)
        if version != PLAN_FORMAT_VERSION:
            raise PlanError(f"Plan format {version} is not supported (expected {PLAN_FORMAT_VERSION}).")
        try:
            return cls(
                data["graph_name"], data["fingerprint"], dict(data["actions"]), data.get("space", "nat++")
            )
        except KeyError as missing:
            raise PlanError(
                f"Plan data lacks the field {missing}; was it written by TransformPlan.save?"
            ) from None

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> TransformPlan:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json(indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TransformPlan:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    def __hash__(self) -> int:
        return hash((self.graph_name, self.fingerprint, tuple(self.actions.items()), self.space))


@dataclasses.dataclass(frozen=True)
class Resolution:
    """A plan applied to a graph, before any Keras model is built.

    Attributes:
      actions: every edge id -> its action.
      live_edges: edges whose op is in the new network (reach an output).
      live_nodes: nodes that reach an output.
      zero_filled: removed edges into a concat, replaced by zeros of their shape.
    """

    actions: dict[str, str]
    live_edges: frozenset[str]
    live_nodes: frozenset[str]
    zero_filled: frozenset[str]


def is_active(edge_kind: str, action: str) -> bool:
    """Whether an edge carries a value in the new network (before liveness)."""
    if action == ops.NONE:
        return False
    return not (edge_kind == PLACEHOLDER and action == ops.KEEP)


def resolve(graph: ArchGraph, plan: TransformPlan) -> Resolution:
    """Check `plan` against `graph` and work out what the new network keeps.

    Raises:
      PlanError: see `TransformPlan.validate`.
    """
    if plan.fingerprint != graph.fingerprint():
        raise PlanError(
            f"This plan was made for model {plan.graph_name!r} (graph fingerprint "
            f"{plan.fingerprint}), not for model {graph.name!r} (fingerprint "
            f"{graph.fingerprint()}). Make a plan for this model, e.g. with "
            "TransformPlan.from_actions(nat_keras.encode(model), ...)."
        )
    allowed = set(ops.ACTION_SPACES[plan.space])
    for edge_id, action in plan.actions.items():
        if not graph.has_edge(edge_id):
            raise PlanError(f"Plan for {graph.name!r} names edge {edge_id!r}, which the model does not have.")
        edge = graph.edge(edge_id)
        if action not in ops.ACTIONS:
            raise PlanError(f"Edge {edge_id!r}: unknown action {action!r}; actions are {list(ops.ACTIONS)}.")
        if action not in allowed:
            raise PlanError(
                f"Edge {edge_id!r}: action {action!r} is not in the {plan.space!r} action space "
                f"({sorted(allowed)}). Use space='nat++' for replacements by cheaper ops."
            )
        if action not in edge.actions:
            why = f" ({edge.note})" if edge.note else ""
            raise PlanError(
                f"Edge {edge_id!r} (layer op {edge.op}) of model {graph.name!r} cannot take action "
                f"{action!r}{why}; its legal actions are {list(edge.actions)}."
            )
    actions = {e.id: plan.action(e.id) for e in graph.edges}

    # Walk back from the outputs along edges that still carry a value.
    live_nodes: set[str] = set()
    live_edges: set[str] = set()
    zero_filled: set[str] = set()
    stack = list(graph.outputs)
    while stack:
        node_id = stack.pop()
        if node_id in live_nodes:
            continue
        live_nodes.add(node_id)
        node = graph.node(node_id)
        if node.merge == MERGE_INPUT:
            continue
        incoming = graph.in_edges(node_id)
        active = [e for e in incoming if is_active(e.kind, actions[e.id])]
        if not active:
            removed = ", ".join(e.id for e in incoming) or "none"
            raise PlanError(
                f"Plan for {graph.name!r} leaves node {node_id!r} with no input (edges: {removed}). "
                "Keep at least one edge into every node, or turn a placeholder edge into a skip."
            )
        for edge in incoming:
            if is_active(edge.kind, actions[edge.id]):
                live_edges.add(edge.id)
                stack.append(edge.src)
            elif edge.kind != PLACEHOLDER:
                if node.merge in (MERGE_MULTIPLY, MERGE_OTHER):
                    raise PlanError(
                        f"Edge {edge.id!r} feeds {node.merge} node {node_id!r}, which needs all its "
                        "inputs; it cannot be removed."
                    )
                if node.merge == MERGE_CONCAT:
                    zero_filled.add(edge.id)
    for input_id in graph.inputs:
        # An input that only feeds placeholder edges (a cell's c_{k-2} in the
        # hand-made cells) is unused until a plan adds a skip from it.
        only_placeholders = all(e.kind == PLACEHOLDER for e in graph.out_edges(input_id))
        if input_id not in live_nodes and not only_placeholders:
            raise PlanError(
                f"Plan for {graph.name!r} disconnects model input {input_id!r} from every output. "
                "Keep a path from each input."
            )
    return Resolution(actions, frozenset(live_edges), frozenset(live_nodes), frozenset(zero_filled))


def sample_random_plan(
    graph: ArchGraph,
    rng: np.random.Generator | int | None = None,
    *,
    space: str = "nat++",
    change_prob: float = 0.5,
) -> TransformPlan:
    """A random plan that passes `resolve`: each transformable edge changes with
    probability `change_prob` to a uniformly drawn legal action.

    Nodes left without an input get one of their edges back (kept), so the
    sample is always a valid network. Every local action costs no more than
    the op it replaces, so the plan also meets the default Budget.

    Example:
      >>> plan = sample_random_plan(graph, 0, space="nat")
      >>> plan.validate(graph)  # never raises
    """
    rng = np.random.default_rng(rng)
    allowed = set(ops.ACTION_SPACES[ops.check_space(space, where="sample_random_plan")])
    actions: dict[str, str] = {}
    for edge in graph.edges:
        legal = [a for a in edge.actions if a in allowed and a != ops.KEEP]
        if legal and rng.random() < change_prob:
            actions[edge.id] = legal[rng.integers(len(legal))]
    return repair(graph, TransformPlan(graph.name, graph.fingerprint(), actions, space))


def repair(graph: ArchGraph, plan: TransformPlan) -> TransformPlan:
    """Restore edges (to keep) so that the plan is a valid network.

    1. For each node whose incoming edges would all be removed, the first
       non-placeholder edge into it is kept again (placeholders stay null).
    2. For each model input that no longer reaches an output, the removed
       edges on one path from it to a live node are kept again.
    """
    actions = dict(plan.actions)
    for node in graph.nodes:
        if node.merge == MERGE_INPUT:
            continue
        incoming = graph.in_edges(node.id)
        if any(is_active(e.kind, actions.get(e.id, ops.KEEP)) for e in incoming):
            continue
        regular = [e for e in incoming if e.kind != PLACEHOLDER]
        if regular:
            actions.pop(regular[0].id, None)
    live = _live_nodes(graph, actions)
    for input_id in graph.inputs:
        if input_id not in live and not all(e.kind == PLACEHOLDER for e in graph.out_edges(input_id)):
            for edge_id in _path_to_live(graph, input_id, live):
                actions.pop(edge_id, None)
            live = _live_nodes(graph, actions)
    return dataclasses.replace(plan, actions=actions)


def fit_to_budget(
    graph: ArchGraph,
    plan: TransformPlan,
    budget: Budget,
    *,
    preference: Callable[[Edge, str], float] | None = None,
) -> TransformPlan:
    """`plan`, made cheaper one edge at a time until it meets `budget` (bounded, no resampling).

    While the plan is over budget on params or MACs, one edge moves to a
    cheaper legal action: the move with the largest `preference(edge,
    action) * saving` on the dimension that is over, `saving` being what the
    edge's own cost drops by. A move that `repair` undoes is not tried again.
    Each move lowers a cost or is banned, so there are at most (edges x
    actions) moves.

    Args:
      graph: the source architecture.
      plan: a valid plan for it, in its action space.
      budget: the target, relative to the source's cost.
      preference: how much the caller wants `action` on `edge` (e.g. the
        policy's probability); default 1 for every move (the largest saving
        first).

    Returns:
      A valid plan within `budget`; `plan` itself if it already is.

    Raises:
      BudgetError: no plan in the action space meets `budget` (checked first
        against `minimum_cost`), or the moves ran out.

    Example:
      >>> small = fit_to_budget(graph, plan, Budget(macs_ratio=0.5))
      >>> Budget(macs_ratio=0.5).allows(plan_cost(graph, small), nat_keras.cost(graph))
      True
    """
    reference = graph_cost(graph)
    current = plan_cost(graph, plan)
    if budget.allows(current, reference):
        return plan
    budget.check_reachable(minimum_cost(graph, plan.space), reference, what=f"Model {graph.name!r}")
    preference = preference or (lambda edge, action: 1.0)
    allowed = set(ops.ACTION_SPACES[plan.space])
    limit = budget.limits(reference)
    banned: set[tuple[str, str]] = set()
    for _ in range(sum(len(e.actions) for e in graph.edges)):
        over_params, over_macs = current.params > limit.params, current.macs > limit.macs
        if not (over_params or over_macs):
            return plan
        best, best_score = None, 0.0
        for edge in graph.transformable_edges():
            action = plan.actions.get(edge.id, ops.KEEP)
            now = edge_cost_after(edge, action)
            for candidate in edge.actions:
                after = edge_cost_after(edge, candidate) if candidate in allowed else None
                if after is None or candidate == action or (edge.id, candidate) in banned:
                    continue
                saving = (now.params - after.params) * over_params + (now.macs - after.macs) * over_macs
                score = preference(edge, candidate) * saving
                if saving > 0 and score > best_score:
                    best, best_score = (edge.id, candidate), score
        if best is None:
            break
        moved = repair(graph, dataclasses.replace(plan, actions={**plan.actions, best[0]: best[1]}))
        banned.add(best)
        if moved.actions.get(best[0], ops.KEEP) == best[1]:  # repair kept the move
            plan, current = moved, plan_cost(graph, moved)
    if budget.allows(current, reference):
        return plan
    raise BudgetError(
        f"No cheaper plan for {graph.name!r} was found within the budget (limit {limit.params:,} params / "
        f"{limit.macs:,} MACs; the closest costs {current.params:,} / {current.macs:,}); loosen the budget."
    )


# The change probabilities of `sample_plan_within`: uniform in (0, MAX_CHANGE_PROB].
MAX_CHANGE_PROB = 0.5


def sample_plan_within(
    graph: ArchGraph, rng: np.random.Generator, budget: Budget, *, space: str = "nat++"
) -> TransformPlan:
    """A random plan within `budget`: each plan its own change probability, fitted to the budget.

    The change probability is drawn uniformly from (0, 0.5] per plan, so plans
    near the source (where trained networks mostly stay good) are drawn as
    well as far ones; a plan over budget is made cheaper edge by edge
    (`fit_to_budget`). What random search draws, and what a supernet trains
    on to score plans of a compact budget (`ModelSupernet(budget=...)`).

    Example:
      >>> plan = sample_plan_within(graph, np.random.default_rng(0), Budget(macs_ratio=0.5))
      >>> Budget(macs_ratio=0.5).allows(plan_cost(graph, plan), nat_keras.cost(graph))
      True
    """
    change_prob = float(rng.uniform(1e-3, MAX_CHANGE_PROB))
    return fit_to_budget(graph, sample_random_plan(graph, rng, space=space, change_prob=change_prob), budget)


def _live_nodes(graph: ArchGraph, actions: Mapping[str, str]) -> set[str]:
    """Nodes that reach an output along edges that carry a value."""
    live: set[str] = set()
    stack = list(graph.outputs)
    while stack:
        node_id = stack.pop()
        if node_id in live:
            continue
        live.add(node_id)
        for edge in graph.in_edges(node_id):
            if is_active(edge.kind, actions.get(edge.id, ops.KEEP)):
                stack.append(edge.src)
    return live


def _path_to_live(graph: ArchGraph, start: str, live: set[str]) -> list[str]:
    """Edge ids of a shortest path of original (non-placeholder) edges from
    `start` to a live node."""
    parent: dict[str, tuple[str, str] | None] = {start: None}
    queue = [start]
    while queue:
        node_id = queue.pop(0)
        if node_id in live and node_id != start:
            path = []
            while parent[node_id] is not None:
                previous, edge_id = parent[node_id]
                path.append(edge_id)
                node_id = previous
            return path
        for edge in graph.out_edges(node_id):
            if edge.kind != PLACEHOLDER and edge.dst not in parent:
                parent[edge.dst] = (node_id, edge.id)
                queue.append(edge.dst)
    return []


def plan_cost(graph: ArchGraph, plan: TransformPlan) -> Cost:
    """The cost of the network that `apply_plan(model, plan)` would build.

    Computed on the graph alone (no Keras model is built); only the parts that
    still reach an output count, as in the rebuilt model.

    Example:
      >>> nat_keras.plan_cost(graph, TransformPlan.keep_all(graph)) == nat_keras.cost(graph)
      True
    """
    resolution = resolve(graph, plan)
    total = Cost(0, 0)
    for edge in graph.edges:
        if edge.id in resolution.live_edges:
            total = total + edge_cost_after(edge, resolution.actions[edge.id])
    live_nodes = [graph.node(n) for n in resolution.live_nodes]
    node_cost = Cost(sum(n.params for n in live_nodes), sum(n.macs for n in live_nodes))
    total_adds = adds(graph, resolution.actions, resolution.live_nodes)
    return Cost(total.params + node_cost.params, total.macs + node_cost.macs, total_adds)
