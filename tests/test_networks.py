"""Encode + apply_plan on real networks: the paper's CIFAR set and keras.applications.

For every network: the keep-all plan reproduces predictions exactly, and 10
random legal plans each rebuild a model that runs, keeps input / output
shapes, costs what `plan_cost` predicted and respects the default Budget;
the first 3 (both action spaces) also survive a `.keras` save / load, which
costs twice the rebuild and exercises the same serialisation every time.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
from conftest import policy_off_keep

import nat_keras
from nat_keras.policy import Policy, from_graph_tensor, to_graph_tensor

NUM_RANDOM_PLANS = 10
NUM_SAVED_PLANS = 3


def _application(name: str) -> keras.Model:
    factory = getattr(keras.applications, name)
    return factory(weights=None, input_shape=(32, 32, 3), classes=10)


NETWORKS = {
    "vgg16": nat_keras.models.vgg16,
    "resnet20": nat_keras.models.resnet20,
    "resnet56": nat_keras.models.resnet56,
    "mobilenet_v2": nat_keras.models.mobilenet_v2,
    "keras_VGG16": functools.partial(_application, "VGG16"),
    "keras_ResNet50": functools.partial(_application, "ResNet50"),
    "keras_ResNet50V2": functools.partial(_application, "ResNet50V2"),
    "keras_MobileNetV2": functools.partial(_application, "MobileNetV2"),
    "keras_DenseNet121": functools.partial(_application, "DenseNet121"),
}


@functools.cache
def network(name: str) -> tuple[keras.Model, nat_keras.ArchGraph]:
    model = NETWORKS[name]()
    return model, nat_keras.encode(model)


@functools.cache
def images(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(batch, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("name", NETWORKS)
def test_encoding_is_deterministic_and_round_trips(name):
    model, graph = network(name)
    assert nat_keras.encode(model) == graph
    assert nat_keras.ArchGraph.from_json(graph.to_json()) == graph
    assert from_graph_tensor(to_graph_tensor(graph)) == graph
    assert graph.params == model.count_params()
    assert graph.transformable_edges(), "every reference network has something to transform"


@pytest.mark.parametrize("name", NETWORKS)
def test_keep_all_plan_reproduces_predictions(name):
    model, graph = network(name)
    rebuilt = nat_keras.apply_plan(model, nat_keras.TransformPlan.keep_all(graph), graph=graph)
    x = images()
    np.testing.assert_array_equal(np.asarray(rebuilt(x)), np.asarray(model(x)))
    assert rebuilt.count_params() == model.count_params()
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]


@pytest.mark.parametrize("name", NETWORKS)
def test_random_legal_plans_rebuild_run_and_save(name, tmp_path):
    model, graph = network(name)
    source_cost = nat_keras.cost(graph)
    budget = nat_keras.Budget()
    x = images()
    for seed in range(NUM_RANDOM_PLANS):
        space = "nat" if seed % 2 else "nat++"
        plan = nat_keras.sample_random_plan(graph, seed, space=space)
        assert plan.actions, "a random plan with change_prob=0.5 changes something"
        rebuilt = nat_keras.apply_plan(model, plan, graph=graph, check_budget=budget)

        assert rebuilt.input_shape == model.input_shape
        assert rebuilt.output_shape == model.output_shape
        predicted = nat_keras.plan_cost(graph, plan)
        assert predicted.params == rebuilt.count_params()
        assert predicted.macs == nat_keras.cost(rebuilt).macs
        assert budget.allows(predicted, source_cost)

        y = np.asarray(rebuilt(x))
        assert y.shape == (2, 10) and np.isfinite(y).all()
        if seed < NUM_SAVED_PLANS:
            path = tmp_path / f"{seed}.keras"
            rebuilt.save(path)
            reloaded = keras.models.load_model(path)
            np.testing.assert_allclose(np.asarray(reloaded(x)), y, rtol=1e-5, atol=1e-5)
            path.unlink()
        keras.backend.clear_session(free_memory=False)


@functools.cache
def changing_policy() -> Policy:
    """A policy whose greedy plan changes edges (the shipped one keeps every
    edge, so `transform` with it would only repeat the keep-all test)."""
    return policy_off_keep("nat++")


@pytest.mark.parametrize("name", NETWORKS)
def test_transform_without_data(name):
    """transform rebuilds each network along the policy's greedy plan, at the cost `plan_cost` predicts."""
    model, graph = network(name)
    new = nat_keras.transform(model, policy=changing_policy(), verbose=0)
    report = new.nat_report
    assert report.plan.actions, "the policy's greedy plan changes edges"
    assert report.graph == graph and new.output_shape == model.output_shape
    predicted = nat_keras.plan_cost(graph, report.plan)
    assert nat_keras.cost(new) == predicted == report.cost_after
    assert new.count_params() == predicted.params
    assert nat_keras.Budget().allows(report.cost_after, report.cost_before)
    assert np.isfinite(np.asarray(new(images()))).all()
