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
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from nat_keras import compat, ops
from nat_keras.errors import PlanError
from nat_keras.graph.arch_graph import IDENTITY, MERGE_INPUT, MERGE_NONE, PLACEHOLDER, ArchGraph, Edge, Node
from nat_keras.graph.costs import Budget, graph_cost
from nat_keras.graph.encode import encode
from nat_keras.graph.trace import LayerCall, trace
from nat_keras.plan import TransformPlan, is_active, resolve, sample_plan_within, sample_random_plan
from nat_keras.rebuild.apply import apply_plan
from nat_keras.rebuild.emit import SkipPath, replacement_layer
from nat_keras.rebuild.interpreter import EdgeEvaluator, GraphInterpreter, LayerClones
from nat_keras.supernet.base import BUDGET_PROB, Supernet

_ACTION_INDEX = {action: i for i, action in enumerate(ops.ACTIONS)}


@dataclasses.dataclass
class _SourceRef:
    """Holds the source model, its layers' clones and the graph interpreter
    without Keras tracking the source's weights as the supernet's."""

    model: keras.Model
    clones: LayerClones
    interpreter: GraphInterpreter


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
      budget: the budget the plans to score will meet. A compact one (which
        the source does not meet, e.g. `Budget(macs_ratio=0.5)`) makes
        `budget_prob` of the training architectures random plans within it
        (`sample_plan_within`, as random search draws them), since plans
        that far from the source are never drawn at `change_prob` and would
        be scored by untrained combinations: at half of ResNet-56's MACs the
        chosen plan scored 0.20 (10 classes) and tested 0.54 after
        fine-tuning, against 0.87 for the source. None, or a budget the
        source meets: `change_prob` alone.
      budget_prob: how often a compact budget's plans train (see `budget`).
      name: the supernet's name.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        graph: ArchGraph | None = None,
        space: str = "nat++",
        change_prob: float = 0.15,
        budget: Budget | None = None,
        budget_prob: float = BUDGET_PROB,
        name: str | None = None,
    ):
        super().__init__(name=name or f"{model.name}_supernet")
        if space not in ops.ACTION_SPACES:
            raise ValueError(f"Unknown action space {space!r}; use one of {list(ops.ACTION_SPACES)}.")
        self.graph = graph if graph is not None else encode(model)
        self.space = space
        self.change_prob = change_prob
        if not 0.0 <= budget_prob <= 1.0:
            raise ValueError(f"Supernet {self.name!r}: budget_prob must be in [0, 1], got {budget_prob}.")
        source = graph_cost(self.graph)
        # Only a budget the source does not meet moves training away from the source.
        self.budget = budget if budget is not None and not budget.allows(source, source) else None
        self.budget_prob = float(budget_prob)
        clones = LayerClones()
        self._source = _SourceRef(model, clones, GraphInterpreter(self.graph, trace(model).calls, clones))
        allowed = set(ops.ACTION_SPACES[space])
        self.edge_actions: list[tuple[str, ...]] = [
            tuple(a for a in edge.actions if a in allowed) for edge in self.graph.edges
        ]
        self._edge_index = {edge.id: i for i, edge in enumerate(self.graph.edges)}
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
        self.node_layers = [
            clones.layer(self._calls[name].layer) for node in self.graph.nodes for name in _node_calls(node)
        ]
        self._build_all()

    # -- construction -------------------------------------------------------

    @property
    def _calls(self) -> dict[str, LayerCall]:
        return self._source.interpreter.calls

    def _make_branch(self, edge: Edge, action: str) -> None:
        """Make the layers of `edge`'s branch for `action` (kept ops share the source's clones;
        each NAT++ replacement has its own primary op and its own copy of the unit's other layers)."""
        clones, calls = self._source.clones, self._calls
        layers: list[Any] = []
        if edge.kind == "unit" and action == ops.KEEP:
            layers = [clones.layer(calls[name].layer) for name in edge.layers]
        elif edge.kind == "unit" and action == ops.SKIP:
            self._skips[edge.id] = SkipPath(edge)
            layers = list(self._skips[edge.id].layers)
        elif edge.kind == "unit" and action != ops.NONE:
            layers = [
                replacement_layer(edge, action)
                if index == edge.primary
                else clones.layer(calls[name].layer, variant=action)
                for index, name in self._source.interpreter.replacement_calls(edge)
            ]
        self._branch_layers[(edge.id, action)] = layers

    def _replacement_primary(self, edge: Edge, action: str) -> keras.Layer:
        positions = [index for index, _ in self._source.interpreter.replacement_calls(edge)]
        return self._branch_layers[(edge.id, action)][positions.index(edge.primary)]

    def _build_all(self) -> None:
        """Run every branch once on a dummy batch (creates all weights), then
        copy the source model's weights into the clones (replacements' own
        copies of BN / activation included)."""
        dummies = [
            keras.ops.zeros((1, *t.shape[1:]), dtype=t.dtype) for t in compat.model_inputs(self._source.model)
        ]
        self._forward(dummies, arch=None)
        for clone in self._source.clones.weighted():
            clone.layer.set_weights(clone.source.get_weights())
        self.built = True

    # -- forward ------------------------------------------------------------

    def call(self, inputs: Any, arch: Any = None, training: Any = None) -> Any:
        if arch is None:
            arch = np.zeros(self.arch_size, np.int32)  # keep everything: the source model
        return self._forward(keras.tree.flatten(inputs), arch=arch)

    def _forward(self, inputs: list[Any], *, arch: Any) -> Any:
        """Evaluate the graph; arch=None runs every branch (to build layers)."""
        values = self._source.interpreter.run(inputs, _Switches(self, arch))
        flat = [values[n] for n in self.graph.outputs]
        return compat.pack_like(compat.outputs_structure(self._source.model), flat)

    def branches(self, edge: Edge) -> list[Callable[[Any], Any]]:
        """One function per legal action of `edge` (in `edge_actions` order): x -> its value."""
        return [self._branch_fn(edge, action) for action in self.edge_actions[self._edge_index[edge.id]]]

    def _branch_fn(self, edge: Edge, action: str) -> Callable[[Any], Any]:
        shape = edge.output_shape

        def zeros(x: Any) -> Any:
            return keras.ops.zeros((keras.ops.shape(x)[0], *shape), dtype=x.dtype)

        interpreter = self._source.interpreter
        if not is_active(edge.kind, action):
            return zeros
        if edge.kind in (IDENTITY, PLACEHOLDER):
            return lambda x: x
        if action == ops.SKIP:
            return self._skips[edge.id]
        if action == ops.KEEP:
            # `training` reaches BN / dropout through Keras' call context.
            return lambda x: interpreter.keep(edge, x)
        primary = self._replacement_primary(edge, action)
        return lambda x: interpreter.replace(edge, primary, x, variant=action)

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
        """A random legal plan as an arch: each edge changes with `change_prob`, or, with a
        compact `budget`, `budget_prob` of the time a random plan within it."""
        rng = np.random.default_rng(seed)  # without a compact budget, the draws of `seed` as before
        if self.budget is not None and rng.random() < self.budget_prob:
            plan = sample_plan_within(self.graph, rng, self.budget, space=self.space)
        else:
            plan = sample_random_plan(self.graph, rng, space=self.space, change_prob=self.change_prob)
        return self.plan_to_arch(plan)

    def extract(self, arch: Any) -> keras.Model:
        """`apply_plan` of the arch's plan, carrying this supernet's weights.

        Layers keep their names through `apply_plan`, so weights go across by
        name: first every shared clone (kept ops, merge layers), then, for
        edges that take a NAT++ op or a projected skip, that branch's layers
        (a replacement's own copies of BN / activation take the source
        layers' names in the extracted model).
        """
        plan = self.arch_to_plan(arch)
        source = self._source.model
        model = apply_plan(source, plan, graph=self.graph, name=f"{source.name}_nat")
        present = {layer.name for layer in model.layers}
        pairs = [(clone.source.name, clone.layer) for clone in self._source.clones.weighted(shared_only=True)]
        resolution = resolve(self.graph, plan)
        for edge in self.graph.edges:
            action = resolution.actions[edge.id]
            if edge.id not in resolution.live_edges or edge.kind != "unit" or action in (ops.KEEP, ops.NONE):
                continue
            if action == ops.SKIP:
                pairs += [(layer.name, layer) for layer in self._skips[edge.id].layers]
                continue
            for (index, name), layer in zip(
                self._source.interpreter.replacement_calls(edge), self._branch_layers[(edge.id, action)]
            ):
                pairs.append((layer.name if index == edge.primary else self._calls[name].layer.name, layer))
        for name, layer in pairs:
            if name in present and layer.weights:
                model.get_layer(name).set_weights(layer.get_weights())
        return model


