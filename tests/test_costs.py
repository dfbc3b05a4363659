"""Cross-check `nat_keras.cost` against counts that do not come from nat_keras.

MACs: TensorFlow's graph profiler (`tf.compat.v1.profiler`, float_operation
options) counts 2 * MACs for each conv / matmul op of the traced inference
graph. Keras 3 (TF backend) emits, per layer:

  Conv1D, Conv2D (grouped too)    -> Conv2D (Conv1D through ExpandDims)
  DepthwiseConv2D                 -> DepthwiseConv2dNative
  SeparableConv2D                 -> DepthwiseConv2dNative + Conv2D (pointwise)
  dilated (Separable)Conv2D       -> SpaceToBatchND + the op above + BatchToSpaceND
  Dense (any input rank)          -> MatMul (rank > 2 through Reshape)

Each such graph op is one MAC op, counted once. Keras runs a grouped conv
(groups > 1) as an XLA-compiled nested tf.function; the profiler does not look
into function calls, so each called function's graph is profiled on its own
(reached through the private `Graph._get_function`, the one private API used
here). The graph is traced at batch size 1, so every shape is static and the
counts are per example, as nat_keras's are. The profiler's own per-op figure
is also checked against a count from the op's static shapes, so an op type
the profiler stopped costing cannot silently drop out of the sum.

The one known, unavoidable difference: a dilated conv runs on a
SpaceToBatchND-padded tensor, so on a feature map whose size is not a
multiple of the dilation d the profiler counts ceil(H/d)*d x ceil(W/d)*d
output positions where nat_keras (and the real work) counts H x W. The
networks below have even feature maps, so they agree exactly;
`test_dilated_conv_on_odd_map` asserts the difference to the MAC.

Params: `count_params()` of the Keras model.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

import nat_keras
from nat_keras.cells.network import build_network
from nat_keras.cells.published import PUBLISHED
from nat_keras.errors import ConfigError
from nat_keras.graph.costs import minimum_cost
from nat_keras.plan import fit_to_budget

# Graph op types that carry a network's multiply-adds (see the module docstring).
MAC_OP_TYPES = frozenset({"Conv2D", "DepthwiseConv2dNative", "MatMul"})
# Ops that run a function graph, which the profiler does not look into.
CALL_OP_TYPES = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
# Op types that would carry MACs (or hide them in a branch / loop body) that
# this count does not handle; none may appear.
UNCOUNTED_OP_TYPES = frozenset(
    {
        "BatchMatMul",
        "BatchMatMulV2",
        "BatchMatMulV3",
        "Conv",
        "Conv3D",
        "Conv2DBackpropInput",
        "Conv3DBackpropInputV2",
        "DepthwiseConv2dNativeBackpropInput",
        "Einsum",
        "_FusedConv2D",
        "_FusedMatMul",
        "If",
        "StatelessIf",
        "While",
        "StatelessWhile",
        "Case",
        "StatelessCase",
    }
)


def _static_macs(op: tf.Operation) -> int:
    """MACs of one conv / matmul graph op, from its static input and output shapes."""
    if op.type == "MatMul":
        a, b = (t.shape.as_list() for t in op.inputs[:2])
        rows = a[1] if op.get_attr("transpose_a") else a[0]
        inner = a[0] if op.get_attr("transpose_a") else a[1]
        cols = b[0] if op.get_attr("transpose_b") else b[1]
        return rows * inner * cols
    output = int(np.prod(op.outputs[0].shape.as_list()))
    k_h, k_w, filter_in, _ = op.inputs[1].shape.as_list()
    if op.type == "Conv2D":  # filter_in is C_in / groups
        return output * k_h * k_w * filter_in
    if op.type == "DepthwiseConv2dNative":  # one k x k filter per output channel
        return output * k_h * k_w
    raise AssertionError(f"no MAC rule for op type {op.type}")


def _profiled_mac_ops(graph: tf.Graph, where: str) -> list[tuple[tf.Operation, int]]:
    """Every MAC op that running `graph` runs, with the profiler's float ops for it."""
    unhandled = {op.type for op in graph.get_operations()} & UNCOUNTED_OP_TYPES
    assert not unhandled, f"{where}: ops {unhandled} are not counted; extend this test"

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    # The "scope" view lists every graph op that has float ops once, by op name.
    profile = tf.compat.v1.profiler.profile(graph=graph, cmd="scope", options=options)
    flops: dict[str, int] = {}
    stack = list(profile.children)
    while stack:
        entry = stack.pop()
        flops[entry.name] = entry.float_ops
        stack.extend(entry.children)

    found: list[tuple[tf.Operation, int]] = []
    for op in graph.get_operations():
        if op.type in MAC_OP_TYPES:
            assert op.name in flops, f"{where}: the profiler gave no float ops for {op.type} op {op.name}"
            assert flops[op.name] == 2 * _static_macs(op), (
                f"{where}: profiler vs shapes disagree on {op.name}"
            )
            found.append((op, flops[op.name]))
        elif op.type in CALL_OP_TYPES:
            # Keras runs grouped convs as an XLA-compiled tf.function, which
            # the profiler sees as one opaque call: profile the callee's graph
            # (kept by the caller, with its static shapes) on its own, once per call.
            callee = graph._get_function(op.get_attr("f").name)
            assert callee is not None, f"{where}: cannot find the function that {op.name} calls"
            found.extend(_profiled_mac_ops(callee.graph, f"{where}/{op.name}"))
    return found


