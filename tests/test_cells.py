"""The cell search space: op layers, genotypes, the sampler and the CIFAR network."""

from __future__ import annotations

import collections
import json

import keras
import numpy as np
import pytest

import nat_keras
from nat_keras import ops
from nat_keras.cells import (
    ALL_OPS,
    DARTS_OPS,
    ENAS_OPS,
    NATPP_OPS,
    OPS,
    PUBLISHED,
    TRANSFORMED,
    DilConv,
    DropPath,
    FactorizedReduce,
    Genotype,
    GenotypeError,
    PoolBN,
    ReLUConvBN,
    SepConv,
    Zero,
    apply_plan_to_genotype,
    arch_graph_to_genotype,
    build_network,
    cell_copies,
    fully_concat,
    genotype_actions,
    genotype_to_arch_graph,
    loose_end_concat,
    make_op,
    op_cost,
    reduction_cells,
    sample_genotype,
)

C, HW = 8, 8  # small op tests: 8x8 maps of 8 channels


def _x(batch: int = 2, hw: int = HW, c: int = C, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, hw, hw, c)).astype("float32")


# ---------------------------------------------------------------------------
# Ops.


def test_op_lists_are_the_authors():
    assert len(DARTS_OPS) == 9 and len(ENAS_OPS) == 9 and len(NATPP_OPS) == 13
    assert DARTS_OPS[-1] == ENAS_OPS[-1] == NATPP_OPS[-1] == "null"
    assert set(ENAS_OPS) - set(DARTS_OPS) == {"conv_1x1", "conv_5x5"}
    assert set(DARTS_OPS) | set(ENAS_OPS) | set(NATPP_OPS) == set(ALL_OPS) == set(OPS)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("op", ALL_OPS)
def test_op_shapes_params_and_macs_agree_with_op_cost(op, stride):
    layer = OPS[op](C, stride, True)
    y = layer(_x())
    side = HW // stride
    assert tuple(y.shape) == (2, side, side, C)
    assert (layer.nat_op, layer.strides) == (op, stride)
    expected = op_cost(op, C, strides=stride, spatial=HW)
    assert layer.count_params() == expected.params
    assert layer.count_macs((HW, HW, C), (side, side, C)) == expected.macs
    # A batch dimension in the shapes is accepted too.
    assert layer.count_macs((None, HW, HW, C), (None, side, side, C)) == expected.macs


@pytest.mark.parametrize(
    "op, stride, params, macs",
    [
        # (ReLU, dw 3x3, 1x1, BN) x 2: 2 * (9C + C^2 + 4C) params; MACs per output position.
        ("sep_conv_3x3", 1, 2 * (9 * 8 + 64 + 32), 64 * 2 * (9 * 8 + 64)),
        ("sep_conv_5x5", 2, 2 * (25 * 8 + 64 + 32), 16 * 2 * (25 * 8 + 64)),
        ("dil_conv_5x5", 2, 25 * 8 + 64 + 32, 16 * (25 * 8 + 64)),
        ("conv_3x3", 1, 9 * 64 + 32, 64 * 9 * 64),
        ("conv_1x1", 2, 64 + 32, 16 * 64),
        ("skip_connect", 2, 2 * 8 * 4 + 32, 16 * 2 * 8 * 4),  # FactorizedReduce
        ("skip_connect", 1, 0, 0),
        ("max_pool_3x3", 2, 0, 0),
        ("null", 2, 0, 0),
    ],
)
def test_op_costs_by_hand(op, stride, params, macs):
    assert op_cost(op, C, strides=stride, spatial=HW) == nat_keras.Cost(params, macs)


def _encoded_macs(layers: list[keras.Layer], input_shape: tuple) -> int:
    """MACs nat_keras.graph.encode counts for a chain of fresh copies of `layers`."""
    x = inputs = keras.Input(input_shape)
    for layer in layers:
        x = type(layer).from_config(layer.get_config())(x)
    return nat_keras.encode(keras.Model(inputs, x)).macs


