"""One evaluator of an ArchGraph over Keras values, for `apply_plan` and the supernet.

`apply_plan` (a fixed action per edge, emitting Keras layers) and the
model-space supernet (a switch per edge over its legal branches) evaluate the
same graph with the same rules; the rules live here, once:

- nodes run in graph order; a node gathers its regular edges' values by slot
  and adds its placeholder edges' values after the merge;
- sum / none nodes add their inputs (`EdgeEvaluator.add` says how: a rebuilt
  sum that lost no input replays the source's Add layer);
- concat, multiply and other nodes replay their merge layer on their inputs,
  a removed concat input becoming `ZerosLike` of its shape;
- a node's post layers (the ReLU after a residual sum) follow its merge;
- the further outputs of a multi-output layer are read by `Node.output_index`
  from the `CallOutputs` of that layer's call.

What an edge computes is the caller's strategy, an `EdgeEvaluator`. Layers
are replayed through `LayerClones`: one clone per (source layer, variant), so
shared layers stay shared and the source model is never called.

Example:
  >>> interpreter = GraphInterpreter(graph, traced.calls, LayerClones())
  >>> values = interpreter.run(inputs, evaluator)   # node id -> value
  >>> outputs = [values[n] for n in graph.outputs]
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import keras

from nat_keras import compat
from nat_keras.errors import PlanError
from nat_keras.graph.arch_graph import (
    MERGE_CONCAT,
    MERGE_INPUT,
    MERGE_NONE,
    MERGE_SUM,
    PLACEHOLDER,
    ArchGraph,
    Edge,
    Node,
)
from nat_keras.graph.trace import LayerCall
from nat_keras.rebuild.emit import is_padding, layer_name
from nat_keras.rebuild.layers import ZerosLike

# -- clones ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CloneKey:
    """Which clone of a source layer: the shared one, or a variant's own copy.

    Attributes:
      source: `id()` of the source layer or op (the source model outlives
        its clones, so ids stay unique).
      variant: None for the clone every use shares; else the name of what
        owns a separate copy (the supernet gives each NAT++ replacement of an
        edge its own BN / activation, keyed by the action).
    """

    source: int
    variant: str | None = None


@dataclasses.dataclass(frozen=True)
class Clone:
    """A source layer (or stateless op) and the fresh copy that stands in for it."""

    key: CloneKey
    source: Any
    layer: Any

    @property
    def is_layer(self) -> bool:
        return isinstance(self.source, keras.layers.Layer)


class LayerClones:
    """Fresh copies of a source model's layers, one per (layer, variant).

    Layers are cloned from their config (`compat.clone_layer`: unbuilt, no
    weights shared with the source); stateless Keras ops get a fresh copy.
    A variant's clone of a layer is named `<layer>__<variant>` (made a valid
    name), so that it can sit beside the shared clone in one model.

    Example:
      >>> clones = LayerClones()
      >>> clones.layer(bn) is clones.layer(bn)          # shared layers stay shared
      True
      >>> clones.layer(bn, variant="sep_conv_3x3").name
      'block_bn__sep_conv_3x3'
    """

    def __init__(self) -> None:
        self._clones: dict[CloneKey, Clone] = {}

    def layer(self, source: Any, variant: str | None = None) -> Any:
        """The clone of `source` for `variant` (made on first use)."""
        key = CloneKey(id(source), variant)
        found = self._clones.get(key)
        if found is None:
            if isinstance(source, keras.layers.Layer):
                clone = compat.clone_layer(source)
                if variant is not None:
                    clone.name = layer_name(f"{source.name}__{variant}")
            else:  # a stateless keras op used in the functional graph
                clone = compat.clone_operation(source)
            found = self._clones[key] = Clone(key, source, clone)
        return found.layer

    def __iter__(self) -> Iterator[Clone]:
        """Every clone, in the order they were made."""
        return iter(list(self._clones.values()))

    def weighted(self, *, shared_only: bool = False) -> list[Clone]:
        """The clones of source layers that have weights (shared clones only, if asked)."""
        return [
            clone
            for clone in self
            if clone.is_layer and clone.source.weights and not (shared_only and clone.key.variant is not None)
        ]


@dataclasses.dataclass(frozen=True)
class CallOutputs:
    """Every output of one multi-output layer call, for the nodes of its further outputs."""

    call: str
    values: tuple[Any, ...]


# -- the strategy -------------------------------------------------------------------


class EdgeEvaluator(abc.ABC):
    """What the interpreter asks of its caller: the value of each edge, and sums.

    `carries` and `computes` are static (known while building): an edge that
    does not carry is missing from its node's merge (a sum loses an input, a
    concat gets zeros); a node that is not computed gets no value. By default
    every edge carries and every node is computed, as in the supernet, whose
    removed edges are switched to zeros at run time.
    """

    def computes(self, node: Node) -> bool:
        """Whether `node` is evaluated at all."""
        del node
        return True

    def carries(self, edge: Edge) -> bool:
        """Whether `edge` is part of the network (else `value` is not asked)."""
        del edge
        return True

    @abc.abstractmethod
    def value(self, edge: Edge, x: Any) -> Any:
        """The value `edge` carries, given its source node's value `x`."""

    @abc.abstractmethod
    def add(self, node: Node, summands: Sequence[Any], original: Callable[[], Any] | None) -> Any:
        """The sum of `summands` at `node` (a sum / none node, or placeholders added to a merge).

        `original` replays the node's own merge layer on the summands; it is
        given only when they are exactly that layer's inputs (a sum node that
        lost none and gained none).
        """


