"""Tests for the ArchGraph <-> tfgnn.GraphTensor boundary (`nat_keras.policy.graph_tensor`)."""

from __future__ import annotations

# nat_keras first: it sets TF_USE_LEGACY_KERAS before TensorFlow loads (TF-GNN needs it).
import nat_keras  # noqa: F401

# isort: split
import dataclasses
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_gnn as tfgnn

from nat_keras import ops
from nat_keras.cells import PUBLISHED, genotype_to_arch_graph
from nat_keras.errors import NatKerasError
from nat_keras.graph.arch_graph import MERGES, ArchGraph, Edge, Node
from nat_keras.policy import (
    GRAPH_SCHEMA_PATH,
    from_graph_tensor,
    graph_schema,
    to_graph_tensor,
)
from nat_keras.policy import graph_tensor as gt_module
from nat_keras.policy.graph_tensor import (
    EDGE_KINDS,
    OP_VOCAB,
    OTHER_OP_INDEX,
    graph_spec,
    op_index,
)

# -- hand-built ArchGraphs -------------------------------------------------

H = None  # unknown spatial dims, as a fully convolutional model has


def small_graph() -> ArchGraph:
    """Stem, a residual block (sum), a placeholder skip, a concat, an opaque op, a dense head."""
    nodes = (
        Node("input", (H, H, 3), "input", "input"),
        Node("stem_relu", (H, H, 16), "none", "stem_relu"),
        Node("b1_relu", (H, H, 16), "none", "b1_relu"),
        Node("b2_bn", (H, H, 16), "none", "b2_bn"),
        Node("add", (H, H, 16), "sum", "add", post=("add_relu",)),
        Node("cat", (H, H, 24), "concat", "cat"),
        Node("attn_out", (H, H, 24), "none", "attn", params=7),
        Node("logits", (10,), "none", "logits", is_output=True),
    )
    edges = (
        Edge(
            "stem_conv",
            "input",
            "stem_relu",
            0,
            "unit",
            "conv_3x3",
            layers=("stem_conv", "stem_bn", "stem_relu"),
            primary=0,
            input_shape=(H, H, 3),
            output_shape=(H, H, 16),
            kernel=3,
            params=496,
            macs=0,
            protected=True,
            note="stem",
        ),
        Edge(
            "b1_conv",
            "stem_relu",
            "b1_relu",
            0,
            "unit",
            "conv_3x3",
            layers=("b1_conv", "b1_bn", "b1_relu"),
            primary=0,
            input_shape=(H, H, 16),
            output_shape=(H, H, 16),
            kernel=3,
            params=2_384,
            bias=True,
            primary_params=2_320,
            # Not in ACTIONS order, on purpose: the round trip must keep it.
            actions=("keep", "conv_1x1", "skip", "none", "sep_conv_3x3"),
        ),
        Edge(
            "b2_conv",
            "b1_relu",
            "add",
            0,
            "unit",
            "sep_conv_5x5",
            layers=("b2_pad", "b2_conv", "b2_bn"),
            primary=1,
            input_shape=(H, H, 16),
            output_shape=(H, H, 16),
            kernel=5,
            groups=1,
            params=720,
            actions=("keep", "skip", "none", "sep_conv_3x3", "max_pool_3x3"),
        ),
        Edge(
            "stem_relu->add",
            "stem_relu",
            "add",
            1,
            "identity",
            "skip",
            input_shape=(H, H, 16),
            output_shape=(H, H, 16),
            actions=("keep", "none"),
        ),
        Edge(
            "ph:stem_relu->b2_bn",
            "stem_relu",
            "b2_bn",
            -1,
            "placeholder",
            "null",
            input_shape=(H, H, 16),
            output_shape=(H, H, 16),
            actions=("keep", "skip"),
        ),
        Edge(
            "pool",
            "add",
            "cat",
            0,
            "unit",
            "max_pool_3x3",
            layers=("pool",),
            primary=0,
            input_shape=(H, H, 16),
            output_shape=(H, H, 16),
            kernel=3,
            actions=("keep", "avg_pool_3x3"),
        ),
        Edge(
            "c1x1",
            "add",
            "cat",
            1,
            "unit",
            "conv_1x1",
            layers=("c1x1", "c1x1_bn"),
            primary=0,
            input_shape=(H, H, 16),
            output_shape=(H, H, 8),
            kernel=1,
            params=168,
            dilation=1,
        ),
        Edge(
            "attn",
            "cat",
            "attn_out",
            0,
            "unit",
            "custom_attention",
            layers=("attn",),
            primary=0,
            input_shape=(H, H, 24),
            output_shape=(H, H, 24),
            protected=True,
            note="opaque layer « MyAttention », kept as is",
        ),
        Edge(
            "logits",
            "attn_out",
            "logits",
            0,
            "unit",
            "dense",
            layers=("gap", "logits"),
            primary=1,
            input_shape=(H, H, 24),
            output_shape=(10,),
            params=250,
            macs=240,
            protected=True,
            note="head",
        ),
    )
    return ArchGraph("tiny_résnet", nodes, edges, ("input",), ("logits",))


