"""Models beyond a single-input functional chain: nested, shared layers, multi-I/O, Sequential.

For each model: encode, keep-all rebuild with identical predictions, and 20
random legal plans whose rebuilt models keep the input / output structure and
shapes, run, respect the default Budget, and survive a `.keras` save / load
(with no custom_objects: nat_keras registers the layers it emits).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import all_layers, nested_model, policy_off_keep, two_io_dict_model, two_io_list_model

import nat_keras
from nat_keras.policy import Policy

NUM_PLANS = 20

# ---------------------------------------------------------------------------
# Model factories (the nested and two-input / two-output ones are shared, in
# conftest.py). Each has transformable edges, so random plans change things.


def shared_conv_model() -> keras.Model:
    """One Conv2D layer object called twice on the main path (and plain convs around it)."""
    shared = keras.layers.Conv2D(8, 3, padding="same", name="shared_conv")
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = shared(x)
    y = keras.layers.Conv2D(8, 5, padding="same", name="mid1")(x)
    y = keras.layers.BatchNormalization(name="mid1_bn")(y)
    y = keras.layers.Conv2D(8, 3, padding="same", name="mid2")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = shared(x)  # its output feeds the head: both calls always stay in the network
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="shared_conv_net")


def shared_dense_model() -> keras.Model:
    """One Dense layer object applied to two pooled branches, whose results are summed."""
    shared = keras.layers.Dense(6, name="shared_dense")
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    a = keras.layers.Conv2D(8, 3, padding="same", name="branch_a")(x)
    b = keras.layers.Conv2D(8, 5, padding="same", name="branch_b")(x)
    a = shared(keras.layers.GlobalAveragePooling2D(name="gap_a")(a))
    b = shared(keras.layers.GlobalMaxPooling2D(name="gmp_b")(b))
    x = keras.layers.Add(name="add")([a, b])
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x), name="shared_dense_net")


def sequential_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, padding="same", name="stem"),
            keras.layers.BatchNormalization(name="stem_bn"),
            keras.layers.ReLU(name="stem_relu"),
            keras.layers.Conv2D(8, 5, padding="same", name="c1"),
            keras.layers.BatchNormalization(name="c1_bn"),
            keras.layers.ReLU(name="c1_relu"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", name="c2"),
            keras.layers.AveragePooling2D(3, strides=1, padding="same", name="pool"),
            keras.layers.Conv2D(16, 3, padding="same", name="c3"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(4, name="logits"),
        ],
        name="sequential",
    )


FACTORIES = {
    "nested": nested_model,
    "shared_conv": shared_conv_model,
    "shared_dense": shared_dense_model,
    "two_io_dict": two_io_dict_model,
    "two_io_list": two_io_list_model,
    "sequential": sequential_model,
}
SHARED = {"shared_conv": "shared_conv", "shared_dense": "shared_dense"}


# ---------------------------------------------------------------------------
# Helpers.


def _randomize_batchnorm(model: keras.Model, seed: int = 0) -> keras.Model:
    """Non-trivial BN statistics, so that weight copying is actually checked."""
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, shapes[0]).astype("float32"),
                    rng.normal(0, 0.1, shapes[1]).astype("float32"),
                    rng.normal(0, 0.1, shapes[2]).astype("float32"),
                    rng.uniform(0.5, 1.5, shapes[3]).astype("float32"),
                ]
            )
    return model


def _input_struct(model: keras.Model):
    """The model's symbolic input(s): a tensor, list or dict (a Sequential has one)."""
    return model.inputs[0] if isinstance(model, keras.Sequential) else model.input


def _output_struct(model: keras.Model):
    return model.outputs[0] if isinstance(model, keras.Sequential) else model.output


def _inputs_for(model: keras.Model, seed: int = 0):
    """A random batch with the structure of the model's inputs (tensor, list or dict)."""
    rng = np.random.default_rng(seed)
    return keras.tree.map_structure(
        lambda t: rng.normal(size=(2, *t.shape[1:])).astype("float32"), _input_struct(model)
    )


def _predict(model: keras.Model, x):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))


def _assert_same_predictions(a, b, atol: float = 1e-6) -> None:
    keras.tree.assert_same_structure(a, b)
    for left, right in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_allclose(left, right, atol=atol)


def _shapes(structure):
    return keras.tree.map_structure(lambda t: tuple(t.shape), structure)


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def case(request: pytest.FixtureRequest):
    """(name, model, graph) per factory, built and encoded once for the module."""
    keras.utils.set_random_seed(0)
    model = _randomize_batchnorm(FACTORIES[request.param]())
    return request.param, model, nat_keras.encode(model)


# ---------------------------------------------------------------------------
# Encode and keep-all.


def test_encode_is_deterministic(case) -> None:
    _, model, graph = case
    assert nat_keras.encode(model) == graph
    assert nat_keras.ArchGraph.from_json(graph.to_json()) == graph
    assert graph.params == model.count_params()
    assert graph.transformable_edges(), "the factory should leave something to transform"


def test_keep_all_reproduces_predictions(case, tmp_path) -> None:
    _, model, graph = case
    new_model = nat_keras.apply_plan(model, nat_keras.TransformPlan.keep_all(graph))
    x = _inputs_for(model)
    _assert_same_predictions(_predict(new_model, x), _predict(model, x))
    assert new_model.count_params() == model.count_params()
    assert _shapes(_input_struct(new_model)) == _shapes(_input_struct(model))
    assert _shapes(_output_struct(new_model)) == _shapes(_output_struct(model))
    path = tmp_path / "keep_all.keras"
    new_model.save(path)
    _assert_same_predictions(_predict(keras.models.load_model(path), x), _predict(model, x))