# -- the interpreter -----------------------------------------------------------------


class GraphInterpreter:
    """Evaluates an ArchGraph whose layers come from a traced source model.

    Args:
      graph: the source model's ArchGraph.
      calls: the source model's layer calls (`trace(model).calls`).
      clones: where the layers that replay the calls come from.
    """

    def __init__(self, graph: ArchGraph, calls: Iterable[LayerCall], clones: LayerClones):
        self.graph = graph
        self.calls = {call.name: call for call in calls}
        self.clones = clones
        self._regular: dict[str, list[Edge]] = {}
        self._placeholders: dict[str, list[Edge]] = {}
        for node in graph.nodes:
            incoming = graph.in_edges(node.id)
            regular = (e for e in incoming if e.kind != PLACEHOLDER)
            self._regular[node.id] = sorted(regular, key=lambda e: e.slot)
            self._placeholders[node.id] = [e for e in incoming if e.kind == PLACEHOLDER]

    # -- layers ---------------------------------------------------------------

    def replay(self, call_name: str, *inputs: Any, variant: str | None = None) -> list[Any]:
        """Call the clone of a source call's layer with its tensor inputs replaced in order.

        The call's other arguments (e.g. `training=False`) are kept. Returns
        every output, flattened.
        """
        call = self.calls[call_name]
        return call.replay(self.clones.layer(call.layer, variant), dict(zip(call.inputs, inputs)))

    def keep(self, edge: Edge, x: Any) -> Any:
        """`edge`'s own unit of layers on `x` (shared clones)."""
        for name in edge.layers:
            x = self.replay(name, x)[0]
        return x

    def replace(self, edge: Edge, primary: Any, x: Any, *, variant: str | None = None) -> Any:
        """`edge`'s unit with `primary` in place of its primary op.

        The unit's padding layers are dropped (NAT++ ops pad themselves); its
        other layers (BN, activation) are replayed from `variant`'s clones.
        """
        for index, name in self.replacement_calls(edge):
            x = primary(x) if index == edge.primary else self.replay(name, x, variant=variant)[0]
        return x

    def replacement_calls(self, edge: Edge) -> list[tuple[int, str]]:
        """(position in `edge.layers`, call name) of what a replacement of `edge` runs."""
        return [
            (index, name)
            for index, name in enumerate(edge.layers)
            if index == edge.primary or not is_padding(self.calls[name].layer)
        ]

    # -- graph ----------------------------------------------------------------

    def run(self, inputs: Sequence[Any], evaluator: EdgeEvaluator) -> dict[str, Any]:
        """Every computed node's value, given the graph inputs' values in order."""
        values: dict[str, Any] = dict(zip(self.graph.inputs, inputs))
        produced: dict[str, CallOutputs] = {}
        for node in self.graph.nodes:
            if node.merge == MERGE_INPUT or not evaluator.computes(node):
                continue
            if node.output_index > 0:
                # A further output of a multi-output layer, whose call ran at its first output's node.
                values[node.id] = produced[node.layer].values[node.output_index]
                continue
            values[node.id] = self._node_value(node, values, produced, evaluator)
        return values

    def _node_value(
        self, node: Node, values: dict[str, Any], produced: dict[str, CallOutputs], evaluator: EdgeEvaluator
    ) -> Any:
        regular, placeholders = self._regular[node.id], self._placeholders[node.id]
        contributions = [evaluator.value(e, values[e.src]) if evaluator.carries(e) else None for e in regular]
        added = [evaluator.value(e, values[e.src]) for e in placeholders if evaluator.carries(e)]
        if node.merge in (MERGE_NONE, MERGE_SUM):
            present = [v for v in contributions if v is not None]
            unchanged = node.merge == MERGE_SUM and len(present) == len(regular) and not added
            original = (lambda: self._merge_call(node, present, produced)) if unchanged else None
            value = evaluator.add(node, present + added, original)
        else:
            value = self._merge_call(node, self._filled(node, regular, contributions), produced)
            if added:  # placeholders only target none / sum nodes, but be safe
                value = evaluator.add(node, [value, *added], None)
        for name in node.post:
            value = self.replay(name, value)[0]
        return value

    def _merge_call(self, node: Node, inputs: list[Any], produced: dict[str, CallOutputs]) -> Any:
        outputs = self.replay(node.layer, *inputs)
        if len(outputs) > 1:
            produced[node.layer] = CallOutputs(node.layer, tuple(outputs))
        return outputs[node.output_index]

    def _filled(self, node: Node, regular: list[Edge], contributions: list[Any]) -> list[Any]:
        """A merge's inputs, with zeros for a concat's removed ones."""
        if all(v is not None for v in contributions):
            return contributions
        if node.merge != MERGE_CONCAT:
            missing = [e.id for e, v in zip(regular, contributions) if v is None]
            raise PlanError(
                f"Node {node.id!r} of {self.graph.name!r} ({node.merge}) needs all its inputs; "
                f"edges {missing} were removed. Keep them."
            )
        present = next((v for v in contributions if v is not None), None)
        if present is None:
            raise PlanError(f"Node {node.id!r} of {self.graph.name!r} lost every input; keep one of them.")
        return [
            v if v is not None else ZerosLike(e.output_shape, name=layer_name(e.id, "zeros"))(present)
            for v, e in zip(contributions, regular)
        ]


__all__ = ["CallOutputs", "Clone", "CloneKey", "EdgeEvaluator", "GraphInterpreter", "LayerClones"]
