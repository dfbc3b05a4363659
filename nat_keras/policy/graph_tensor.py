"""ArchGraph <-> tfgnn.GraphTensor, under the GraphSchema in `schema.pbtxt`.

An ArchGraph becomes a scalar GraphTensor with one graph component: node set
"nodes" (feature maps), edge set "edges" (operations, source = Edge.src,
target = Edge.dst) and context features. Every ArchGraph field is stored, as a
string, a JSON string, an int64 or a bool feature, so that `from_graph_tensor`
rebuilds the graph exactly; numeric features derived from them (`op_index`,
`kind_index`, `log_params`, `log_macs`, `action_mask`, `merge_index`,
`log_size`, `channels`, ...) are what the policy's GNN reads.

TF-GNN 1.0.3 needs `tf.keras` to be Keras 2: `import nat_keras` (which sets
`TF_USE_LEGACY_KERAS=1`) before anything touches `tf.keras` (docs/design.md
section 5).

Example:
  >>> gt = to_graph_tensor(graph)
  >>> gt.edge_sets["edges"]["op_index"].shape == (len(graph.edges),)
  True
  >>> from_graph_tensor(gt) == graph
  True
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from nat_keras import ops
from nat_keras.errors import NatKerasError
from nat_keras.graph.arch_graph import (
    IDENTITY,
    MERGES,
    PLACEHOLDER,
    SCHEMA_VERSION,
    UNIT,
    ArchGraph,
    Edge,
    Node,
    Shape,
)

try:
    import tensorflow_gnn as tfgnn
except ImportError as err:  # pragma: no cover - depends on the process's start-up
    # TF-GNN's own message does not say that the variable must be set before
    # anything imports TensorFlow, which is the usual way to get this wrong.
    raise ImportError(
        "nat_keras.policy needs tensorflow_gnn, which imports only when tf.keras is "
        "Keras 2: `import nat_keras` before anything touches tf.keras (it sets "
        "TF_USE_LEGACY_KERAS=1), or start Python with TF_USE_LEGACY_KERAS=1. Keras 3 "
        f"(`import keras`) is unaffected. Original error: {err}"
    ) from err

NODE_SET = "nodes"
EDGE_SET = "edges"

# TF-GNN's default index dtype (what create_graph_spec_from_schema_pb and
# parse_example use unless told otherwise), so the schema's plain spec matches.
INDICES_DTYPE = tf.int32

GRAPH_SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.pbtxt")

# Op types the GNN embeds. Index 0 is the bucket for ops outside the
# vocabulary, so that an encoder emitting a new op name degrades gracefully
# instead of breaking the policy. Append only: indices are baked into trained
# policies' embedding tables.
OP_VOCAB: tuple[str, ...] = (
    ops.OTHER,
    ops.NULL,
    ops.IDENTITY,
    ops.DENSE,
    "conv_1x1",
    "conv_3x3",
    "conv_5x5",
    "conv_7x7",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "sep_conv_7x7",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "depthwise_3x3",
    "depthwise_5x5",
    "depthwise_7x7",
    "max_pool_2x2",
    "max_pool_3x3",
    "avg_pool_2x2",
    "avg_pool_3x3",
    "global_avg_pool",
    "global_max_pool",
)
OTHER_OP_INDEX = 0
_OP_INDEX = {op: i for i, op in enumerate(OP_VOCAB)}

# Edge kinds in `kind_index` order (same append-only rule as OP_VOCAB).
EDGE_KINDS: tuple[str, ...] = (UNIT, IDENTITY, PLACEHOLDER)
_KIND_INDEX = {kind: i for i, kind in enumerate(EDGE_KINDS)}
_MERGE_INDEX = {merge: i for i, merge in enumerate(MERGES)}


def op_index(op: str) -> int:
    """Index of an op type in `OP_VOCAB`; ops outside it share the "other" bucket.

    Args:
      op: an op name from `Edge.op`.

    Returns:
      The op's index in `OP_VOCAB`, or `OTHER_OP_INDEX` (0) for unknown ops.

    Example:
      >>> op_index("conv_3x3") == OP_VOCAB.index("conv_3x3")
      True
      >>> op_index("my_fancy_op") == op_index("other") == 0
      True
    """
    return _OP_INDEX.get(op, OTHER_OP_INDEX)


@functools.lru_cache(maxsize=1)
def _load_schema() -> tfgnn.GraphSchema:
    # importlib.resources also works when the package is installed zipped.
    text = importlib.resources.files(__package__).joinpath("schema.pbtxt").read_text("utf-8")
    schema = tfgnn.parse_schema(text)
    # The pbtxt hard-codes the mask length; catch an ACTIONS change that
    # forgot to update it here rather than as a shape error deep in the GNN.
    dims = schema.edge_sets[EDGE_SET].features["action_mask"].shape.dim
    if [d.size for d in dims] != [len(ops.ACTIONS)]:
        raise NatKerasError(
            f"{GRAPH_SCHEMA_PATH}: action_mask has shape {[d.size for d in dims]} but "
            f"nat_keras.ops.ACTIONS has {len(ops.ACTIONS)} actions; update the schema."
        )
    return schema


def graph_schema() -> tfgnn.GraphSchema:
    """The GraphSchema of ArchGraph GraphTensors (parsed once, from `GRAPH_SCHEMA_PATH`).

    Returns:
      A fresh copy of the schema proto, so callers may modify it freely.

    Example:
      >>> schema = graph_schema()
      >>> sorted(schema.node_sets)
      ['nodes']
    """
    schema = tfgnn.GraphSchema()
    schema.CopyFrom(_load_schema())
    return schema


@functools.lru_cache(maxsize=1)
def graph_spec() -> tfgnn.GraphTensorSpec:
    """The GraphTensorSpec of `graph_schema()`: what `to_graph_tensor` returns.

    Useful as a `tf.function` input signature for the policy.

    Example:
      >>> graph_spec().is_compatible_with(to_graph_tensor(graph).spec)
      True
    """
    return tfgnn.create_graph_spec_from_schema_pb(_load_schema(), indices_dtype=INDICES_DTYPE)


# -- ArchGraph -> GraphTensor ----------------------------------------------


def to_graph_tensor(graph: ArchGraph) -> tfgnn.GraphTensor:
    """Converts an ArchGraph to a scalar GraphTensor with one graph component.

    Nodes and edges keep the ArchGraph's order, so edge i of the GraphTensor is
    `graph.edges[i]` (the policy's per-edge outputs line up with plans).

    Args:
      graph: the ArchGraph to convert (may have no edges).

    Returns:
      A `tfgnn.GraphTensor` compatible with `graph_spec()`.

    Raises:
      NatKerasError: if a node's merge or an edge's kind is outside `MERGES` /
        `EDGE_KINDS` (the numeric features could not index it).

    Example:
      >>> gt = to_graph_tensor(graph)
      >>> int(gt.edge_sets["edges"].sizes[0]) == len(graph.edges)
      True
    """
    # ArchGraph checks that every edge joins known nodes.
    position = {node.id: i for i, node in enumerate(graph.nodes)}

    context = tfgnn.Context.from_fields(
        features={
            "schema_version": _column([SCHEMA_VERSION], tf.int64),
            "name": _column([graph.name], tf.string),
            "inputs": _column([_json(graph.inputs)], tf.string),
            "outputs": _column([_json(graph.outputs)], tf.string),
        },
        sizes=tf.constant([1], INDICES_DTYPE),
    )
    nodes = graph.nodes
    node_set = tfgnn.NodeSet.from_fields(
        sizes=tf.constant([len(nodes)], INDICES_DTYPE),
        features={
            "id": _column([n.id for n in nodes], tf.string),
            "shape": _column([_json_shape(n.shape) for n in nodes], tf.string),
            "merge": _column([n.merge for n in nodes], tf.string),
            "layer": _column([n.layer for n in nodes], tf.string),
            "post": _column([_json(n.post) for n in nodes], tf.string),
            "params": _column([n.params for n in nodes], tf.int64),
            "macs": _column([n.macs for n in nodes], tf.int64),
            "is_output": _column([n.is_output for n in nodes], tf.bool),
            "output_index": _column([n.output_index for n in nodes], tf.int64),
            "merge_index": _column([_merge_index(graph, n) for n in nodes], tf.int64),
            "log_size": _column([math.log1p(_num_elements(n.shape)) for n in nodes], tf.float32),
            "channels": _column([_channels(n.shape) for n in nodes], tf.int64),
        },
    )
    edges = graph.edges
    edge_set = tfgnn.EdgeSet.from_fields(
        sizes=tf.constant([len(edges)], INDICES_DTYPE),
        adjacency=tfgnn.Adjacency.from_indices(
            source=(NODE_SET, _column([position[e.src] for e in edges], INDICES_DTYPE)),
            target=(NODE_SET, _column([position[e.dst] for e in edges], INDICES_DTYPE)),
        ),
        features={
            "id": _column([e.id for e in edges], tf.string),
            "slot": _column([e.slot for e in edges], tf.int64),
            "kind": _column([e.kind for e in edges], tf.string),
            "op": _column([e.op for e in edges], tf.string),
            "layers": _column([_json(e.layers) for e in edges], tf.string),
            "primary": _column([e.primary for e in edges], tf.int64),
            "input_shape": _column([_json_shape(e.input_shape) for e in edges], tf.string),
            "output_shape": _column([_json_shape(e.output_shape) for e in edges], tf.string),
            "stride": _column([e.stride for e in edges], tf.int64),
            "kernel": _column([e.kernel for e in edges], tf.int64),
            "dilation": _column([e.dilation for e in edges], tf.int64),
            "groups": _column([e.groups for e in edges], tf.int64),
            "bias": _column([e.bias for e in edges], tf.bool),
            "params": _column([e.params for e in edges], tf.int64),
            "primary_params": _column([e.primary_params for e in edges], tf.int64),
            "macs": _column([e.macs for e in edges], tf.int64),
            "protected": _column([e.protected for e in edges], tf.bool),
            "actions": _column([_json(e.actions) for e in edges], tf.string),
            "note": _column([e.note for e in edges], tf.string),
            "library": _column([e.library for e in edges], tf.string),
            "copies": _column([_json(e.copies) for e in edges], tf.string),
            "op_index": _column([op_index(e.op) for e in edges], tf.int64),
            "kind_index": _column([_kind_index(graph, e) for e in edges], tf.int64),
            "log_params": _column([math.log1p(e.params) for e in edges], tf.float32),
            "log_macs": _column([math.log1p(e.macs) for e in edges], tf.float32),
            "action_mask": _column([e.mask() for e in edges], tf.bool, inner_shape=(len(ops.ACTIONS),)),
        },
    )
    return tfgnn.GraphTensor.from_pieces(
        context=context, node_sets={NODE_SET: node_set}, edge_sets={EDGE_SET: edge_set}
    )


def _column(values: Sequence[Any], dtype: tf.DType, inner_shape: tuple[int, ...] = ()) -> tf.Tensor:
    # The explicit shape keeps empty node / edge sets at [0, *inner_shape] with
    # the right dtype (tf.constant([]) alone would be float32 of shape [0]).
    return tf.constant(list(values), dtype=dtype, shape=(len(values), *inner_shape))


def _json(values: Sequence[Any]) -> str:
    return json.dumps(list(values))


def _json_shape(shape: Shape) -> str:
    # int() turns numpy ints (which json rejects) into Python ints; None stays
    # None and becomes JSON null, so unknown dims survive the round trip.
    return json.dumps([None if d is None else int(d) for d in shape])


def _num_elements(shape: Shape) -> int:
    # Unknown dims count as 1: the size feature is a scale hint, not a count.
    return math.prod(1 if d is None else int(d) for d in shape)


def _channels(shape: Shape) -> int:
    return int(shape[-1]) if shape and shape[-1] is not None else 0


def _merge_index(graph: ArchGraph, node: Node) -> int:
    try:
        return _MERGE_INDEX[node.merge]
    except KeyError:
        raise NatKerasError(
            f"ArchGraph {graph.name!r}: node {node.id!r} has merge {node.merge!r}; expected one of {MERGES}."
        ) from None


def _kind_index(graph: ArchGraph, edge: Edge) -> int:
    try:
        return _KIND_INDEX[edge.kind]
    except KeyError:
        raise NatKerasError(
            f"ArchGraph {graph.name!r}: edge {edge.id!r} has kind {edge.kind!r}; "
            f"expected one of {EDGE_KINDS}."
        ) from None


# -- GraphTensor -> ArchGraph ----------------------------------------------


def from_graph_tensor(graph_tensor: tfgnn.GraphTensor) -> ArchGraph:
    """Rebuilds the ArchGraph that `to_graph_tensor` encoded: its exact inverse.

    Only the record features are read (the numeric GNN features are derived
    data); features the GNN may have added, such as hidden states, are ignored.
    Must run eagerly (it reads tensor values).

    Args:
      graph_tensor: a scalar, single-component GraphTensor from `to_graph_tensor`.

    Returns:
      The ArchGraph, equal to the one that was encoded.

    Raises:
      NatKerasError: if `graph_tensor` is not a GraphTensor made by
        `to_graph_tensor` (wrong rank, several components, missing or mistyped
        features, undecodable values) or this is not eager execution.

    Example:
      >>> from_graph_tensor(to_graph_tensor(graph)) == graph
      True
    """
    _check_structure(graph_tensor)
    context = graph_tensor.context.features
    version = int(context["schema_version"].numpy()[0])
    if version != SCHEMA_VERSION:
        raise NatKerasError(
            f"GraphTensor holds an ArchGraph of schema_version {version}; this nat_keras "
            f"reads {SCHEMA_VERSION}. Re-encode the model with this version."
        )
    try:
        name = _strings(context["name"])[0]
        inputs = _string_tuple(_strings(context["inputs"])[0])
        outputs = _string_tuple(_strings(context["outputs"])[0])
        nodes = _nodes(graph_tensor.node_sets[NODE_SET].features)
        edges = _edges(graph_tensor.edge_sets[EDGE_SET], nodes)
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError) as err:
        # json.JSONDecodeError is a ValueError.
        raise NatKerasError(
            "GraphTensor was not made by nat_keras.policy.to_graph_tensor: its ArchGraph "
            f"features cannot be decoded ({type(err).__name__}: {err})."
        ) from err
    return ArchGraph(name=name, nodes=nodes, edges=edges, inputs=inputs, outputs=outputs)


def _check_structure(graph_tensor: Any) -> None:
    made_by = "Pass a GraphTensor made by nat_keras.policy.to_graph_tensor."
    if not isinstance(graph_tensor, tfgnn.GraphTensor):
        raise NatKerasError(f"Expected a tfgnn.GraphTensor, got {type(graph_tensor).__name__}. {made_by}")
    if not tf.executing_eagerly():
        raise NatKerasError("from_graph_tensor reads tensor values: call it eagerly, not in a tf.function.")
    if graph_tensor.rank != 0:
        raise NatKerasError(
            f"Expected a scalar GraphTensor (one ArchGraph), got rank {graph_tensor.rank}: "
            "index the batch (graph_tensor[i]) or convert each graph separately."
        )
    if int(graph_tensor.num_components) != 1:
        raise NatKerasError(
            f"Expected a GraphTensor with one graph component (one ArchGraph), got "
            f"{int(graph_tensor.num_components)}. Convert the ArchGraphs separately."
        )
    expected = graph_spec()
    pieces = [("context", expected.context_spec, graph_tensor.context)]
    for set_name, spec in expected.node_sets_spec.items():
        if set_name not in graph_tensor.node_sets:
            raise NatKerasError(f"GraphTensor has no node set {set_name!r}. {made_by}")
        pieces.append((f"node set {set_name!r}", spec, graph_tensor.node_sets[set_name]))
    for set_name, spec in expected.edge_sets_spec.items():
        if set_name not in graph_tensor.edge_sets:
            raise NatKerasError(f"GraphTensor has no edge set {set_name!r}. {made_by}")
        pieces.append((f"edge set {set_name!r}", spec, graph_tensor.edge_sets[set_name]))
    for where, spec, piece in pieces:
        for feature, feature_spec in spec.features_spec.items():
            if feature not in piece.features:
                raise NatKerasError(f"GraphTensor's {where} lacks feature {feature!r}. {made_by}")
            value = piece.features[feature]
            value_spec = tf.type_spec_from_value(value)
            if not feature_spec.is_compatible_with(value_spec):
                raise NatKerasError(
                    f"GraphTensor's {where} feature {feature!r} is {value_spec}, expected "
                    f"{feature_spec}. {made_by}"
                )


def _strings(tensor: tf.Tensor) -> list[str]:
    return [value.decode("utf-8") for value in tensor.numpy().tolist()]


def _ints(tensor: tf.Tensor) -> list[int]:
    return [int(value) for value in tensor.numpy().tolist()]


def _bools(tensor: tf.Tensor) -> list[bool]:
    return [bool(value) for value in tensor.numpy().tolist()]


def _string_tuple(text: str) -> tuple[str, ...]:
    values = json.loads(text)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"expected a JSON list of strings, got {text!r}")
    return tuple(values)


def _shape(text: str) -> Shape:
    values = json.loads(text)
    if not isinstance(values, list) or not all(
        v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values
    ):
        raise ValueError(f"expected a JSON list of ints and nulls, got {text!r}")
    return tuple(values)


def _shapes(tensor: tf.Tensor) -> list[Shape]:
    return [_shape(text) for text in _strings(tensor)]


def _string_tuples(tensor: tf.Tensor) -> list[tuple[str, ...]]:
    return [_string_tuple(text) for text in _strings(tensor)]


def _int_pairs(tensor: tf.Tensor) -> list[tuple[tuple[int, int], ...]]:
    return [tuple(tuple(int(v) for v in pair) for pair in json.loads(text)) for text in _strings(tensor)]


# How to read each record feature back. Feature names are the Node / Edge
# field names (Edge.src / Edge.dst come from the adjacency), so the test can
# check that every dataclass field is stored.
NODE_RECORD_FEATURES = {
    "id": _strings,
    "shape": _shapes,
    "merge": _strings,
    "layer": _strings,
    "post": _string_tuples,
    "params": _ints,
    "macs": _ints,
    "is_output": _bools,
    "output_index": _ints,
}
EDGE_RECORD_FEATURES = {
    "id": _strings,
    "slot": _ints,
    "kind": _strings,
    "op": _strings,
    "layers": _string_tuples,
    "primary": _ints,
    "input_shape": _shapes,
    "output_shape": _shapes,
    "stride": _ints,
    "kernel": _ints,
    "dilation": _ints,
    "groups": _ints,
    "bias": _bools,
    "params": _ints,
    "primary_params": _ints,
    "macs": _ints,
    "protected": _bools,
    "actions": _string_tuples,
    "note": _strings,
    "library": _strings,
    "copies": _int_pairs,
}


def _records(features: dict[str, tf.Tensor], readers: dict[str, Any]) -> list[dict[str, Any]]:
    columns = {name: read(features[name]) for name, read in readers.items()}
    # GraphTensor guarantees all features of a set have the set's size.
    count = len(columns["id"])
    return [{name: column[i] for name, column in columns.items()} for i in range(count)]


def _nodes(features: dict[str, tf.Tensor]) -> tuple[Node, ...]:
    return tuple(Node(**record) for record in _records(features, NODE_RECORD_FEATURES))


def _edges(edge_set: tfgnn.EdgeSet, nodes: tuple[Node, ...]) -> tuple[Edge, ...]:
    node_ids = [node.id for node in nodes]
    # Edge.src / Edge.dst come from the adjacency, the one place they are stored.
    sources = [node_ids[i] for i in _ints(edge_set.adjacency.source)]
    targets = [node_ids[i] for i in _ints(edge_set.adjacency.target)]
    records = _records(edge_set.features, EDGE_RECORD_FEATURES)
    return tuple(
        Edge(src=src, dst=dst, **record) for src, dst, record in zip(sources, targets, records, strict=True)
    )


def to_graph_tensor_batch(graphs: Sequence[ArchGraph]) -> tfgnn.GraphTensor:
    """Several ArchGraphs as one scalar GraphTensor with one component each.

    Edges keep their order, graph after graph, so edge rows line up with
    `[e for g in graphs for e in g.edges]`; the policy runs on all at once.

    Example:
      >>> gt = to_graph_tensor_batch([graph_a, graph_b])
      >>> gt.num_components.numpy()
      2
    """
    if not graphs:
        raise NatKerasError("to_graph_tensor_batch needs at least one ArchGraph.")
    pieces = [to_graph_tensor(g) for g in graphs]
    if len(pieces) == 1:
        return pieces[0]

    def merged(get: Any) -> dict[str, tf.Tensor]:
        first = get(pieces[0]).features
        return {name: tf.concat([get(p).features[name] for p in pieces], axis=0) for name in first}

    def sizes(get: Any) -> tf.Tensor:
        return tf.concat([get(p).sizes for p in pieces], axis=0)

    offsets = [0]
    for graph in graphs[:-1]:
        offsets.append(offsets[-1] + len(graph.nodes))
    adjacency = [p.edge_sets[EDGE_SET].adjacency for p in pieces]
    source = tf.concat([a.source + o for a, o in zip(adjacency, offsets)], axis=0)
    target = tf.concat([a.target + o for a, o in zip(adjacency, offsets)], axis=0)
    return tfgnn.GraphTensor.from_pieces(
        context=tfgnn.Context.from_fields(
            features=merged(lambda p: p.context), sizes=sizes(lambda p: p.context)
        ),
        node_sets={
            NODE_SET: tfgnn.NodeSet.from_fields(
                features=merged(lambda p: p.node_sets[NODE_SET]), sizes=sizes(lambda p: p.node_sets[NODE_SET])
            )
        },
        edge_sets={
            EDGE_SET: tfgnn.EdgeSet.from_fields(
                features=merged(lambda p: p.edge_sets[EDGE_SET]),
                sizes=sizes(lambda p: p.edge_sets[EDGE_SET]),
                adjacency=tfgnn.Adjacency.from_indices(source=(NODE_SET, source), target=(NODE_SET, target)),
            )
        },
    )