def test_nested_models_are_inlined() -> None:
    graph = nat_keras.encode(nested_model())
    ids = {e.id for e in graph.edges}
    assert {"res_block/res_conv1", "res_block/res_conv2", "seq_block/seq_sep", "seq_block/seq_conv"} <= ids
    assert graph.node("res_block/res_add").merge == "sum"
    # Layers inside the nested models are transformable like any other.
    assert graph.edge("res_block/res_conv1").transformable


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_layer_edges_are_protected(name: str) -> None:
    graph = nat_keras.encode(FACTORIES[name]())
    layer = SHARED[name]
    shared_edges = [e for e in graph.edges if any(n.split("@")[0] == layer for n in e.layers)]
    assert len(shared_edges) == 2  # one edge per call
    for edge in shared_edges:
        assert edge.protected
        assert edge.actions == ("keep",)
        assert "shared" in edge.note
    # Both calls share one set of weights: counted once, as count_params() does.
    assert graph.params == FACTORIES[name]().count_params()


# ---------------------------------------------------------------------------
# Random legal plans.


@pytest.mark.parametrize("seed", range(NUM_PLANS))
def test_random_plans(case, seed: int, tmp_path) -> None:
    name, model, graph = case
    space = "nat" if seed % 2 else "nat++"
    plan = nat_keras.sample_random_plan(graph, seed, space=space, change_prob=0.3 + 0.7 * (seed % 3) / 2)
    plan.validate(graph)
    weights_before = model.get_weights()
    new_model = nat_keras.apply_plan(model, plan, graph=graph, check_budget=nat_keras.Budget())

    assert _shapes(_input_struct(new_model)) == _shapes(_input_struct(model))
    assert _shapes(_output_struct(new_model)) == _shapes(_output_struct(model))
    x = _inputs_for(model, seed)
    y = _predict(new_model, x)
    keras.tree.assert_same_structure(y, _predict(model, x))
    assert all(np.all(np.isfinite(v)) for v in keras.tree.flatten(y))

    new_cost = nat_keras.cost(new_model)
    assert nat_keras.Budget().allows(new_cost, nat_keras.cost(model))
    assert nat_keras.plan_cost(graph, plan).params == new_model.count_params() == new_cost.params
    assert nat_keras.plan_cost(graph, plan).macs == new_cost.macs

    if name in SHARED:
        # Still one layer object, called twice, in the rebuilt model.
        shared = [layer for layer in new_model.layers if layer.name == SHARED[name]]
        assert len(shared) == 1
        assert len(shared[0]._inbound_nodes) == 2

    path = tmp_path / f"{name}_{seed}.keras"
    new_model.save(path)
    loaded = keras.models.load_model(path)
    _assert_same_predictions(_predict(loaded, x), y)

    for old, new in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def second_input_shortcut_model() -> keras.Model:
    """Input `b` reaches the network only through an identity edge into a sum."""
    a, b = keras.Input((8, 8, 4), name="a"), keras.Input((8, 8, 4), name="b")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(a)
    x = keras.layers.Add(name="add")([x, b])
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model([a, b], keras.layers.Dense(2, name="logits")(x), name="two_in_shortcut")


def test_random_plans_keep_every_input_connected() -> None:
    model = second_input_shortcut_model()
    graph = nat_keras.encode(model)
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(2, 8, 8, 4)).astype("float32") for _ in range(2))
    for seed in range(5):
        plan = nat_keras.sample_random_plan(graph, seed, change_prob=1.0)
        plan.validate(graph)  # raises if sample_random_plan broke its promise of a legal plan
        assert plan.action("b->add") == "keep", plan.actions  # b's only way into the network
        assert plan.actions, "change_prob=1.0 changes every edge it can"
        rebuilt = nat_keras.apply_plan(model, plan, graph=graph)
        assert [t.name for t in rebuilt.inputs] == ["a", "b"]
        # b still reaches the output: changing it changes the predictions.
        moved = np.abs(_predict(rebuilt, [a, b]) - _predict(rebuilt, [a, b + 1.0])).max()
        assert moved > 1e-3, (seed, plan.actions)


@pytest.fixture(scope="module")
def changing_policies() -> dict[str, Policy]:
    """Policies whose greedy plans change edges (the shipped policy keeps every
    edge, so `transform` with it would only repeat the keep-all test above)."""
    return {space: policy_off_keep(space) for space in ("nat", "nat++")}


@pytest.mark.parametrize("space", ["nat", "nat++"])
def test_transform_without_data(case, space, changing_policies) -> None:
    """transform changes each special model: a new model, same I/O, the cost `plan_cost` predicts."""
    _, model, graph = case
    before = _weights_of(model)
    new = nat_keras.transform(model, policy=changing_policies[space], verbose=0)
    report = new.nat_report
    assert report.plan.actions, "the policy's greedy plan changes edges"
    assert set(report.plan.actions.values()) <= set(nat_keras.ops.ACTION_SPACES[space])
    assert _shapes(_input_struct(new)) == _shapes(_input_struct(model))
    assert _shapes(_output_struct(new)) == _shapes(_output_struct(model))
    # What the rebuilt model costs, measured on it, is what the plan predicted from the graph.
    predicted = nat_keras.plan_cost(graph, report.plan)
    assert nat_keras.cost(new) == predicted == report.cost_after
    assert new.count_params() == predicted.params
    assert nat_keras.Budget().allows(report.cost_after, report.cost_before)
    y = _predict(new, _inputs_for(model))
    assert all(np.all(np.isfinite(v)) for v in keras.tree.flatten(y))
    for a, b in zip(before, _weights_of(model)):
        np.testing.assert_array_equal(a, b)


def _weights_of(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]
