"""Rebuild a Keras model from its source model and a TransformPlan.

The source model's flattened graph (`trace`) is replayed node by node over the
ArchGraph by `interpreter.GraphInterpreter`, with the plan's one action per
edge (`_FixedActions`; the supernet switches instead): kept layers are cloned
from their config and get the source's weights, removed edges vanish (a sum
loses an input, a concat gets zeros), skips become identities or cheap
projections, NAT++ replacements emit new standard layers, and live
placeholder edges add skips. The input model is
never touched: no layer of it is called or changed.

Example:
  >>> plan = nat_keras.TransformPlan.keep_all(nat_keras.encode(model))
  >>> new_model = nat_keras.apply_plan(model, plan)  # same predictions
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from nat_keras import compat, ops
from nat_keras.graph.arch_graph import IDENTITY, PLACEHOLDER, ArchGraph, Edge, Node
from nat_keras.graph.costs import Budget, graph_cost
from nat_keras.graph.encode import encode
from nat_keras.graph.trace import TracedModel, trace
from nat_keras.plan import Resolution, TransformPlan, plan_cost, resolve
from nat_keras.rebuild.emit import SkipPath, layer_name, replacement_layer
from nat_keras.rebuild.interpreter import EdgeEvaluator, GraphInterpreter, LayerClones


def apply_plan(
    model: keras.Model,
    plan: TransformPlan,
    *,
    graph: ArchGraph | None = None,
    check_budget: Budget | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build the transformed model that `plan` describes.

    Args:
      model: the source Keras model (not modified).
      plan: a TransformPlan made for this model's ArchGraph.
      graph: the model's ArchGraph, if already encoded (saves a walk).
      check_budget: if given, raise BudgetError when the plan costs more
        than this budget allows relative to the source model; None builds any
        legal plan unchecked. (Named apart from the `budget` arguments of
        `transform`, `Policy.sample` and `derive`, where None means the
        default `Budget()`: rebuilding is not planning.)
      name: the new model's name (default: the source's name).

    Returns:
      A new functional keras.Model with the same inputs and outputs; kept
      layers carry the source's weights, new layers are freshly initialised.

    Raises:
      PlanError: the plan does not fit this model, or breaks it.
      BudgetError: the plan is over `check_budget`.

    Example:
      >>> graph = nat_keras.encode(model)
      >>> plan = nat_keras.TransformPlan.from_actions(graph, {"stage1_block0_conv1": "skip"})
      >>> smaller = nat_keras.apply_plan(model, plan)
    """
    graph = graph if graph is not None else encode(model)
    resolution = resolve(graph, plan)
    if check_budget is not None:
        check_budget.check(plan_cost(graph, plan), graph_cost(graph), what=f"The plan for {graph.name!r}")
    return _Rebuilder(trace(model), graph, resolution).build(name or model.name)


class _Rebuilder:
    """Replays the source graph with the plan's fixed action on every edge."""

    def __init__(self, traced: TracedModel, graph: ArchGraph, resolution: Resolution):
        self.traced = traced
        self.graph = graph
        self.clones = LayerClones()
        self.interpreter = GraphInterpreter(graph, traced.calls, self.clones)
        self.evaluator = _FixedActions(self.interpreter, resolution)

    def build(self, name: str) -> keras.Model:
        inputs = []
        for key, node_id in zip(self.traced.inputs, self.graph.inputs):
            source = next(t for t in compat.model_inputs(self.traced.model) if id(t) == key)
            inputs.append(keras.Input(shape=source.shape[1:], dtype=source.dtype, name=layer_name(node_id)))
        values = self.interpreter.run(inputs, self.evaluator)
        outputs = [values[n] for n in self.graph.outputs]
        model = keras.Model(
            inputs=compat.pack_like(compat.inputs_structure(self.traced.model), inputs),
            outputs=compat.pack_like(compat.outputs_structure(self.traced.model), outputs),
            name=name,
        )
        for clone in self.clones.weighted():  # after building: the clones' weights exist now
            clone.layer.set_weights(clone.source.get_weights())
        return model


class _FixedActions(EdgeEvaluator):
    """Each edge emits the Keras layers of its one action; dead edges and nodes emit nothing."""

    def __init__(self, interpreter: GraphInterpreter, resolution: Resolution):
        self.interpreter = interpreter
        self.resolution = resolution

    def computes(self, node: Node) -> bool:
        return node.id in self.resolution.live_nodes

    def carries(self, edge: Edge) -> bool:
        return edge.id in self.resolution.live_edges

    def value(self, edge: Edge, x: Any) -> Any:
        action = self.resolution.actions[edge.id]
        if edge.kind in (IDENTITY, PLACEHOLDER):
            return x  # a live placeholder edge is a skip
        if action == ops.KEEP:
            return self.interpreter.keep(edge, x)
        if action == ops.SKIP:
            return SkipPath(edge)(x)
        return self.interpreter.replace(edge, replacement_layer(edge, action), x)

    def add(self, node: Node, summands: Sequence[Any], original: Callable[[], Any] | None) -> Any:
        if original is not None:  # an unchanged sum replays the source's own Add layer
            return original()
        if len(summands) == 1:  # a sum that lost all but one input is that input
            return summands[0]
        return keras.layers.Add(name=layer_name(node.id, "nat_add"))(list(summands))
