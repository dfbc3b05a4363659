"""Rebuild a Keras model from its source model and a TransformPlan.

The source model's flattened graph (`trace`) is replayed node by node over the
ArchGraph: kept layers are cloned from their config and get the source's
weights, removed edges vanish (a sum loses an input, a concat gets zeros),
skips become identities or cheap projections, NAT++ replacements emit new
standard layers, and live placeholder edges add skips. The input model is
never touched: no layer of it is called or changed.

Example:
  >>> plan = nat_keras.TransformPlan.keep_all(nat_keras.encode(model))
  >>> new_model = nat_keras.apply_plan(model, plan)  # same predictions
"""

from __future__ import annotations

from typing import Any

import keras

from nat_keras import compat, ops
from nat_keras.graph.arch_graph import (
    IDENTITY,
    MERGE_CONCAT,
    MERGE_INPUT,
    MERGE_NONE,
    MERGE_SUM,
    PLACEHOLDER,
    ArchGraph,
    Edge,
    Node,
)
from nat_keras.graph.costs import Budget, graph_cost
from nat_keras.graph.encode import encode
from nat_keras.graph.trace import LayerCall, TracedModel, trace
from nat_keras.plan import Resolution, TransformPlan, is_active, plan_cost, resolve
from nat_keras.rebuild.emit import SkipPath, is_padding, layer_name, replacement_layer
from nat_keras.rebuild.layers import ZerosLike


