"""Encode a Keras model as NAT's DAG (`ArchGraph`).

The walk (see `trace`) gives the layer calls; this module groups them into op
units and decides, for each edge, which of NAT's actions are legal:

1. Each primary op (Conv, DepthwiseConv, SeparableConv, pooling, Dense) takes
   the BatchNormalization / activation / dropout layers that follow it through
   single-consumer links (post-activation: ResNet, MobileNetV2), then the
   padding and normalization / activation layers that lead into it
   (pre-activation: ResNetV2, DenseNet). Leftover single-input layers form
   opaque "other" units.
2. Merge layers (Add, Concatenate, Multiply, other multi-input layers) are
   nodes. A unit whose only consumer is a merge ends at the merge node; a
   tensor that feeds a merge and something else reaches it by an identity
   edge (a residual shortcut).
3. Placeholder null edges join equal-shape nodes two edges apart (like the
   paper's c_{k-2} input), so NAT can add skips to plain chains.
4. Legal actions come from shapes, the graph and local cost; stem, head,
   shared and opaque edges are protected (keep only).

Example:
  >>> graph = nat_keras.encode(nat_keras.models.resnet20())
  >>> print(nat_keras.format_graph(graph))  # one row per edge
"""

from __future__ import annotations

import collections
import dataclasses
import warnings
from typing import Any

import keras

from nat_keras import ops
from nat_keras.graph import costs as costing
from nat_keras.graph.arch_graph import (
    IDENTITY,
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
from nat_keras.graph.trace import LayerCall, TracedModel, trace

DEFAULT_PLACEHOLDER_SPAN = 2

_PRIMARY = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.Dense,
)
# Layers that ride along with a primary op and keep the tensor's shape.
_ATTACHMENTS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
)
_PADDING = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D)
_MERGES = {
    "Add": MERGE_SUM,
    "Concatenate": MERGE_CONCAT,
    "Multiply": MERGE_MULTIPLY,
}

# Call roles.
_PRIMARY_ROLE, _ATTACH_ROLE, _PAD_ROLE, _OTHER_ROLE, _NODE_ROLE = (
    "primary",
    "attach",
    "pad",
    "other",
    "node",
)


@dataclasses.dataclass
class _Unit:
    calls: list[LayerCall]
    primary: LayerCall | None

    @property
    def input_key(self) -> int:
        return self.calls[0].inputs[0]

    @property
    def output_key(self) -> int:
        return self.calls[-1].outputs[0]

    @property
    def id(self) -> str:
        return (self.primary or self.calls[0]).name


def encode(model: keras.Model, *, placeholder_span: int = DEFAULT_PLACEHOLDER_SPAN) -> ArchGraph:
    """Encode a Keras 3 functional or Sequential model as NAT's DAG.

    Args:
      model: a built Keras 3 model (functional or Sequential; nested models
        are flattened, shared layers are kept but not transformable).
      placeholder_span: placeholder null edges join equal-shape nodes that are
        2..placeholder_span edges apart; 0 or 1 adds none.

    Returns:
      An ArchGraph; encoding the same model twice gives equal graphs.

    Raises:
      UnsupportedModelError: subclassed, tf.keras (Keras 2) or unbuilt models.

    Example:
      >>> graph = nat_keras.encode(keras.applications.ResNet50(
      ...     weights=None, input_shape=(32, 32, 3), classes=10))
      >>> graph.edge("conv2_block1_2_conv").actions
      ('keep', 'skip', 'none', 'conv_1x1', 'sep_conv_3x3', ...)
    """
    traced = trace(model)
    return _Encoder(traced, placeholder_span).run()


