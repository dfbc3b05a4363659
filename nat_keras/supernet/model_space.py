"""The supernet of one model's plan space.

Every transformable edge of the model's ArchGraph becomes a switch between its
legal actions (keep, skip, none and, for NAT++, the cheaper ops); placeholder
edges switch between null and skip. Kept ops start from the source model's
weights; each NAT++ replacement has its own primary op and its own copy of the
unit's BN / activation (weight sharing across ops would mix BN statistics).

`arch[i]` is the index in `nat_keras.ops.ACTIONS` of the action of
`graph.edges[i]`, so `plan_to_arch` / `arch_to_plan` convert exactly.

Example:
  >>> supernet = ModelSupernet(nat_keras.models.resnet20())
  >>> arch = supernet.sample_arch(seed=0)
  >>> supernet.accuracy(arch, (images, labels))
  >>> supernet.extract(arch)   # == apply_plan(model, arch_to_plan(arch)) with supernet weights
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from nat_keras import compat, ops
from nat_keras.errors import PlanError
from nat_keras.graph.arch_graph import (
    IDENTITY,
    MERGE_INPUT,
    MERGE_NONE,
    MERGE_SUM,
    PLACEHOLDER,
    ArchGraph,
    Edge,
)
from nat_keras.graph.encode import encode
from nat_keras.graph.trace import trace
from nat_keras.plan import TransformPlan, is_active, resolve, sample_random_plan
from nat_keras.rebuild.apply import apply_plan
from nat_keras.rebuild.emit import SkipPath, is_padding, layer_name, replacement_layer
from nat_keras.supernet.base import Supernet

_ACTION_INDEX = {action: i for i, action in enumerate(ops.ACTIONS)}


@dataclasses.dataclass
class _SourceRef:
    """Holds the source model (and its layers by clone key) without Keras
    tracking their weights as the supernet's."""

    model: keras.Model
    layers: dict[str, Any] = dataclasses.field(default_factory=dict)