def no_edge_graph() -> ArchGraph:
    node = Node("input", (32, 32, 3), "input", "input", is_output=True)
    return ArchGraph("identity_model", (node,), (), ("input",), ("input",))


def empty_graph() -> ArchGraph:
    return ArchGraph("empty", (), (), (), ())


def cell_graph() -> ArchGraph:
    """Both DARTS cells, each edge costed over its copies in a 5-cell network (Edge.copies)."""
    return genotype_to_arch_graph(PUBLISHED["DARTS"], cell="both", channels=8, spatial=16, num_cells=5)


GRAPHS = {"small": small_graph, "no_edges": no_edge_graph, "empty": empty_graph, "cell": cell_graph}


@pytest.fixture(scope="module")
def graph() -> ArchGraph:
    return small_graph()


@pytest.fixture(scope="module")
def gt(graph: ArchGraph) -> tfgnn.GraphTensor:
    return to_graph_tensor(graph)


# -- round trip and schema ---------------------------------------------------


@pytest.mark.parametrize("make", GRAPHS.values(), ids=GRAPHS.keys())
def test_round_trip_is_exact(make):
    graph = make()
    back = from_graph_tensor(to_graph_tensor(graph))
    assert back == graph
    # Field by field too: ArchGraph.__eq__ compares tuples of frozen dataclasses,
    # but a list where a tuple belongs would break hashing elsewhere.
    for a, b in zip(back.edges, graph.edges, strict=True):
        assert dataclasses.astuple(a) == dataclasses.astuple(b)
        assert isinstance(a.layers, tuple) and isinstance(a.input_shape, tuple)
        assert isinstance(a.actions, tuple) and isinstance(a.output_shape, tuple)
    assert back.fingerprint() == graph.fingerprint()
    assert hash(back) == hash(graph)


def test_none_dims_survive(graph, gt):
    back = from_graph_tensor(gt)
    assert back.node("stem_relu").shape == (None, None, 16)
    assert back.edge("logits").input_shape == (None, None, 24)
    shapes = gt.node_sets["nodes"]["shape"].numpy()
    assert json.loads(shapes[1]) == [None, None, 16]


@pytest.mark.parametrize("make", GRAPHS.values(), ids=GRAPHS.keys())
def test_spec_matches_schema(make):
    gt = to_graph_tensor(make())
    spec = tfgnn.create_graph_spec_from_schema_pb(graph_schema())
    assert spec.is_compatible_with(gt.spec)
    assert graph_spec().is_compatible_with(gt.spec)
    tfgnn.check_compatible_with_schema_pb(gt, graph_schema())


def test_schema_file():
    schema = graph_schema()
    tfgnn.validate_schema(schema)
    assert os.path.isfile(GRAPH_SCHEMA_PATH)
    assert tfgnn.read_schema(GRAPH_SCHEMA_PATH) == schema
    # graph_schema() hands out copies: callers cannot corrupt the cache.
    schema.node_sets["nodes"].features["id"].description = "changed"
    assert graph_schema().node_sets["nodes"].features["id"].description != "changed"
    mask = graph_schema().edge_sets["edges"].features["action_mask"]
    assert [d.size for d in mask.shape.dim] == [len(ops.ACTIONS)]
    for feature_sets in (
        schema.context.features,
        schema.node_sets["nodes"].features,
        schema.edge_sets["edges"].features,
    ):
        for name, feature in feature_sets.items():
            assert feature.description, f"feature {name!r} has no description"


