"""The one graph interpreter behind `apply_plan` and `ModelSupernet` (nat_keras/rebuild/interpreter.py).

Multi-output layers are routed by `Node.output_index` (never by parsing node
ids), and the rebuild's fixed actions and the supernet's switches compute the
same network, a concat that lost an input (zeros in its place) included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_IMAGE_SHAPE, tiny_concat

import nat_keras
from nat_keras.graph.trace import trace
from nat_keras.plan import resolve
from nat_keras.rebuild.apply import _FixedActions
from nat_keras.rebuild.interpreter import EdgeEvaluator, GraphInterpreter, LayerClones
from nat_keras.rebuild.layers import ZerosLike
from nat_keras.supernet import ModelSupernet


@keras.saving.register_keras_serializable(package="nat_keras_tests")
class _HalvesAndSum(keras.layers.Layer):
    """Two outputs of the same shape: the first channel half, and the sum of both halves."""

    def call(self, x):
        first, second = keras.ops.split(x, 2, axis=-1)
        return first, first + second

    def compute_output_shape(self, shape):
        half = (*shape[:-1], shape[-1] // 2)
        return half, half


def _head(x: keras.KerasTensor) -> keras.KerasTensor:
    x = keras.layers.Conv2D(4, 3, padding="same", name="mix")(x)
    return keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(x))


def custom_two_outputs() -> keras.Model:
    """A custom layer with two outputs, each into its own conv, then summed."""
    inputs = keras.Input((8, 8, 4), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    first, second = _HalvesAndSum(name="halves")(x)
    first = keras.layers.Conv2D(4, 3, padding="same", name="left")(first)
    second = keras.layers.Conv2D(4, 5, padding="same", name="right")(second)
    x = keras.layers.Add(name="add")([first, second])
    return keras.Model(inputs, _head(x), name="custom_two_outputs")


def split_in_three() -> keras.Model:
    """`keras.ops.split` into 2 + 3 + 3 channels: the last two outputs have one shape,
    so routing one in place of the other would go unnoticed by shapes; the middle
    one feeds nothing."""
    inputs = keras.Input((8, 8, 4), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    a, _, c = keras.ops.split(x, [2, 5], axis=-1)
    a = keras.layers.Conv2D(4, 3, padding="same", name="left")(a)
    c = keras.layers.Conv2D(4, 5, padding="same", name="right")(c)
    x = keras.layers.Concatenate(name="cat")([a, c])
    return keras.Model(inputs, _head(x), name="split_in_three")


MULTI_OUTPUT_MODELS = {"custom_two_outputs": custom_two_outputs, "split_in_three": split_in_three}


class _KeepAll(EdgeEvaluator):
    """The simplest strategy: every edge runs its own layers (placeholders stay null), sums add."""

    def __init__(self, interpreter: GraphInterpreter):
        self.interpreter = interpreter

    def carries(self, edge: nat_keras.Edge) -> bool:
        return edge.kind != "placeholder"

    def value(self, edge: nat_keras.Edge, x: Any) -> Any:
        return self.interpreter.keep(edge, x) if edge.kind == "unit" else x

    def add(self, node: nat_keras.Node, summands: Sequence[Any], original: Callable[[], Any] | None) -> Any:
        return original() if original is not None else keras.ops.sum(keras.ops.stack(summands), axis=0)


def _renamed(graph: nat_keras.ArchGraph, names: dict[str, str]) -> nat_keras.ArchGraph:
    """`graph` with nodes renamed (edges and outputs follow)."""
    rename = lambda node_id: names.get(node_id, node_id)  # noqa: E731
    return dataclasses.replace(
        graph,
        nodes=tuple(dataclasses.replace(n, id=rename(n.id)) for n in graph.nodes),
        edges=tuple(dataclasses.replace(e, src=rename(e.src), dst=rename(e.dst)) for e in graph.edges),
        outputs=tuple(rename(n) for n in graph.outputs),
    )


def _images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(4, *shape)).astype("float32")


@pytest.mark.parametrize("factory", sorted(MULTI_OUTPUT_MODELS))
def test_multi_output_layers_are_routed_by_output_index(factory):
    keras.utils.set_random_seed(0)
    model = MULTI_OUTPUT_MODELS[factory]()
    x = _images((8, 8, 4))
    expected = model(x).numpy()
    graph = nat_keras.encode(model)
    further = [n for n in graph.nodes if n.output_index > 0]
    assert further and all(":" in n.id for n in further)
    # Node ids that say nothing of which output they are: only output_index can route them.
    graph = _renamed(graph, {n.id: f"output number {n.output_index + 1} of the layer" for n in further})
    clones = LayerClones()
    interpreter = GraphInterpreter(graph, trace(model).calls, clones)
    interpreter.run([x], _KeepAll(interpreter))  # builds the clones
    for clone in clones.weighted():
        clone.layer.set_weights(clone.source.get_weights())
    values = interpreter.run([x], _KeepAll(interpreter))
    np.testing.assert_allclose(values[graph.outputs[0]].numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("factory", sorted(MULTI_OUTPUT_MODELS))
def test_multi_output_layers_in_rebuild_and_supernet(factory):
    keras.utils.set_random_seed(0)
    model = MULTI_OUTPUT_MODELS[factory]()
    x = _images((8, 8, 4))
    expected = model(x).numpy()
    graph = nat_keras.encode(model)
    rebuilt = nat_keras.apply_plan(model, nat_keras.TransformPlan.keep_all(graph))
    np.testing.assert_array_equal(rebuilt(x).numpy(), expected)
    supernet = ModelSupernet(model)
    np.testing.assert_allclose(supernet(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    changed = nat_keras.TransformPlan.from_actions(graph, {"left": "sep_conv_3x3", "right": "skip"})
    for arch in (supernet.plan_to_arch(changed), supernet.sample_arch(seed=1)):
        np.testing.assert_allclose(
            supernet.extract(arch)(x).numpy(), supernet(x, arch=tf.constant(arch)).numpy(), atol=1e-5
        )


def test_fixed_actions_and_switches_agree_on_a_concat_with_a_removed_input():
    keras.utils.set_random_seed(0)
    model = tiny_concat()
    graph = nat_keras.encode(model)
    placeholder = next(e for e in graph.edges if e.kind == "placeholder")
    plan = nat_keras.TransformPlan.from_actions(
        graph, {"cat_left": "none", "block0_b_conv": "none", placeholder.id: "skip"}
    )
    x = _images(TINY_IMAGE_SHAPE)
    rebuilt = nat_keras.apply_plan(model, plan)
    zeros = [layer for layer in rebuilt.layers if isinstance(layer, ZerosLike)]
    assert [layer.name for layer in zeros] == ["cat_left_zeros"]
    supernet = ModelSupernet(model)  # its weights are still the source's
    arch = tf.constant(supernet.plan_to_arch(plan))
    switched = supernet(x, arch=arch, training=False).numpy()
    np.testing.assert_allclose(rebuilt(x, training=False).numpy(), switched, atol=1e-5)
    # The same interpreter and the same layers, with the plan's fixed actions instead of switches.
    interpreter = supernet._source.interpreter
    fixed = interpreter.run([tf.constant(x)], _FixedActions(interpreter, resolve(graph, plan)))
    np.testing.assert_allclose(fixed[graph.outputs[0]].numpy(), switched, atol=1e-5)
    assert not np.allclose(switched, model(x, training=False).numpy(), atol=1e-3)  # the plan did change it