def apply_plan(
    model: keras.Model,
    plan: TransformPlan,
    *,
    graph: ArchGraph | None = None,
    budget: Budget | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build the transformed model that `plan` describes.

    Args:
      model: the source Keras model (not modified).
      plan: a TransformPlan made for this model's ArchGraph.
      graph: the model's ArchGraph, if already encoded (saves a walk).
      budget: if given, raise BudgetError when the plan costs more than it
        allows relative to the source model.
      name: the new model's name (default: the source's name).

    Returns:
      A new functional keras.Model with the same inputs and outputs; kept
      layers carry the source's weights, new layers are freshly initialised.

    Raises:
      PlanError: the plan does not fit this model, or breaks it.
      BudgetError: the plan is over `budget`.

    Example:
      >>> graph = nat_keras.encode(model)
      >>> plan = nat_keras.TransformPlan.from_actions(graph, {"stage1_block0_conv1": "skip"})
      >>> smaller = nat_keras.apply_plan(model, plan)
    """
    graph = graph if graph is not None else encode(model)
    resolution = resolve(graph, plan)
    if budget is not None:
        budget.check(plan_cost(graph, plan), graph_cost(graph), what=f"The plan for {graph.name!r}")
    return _Rebuilder(trace(model), graph, resolution).build(name or model.name)


class _Rebuilder:
    def __init__(self, traced: TracedModel, graph: ArchGraph, resolution: Resolution):
        self.traced = traced
        self.graph = graph
        self.resolution = resolution
        self.calls = {c.name: c for c in traced.calls}
        self.clones: dict[int, Any] = {}  # id(source layer) -> its clone
        self.weight_pairs: list[tuple[Any, Any]] = []
        self.values: dict[str, Any] = {}  # node id -> new KerasTensor
        self.outputs_of: dict[str, list[Any]] = {}  # multi-output call -> outputs

    # -- layers -------------------------------------------------------------

    def _clone(self, layer: Any) -> Any:
        """One clone per source layer, so shared layers stay shared."""
        clone = self.clones.get(id(layer))
        if clone is None:
            if isinstance(layer, keras.layers.Layer):
                clone = compat.clone_layer(layer)
                if layer.weights:
                    self.weight_pairs.append((layer, clone))
            else:  # a stateless keras op used in the functional graph
                clone = compat.clone_operation(layer)
            self.clones[id(layer)] = clone
        return clone

    def _replay(self, call: LayerCall, *inputs: Any) -> Any:
        """Call the clone of `call`'s layer with its inputs replaced in order.

        Returns the first output; all outputs of a multi-output layer are kept
        in `self.outputs_of` for the nodes of its other outputs.
        """
        values = dict(zip(call.inputs, inputs))
        outputs = call.replay(self._clone(call.layer), values)
        if len(outputs) > 1:
            self.outputs_of[call.name] = outputs
        return outputs[0]

    # -- graph --------------------------------------------------------------

    def build(self, name: str) -> keras.Model:
        for key, node_id in zip(self.traced.inputs, self.graph.inputs):
            source = next(t for t in compat.model_inputs(self.traced.model) if id(t) == key)
            self.values[node_id] = keras.Input(
                shape=source.shape[1:], dtype=source.dtype, name=layer_name(node_id)
            )
        for node in self.graph.nodes:
            if node.merge != MERGE_INPUT and node.id in self.resolution.live_nodes:
                self.values[node.id] = self._node_value(node)
        inputs = [self.values[n] for n in self.graph.inputs]
        outputs = [self.values[n] for n in self.graph.outputs]
        model = keras.Model(
            inputs=compat.pack_like(compat.inputs_structure(self.traced.model), inputs),
            outputs=compat.pack_like(compat.outputs_structure(self.traced.model), outputs),
            name=name,
        )
        for source, clone in self.weight_pairs:
            clone.set_weights(source.get_weights())
        return model

    def _node_value(self, node: Node) -> Any:
        if node.layer in self.outputs_of and node.id != node.layer:
            return self.outputs_of[node.layer][int(node.id.rsplit(":", 1)[1])]
        actions = self.resolution.actions
        incoming = self.graph.in_edges(node.id)
        regular = [e for e in incoming if e.kind != PLACEHOLDER]
        added = [
            self.values[e.src] for e in incoming if e.kind == PLACEHOLDER and is_active(e.kind, actions[e.id])
        ]
        merge_call = self.calls.get(node.layer) if node.merge != MERGE_NONE else None

        contributions: list[Any] = []
        for edge in sorted(regular, key=lambda e: e.slot):
            if edge.id in self.resolution.live_edges:
                contributions.append(self._edge_value(edge, self.values[edge.src]))
            else:
                contributions.append(None)
        if node.merge == MERGE_CONCAT:
            present = next(v for v in contributions if v is not None)
            contributions = [
                v if v is not None else ZerosLike(e.output_shape, name=layer_name(e.id, "zeros"))(present)
                for v, e in zip(contributions, sorted(regular, key=lambda e: e.slot))
            ]
        live = [v for v in contributions if v is not None]

        if node.merge in (MERGE_NONE, MERGE_SUM):
            summands = live + added
            unchanged = node.merge == MERGE_SUM and len(live) == len(regular) and not added
            if unchanged:
                value = self._replay(merge_call, *live)
            elif len(summands) == 1:
                value = summands[0]
            else:
                value = keras.layers.Add(name=layer_name(node.id, "nat_add"))(summands)
        else:
            value = self._replay(merge_call, *contributions)
            if added:  # placeholders only target none/sum nodes, but be safe
                value = keras.layers.Add(name=layer_name(node.id, "nat_add"))([value, *added])
        for post_name in node.post:
            value = self._replay(self.calls[post_name], value)
        return value

    def _edge_value(self, edge: Edge, x: Any) -> Any:
        action = self.resolution.actions[edge.id]
        if edge.kind in (IDENTITY, PLACEHOLDER):
            return x
        if action == ops.KEEP:
            for layer_name in edge.layers:
                x = self._replay(self.calls[layer_name], x)
            return x
        if action == ops.SKIP:
            return self._skip(edge, x)
        return self._replacement(edge, action, x)

    def _skip(self, edge: Edge, x: Any) -> Any:
        return SkipPath(edge)(x)

    def _replacement(self, edge: Edge, target: str, x: Any) -> Any:
        primary = replacement_layer(edge, target)
        for index, name in enumerate(edge.layers):
            call = self.calls[name]
            if index == edge.primary:
                x = primary(x)
            elif not is_padding(call.layer):  # new ops pad themselves
                x = self._replay(call, x)
        return x
