"""What encode sees and what each NAT action builds, on small and reference nets."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import nat_keras
from nat_keras import ops


def _layers_of(model: keras.Model, cls: type) -> list[keras.Layer]:
    return [layer for layer in model.layers if type(layer) is cls]


@pytest.fixture(scope="module")
def resnet20():
    model = nat_keras.models.resnet20()
    return model, nat_keras.encode(model)


def test_post_activation_units_and_residual_sum(resnet20):
    _, graph = resnet20
    conv1 = graph.edge("stage1_block0_conv1")
    assert conv1.layers == ("stage1_block0_conv1", "stage1_block0_bn1", "stage1_block0_relu1")
    assert (conv1.op, conv1.stride, conv1.kernel) == ("conv_3x3", 1, 3)
    conv2 = graph.edge("stage1_block0_conv2")
    assert conv2.dst == "stage1_block0_add"  # a unit feeding only a sum ends at the sum node
    add = graph.node("stage1_block0_add")
    assert add.merge == "sum" and add.post == ("stage1_block0_relu2",)
    shortcut = graph.edge("stem_conv->stage1_block0_add")
    assert shortcut.kind == "identity" and shortcut.actions == ("keep", "none")


def test_stem_and_head_are_protected(resnet20):
    _, graph = resnet20
    assert graph.edge("stem_conv").protected and graph.edge("stem_conv").actions == ("keep",)
    head = [e for e in graph.edges if e.dst in graph.outputs]
    assert head and all(e.protected for e in head)


def test_legal_actions_follow_shapes_and_cost(resnet20):
    _, graph = resnet20
    # A stride-2 conv may become a FactorizedReduce skip (cheaper), never a
    # dilated conv (Keras forbids dilation with stride) or a pool (channels change).
    reduce = graph.edge("stage2_block0_conv1")
    assert reduce.stride == 2 and "skip" in reduce.actions
    assert not {"dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3"} & set(reduce.actions)
    # The first conv of a block feeds a chain node with one input: no "none".
    assert "none" not in graph.edge("stage1_block0_conv1").actions
    for edge in graph.edges:
        for action in edge.actions:
            after = nat_keras.graph.costs.edge_cost_after(edge, action)
            assert after.params <= max(edge.params, 0) and after.macs <= edge.macs, (edge.id, action)


def test_placeholders_join_equal_shapes_two_edges_apart():
    model = nat_keras.models.vgg16()
    graph = nat_keras.encode(model)
    placeholders = [e for e in graph.edges if e.kind == "placeholder"]
    assert placeholders
    for edge in placeholders:
        assert graph.node(edge.src).shape == graph.node(edge.dst).shape
        assert edge.actions == ("keep", "skip")
    # A VGG chain conv1 -> conv2 -> conv3 of one width gets a c_{k-2} skip.
    assert graph.has_edge("null:block3_conv1->block3_conv3")
    assert not [e for e in nat_keras.encode(model, placeholder_span=0).edges if e.kind == "placeholder"]


def test_removing_a_sum_branch_collapses_the_sum(resnet20):
    model, graph = resnet20
    plan = nat_keras.TransformPlan.from_actions(graph, {"stage1_block0_conv2": "none"})
    new = nat_keras.apply_plan(model, plan)
    names = {layer.name for layer in new.layers}
    assert "stage1_block0_add" not in names  # one input left: no Add layer
    assert "stage1_block0_conv2" not in names and "stage1_block0_conv1" not in names  # dead
    assert new.count_params() == nat_keras.plan_cost(graph, plan).params


def test_added_skip_creates_a_sum():
    model = nat_keras.models.vgg16()
    graph = nat_keras.encode(model)
    placeholder = next(e for e in graph.edges if e.kind == "placeholder")
    plan = nat_keras.TransformPlan.from_actions(graph, {placeholder.id: "skip"})
    new = nat_keras.apply_plan(model, plan)
    adds = _layers_of(new, keras.layers.Add)
    assert len(adds) == 1 and adds[0].name.startswith(placeholder.dst)
    assert new.count_params() == model.count_params()


def test_skip_on_stride_two_emits_factorized_reduce(resnet20):
    model, graph = resnet20
    plan = nat_keras.TransformPlan.from_actions(graph, {"stage2_block0_conv1": "skip"})
    new = nat_keras.apply_plan(model, plan)
    names = {layer.name for layer in new.layers}
    assert {"stage2_block0_conv1_skip_conv1", "stage2_block0_conv1_skip_conv2"} <= names
    assert new.get_layer("stage2_block0_conv1_skip_concat").output.shape[1:] == (16, 16, 32)
    assert new.count_params() == nat_keras.plan_cost(graph, plan).params


def test_nat_plus_plus_replacement_emits_new_op_and_keeps_bn_weights(resnet20):
    model, graph = resnet20
    plan = nat_keras.TransformPlan.from_actions(graph, {"stage1_block0_conv1": "sep_conv_3x3"})
    new = nat_keras.apply_plan(model, plan)
    replaced = new.get_layer("stage1_block0_conv1_nat_sep_conv_3x3")
    assert isinstance(replaced, keras.layers.SeparableConv2D)
    for a, b in zip(
        new.get_layer("stage1_block0_bn1").get_weights(), model.get_layer("stage1_block0_bn1").get_weights()
    ):
        np.testing.assert_array_equal(a, b)
    assert new.count_params() < model.count_params()


def test_removed_concat_input_becomes_zeros():
    inputs = keras.Input((8, 8, 4))
    stem = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(stem)
    b = keras.layers.Conv2D(8, 3, padding="same", name="b")(stem)
    cat = keras.layers.Concatenate(name="cat")([a, b])
    x = keras.layers.Conv2D(4, 1, name="mix")(cat)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, outputs, name="branches")
    graph = nat_keras.encode(model)
    assert graph.node("cat").merge == "concat" and "none" in graph.edge("b").actions
    new = nat_keras.apply_plan(model, nat_keras.TransformPlan.from_actions(graph, {"b": "none"}))
    zeros = _layers_of(new, nat_keras.layers.ZerosLike)
    assert len(zeros) == 1 and new.get_layer("cat").output.shape[-1] == 16
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 4)).astype("float32")
    mix_input = keras.Model(new.inputs, new.get_layer("cat").output)(x)
    np.testing.assert_array_equal(np.asarray(mix_input)[..., 8:], 0.0)


def test_pre_activation_and_padding_fuse_into_units():
    model = keras.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3), classes=10)
    graph = nat_keras.encode(model)
    conv2 = graph.edge("conv2_block1_2_conv")
    assert conv2.layers[0] == "conv2_block1_2_pad" and conv2.op == "conv_3x3"
    dense = nat_keras.encode(
        keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10)
    )
    unit = dense.edge("conv2_block1_1_conv")
    assert unit.layers[:2] == ("conv2_block1_0_bn", "conv2_block1_0_relu")  # pre-activation
    assert dense.node("conv2_block1_concat").merge == "concat"


def test_mobilenet_depthwise_units():
    graph = nat_keras.encode(nat_keras.models.mobilenet_v2())
    depthwise = [e for e in graph.edges if e.op.startswith("depthwise")]
    assert depthwise and all(e.groups == e.input_shape[-1] for e in depthwise)
    assert all(set(e.actions) <= {"keep", "skip", "none", "max_pool_3x3", "avg_pool_3x3"} for e in depthwise)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("conv_3x3", ("conv_1x1", "sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3")),
        ("sep_conv_5x5", ("sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3")),
        ("max_pool_3x3", ("avg_pool_3x3",)),
        ("avg_pool_3x3", ("max_pool_3x3",)),
        ("dense", ()),
        ("skip", ()),
    ],
)
def test_nat_plus_plus_transition_table(source, expected):
    assert ops.cheaper_targets(source) == expected


def test_plan_json_round_trip_and_keep_is_implicit(resnet20, tmp_path):
    _, graph = resnet20
    plan = nat_keras.TransformPlan.from_actions(
        graph, {"stage1_block0_conv1": "skip", "stage1_block1_conv1": "keep"}, space="nat"
    )
    assert dict(plan.actions) == {"stage1_block0_conv1": "skip"}
    plan.save(tmp_path / "plan.json")
    assert nat_keras.TransformPlan.load(tmp_path / "plan.json") == plan
    assert nat_keras.TransformPlan.from_json(plan.to_json()) == plan


@keras.saving.register_keras_serializable(package="nat_keras_tests")
class _SplitInTwo(keras.layers.Layer):
    """A layer with two outputs, as custom models sometimes have."""

    def call(self, x):
        first, second = keras.ops.split(x, 2, axis=-1)
        return first, second

    def compute_output_shape(self, shape):
        half = (*shape[:-1], shape[-1] // 2)
        return half, half


def test_multi_output_layer_gets_a_node_per_output():
    inputs = keras.Input((8, 8, 4), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    first, second = _SplitInTwo(name="split")(x)
    first = keras.layers.Conv2D(4, 3, padding="same", name="left")(first)
    second = keras.layers.Conv2D(4, 3, padding="same", name="right")(second)
    x = keras.layers.Add(name="add")([first, second])
    x = keras.layers.Conv2D(4, 3, padding="same", name="mix")(x)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, outputs, name="two_outputs_layer")
    graph = nat_keras.encode(model)
    assert graph.inputs == ("image",)
    assert graph.edge("right").src == "split:1" and graph.edge("split->split:1").protected
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    same = nat_keras.apply_plan(model, nat_keras.TransformPlan.keep_all(graph))
    np.testing.assert_array_equal(np.asarray(same(x)), np.asarray(model(x)))
    for seed in range(5):
        plan = nat_keras.sample_random_plan(graph, seed)
        assert nat_keras.apply_plan(model, plan)(x).shape == (2, 2)


def test_readme_first_example(resnet20, tmp_path):
    model, graph = resnet20
    plan = nat_keras.TransformPlan.from_actions(
        graph,
        {
            "stage1_block0_conv1": "skip",
            "stage2_block1_conv1": "sep_conv_3x3",
            "null:stage1_block0_conv1->stage1_block1_conv1": "skip",
        },
    )
    new_model = nat_keras.apply_plan(model, plan, check_budget=nat_keras.Budget())
    assert "3 of" in nat_keras.format_plan(graph, plan)
    result = nat_keras.export(new_model, tmp_path / "resnet20", plan=plan, source=model)
    assert result.plan_path.exists() and result.cost.params < result.source_cost.params
