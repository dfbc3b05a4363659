"""What nat_keras relies on in private Keras / TensorFlow internals (nat_keras/compat.py).

If a Keras or TensorFlow release moves one of these, this file says which
one before the rest of the suite fails in harder-to-read ways.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from nat_keras import compat


def two_branch_model() -> keras.Model:
    image, aux = keras.Input((6, 6, 2), name="image"), keras.Input((3,), name="aux")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    y = keras.layers.Conv2D(4, 1, name="side")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Concatenate(name="joint")([x, aux])
    return keras.Model({"image": image, "aux": aux}, {"logits": keras.layers.Dense(2, name="logits")(x)})


def test_call_records_are_topological_with_their_tensors():
    model = two_branch_model()
    records = compat.call_records(model)
    names = [r.operation.name for r in records]
    assert set(names) == {"conv", "side", "add", "gap", "joint", "logits"}
    produced = {id(t) for t in compat.model_inputs(model)}
    for record in records:
        assert all(id(t) in produced for t in record.inputs), record.operation.name
        produced.update(id(t) for t in record.outputs)
    add = records[names.index("add")]
    args, kwargs = add.fill_in({id(t): f"v{i}" for i, t in enumerate(add.inputs)})
    assert args == (["v0", "v1"],) and kwargs == {}


def test_input_and_output_structures():
    model = two_branch_model()
    assert set(compat.inputs_structure(model)) == {"image", "aux"}
    assert set(compat.outputs_structure(model)) == {"logits"}
    assert {compat.input_layer_name(t) for t in compat.model_inputs(model)} == {"image", "aux"}
    packed = compat.pack_like(compat.outputs_structure(model), ["x"])
    assert packed == {"logits": "x"}


def test_sequential_models_expose_their_functional_graph():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    assert compat.inner_functional(model) is not None
    assert [r.operation.name for r in compat.call_records(model)] == ["d"]


def test_all_layers_reaches_nested_and_attribute_layers():
    class Holder(keras.Model):
        def __init__(self):
            super().__init__()
            self.blocks = [keras.layers.Dense(2, name="inner_a"), keras.layers.Dense(2, name="inner_b")]

        def call(self, x):
            return self.blocks[1](self.blocks[0](x))

    outer = keras.Sequential([keras.Input((2,)), Holder(), keras.layers.Dense(1, name="top")])
    names = {layer.name for layer in compat.all_layers(outer)}
    assert {"inner_a", "inner_b", "top"} <= names


def test_clone_layer_is_fresh_and_keeps_lambda_functions():
    dense = keras.layers.Dense(3, name="dense")
    dense.build((None, 2))
    clone = compat.clone_layer(dense)
    assert clone is not dense and clone.name == "dense" and not clone.built
    double = keras.layers.Lambda(lambda t: 2 * t, name="double")
    assert float(compat.clone_layer(double)(np.ones((1, 1), "float32"))[0, 0]) == 2.0


def test_checkpointable_variables_cover_every_weight():
    model = two_branch_model()
    variables = compat.checkpointable_variables(model)
    assert len(variables) == len(model.weights)
    assert list(variables) == sorted(variables)


def test_functional_switch_case_runs_only_the_chosen_branch_in_a_graph():
    calls = []

    def branch(value):
        def run():
            calls.append(value)
            return tf.constant(value)

        return run

    @tf.function
    def pick(index):
        return compat.functional_switch_case(index, [branch(10), branch(20), branch(30)])

    assert int(pick(tf.constant(1))) == 20 and int(pick(tf.constant(2))) == 30
    graph = pick.get_concrete_function(tf.TensorSpec([], tf.int32)).graph.as_graph_def()
    assert any(node.op in ("Case", "StatelessCase") for node in graph.node)


def test_without_tf_global_seed_ignores_the_global_seed_and_puts_it_back():
    tf.random.set_seed(5)
    tf.random.uniform([2])
    expected_next = tf.random.uniform([2]).numpy()
    tf.random.set_seed(5)
    tf.random.uniform([2])
    with compat.without_tf_global_seed():
        inside = list(tf.data.Dataset.range(50).shuffle(50, seed=0).take(5).as_numpy_iterator())
    # The user's unseeded ops continue their sequence as if nothing had happened.
    np.testing.assert_array_equal(tf.random.uniform([2]).numpy(), expected_next)
    tf.random.set_seed(6)
    with compat.without_tf_global_seed():
        again = list(tf.data.Dataset.range(50).shuffle(50, seed=0).take(5).as_numpy_iterator())
    assert inside == again
    outside = list(tf.data.Dataset.range(50).shuffle(50, seed=0).take(5).as_numpy_iterator())
    assert outside != inside  # the global seed 6 is back in force