class ModelSupernet(Supernet):
    """A weight-sharing supernet over one Keras model's transformation plans.

    Build it inside the `tf.distribute` strategy scope you train with.

    Args:
      model: the source Keras 3 model (not modified).
      graph: its ArchGraph, if already encoded.
      space: "nat" (keep / skip / none) or "nat++" (also cheaper ops).
      change_prob: the chance that `sample_arch` changes an edge, i.e. how
        far from the source model the architectures that train the shared
        weights stray. Kept small because the policy's plans stay near the
        source. On digits (ResNet-20, BN recalibrated), 400 steps at 0.15
        left the source at 0.99 and architectures with 5% of edges changed
        at 0.97-0.99 (50% changed: 0.11-0.19); 300 steps at 0.5 had taken
        the source from 1.00 to 0.84.
      name: the supernet's name.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        graph: ArchGraph | None = None,
        space: str = "nat++",
        change_prob: float = 0.15,
        name: str | None = None,
    ):
        super().__init__(name=name or f"{model.name}_supernet")
        if space not in ops.ACTION_SPACES:
            raise ValueError(f"Unknown action space {space!r}; use one of {list(ops.ACTION_SPACES)}.")
        self.graph = graph if graph is not None else encode(model)
        self.space = space
        self.change_prob = change_prob
        self._source = _SourceRef(model)
        traced = trace(model)
        self._calls = {c.name: c for c in traced.calls}
        self._input_keys = traced.inputs
        self._clones: dict[str, Any] = {}  # supernet layer name -> layer
        allowed = set(ops.ACTION_SPACES[space])
        self.edge_actions: list[tuple[str, ...]] = [
            tuple(a for a in edge.actions if a in allowed) for edge in self.graph.edges
        ]
        # Per edge: global action index -> branch index (illegal actions -> keep).
        self._branch_of = [
            np.array([actions.index(a) if a in actions else 0 for a in ops.ACTIONS], dtype=np.int32)
            for actions in self.edge_actions
        ]
        self._branch_layers: dict[tuple[str, str], list[Any]] = {}
        self._skips: dict[str, SkipPath] = {}
        for edge, actions in zip(self.graph.edges, self.edge_actions):
            for action in actions:
                self._make_branch(edge, action)
        self.branch_layers = [layer for layers in self._branch_layers.values() for layer in layers]
        self.node_layers = [self._clone(name) for node in self.graph.nodes for name in self._node_calls(node)]
        self._build_all()

    # -- construction -------------------------------------------------------

    def _clone(self, call_name: str, suffix: str = "") -> Any:
        """A clone of a source layer call's layer (one per source layer and suffix)."""
        call = self._calls[call_name]
        key = f"{call.layer.name}{suffix}" if isinstance(call.layer, keras.layers.Layer) else call_name
        if key not in self._clones:
            layer = call.layer
            if isinstance(layer, keras.layers.Layer):
                clone = compat.clone_layer(layer)
                if suffix:
                    clone.name = layer_name(layer.name + suffix)
                self._source.layers[key] = layer
            else:  # a stateless keras op: a fresh copy, never the user's object
                clone = compat.clone_operation(layer)
            self._clones[key] = clone
        return self._clones[key]

    def _node_calls(self, node: Any) -> list[str]:
        if node.merge in (MERGE_INPUT, MERGE_NONE) or node.id != node.layer:
            return list(node.post)
        return [node.layer, *node.post]

    def _make_branch(self, edge: Edge, action: str) -> None:
        layers: list[Any] = []
        if edge.kind == "unit" and action == ops.KEEP:
            layers = [self._clone(name) for name in edge.layers]
        elif edge.kind == "unit" and action == ops.SKIP:
            self._skips[edge.id] = SkipPath(edge)
            layers = list(self._skips[edge.id].layers)
        elif edge.kind == "unit" and action not in (ops.NONE,):
            suffix = f"__{action}"
            for index, name in enumerate(edge.layers):
                if index == edge.primary:
                    layers.append(replacement_layer(edge, action))
                elif not is_padding(self._calls[name].layer):
                    layers.append(self._clone(name, suffix))
        self._branch_layers[(edge.id, action)] = layers

    def _build_all(self) -> None:
        """Run every branch once on a dummy batch (creates all weights), then
        copy the source model's weights into the clones."""
        dummies = [
            keras.ops.zeros((1, *t.shape[1:]), dtype=t.dtype) for t in compat.model_inputs(self._source.model)
        ]
        self._forward(dummies, arch=None)
        for key, source in self._source.layers.items():
            self._clones[key].set_weights(source.get_weights())
        self.built = True

    # -- forward ------------------------------------------------------------

    def call(self, inputs: Any, arch: Any = None, training: Any = None) -> Any:
        if arch is None:
            arch = np.zeros(self.arch_size, np.int32)  # keep everything: the source model
        return self._forward(keras.tree.flatten(inputs), arch=arch)

    def _forward(self, inputs: list[Any], *, arch: Any) -> Any:
        """Evaluate the graph; arch=None runs every branch (to build layers)."""
        values = dict(zip(self.graph.inputs, inputs))
        outputs_of: dict[str, list[Any]] = {}
        for node in self.graph.nodes:
            if node.merge == MERGE_INPUT:
                continue
            if node.layer in outputs_of and node.id != node.layer:
                values[node.id] = outputs_of[node.layer][int(node.id.rsplit(":", 1)[1])]
                continue
            regular, added = [], []
            for edge_index, edge in self._in_edges(node.id):
                value = self._edge_value(edge, edge_index, values[edge.src], arch)
                (added if edge.kind == PLACEHOLDER else regular).append(value)
            if node.merge in (MERGE_NONE, MERGE_SUM):
                value = regular[0]
                for other in regular[1:] + added:
                    value = keras.ops.add(value, other)
            else:
                call = self._calls[node.layer]
                produced = call.replay(self._clone(node.layer), dict(zip(call.inputs, regular)))
                if len(produced) > 1:
                    outputs_of[node.layer] = produced
                value = produced[0]
                for other in added:
                    value = keras.ops.add(value, other)
            for name in node.post:
                value = self._clone(name)(value)
            values[node.id] = value
        flat = [values[n] for n in self.graph.outputs]
        return compat.pack_like(compat.outputs_structure(self._source.model), flat)

    def _in_edges(self, node_id: str) -> list[tuple[int, Edge]]:
        if not hasattr(self, "_in_edge_index"):
            index: dict[str, list[tuple[int, Edge]]] = {}
            for i, edge in enumerate(self.graph.edges):
                index.setdefault(edge.dst, []).append((i, edge))
            for edges in index.values():
                edges.sort(key=lambda pair: (pair[1].kind == PLACEHOLDER, pair[1].slot))
            self._in_edge_index = index
        return self._in_edge_index.get(node_id, [])

    def _edge_value(self, edge: Edge, edge_index: int, x: Any, arch: Any) -> Any:
        actions = self.edge_actions[edge_index]
        branches = [self._branch_fn(edge, action) for action in actions]
        if arch is None:
            results = [branch(x) for branch in branches]
            return results[0]
        if len(branches) == 1:
            return branches[0](x)
        table = keras.ops.convert_to_tensor(self._branch_of[edge_index])
        branch = keras.ops.take(table, arch[edge_index])
        return keras.ops.switch(branch, branches, x)

    def _branch_fn(self, edge: Edge, action: str) -> Callable[[Any], Any]:
        shape = edge.output_shape

        def zeros(x: Any) -> Any:
            return keras.ops.zeros((keras.ops.shape(x)[0], *shape), dtype=x.dtype)

        if not is_active(edge.kind, action):
            return zeros
        if edge.kind in (IDENTITY, PLACEHOLDER):
            return lambda x: x
        if action == ops.SKIP:
            return self._skips[edge.id]
        layers = self._branch_layers[(edge.id, action)]

        def run(x: Any) -> Any:
            # `training` reaches BN / dropout through Keras' call context.
            for layer in layers:
                x = layer(x)
            return x

        return run

    # -- architectures ------------------------------------------------------

    @property
    def arch_size(self) -> int:
        return len(self.graph.edges)

    def plan_to_arch(self, plan: TransformPlan) -> np.ndarray:
        """The arch vector of a plan (validated against this supernet's graph)."""
        resolve(self.graph, plan)
        return np.array([_ACTION_INDEX[plan.action(e.id)] for e in self.graph.edges], dtype=np.int32)

    def arch_to_plan(self, arch: Any) -> TransformPlan:
        """The TransformPlan of an arch vector (PlanError if it is not valid)."""
        arch = self.check_arch(arch)
        if arch.min() < 0 or arch.max() >= len(ops.ACTIONS):
            raise PlanError(
                f"Supernet {self.name!r}: arch values must index nat_keras.ops.ACTIONS "
                f"(0..{len(ops.ACTIONS) - 1}), got {arch.min()}..{arch.max()}."
            )
        actions = {e.id: ops.ACTIONS[int(a)] for e, a in zip(self.graph.edges, arch)}
        return TransformPlan.from_actions(self.graph, actions, space=self.space)

    def input_graphs(self, rng: Any, count: int) -> list[ArchGraph]:
        """The input architectures the policy transforms: the source model itself."""
        del rng
        return [self.graph] * count

    def arch_of(self, graph: ArchGraph, plan: TransformPlan) -> np.ndarray:
        """The arch that runs `plan` applied to input `graph` (this model's graph)."""
        if graph.fingerprint() != self.graph.fingerprint():
            raise ValueError(f"Supernet {self.name!r} only runs plans for model {self.graph.name!r}.")
        return self.plan_to_arch(plan)

    def sample_arch(self, seed: Any = None) -> np.ndarray:
        """A random legal plan as an arch (each edge changes with change_prob)."""
        plan = sample_random_plan(self.graph, seed, space=self.space, change_prob=self.change_prob)
        return self.plan_to_arch(plan)

    def extract(self, arch: Any) -> keras.Model:
        """`apply_plan` of the arch's plan, carrying this supernet's weights.

        Layers keep their names through `apply_plan`, so weights go across by
        name: first every shared clone (kept ops, merge layers), then, for
        edges that take a NAT++ op or a projected skip, that branch's layers.
        """
        plan = self.arch_to_plan(arch)
        source = self._source.model
        model = apply_plan(source, plan, graph=self.graph, name=f"{source.name}_nat")
        present = {layer.name for layer in model.layers}
        pairs = [
            (self._source.layers[key].name, clone)
            for key, clone in self._clones.items()
            if "__" not in key and key in self._source.layers
        ]
        resolution = resolve(self.graph, plan)
        for edge in self.graph.edges:
            action = resolution.actions[edge.id]
            if edge.id not in resolution.live_edges or edge.kind != "unit" or action in (ops.KEEP, ops.NONE):
                continue
            if action == ops.SKIP:
                pairs += [(layer.name, layer) for layer in self._skips[edge.id].layers]
                continue
            emitted = [
                (i, name)
                for i, name in enumerate(edge.layers)
                if i == edge.primary or not is_padding(self._calls[name].layer)
            ]
            for (index, name), layer in zip(emitted, self._branch_layers[(edge.id, action)]):
                pairs.append((layer.name if index == edge.primary else self._calls[name].layer.name, layer))
        for name, layer in pairs:
            if name in present and layer.weights:
                model.get_layer(name).set_weights(layer.get_weights())
        return model