def test_every_dataclass_field_is_stored():
    schema = graph_schema()
    node_fields = {f.name for f in dataclasses.fields(Node)}
    edge_fields = {f.name for f in dataclasses.fields(Edge)}
    assert set(gt_module.NODE_RECORD_FEATURES) == node_fields
    # src / dst are the adjacency's source / target.
    assert set(gt_module.EDGE_RECORD_FEATURES) | {"src", "dst"} == edge_fields
    assert set(gt_module.NODE_RECORD_FEATURES) <= set(schema.node_sets["nodes"].features)
    assert set(gt_module.EDGE_RECORD_FEATURES) <= set(schema.edge_sets["edges"].features)
    assert set(schema.context.features) == {"schema_version", "name", "inputs", "outputs"}


# -- numeric features for the GNN -----------------------------------------


def test_edge_features(graph, gt):
    edges = gt.edge_sets["edges"]
    n = len(graph.edges)
    assert int(edges.sizes[0]) == n
    expected = {
        "op_index": tf.int64,
        "kind_index": tf.int64,
        "stride": tf.int64,
        "kernel": tf.int64,
        "log_params": tf.float32,
        "log_macs": tf.float32,
        "action_mask": tf.bool,
    }
    for name, dtype in expected.items():
        assert edges[name].dtype == dtype, name
    assert edges["action_mask"].shape == (n, len(ops.ACTIONS))
    np.testing.assert_array_equal(edges["action_mask"].numpy(), [e.mask() for e in graph.edges])
    expected_ops = [OP_VOCAB.index(e.op) if e.op in OP_VOCAB else 0 for e in graph.edges]
    assert edges["op_index"].numpy().tolist() == expected_ops
    assert edges["op_index"].numpy()[-2] == OTHER_OP_INDEX  # custom_attention
    assert edges["kind_index"].numpy().tolist() == [EDGE_KINDS.index(e.kind) for e in graph.edges]
    for name, field in (("log_params", "params"), ("log_macs", "macs")):
        expected_log = [math.log1p(getattr(e, field)) for e in graph.edges]
        np.testing.assert_allclose(edges[name].numpy(), expected_log, rtol=1e-6)
    ids = [n.id for n in graph.nodes]
    assert edges.adjacency.source.numpy().tolist() == [ids.index(e.src) for e in graph.edges]
    assert edges.adjacency.target.numpy().tolist() == [ids.index(e.dst) for e in graph.edges]


def test_node_features(graph, gt):
    nodes = gt.node_sets["nodes"]
    assert nodes["merge_index"].dtype == tf.int64
    assert nodes["log_size"].dtype == tf.float32
    assert nodes["channels"].dtype == tf.int64
    assert nodes["merge_index"].numpy().tolist() == [MERGES.index(n.merge) for n in graph.nodes]
    # None dims count as 1: (None, None, 16) has "size" 16.
    np.testing.assert_allclose(nodes["log_size"].numpy()[1], math.log1p(16), rtol=1e-6)
    np.testing.assert_allclose(nodes["log_size"].numpy()[-1], math.log1p(10), rtol=1e-6)
    assert nodes["channels"].numpy().tolist() == [3, 16, 16, 16, 16, 24, 24, 10]


def test_no_edges_has_empty_well_typed_features():
    edges = to_graph_tensor(no_edge_graph()).edge_sets["edges"]
    assert edges["action_mask"].shape == (0, len(ops.ACTIONS))
    assert edges["action_mask"].dtype == tf.bool
    assert edges["log_params"].dtype == tf.float32
    assert edges.adjacency.source.dtype == gt_module.INDICES_DTYPE


def test_op_index():
    assert op_index("no_such_op") == OTHER_OP_INDEX == op_index(ops.OTHER) == 0
    assert op_index("conv_9x9") == OTHER_OP_INDEX
    assert len(set(OP_VOCAB)) == len(OP_VOCAB)
    for op in (
        *ops.REPLACEMENT_OPS,
        ops.IDENTITY,
        ops.NULL,
        ops.DENSE,
        "conv_7x7",
        "depthwise_3x3",
        "max_pool_2x2",
        "avg_pool_2x2",
    ):
        assert OP_VOCAB[op_index(op)] == op