def profiler_macs(model: keras.Model, input_shape: tuple[int, ...]) -> tuple[int, dict[str, int]]:
    """MACs of `model` per example by TF's profiler, and their split by op type."""
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, *input_shape], tf.float32)
    )
    by_type: dict[str, int] = {}
    for op, float_ops in _profiled_mac_ops(concrete.graph, model.name):
        by_type[op.type] = by_type.get(op.type, 0) + float_ops // 2
    return sum(by_type.values()), by_type


def _mixed() -> keras.Model:
    """Every conv / dense layer type nat_keras costs (square kernels), and a Dense on a rank-3 input."""
    inputs = keras.Input((16, 16, 8))
    x = keras.layers.SeparableConv2D(12, 3, padding="same", name="sep")(inputs)
    x = keras.layers.SeparableConv2D(12, 5, padding="same", depth_multiplier=2, name="sep_mult")(x)
    x = keras.layers.SeparableConv2D(12, 3, padding="same", dilation_rate=2, name="dil")(x)
    x = keras.layers.Conv2D(16, 3, groups=4, padding="same", name="grouped")(x)
    x = keras.layers.BatchNormalization(name="grouped_bn")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(x)  # valid: 14 x 14
    x = keras.layers.Conv2D(24, 3, strides=2, name="strided")(x)  # valid, stride 2: 6 x 6
    x = keras.layers.Reshape((36, 24), name="to_sequence")(x)
    x = keras.layers.Conv1D(20, 3, padding="same", name="conv1d")(x)
    x = keras.layers.Dense(10, name="dense_rank3")(x)  # applied at each of the 36 positions
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, outputs, name="mixed")