@pytest.mark.parametrize(
    "layer",
    [
        ReLUConvBN(C, 3, strides=2),
        SepConv(C, 5, strides=1),
        SepConv(C, 3, strides=2),
        DilConv(C, 3, strides=1),
        DilConv(C, 5, strides=2),
    ],
    ids=lambda layer: f"{layer.nat_op}_s{layer.strides}",
)
def test_count_macs_matches_the_encoder_on_the_same_plain_layers(layer):
    y = layer(_x())
    chain = [layer.relu, layer.conv, layer.bn] if isinstance(layer, ReLUConvBN) else layer._chain()
    assert layer.count_macs((HW, HW, C), tuple(y.shape[1:])) == _encoded_macs(chain, (HW, HW, C))


def test_affine_flag_turns_off_bn_scale_and_offset():
    for affine, trainable in ((True, 2), (False, 0)):
        layer = make_op("conv_3x3", C, affine=affine)
        layer(_x())
        assert layer.bn.center is affine and layer.bn.scale is affine
        assert len(layer.bn.trainable_weights) == trainable
    # Affine-free BN keeps only the moving statistics: 2C instead of 4C.
    assert op_cost("sep_conv_3x3", C, affine=True).params - op_cost(
        "sep_conv_3x3", C, affine=False
    ).params == 2 * (2 * C)
    assert make_op("max_pool_3x3", C, pool_bn=True, affine=False).bn is not None
    assert op_cost("avg_pool_3x3", C, pool_bn=True, affine=False).params == 2 * C


def test_dil_conv_stride_2_is_the_dilated_conv_subsampled():
    layer = DilConv(C, 3, strides=2)
    x = _x(hw=9)
    y = layer(x)  # builds
    reference = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=2, use_bias=False)
    reference.build(x.shape)
    reference.set_weights(layer.depthwise.get_weights())
    dilated = keras.ops.relu(x)
    expected = layer.bn(layer.pointwise(reference(dilated)[:, ::2, ::2, :]), training=False)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), atol=1e-5)
    assert tuple(y.shape) == (2, 5, 5, C)


def test_factorized_reduce_and_zero_on_odd_sizes():
    reduce = FactorizedReduce(C)
    assert tuple(reduce(_x(hw=7)).shape) == (2, 4, 4, C)
    zero = Zero(strides=2)(_x(hw=7))
    assert tuple(zero.shape) == (2, 4, 4, C) and not np.any(np.asarray(zero))
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(7)
    with pytest.raises(ValueError, match="Unknown cell op"):
        make_op("sep_conv_7x7", C)