class _Encoder:
    """Builds one ArchGraph from one TracedModel (see module docstring)."""

    def __init__(self, traced: TracedModel, placeholder_span: int):
        self.traced = traced
        self.span = placeholder_span
        self.producer = traced.producer()
        self.consumers = traced.consumers()
        self.output_keys = set(traced.outputs)
        self.roles = {call.name: _role(call) for call in traced.calls}
        self._warn_opaque()

    # -- step 1: units ------------------------------------------------------

    def _single_link(self, key: int) -> LayerCall | None:
        """The one call consuming tensor `key`, if it is consumed exactly once."""
        found = self.consumers.get(key, [])
        if len(found) != 1 or key in self.output_keys or found[0].inputs.count(key) != 1:
            return None
        return found[0]

    def _units(self) -> list[_Unit]:
        owner: dict[str, _Unit | None] = {}  # None: the call belongs to a node
        units: list[_Unit] = []
        for call in self.traced.calls:
            if self.roles[call.name] == _PRIMARY_ROLE:
                unit = _Unit([call], call)
                units.append(unit)
                owner[call.name] = unit
        # Post-activation first: BN / activation after a primary belong to it.
        for unit in units:
            while True:
                nxt = self._single_link(unit.output_key)
                if nxt is None or self.roles[nxt.name] != _ATTACH_ROLE or nxt.name in owner:
                    break
                unit.calls.append(nxt)
                owner[nxt.name] = unit
        # Then pre-activation and padding in front of a primary.
        for unit in units:
            while True:
                prev = self.producer.get(unit.input_key)
                if (
                    prev is None
                    or self.roles[prev.name] not in (_ATTACH_ROLE, _PAD_ROLE)
                    or prev.name in owner
                    or self._single_link(unit.input_key) is not unit.calls[0]
                ):
                    break
                unit.calls.insert(0, prev)
                owner[prev.name] = unit
        # Shape-keeping layers right after a merge (the ReLU after a residual
        # sum) belong to the merge node.
        self.node_post: dict[str, list[LayerCall]] = {}
        for call in self.traced.calls:
            if self.roles[call.name] != _NODE_ROLE:
                continue
            post = self.node_post.setdefault(call.name, [])
            key = call.outputs[0]
            while len(call.outputs) == 1:
                nxt = self._single_link(key)
                if nxt is None or self.roles[nxt.name] != _ATTACH_ROLE or nxt.name in owner:
                    break
                post.append(nxt)
                owner[nxt.name] = None
                key = nxt.outputs[0]
        # Whatever single-input layer is left forms opaque units, chained while
        # the links are single-consumer.
        for call in self.traced.calls:
            if call.name in owner or self.roles[call.name] == _NODE_ROLE:
                continue
            prev = self.producer.get(call.inputs[0])
            prev_unit = owner.get(prev.name) if prev is not None else None
            if (
                prev_unit is not None
                and prev_unit.primary is None
                and prev_unit.calls[-1] is prev
                and self._single_link(call.inputs[0]) is call
            ):
                prev_unit.calls.append(call)
                owner[call.name] = prev_unit
            else:
                unit = _Unit([call], None)
                units.append(unit)
                owner[call.name] = unit
        order = {call.name: i for i, call in enumerate(self.traced.calls)}
        units.sort(key=lambda u: order[u.calls[0].name])
        return units

    # -- step 2: nodes and edges -------------------------------------------

    def run(self) -> ArchGraph:
        traced = self.traced
        units = self._units()
        unit_by_output = {u.output_key: u for u in units}
        node_calls = [c for c in traced.calls if self.roles[c.name] == _NODE_ROLE]

        # Which unit outputs are collapsed into the merge node that consumes them.
        collapsed: dict[int, LayerCall] = {}
        for key in unit_by_output:
            consumer = self._single_link(key)
            if consumer is not None and self.roles[consumer.name] == _NODE_ROLE:
                collapsed[key] = consumer

        node_id_of_key: dict[int, str] = {}
        nodes: list[Node] = []

        def add_node(
            key: int,
            node_id: str,
            merge: str,
            layer: str,
            params: int = 0,
            post: tuple = (),
            output_index: int = 0,
        ) -> None:
            node_id_of_key[key] = node_id
            nodes.append(
                Node(
                    id=node_id,
                    shape=traced.shapes[key],
                    merge=merge,
                    layer=layer,
                    post=post,
                    params=params,
                    is_output=key in self.output_keys,
                    output_index=output_index,
                )
            )

        extra_outputs: list[tuple[str, str, int]] = []
        for key, name in zip(traced.inputs, traced.input_names):
            add_node(key, name, MERGE_INPUT, name)
        # Nodes appear in call order, which is topological.
        unit_by_last_call = {u.calls[-1].name: u for u in units}
        for call in traced.calls:
            if self.roles[call.name] == _NODE_ROLE:
                post = self.node_post[call.name]
                add_node(
                    (post[-1] if post else call).outputs[0],
                    call.name,
                    _merge_of(call),
                    call.name,
                    sum(_params(c) for c in [call, *post] if c.first_call),
                    post=tuple(c.name for c in post),
                )
                # Further outputs of a multi-output layer: one node each, fed
                # by a protected edge from the first (they come from one call).
                for index, key in enumerate(call.outputs[1:], start=1):
                    add_node(key, f"{call.name}:{index}", MERGE_OTHER, call.name, output_index=index)
                    extra_outputs.append((call.name, f"{call.name}:{index}", key))
            elif call.name in unit_by_last_call:
                unit = unit_by_last_call[call.name]
                if unit.output_key not in collapsed:
                    add_node(unit.output_key, unit.id, MERGE_NONE, call.name)

        edges: list[Edge] = []
        for unit in units:
            key = unit.output_key
            if key in collapsed:
                merge_call = collapsed[key]
                dst, slot = merge_call.name, merge_call.inputs.index(key)
            else:
                dst, slot = node_id_of_key[key], 0
            edges.append(self._unit_edge(unit, node_id_of_key[unit.input_key], dst, slot))
        for call in node_calls:
            dst = call.name
            for slot, key in enumerate(call.inputs):
                if key in collapsed and collapsed[key] is call:
                    continue
                src = node_id_of_key[key]
                edges.append(
                    Edge(
                        id=f"{src}->{dst}" + (f"#{slot}" if call.inputs.count(key) > 1 else ""),
                        src=src,
                        dst=dst,
                        slot=slot,
                        kind=IDENTITY,
                        op=ops.IDENTITY,
                        input_shape=traced.shapes[key],
                        output_shape=traced.shapes[key],
                    )
                )
        for src, dst, key in extra_outputs:
            edges.append(
                Edge(
                    id=f"{src}->{dst}",
                    src=src,
                    dst=dst,
                    slot=0,
                    kind=IDENTITY,
                    op=ops.OTHER,
                    input_shape=traced.shapes[key],
                    output_shape=traced.shapes[key],
                    protected=True,
                    note="output of a multi-output layer",
                )
            )
        graph = ArchGraph(
            name=traced.model.name,
            nodes=tuple(nodes),
            edges=tuple(_topological(nodes, edges)),
            inputs=tuple(node_id_of_key[k] for k in traced.inputs),
            outputs=tuple(node_id_of_key[k] for k in traced.outputs),
        )
        graph = _with_placeholders(graph, self.span)
        return _with_legal_actions(graph)

    def _unit_edge(self, unit: _Unit, src: str, dst: str, slot: int) -> Edge:
        shapes = self.traced.shapes
        input_shape, output_shape = shapes[unit.input_key], shapes[unit.output_key]
        params = sum(_params(c) for c in unit.calls if c.first_call)
        shared = [c.name for c in unit.calls if c.shared]
        fields: dict[str, Any] = {}
        if unit.primary is not None:
            fields = _primary_fields(unit.primary, shapes)
            if not unit.primary.first_call:
                fields["primary_params"] = 0
        notes = []
        if shared:
            notes.append(f"shared layer {shared[0]}")
        opaque = [c.name for c in unit.calls if isinstance(c.layer, keras.layers.Lambda)]
        if opaque:
            notes.append(f"opaque Lambda layer {opaque[0]}")
        return Edge(
            id=unit.id,
            src=src,
            dst=dst,
            slot=slot,
            kind=UNIT,
            op=fields.pop("op", ops.OTHER),
            layers=tuple(c.name for c in unit.calls),
            primary=unit.calls.index(unit.primary) if unit.primary is not None else -1,
            input_shape=input_shape,
            output_shape=output_shape,
            params=params,
            protected=bool(shared or opaque),
            note="; ".join(notes),
            **fields,
        )

    def _warn_opaque(self) -> None:
        for call in self.traced.calls:
            if isinstance(call.layer, keras.layers.Lambda):
                warnings.warn(
                    f"Model {self.traced.model.name!r}: Lambda layer {call.name!r} is opaque to "
                    "nat_keras; it is kept as it is and never transformed. Replace it with a "
                    "built-in or a registered serializable layer to make it transformable.",
                    stacklevel=4,
                )