def _non_square() -> keras.Model:
    inputs = keras.Input((16, 16, 8))
    x = keras.layers.Conv2D(12, (1, 3), padding="same", name="conv_1x3")(inputs)
    x = keras.layers.DepthwiseConv2D((3, 1), name="depthwise_3x1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name="non_square")


def _transformed_resnet20() -> keras.Model:
    """ResNet-20 after a random plan: FactorizedReduce skips, dilated / separable replacements."""
    source = nat_keras.models.resnet20()
    return nat_keras.apply_plan(source, nat_keras.sample_random_plan(nat_keras.encode(source), 0))


CASES: dict[str, tuple[Callable[[], keras.Model], tuple[int, ...], set[str]]] = {
    "resnet20": (nat_keras.models.resnet20, (32, 32, 3), {"Conv2D", "MatMul"}),
    "mobilenet_v2": (nat_keras.models.mobilenet_v2, (32, 32, 3), set(MAC_OP_TYPES)),
    "keras_mobilenet_v2": (
        lambda: keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10),
        (32, 32, 3),
        set(MAC_OP_TYPES),
    ),
    "keras_resnet50": (
        lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10),
        (32, 32, 3),
        {"Conv2D", "MatMul"},
    ),
    "transformed_resnet20": (_transformed_resnet20, (32, 32, 3), set(MAC_OP_TYPES)),
    "mixed": (_mixed, (16, 16, 8), set(MAC_OP_TYPES)),
    # The cell ops are composite layers (SepConv, DilConv, FactorizedReduce, ...): their own count_macs.
    "darts_cells": (
        lambda: build_network(PUBLISHED["DARTS"], channels=8, num_cells=5),
        (32, 32, 3),
        {"Conv2D", "DepthwiseConv2dNative", "MatMul"},
    ),
    "enas_cells": (
        lambda: build_network(PUBLISHED["ENAS"], channels=8, num_cells=5),
        (32, 32, 3),
        {"Conv2D", "DepthwiseConv2dNative", "MatMul"},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cost_matches_tf_profiler_and_count_params(name: str) -> None:
    factory, input_shape, expected_types = CASES[name]
    model = factory()
    macs, by_type = profiler_macs(model, input_shape)
    # The case really exercises the op types it is meant to.
    assert set(by_type) == expected_types
    cost = nat_keras.cost(model)
    assert cost.macs == macs, f"nat_keras {cost.macs:,} vs profiler {macs:,} ({by_type})"
    assert cost.params == model.count_params()


def test_plan_cost_matches_tf_profiler() -> None:
    """plan_cost predicts, from the graph alone, what the profiler measures on the rebuilt model."""
    source = nat_keras.models.resnet20()
    graph = nat_keras.encode(source)
    for seed in (1, 2):
        plan = nat_keras.sample_random_plan(graph, seed)
        rebuilt = nat_keras.apply_plan(source, plan, graph=graph)
        predicted = nat_keras.plan_cost(graph, plan)
        assert predicted.macs == profiler_macs(rebuilt, (32, 32, 3))[0]
        assert predicted.params == rebuilt.count_params()


def test_non_square_kernels_match_tf_profiler() -> None:
    model = _non_square()
    assert nat_keras.cost(model).macs == profiler_macs(model, (16, 16, 8))[0]


@pytest.mark.parametrize(
    ("layer", "dilated_macs_per_position"),
    [
        # Only the dilated part (the depthwise conv) runs on padded positions.
        (
            keras.layers.SeparableConv2D(4, 3, dilation_rate=2, padding="same", depth_multiplier=2),
            3 * 3 * 6 * 2,
        ),
        (keras.layers.Conv2D(4, 5, dilation_rate=2, padding="same"), 5 * 5 * 6 * 4),
        (keras.layers.DepthwiseConv2D(3, dilation_rate=3, padding="same"), 3 * 3 * 6),
    ],
    ids=["separable", "conv", "depthwise"],
)
def test_dilated_conv_on_odd_map(layer: keras.layers.Layer, dilated_macs_per_position: int) -> None:
    """On a 7 x 7 map the profiler's count exceeds the true one by the SpaceToBatchND padding."""
    inputs = keras.Input((7, 7, 6))
    model = keras.Model(inputs, layer(inputs))
    dilation = layer.dilation_rate[0]
    padded_side = -(-7 // dilation) * dilation
    padding_macs = (padded_side**2 - 7 * 7) * dilated_macs_per_position
    assert padding_macs > 0
    assert profiler_macs(model, (7, 7, 6))[0] == nat_keras.cost(model).macs + padding_macs
    assert nat_keras.cost(model).params == model.count_params()


def test_compact_budgets_are_validated_and_bounded():
    reference = nat_keras.Cost(1000, 10_000)
    assert nat_keras.Budget(macs_ratio=0.5).limits(reference) == nat_keras.Cost(1000, 5000)
    assert nat_keras.Budget(params_ratio=0.75).limits(reference) == nat_keras.Cost(750, 10_100)
    assert nat_keras.Budget(macs_ratio=0.5).is_compact and not nat_keras.Budget().is_compact
    again = nat_keras.Budget.from_dict(nat_keras.Budget(macs_ratio=0.5).to_dict())
    assert again == nat_keras.Budget(macs_ratio=0.5)
    with pytest.raises(ConfigError, match="macs_ratio > 0"):
        nat_keras.Budget(macs_ratio=0)
    with pytest.raises(ConfigError, match="pass one of them"):
        nat_keras.Budget(macs_ratio=0.5, macs_eps=0.1)


def test_a_budget_below_the_protected_edges_is_refused_with_the_floor():
    graph = nat_keras.encode(nat_keras.models.mobilenet_v2())
    floor = minimum_cost(graph)
    reference = nat_keras.cost(graph)
    assert floor.macs < reference.macs and floor.params < reference.params
    impossible = nat_keras.Budget(macs_ratio=0.9 * floor.macs / reference.macs)
    with pytest.raises(nat_keras.BudgetError, match=f"alone cost {floor.params:,} / {floor.macs:,}"):
        fit_to_budget(graph, nat_keras.TransformPlan.keep_all(graph), impossible)
    possible = nat_keras.Budget(macs_ratio=0.5)
    plan = fit_to_budget(graph, nat_keras.TransformPlan.keep_all(graph), possible)
    assert possible.allows(nat_keras.plan_cost(graph, plan), reference)
    # A search over many inputs loosens an unreachable budget to the input's floor instead.
    assert possible.within_reach(floor, reference) is possible
    loosened = impossible.within_reach(floor, reference)
    assert loosened.allows(floor, reference) and loosened.limits(reference).macs == floor.macs
    plan = fit_to_budget(graph, nat_keras.TransformPlan.keep_all(graph), loosened)
    assert loosened.allows(nat_keras.plan_cost(graph, plan), reference)
    params_only = nat_keras.Budget(params_ratio=0.9 * floor.params / reference.params)
    assert params_only.within_reach(floor, reference).limits(reference).params == floor.params