def test_drop_path_only_acts_in_training():
    layer = DropPath(0.5, seed=1)
    x = np.ones((256, 2, 2, 1), "float32")
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    per_example = y.reshape(256, -1)
    # Whole examples are dropped or scaled by 1 / keep, never single pixels.
    assert set(np.unique(per_example)) == {0.0, 2.0}
    assert np.all(per_example.min(axis=1) == per_example.max(axis=1))
    assert 64 < (per_example[:, 0] == 0).sum() < 192
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_models_of_every_op_save_and_load(tmp_path):
    inputs = keras.Input((HW, HW, C))
    outputs = [
        make_op(op, C, stride, affine=affine, pool_bn=not affine, name=f"{op}_s{stride}_{affine}")(inputs)
        for op in ALL_OPS
        for stride in (1, 2)
        for affine in (True, False)
    ]
    outputs.append(DropPath(0.3, seed=2, name="drop_path")(outputs[0]))
    outputs.append(PoolBN("avg", 5, strides=2, batch_norm=True, name="pool_bn")(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "ops.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _x(batch=3)
    for before, after in zip(model(x), loaded(x)):
        np.testing.assert_allclose(np.asarray(before), np.asarray(after), atol=1e-6)
    assert loaded.count_params() == model.count_params()
    reloaded = loaded.get_layer("sep_conv_5x5_s2_True")
    assert isinstance(reloaded, SepConv) and (reloaded.nat_op, reloaded.strides) == ("sep_conv_5x5", 2)


# ---------------------------------------------------------------------------
# Genotypes.


def test_published_cells():
    hand_made = ["ResBlock", "VGG", "Mobilenetv2"]
    searched = ["DARTS", "ENAS"]
    randoms = [f"R{i}" for i in range(1, 6)]
    assert set(TRANSFORMED) == {*hand_made, *searched, *randoms}
    expected = {*TRANSFORMED, *(t for d in TRANSFORMED.values() for t in d.values())}
    assert set(PUBLISHED) == expected and len(PUBLISHED) == 25
    assert PUBLISHED["ENAS"].num_nodes == 5
    assert all(PUBLISHED[name].num_nodes == 4 for name in [*hand_made, "DARTS"])
    assert PUBLISHED["DARTS"].uses_only(DARTS_OPS) and PUBLISHED["NAT_DARTS"].uses_only(DARTS_OPS)
    assert PUBLISHED["ENAS"].uses_only(ENAS_OPS)
    assert PUBLISHED["Mobilenetv2"].uses_only(ENAS_OPS) and not PUBLISHED["Mobilenetv2"].uses_only(DARTS_OPS)
    assert all(g.uses_only(NATPP_OPS) for g in PUBLISHED.values())
    # DARTS V2 as in the DARTS paper's code.
    assert PUBLISHED["DARTS"].normal[-1] == ("dil_conv_3x3", 2)
    assert PUBLISHED["DARTS"].reduce_concat == (2, 3, 4, 5)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_genotype_round_trips(name):
    genotype = PUBLISHED[name]
    genotype.validate()
    assert Genotype.from_json(genotype.to_json()) == genotype
    assert Genotype.from_dict(json.loads(json.dumps(genotype.to_dict()))) == genotype
    # The authors' triples read back as well.
    triples = {c: genotype.to_triples(c) for c in ("normal", "reduce")}
    data = {**genotype.to_dict(), "normal": triples["normal"], "reduce": triples["reduce"]}
    assert Genotype.from_dict(data) == genotype
    both = genotype_to_arch_graph(genotype, cell="both", channels=8, spatial=16)
    assert arch_graph_to_genotype(both) == genotype
    assert nat_keras.ArchGraph.from_json(both.to_json()) == both
    normal = genotype_to_arch_graph(genotype, cell="normal", channels=8, spatial=16)
    reduce = genotype_to_arch_graph(genotype, cell="reduce", channels=8, spatial=16)
    assert arch_graph_to_genotype(normal, reduce) == genotype


def test_concat_rules_match_the_published_cells():
    assert PUBLISHED["DARTS"].normal_concat == fully_concat(4)
    for name in ("ENAS", "NAT_ENAS", "NATv2_ENAS"):
        genotype = PUBLISHED[name]
        assert genotype.normal_concat == loose_end_concat(genotype.normal)
        assert genotype.reduce_concat == loose_end_concat(genotype.reduce)
    assert loose_end_concat([("conv_3x3", 0), ("null", 1), ("null", 2), ("sep_conv_3x3", 1)]) == (3,)
    assert loose_end_concat(
        [("conv_3x3", 0), ("null", 1), ("null", 2), ("sep_conv_3x3", 1)], ignore_null=True
    ) == (2, 3)


@pytest.mark.parametrize(
    "normal, concat, match",
    [
        ([("conv_3x3", 0), ("conv_9x9", 1)], [2], "unknown op"),
        ([("conv_3x3", 0), ("conv_3x3", 2)], [2], "input index"),
        ([("conv_3x3", 0)], [2], "two per node"),
        ([("conv_3x3", 0), ("conv_3x3", 1)], [3], "concat"),
        ([("conv_3x3", 0), ("conv_3x3", 1)], [2, 2], "concat"),
        ([("conv_3x3", 0), ("conv_3x3", 1), ("skip_connect", 2), ("null", 0)], [2, 3], "same number"),
    ],
)
def test_malformed_genotypes_are_rejected(normal, concat, match):
    with pytest.raises(GenotypeError, match=match):
        Genotype(normal, concat, [("max_pool_3x3", 0), ("max_pool_3x3", 1)], [2])


def test_numpy_indices_are_accepted_and_bad_entries_rejected():
    cell = [("conv_3x3", np.int64(0)), ("skip_connect", np.int32(1))]
    assert Genotype(cell, [2], cell, [2]).normal == (("conv_3x3", 0), ("skip_connect", 1))
    with pytest.raises(GenotypeError, match="non-integer"):
        Genotype([("conv_3x3", 0.5), ("null", 1)], [2], cell, [2])
    with pytest.raises(GenotypeError, match="pair"):
        Genotype([("conv_3x3",), ("null", 1)], [2], cell, [2])


def test_triples_must_be_sorted_by_node():
    with pytest.raises(GenotypeError, match="sorted by node"):
        Genotype.from_triples([("conv_3x3", 0, 2), ("conv_3x3", 1, 3)], [2], [("null", 0, 2)] * 2, [2])


def test_cell_graph_structure():
    genotype = PUBLISHED["DARTS"]
    graph = genotype_to_arch_graph(genotype, cell="reduce", channels=8, spatial=16)
    assert graph.inputs == ("c_{k-2}", "c_{k-1}") and graph.outputs == ("c_{k}",)
    assert graph.node("node0").merge == "sum" and graph.node("c_{k}").merge == "concat"
    assert graph.node("c_{k}").shape == (8, 8, 32)
    pool = graph.edge("node0_edge0")  # max_pool_3x3 from c_{k-2}
    assert (pool.kind, pool.op, pool.stride, pool.input_shape, pool.output_shape) == (
        "unit",
        "max_pool_3x3",
        2,
        (16, 16, 8),
        (8, 8, 8),
    )
    assert pool.actions == ("keep", "skip", "none", "avg_pool_3x3")
    skip = graph.edge("node1_edge0")  # skip_connect from node0: stride 1
    assert (skip.op, skip.stride, skip.actions) == ("skip", 1, ("keep", "none"))
    assert all(e.protected and e.actions == ("keep",) for e in graph.in_edges("c_{k}"))
    # Costs are those of the op layers, summed over the cell.
    total = sum(
        op_cost(op, 8, strides=2 if index < 2 else 1, spatial=16 if index < 2 else 8).params
        for op, index in genotype.reduce
    )
    assert graph.params == total
    vgg = genotype_to_arch_graph(PUBLISHED["VGG"], cell="normal")
    placeholder = vgg.edge("node0_edge0")
    assert (placeholder.kind, placeholder.op, placeholder.actions) == (
        "placeholder",
        "null",
        ("keep", "skip"),
    )
    conv = vgg.edge("node1_edge1")
    assert {"skip", "none", "conv_1x1", "sep_conv_3x3"} <= set(conv.actions)


def test_cell_copies_follow_the_network_layout():
    copies = cell_copies(8, 20, 32)
    assert copies["normal"] == ((20, 32), (20, 32), (40, 16), (40, 16), (80, 8), (80, 8))
    assert copies["reduce"] == ((40, 32), (80, 16))
    assert cell_copies(2, 8, 16) == {"normal": (), "reduce": ((16, 16), (32, 8))}


@pytest.mark.parametrize("source", ["DARTS", "ENAS", "R3", "VGG", "Mobilenetv2", "ResBlock"])
def test_num_cells_costs_plans_as_the_network_does(source):
    """A plan's cost change on the graph is the change in the built network's cost.

    Including the hand-made cells (VGG, MobileNetV2), whose c_{k-2} feeds only
    placeholders: a skip added from it builds its preprocessing in every cell.
    """
    genotype = PUBLISHED[source]
    kwargs = {"channels": 8, "spatial": 16, "num_cells": 5}
    graph = genotype_to_arch_graph(genotype, cell="both", **kwargs)
    first = graph.edge("reduce/node0_edge0")
    assert first.input_shape == (16, 16, 16) and len(first.copies) == 2
    assert nat_keras.ArchGraph.from_json(graph.to_json()) == graph
    rng = np.random.default_rng(0)
    # Change every other transformable edge (skips, cheaper ops, added skips) and, in
    # DARTS (every node has two ops), null one.
    changes = {e.id: [a for a in e.actions if a not in ("keep", "none")] for e in graph.edges[::2]}
    actions = {key: str(rng.choice(choices)) for key, choices in changes.items() if choices}
    if source == "DARTS":
        actions["normal/node1_edge1"] = "none"
    reads_c_k2 = [e for e in graph.edges if e.src.endswith("c_{k-2}") and e.kind == "unit"]
    if not reads_c_k2:  # the first read of c_{k-2}, in both cells
        for which in ("normal", "reduce"):
            added = next(e for e in graph.out_edges(f"{which}/c_{{k-2}}") if e.kind == "placeholder")
            actions[added.id] = "skip"
    plan = nat_keras.TransformPlan(graph.name, graph.fingerprint(), actions, "nat++")
    changed = apply_plan_to_genotype(genotype, plan, cell="both", **kwargs)

    def network(g):
        return nat_keras.cost(build_network(g, channels=8, num_cells=5, input_shape=(16, 16, 1)))

    planned = nat_keras.plan_cost(graph, plan)
    before, after = network(genotype), network(changed)
    assert (planned.params - graph.params, planned.macs - graph.macs) == (
        after.params - before.params,
        after.macs - before.macs,
    )
    assert (after.params - before.params, after.macs - before.macs) != (0, 0)
    # What the graph leaves out is the stem and the classifier, the same for every genotype:
    # 3x3 conv 1 -> 24 channels and its BN; dense 32 x 4 cells' concat -> 10.
    outside = before.macs - graph.macs
    assert outside == 16 * 16 * 9 * 24 + len(genotype.normal_concat) * 32 * 10
    assert after.macs - planned.macs == outside


def test_only_cheaper_drops_actions_that_cost_more():
    graph = genotype_to_arch_graph(PUBLISHED["DARTS"], cell="reduce", only_cheaper=True)
    # A FactorizedReduce skip costs more than a parameter-free pooling.
    assert graph.edge("node0_edge0").actions == ("keep", "none", "avg_pool_3x3")
    normal = genotype_to_arch_graph(PUBLISHED["DARTS"], cell="normal", only_cheaper=True)
    assert "skip" in normal.edge("node0_edge0").actions


@pytest.mark.parametrize("source", sorted(TRANSFORMED))
def test_published_transformations_are_nat_plans(source):
    for space, target in TRANSFORMED[source].items():
        graph = genotype_to_arch_graph(PUBLISHED[source], cell="both")
        actions = genotype_actions(PUBLISHED[source], PUBLISHED[target])
        plan = nat_keras.TransformPlan(graph.name, graph.fingerprint(), actions, space)
        assert apply_plan_to_genotype(PUBLISHED[source], plan) == PUBLISHED[target]
        assert apply_plan_to_genotype(PUBLISHED[source], actions) == PUBLISHED[target]


def test_apply_plan_to_genotype_checks_the_plan():
    darts = PUBLISHED["DARTS"]
    with pytest.raises(nat_keras.PlanError, match="legal actions"):
        apply_plan_to_genotype(darts, {"reduce/node1_edge0": "skip"})  # already a skip
    with pytest.raises(nat_keras.PlanError, match="does not have"):
        apply_plan_to_genotype(darts, {"normal/node9_edge0": "none"})
    other = genotype_to_arch_graph(PUBLISHED["ENAS"], cell="both")
    with pytest.raises(nat_keras.PlanError, match="made for"):
        apply_plan_to_genotype(darts, nat_keras.TransformPlan.keep_all(other))
    graph = genotype_to_arch_graph(darts, cell="both")
    nat_only = nat_keras.TransformPlan(
        graph.name, graph.fingerprint(), {"normal/node0_edge0": "dil_conv_3x3"}, "nat"
    )
    with pytest.raises(nat_keras.PlanError):
        apply_plan_to_genotype(darts, nat_only)
    single = apply_plan_to_genotype(darts, {"node0_edge0": "none"}, cell="normal")
    assert single.normal[0] == ("null", 0) and single.reduce == darts.reduce
    with pytest.raises(GenotypeError, match="one cell"):
        arch_graph_to_genotype(genotype_to_arch_graph(darts))


def test_cell_graphs_convert_to_graph_tensors():
    from nat_keras.policy.graph_tensor import from_graph_tensor, to_graph_tensor

    graph = genotype_to_arch_graph(PUBLISHED["NATv2_ENAS"], cell="both")
    assert from_graph_tensor(to_graph_tensor(graph)) == graph


# ---------------------------------------------------------------------------
# Sampler.


def test_sampler_is_seedable():
    assert sample_genotype(3) == sample_genotype(3)
    assert sample_genotype(np.random.default_rng(5)) == sample_genotype(np.random.default_rng(5))
    assert len({sample_genotype(seed) for seed in range(10)}) == 10
    rng = np.random.default_rng(0)
    assert sample_genotype(rng) != sample_genotype(rng)  # the generator advances


def test_sampler_draws_uniformly_without_null():
    rng = np.random.default_rng(0)
    samples = [sample_genotype(rng) for _ in range(300)]
    counts = collections.Counter(op for g in samples for op, _ in (*g.normal, *g.reduce))
    drawn = [op for op in DARTS_OPS if op != "null"]
    assert set(counts) == set(drawn)
    expected = sum(counts.values()) / len(drawn)
    assert all(0.8 * expected < counts[op] < 1.2 * expected for op in drawn)
    # Inputs: node i draws uniformly from its i + 2 predecessors.
    last = collections.Counter(index for g in samples for _, index in g.normal[6:])
    assert set(last) == {0, 1, 2, 3, 4}
    assert all(g.normal_concat == (2, 3, 4, 5) for g in samples)
    with_null = [sample_genotype(seed, exclude_null=False) for seed in range(100)]
    assert any("null" in g.ops_used() for g in with_null)


def test_sampler_options():
    genotype = sample_genotype(1, ops=NATPP_OPS, num_nodes=5, concat="loose")
    assert genotype.num_nodes == 5 and genotype.uses_only(NATPP_OPS)
    assert genotype.reduce_concat == loose_end_concat(genotype.reduce)
    with pytest.raises(ValueError, match="concat"):
        sample_genotype(0, concat="some")
    with pytest.raises(ValueError, match="No op left"):
        sample_genotype(0, ops=["null"])
    with pytest.raises(ValueError, match="Unknown ops"):
        sample_genotype(0, ops=["conv_9x9"])


# ---------------------------------------------------------------------------
# Network.


@pytest.fixture(scope="module")
def darts_net():
    return build_network(PUBLISHED["DARTS"], channels=8, num_cells=5, auxiliary=True, drop_path_rate=0.3)


def test_network_structure(darts_net):
    assert reduction_cells(5) == (1, 3) and reduction_cells(8) == (2, 5) and reduction_cells(20) == (6, 13)
    assert [tuple(s) for s in darts_net.output_shape] == [(None, 10), (None, 10)]
    names = [layer.name for layer in darts_net.layers]
    again = build_network(PUBLISHED["DARTS"], channels=8, num_cells=5, auxiliary=True, drop_path_rate=0.3)
    assert names == [layer.name for layer in again.layers]  # deterministic names
    assert "cell1_node0_edge0_max_pool_3x3" in names and "cell0_node3_edge1_dil_conv_3x3" in names
    assert isinstance(darts_net.get_layer("cell2_preprocess0"), FactorizedReduce)  # after a reduction
    # Stride-1 skips pass their tensor: no layer (the reduction cells' skips all start at node0).
    assert not any(n.endswith("skip_connect") for n in names)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in darts_net.layers)
    # Drop-path on every built op but the identities: 8 per normal cell of
    # DARTS minus its 2 skips, 8 per reduction cell minus 3 stride-1 skips.
    drop = [layer for layer in darts_net.layers if isinstance(layer, DropPath)]
    assert len(drop) == 3 * 6 + 2 * 5
    assert darts_net.get_layer("cell3_node0_edge0_max_pool_3x3").strides == 2
    assert darts_net.get_layer("cell3_concat").output.shape[1:] == (8, 8, 4 * 32)


def test_network_drop_path_only_in_training(darts_net):
    x = _x(batch=4, hw=32, c=3)
    first = np.asarray(darts_net(x)[0])
    np.testing.assert_allclose(np.asarray(darts_net(x, training=False)[0]), first, atol=1e-6)
    trained = [np.asarray(darts_net(x, training=True)[0]) for _ in range(2)]
    assert not np.allclose(trained[0], trained[1])


def test_network_trains_and_round_trips(tmp_path):
    model = build_network(
        PUBLISHED["NATv2_DARTS"], channels=4, num_cells=3, auxiliary=True, drop_path_rate=0.2
    )
    x = _x(batch=4, hw=32, c=3)
    y = np.array([0, 1, 2, 3])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before_step = np.asarray(model(x)[0])
    model.train_on_batch(x, [y, y])
    assert not np.allclose(np.asarray(model(x)[0]), before_step)
    path = tmp_path / "network.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for before, after in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_allclose(before, after, atol=1e-5)


def test_network_encodes(darts_net):
    graph = nat_keras.encode(darts_net)
    assert graph.params == darts_net.count_params()
    # Stride-1 skips are plain shortcuts into the sum nodes.
    shortcut = graph.edge("cell2_preprocess0->cell2_node2_add")
    assert shortcut.kind == "identity"


def test_darts_network_has_the_published_size():
    # DARTS V2, C=36, 20 cells: 3,349,342 trainable parameters without the
    # auxiliary head, the size DARTS and NAT report (3.3M).
    model = build_network(PUBLISHED["DARTS"], channels=36, num_cells=20)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 3_349_342


@pytest.mark.parametrize("name", ["VGG", "NAT_R2", "ENAS", "NATv2_MobileNetv2"])
def test_other_published_networks_build(name):
    model = build_network(PUBLISHED[name], channels=4, num_cells=3)
    assert tuple(model(_x(batch=1, hw=32, c=3)).shape) == (1, 10)
    names = {layer.name for layer in model.layers}
    if name == "VGG":
        # c_{k-2} feeds only null edges: no preprocessing is built for it.
        assert not any(n.endswith("preprocess0") for n in names)
    if name == "NAT_R2":
        assert "cell0_node1_zero" in names  # both inputs of node 3 are null


def test_network_rejects_bad_options():
    with pytest.raises(ValueError, match="even"):
        build_network(PUBLISHED["DARTS"], channels=7)
    with pytest.raises(ValueError, match="auxiliary head"):
        build_network(PUBLISHED["DARTS"], channels=4, num_cells=3, input_shape=(16, 16, 3), auxiliary=True)


def test_ops_vocabulary_mapping():
    from nat_keras.cells import from_vocab, to_vocab

    assert to_vocab("skip_connect") == ops.IDENTITY and to_vocab("null") == ops.NULL
    assert all(from_vocab(to_vocab(op)) == op for op in ALL_OPS)