def test_graph_spec_as_tf_function_signature(gt):
    @tf.function(input_signature=[graph_spec()])
    def count_legal(graph):
        return tf.reduce_sum(tf.cast(graph.edge_sets["edges"]["action_mask"], tf.int32))

    assert int(count_legal(gt)) == int(np.sum(gt.edge_sets["edges"]["action_mask"].numpy()))
    assert int(count_legal(to_graph_tensor(no_edge_graph()))) == 0


def test_tf_example_round_trip(graph, gt):
    serialized = tfgnn.write_example(gt).SerializeToString()
    parsed = tfgnn.parse_single_example(graph_spec(), tf.constant(serialized))
    assert from_graph_tensor(parsed) == graph


# -- ArchGraph stays plain data -------------------------------------------------


def test_arch_graph_knows_nothing_of_tf_gnn(graph):
    assert not hasattr(graph, "to_graph_tensor")
    assert isinstance(to_graph_tensor(graph), tfgnn.GraphTensor)


# -- errors -----------------------------------------------------------------


def _drop(gt, where, feature):
    """`gt` without one feature of the context, the "nodes" or the "edges" set."""
    if where == "context":
        features = {k: v for k, v in gt.context.features.items() if k != feature}
        return gt.replace_features(context=features)
    pieces, key = (gt.node_sets, "node_sets") if where == "nodes" else (gt.edge_sets, "edge_sets")
    features = {k: v for k, v in pieces[where].features.items() if k != feature}
    return gt.replace_features(**{key: {where: features}})


@pytest.mark.parametrize(
    "where, feature",
    [("edges", "op"), ("edges", "action_mask"), ("nodes", "shape"), ("context", "name")],
)
def test_missing_feature_raises(gt, where, feature):
    with pytest.raises(NatKerasError, match=feature):
        from_graph_tensor(_drop(gt, where, feature))


def test_wrong_dtype_raises(gt):
    features = dict(gt.edge_sets["edges"].features)
    features["stride"] = tf.cast(features["stride"], tf.float32)
    with pytest.raises(NatKerasError, match="stride"):
        from_graph_tensor(gt.replace_features(edge_sets={"edges": features}))


def test_extra_features_are_ignored(graph, gt):
    features = dict(gt.edge_sets["edges"].features)
    features[tfgnn.HIDDEN_STATE] = tf.zeros([len(graph.edges), 4])
    assert from_graph_tensor(gt.replace_features(edge_sets={"edges": features})) == graph


def test_bad_json_raises(gt):
    features = dict(gt.node_sets["nodes"].features)
    features["shape"] = tf.fill(tf.shape(features["shape"]), "not json")
    with pytest.raises(NatKerasError, match="to_graph_tensor"):
        from_graph_tensor(gt.replace_features(node_sets={"nodes": features}))


def test_wrong_schema_version_raises(gt):
    features = dict(gt.context.features)
    features["schema_version"] = tf.constant([999], tf.int64)
    with pytest.raises(NatKerasError, match="schema_version"):
        from_graph_tensor(gt.replace_features(context=features))


def test_not_a_graph_tensor_raises(graph):
    with pytest.raises(NatKerasError, match="GraphTensor"):
        from_graph_tensor(graph)


def test_batched_graph_tensor_raises(gt):
    batch = next(iter(tf.data.Dataset.from_tensors(gt).repeat(2).batch(2)))
    with pytest.raises(NatKerasError, match="scalar"):
        from_graph_tensor(batch)


def test_to_graph_tensor_rejects_unknown_kind():
    nodes = (Node("a", (3,), "input", "a"), Node("b", (3,), "none", "b"))
    edge = Edge("e", "a", "b", 0, "weird_kind", "dense")
    with pytest.raises(NatKerasError, match="weird_kind"):
        to_graph_tensor(ArchGraph("bad", nodes, (edge,), ("a",), ("b",)))
