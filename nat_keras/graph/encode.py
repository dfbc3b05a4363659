"""Encode a Keras model as NAT's DAG (`ArchGraph`).

The walk (`trace`) gives the layer calls; encoding then runs in four steps,
one module each:

1. `units`: the calls grouped into op units (the edges): each primary op
   (Conv, DepthwiseConv, SeparableConv, pooling, Dense) with the
   normalization / activation / dropout layers around it; leftover
   single-input layers form opaque "other" units.
2. This module: merge layers (Add, Concatenate, Multiply, other multi-input
   layers) are nodes. A unit whose only consumer is a merge ends at the
   merge node; a tensor that feeds a merge and something else reaches it by
   an identity edge (a residual shortcut). Each unit edge records its
   primary layer's facts (`layer_facts`: op, stride, kernel, params, MACs).
3. `legality`: placeholder null edges join equal-shape nodes two edges apart
   (like the paper's c_{k-2} input), so NAT can add skips to plain chains.
4. `legality`: legal actions come from shapes, the graph and local cost;
   stem, head, shared and opaque edges are protected (keep only).

Example:
  >>> graph = nat_keras.encode(nat_keras.models.resnet20())
  >>> print(nat_keras.format_graph(graph))  # one row per edge
"""

from __future__ import annotations

import warnings
from typing import Any

import keras

from nat_keras import ops
from nat_keras.graph.arch_graph import (
    IDENTITY,
    MERGE_INPUT,
    MERGE_NONE,
    MERGE_OTHER,
    UNIT,
    ArchGraph,
    Edge,
    Node,
)
from nat_keras.graph.layer_facts import layer_params, primary_fields
from nat_keras.graph.legality import topological_edges, with_legal_actions, with_placeholders
from nat_keras.graph.trace import LayerCall, TracedModel, trace
from nat_keras.graph.units import NODE_ROLE, CallLinks, Unit, group_units, merge_of, role

DEFAULT_PLACEHOLDER_SPAN = 2


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
        self.links = CallLinks(traced)
        self.output_keys = self.links.output_keys
        self.roles = {call.name: role(call) for call in traced.calls}
        self._warn_opaque()

    # -- step 2: nodes and edges (units: step 1; legality: steps 3, 4) -------

    def run(self) -> ArchGraph:
        traced = self.traced
        units, self.node_post = group_units(traced, self.links, self.roles)
        unit_by_output = {u.output_key: u for u in units}
        node_calls = [c for c in traced.calls if self.roles[c.name] == NODE_ROLE]

        # Which unit outputs are collapsed into the merge node that consumes them.
        collapsed: dict[int, LayerCall] = {}
        for key in unit_by_output:
            consumer = self.links.single(key)
            if consumer is not None and self.roles[consumer.name] == NODE_ROLE:
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
            if self.roles[call.name] == NODE_ROLE:
                post = self.node_post[call.name]
                add_node(
                    (post[-1] if post else call).outputs[0],
                    call.name,
                    merge_of(call),
                    call.name,
                    sum(layer_params(c) for c in [call, *post] if c.first_call),
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
            edges=tuple(topological_edges(nodes, edges)),
            inputs=tuple(node_id_of_key[k] for k in traced.inputs),
            outputs=tuple(node_id_of_key[k] for k in traced.outputs),
        )
        graph = with_placeholders(graph, self.span)
        return with_legal_actions(graph)

    def _unit_edge(self, unit: Unit, src: str, dst: str, slot: int) -> Edge:
        shapes = self.traced.shapes
        input_shape, output_shape = shapes[unit.input_key], shapes[unit.output_key]
        params = sum(layer_params(c) for c in unit.calls if c.first_call)
        shared = [c.name for c in unit.calls if c.shared]
        fields: dict[str, Any] = {}
        if unit.primary is not None:
            fields = primary_fields(unit.primary, shapes)
            if not unit.primary.first_call:
                fields["primary_params"] = 0
        else:
            # Composite layers that know their own conv MACs (the cell ops of
            # `nat_keras.cells.operations` have `count_macs`) count them; other
            # opaque layers count none (docs/design.md section 4).
            fields["macs"] = sum(
                int(call.layer.count_macs(shapes[call.inputs[0]], shapes[call.outputs[0]]))
                for call in unit.calls
                if callable(getattr(call.layer, "count_macs", None)) and len(call.inputs) == 1
            )
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


__all__ = ["DEFAULT_PLACEHOLDER_SPAN", "encode"]