# ---------------------------------------------------------------------------
# Helpers on layers.


def _role(call: LayerCall) -> str:
    layer = call.layer
    if len(call.outputs) != 1 or not call.record.has_single_positional_input():
        return _NODE_ROLE
    if type(layer).__name__ in _MERGES:
        return _NODE_ROLE
    if isinstance(layer, _PRIMARY) and _data_format_ok(layer):
        return _PRIMARY_ROLE
    if isinstance(layer, _ATTACHMENTS):
        return _ATTACH_ROLE
    if isinstance(layer, _PADDING):
        return _PAD_ROLE
    return _OTHER_ROLE


def _data_format_ok(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _merge_of(call: LayerCall) -> str:
    return _MERGES.get(type(call.layer).__name__, MERGE_OTHER)


def _params(call: LayerCall) -> int:
    layer = call.layer
    if not isinstance(layer, keras.layers.Layer):
        return 0
    return sum(_weight_size(w) for w in layer.weights)


def _weight_size(weight: Any) -> int:
    size = 1
    for dim in weight.shape:
        size *= int(dim)
    return size


def _pair(value: Any) -> int:
    """The first entry of an int-or-tuple layer option."""
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


def _primary_fields(call: LayerCall, shapes: dict[int, tuple]) -> dict[str, Any]:
    """Op type, stride, kernel, groups, params and MACs of a primary layer."""
    layer = call.layer
    in_shape, out_shape = shapes[call.inputs[0]], shapes[call.outputs[0]]
    c_in = in_shape[-1] or 0
    c_out = out_shape[-1] or 0
    positions = costing.spatial_positions(out_shape)
    fields: dict[str, Any] = {
        "primary_params": _params(call),
        "bias": bool(getattr(layer, "use_bias", False)),
    }
    if isinstance(layer, keras.layers.Dense):
        inner_positions = costing.spatial_positions(in_shape)
        return {**fields, "op": ops.DENSE, "macs": costing.conv_macs(inner_positions, 1, c_in, c_out)}
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        family = "max_pool" if isinstance(layer, keras.layers.MaxPooling2D) else "avg_pool"
        kernel = _pair(layer.pool_size)
        return {
            **fields,
            "op": _sized_op(family, layer.pool_size),
            "kernel": kernel,
            "stride": _pair(layer.strides),
            "macs": 0,
        }
    kernel = _pair(layer.kernel_size)
    # The full kernel size: non-square and 1-D kernels count exactly.
    kernel_size = tuple(int(k) for k in layer.kernel_size)
    dilation = _pair(layer.dilation_rate)
    stride = _pair(layer.strides)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        multiplier = layer.depth_multiplier
        return {
            **fields,
            "op": _sized_op("depthwise", layer.kernel_size),
            "kernel": kernel,
            "stride": stride,
            "dilation": dilation,
            "groups": c_in,
            "macs": costing.conv_macs(positions, kernel_size, c_in, c_in * multiplier, groups=c_in),
        }
    if isinstance(layer, keras.layers.SeparableConv2D):
        family = "sep_conv" if dilation == 1 else "dil_conv"
        multiplier = layer.depth_multiplier
        depthwise = costing.conv_macs(positions, kernel_size, c_in, c_in * multiplier, groups=c_in)
        return {
            **fields,
            "op": _sized_op(family, layer.kernel_size),
            "kernel": kernel,
            "stride": stride,
            "dilation": dilation,
            "macs": depthwise + costing.conv_macs(positions, 1, c_in * multiplier, c_out),
        }
    groups = int(getattr(layer, "groups", 1))
    is_1d = isinstance(layer, keras.layers.Conv1D)
    return {
        **fields,
        "op": f"conv1d_{kernel}" if is_1d else _sized_op("conv", layer.kernel_size),
        "kernel": kernel,
        "stride": stride,
        "dilation": dilation,
        "groups": groups,
        "macs": costing.conv_macs(positions, kernel_size, c_in, c_out, groups),
    }


def _sized_op(family: str, size: Any) -> str:
    sizes = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if len(set(sizes)) == 1:
        return ops.op_name(family, int(sizes[0]))
    return f"{family}_" + "x".join(str(int(s)) for s in sizes)


# ---------------------------------------------------------------------------
# Graph-level passes.


def _topological(nodes: list[Node], edges: list[Edge]) -> list[Edge]:
    """Edges ordered by their destination node, then slot (placeholders last)."""
    order = {node.id: i for i, node in enumerate(nodes)}
    return sorted(edges, key=lambda e: (order[e.dst], e.kind == PLACEHOLDER, e.slot, e.id))


def _with_placeholders(graph: ArchGraph, span: int) -> ArchGraph:
    """Add null edges u -> v between equal-shape nodes 2..span edges apart."""
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
        graph, edges=tuple(_topological(list(graph.nodes), [*graph.edges, *new_edges]))
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


def _with_legal_actions(graph: ArchGraph) -> ArchGraph:
    """Set each edge's protected flag and legal actions (see module docstring)."""
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
        if edge.kind == UNIT and costing.skip_cost(edge) is not None and _fits(edge, costing.skip_cost(edge)):
            actions.append(ops.SKIP)
        removable = dst.merge in (MERGE_SUM, MERGE_CONCAT) or (dst.merge == MERGE_NONE)
        if removable and in_degree[edge.dst] >= 2:
            actions.append(ops.NONE)
        if edge.kind == UNIT:
            for target in ops.cheaper_targets(edge.op):
                replaced = costing.edge_cost_after(edge, target)
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


def _fits(edge: Edge, new: costing.Cost) -> bool:
    return new.params <= edge.params and new.macs <= edge.macs