class _Switches(EdgeEvaluator):
    """Each edge switches between its legal branches on `arch[edge index]`.

    `arch=None` runs every branch once and carries the first (keep): that
    builds every layer of the supernet.
    """

    def __init__(self, supernet: ModelSupernet, arch: Any):
        self.supernet = supernet
        self.arch = arch

    def value(self, edge: Edge, x: Any) -> Any:
        branches = self.supernet.branches(edge)
        if self.arch is None:
            results = [branch(x) for branch in branches]  # every branch runs once: that builds it
            return results[0]
        if len(branches) == 1:
            return branches[0](x)
        edge_index = self.supernet._edge_index[edge.id]
        table = keras.ops.convert_to_tensor(self.supernet._branch_of[edge_index])
        branch = keras.ops.take(table, self.arch[edge_index])
        return keras.ops.switch(branch, branches, x)

    def add(self, node: Node, summands: Sequence[Any], original: Callable[[], Any] | None) -> Any:
        del node, original  # removed inputs are zeros here: one rule for every architecture
        value = summands[0]
        for other in summands[1:]:
            value = keras.ops.add(value, other)
        return value


def _node_calls(node: Node) -> list[str]:
    """The source calls a node replays: its merge layer (if it has one) and its post layers."""
    if node.merge in (MERGE_INPUT, MERGE_NONE) or node.output_index > 0:
        return list(node.post)
    return [node.layer, *node.post]
