"""nat_keras.transform end to end on small models and the embedded digits data."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import all_layers, nested_model, policy_off_keep, small_resnet, two_input_classifier

import nat_keras
from nat_keras.graph.costs import minimum_cost
from nat_keras.plan import fit_to_budget
from nat_keras.policy import Policy, ReinforceConfig, default_policy
from nat_keras.policy.policy import DEFAULT_POLICY_DIR
from nat_keras.search import SearchConfig

TINY_SEARCH = SearchConfig(epochs=2, weight_steps=3, policy_steps=2, reinforce=ReinforceConfig(num_samples=2))


@pytest.fixture(scope="module")
def digits():
    return nat_keras.data.load_splits("digits", batch_size=32, image_size=16)


def _assert_report_matches_model(new: keras.Model, source: keras.Model) -> None:
    """The report's plan belongs to the source, and the returned model costs what it says."""
    graph = nat_keras.encode(source)
    plan = new.nat_report.plan
    assert plan.fingerprint == graph.fingerprint()
    expected = nat_keras.plan_cost(graph, plan)
    actual = nat_keras.cost(new)
    assert (
        (actual.params, actual.macs)
        == (expected.params, expected.macs)
        == (
            new.nat_report.cost_after.params,
            new.nat_report.cost_after.macs,
        )
    )


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def test_transform_with_data_searches_derives_and_fine_tunes(digits, tmp_path):
    model = small_resnet()
    before = _weights(model)
    config = model.get_config()
    new = nat_keras.transform(
        model,
        data=digits,
        policy=Policy(seed=0),
        search_config=TINY_SEARCH,
        num_candidates=3,
        fine_tune_epochs=1,
        directory=tmp_path,
        verbose=0,
    )
    report = new.nat_report
    assert new is not model and new.output_shape == model.output_shape
    assert nat_keras.Budget().allows(report.cost_after, report.cost_before)
    assert report.cost_after.params == new.count_params()
    # Up to 3 sampled plans, and the source itself, best first.
    assert 1 <= len(report.candidates) <= 4 and report.candidates[0][0] == report.plan
    assert dict(report.candidates)[nat_keras.TransformPlan.keep_all(report.graph)] == report.accuracy_before
    assert report.accuracy_before is not None and report.accuracy_after == report.candidates[0][1]
    assert len(report.rewards) == 2
    assert "Supernet accuracy" in str(report)
    # The user's model is never touched.
    assert model.get_config() == config
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "search" / "search_checkpoints").exists()
    assert (tmp_path / "supernet" / "checkpoints").exists()


def test_a_kept_source_is_returned_as_it_was(digits, monkeypatch):
    """When the source wins and nothing is fine-tuned, its BN statistics stay its own."""

    def source_wins(environment, policy, graph, **options):
        keep = nat_keras.TransformPlan.keep_all(graph, space=policy.space)
        return keep, [(keep, environment.score(graph, keep))]

    monkeypatch.setattr(nat_keras.search, "derive", source_wins)
    model = small_resnet()
    new = nat_keras.transform(model, data=digits, policy=Policy(seed=0), search_config=TINY_SEARCH, verbose=0)
    assert not new.nat_report.plan.actions and "architecture is kept" in new.nat_report.message
    images = next(iter(digits.test))[0]
    np.testing.assert_allclose(new(images, training=False), model(images, training=False), atol=1e-5)


def test_an_unreachable_budget_is_refused_before_any_training():
    model = nat_keras.models.resnet(depth=8)
    graph = nat_keras.encode(model)
    floor, reference = minimum_cost(graph, "nat++"), nat_keras.cost(graph)
    impossible = nat_keras.Budget(macs_ratio=0.5 * floor.macs / reference.macs)
    with pytest.raises(nat_keras.BudgetError, match=r"transform\('resnet8'\).*No plan can meet it"):
        nat_keras.transform(model, budget=impossible, verbose=0)


def test_the_source_fitted_to_a_compact_budget_is_named_when_it_wins(digits, monkeypatch):
    def fitted_source_wins(environment, policy, graph, *, budget, **options):
        fitted = fit_to_budget(graph, nat_keras.TransformPlan.keep_all(graph, space=policy.space), budget)
        return fitted, [(fitted, environment.score(graph, fitted))]

    monkeypatch.setattr(nat_keras.search, "derive", fitted_source_wins)
    budget = nat_keras.Budget(macs_ratio=0.6)
    model = small_resnet()
    new = nat_keras.transform(
        model, data=digits, policy=Policy(seed=0), budget=budget, search_config=TINY_SEARCH, verbose=0
    )
    report = new.nat_report
    assert report.plan.actions and budget.allows(report.cost_after, report.cost_before)
    assert "source made to fit the budget" in report.message


def test_a_kept_nested_block_keeps_the_users_weights(monkeypatch):
    """Kept layers inside nested blocks carry the source's exact weights, not the supernet's."""

    def source_wins(environment, policy, graph, **options):
        keep = nat_keras.TransformPlan.keep_all(graph, space=policy.space)
        return keep, [(keep, environment.score(graph, keep))]

    monkeypatch.setattr(nat_keras.search, "derive", source_wins)
    model = nested_model()
    images = np.random.default_rng(0).uniform(size=(64, 8, 8, 3)).astype("float32")
    # Steps that move the supernet's copies of every weight away from the source's.
    search = SearchConfig(epochs=1, weight_steps=3, policy_steps=1, reinforce=ReinforceConfig(num_samples=2))
    new = nat_keras.transform(
        model, data=_random_dataset(images, 4), policy=Policy(seed=0), search_config=search, verbose=0
    )
    assert not new.nat_report.plan.actions
    source = {layer.name: layer for layer in all_layers(model)}
    nested = {layer.name for block in ("res_block", "seq_block") for layer in model.get_layer(block).layers}
    compared = set()
    for layer in new.layers:
        if layer.weights:
            for mine, theirs in zip(layer.get_weights(), source[layer.name].get_weights(), strict=True):
                np.testing.assert_array_equal(mine, theirs, err_msg=layer.name)
            compared.add(layer.name)
    assert nested & compared == {"res_conv1", "res_bn1", "res_conv2", "seq_sep", "seq_bn", "seq_conv"}


def test_transform_accepts_a_plain_dataset(digits):
    model = small_resnet()
    new = nat_keras.transform(
        model,
        data=digits.train,
        policy=Policy(seed=1),
        search_config=TINY_SEARCH,
        num_candidates=2,
        verbose=0,
    )
    _assert_report_matches_model(new, model)


def _random_dataset(inputs, classes: int, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    count = len(next(iter(inputs.values())) if isinstance(inputs, dict) else inputs)
    return tf.data.Dataset.from_tensor_slices((inputs, rng.integers(0, classes, count))).batch(16)


@pytest.mark.parametrize("which", ["two_inputs", "nested"])
def test_transform_with_data_on_multi_input_and_nested_models(which):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(64, 8, 8, 3)).astype("float32")
    if which == "two_inputs":
        model = two_input_classifier()
        data = _random_dataset({"image": images, "aux": rng.uniform(size=(64, 5)).astype("float32")}, 3)
    else:
        model = nested_model()
        data = _random_dataset(images, 4)
    tiny = SearchConfig(epochs=1, weight_steps=2, policy_steps=1, reinforce=ReinforceConfig(num_samples=2))
    config, before = model.get_config(), _weights(model)
    new = nat_keras.transform(
        model, data=data, policy=Policy(seed=0), search_config=tiny, num_candidates=2, fine_tune_epochs=1,
        verbose=0,
    )  # fmt: skip
    report = new.nat_report
    batch = next(iter(data))[0]
    assert new(batch).shape == model(batch).shape
    _assert_report_matches_model(new, model)
    assert report.accuracy_before is not None
    assert model.get_config() == config
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


def test_transform_with_data_refuses_multi_output_models():
    image = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(image)
    x = keras.layers.Conv2D(8, 3, padding="same", name="mid")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="last")(x)
    features = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(
        image, [keras.layers.Dense(3)(features), keras.layers.Dense(1)(features)], name="two_out"
    )
    data = _random_dataset(np.zeros((16, 8, 8, 3), "float32"), 3)
    with pytest.raises(nat_keras.UnsupportedModelError, match="'two_out' has 2 outputs"):
        nat_keras.transform(model, data=data, policy=Policy(seed=0), verbose=0)


def test_transform_with_a_policy_and_no_data_is_greedy():
    model = small_resnet()
    policy = Policy(seed=2)
    new = nat_keras.transform(model, policy=policy, verbose=0)
    assert new.nat_report.plan == policy.sample(nat_keras.encode(model), greedy=True)
    assert new.nat_report.accuracy_before is None


def test_a_greedy_plan_that_keeps_everything_says_so(capsys):
    model = small_resnet()
    new = nat_keras.transform(model, policy=Policy(seed=0), verbose=1)  # a fresh policy keeps greedily
    assert not new.nat_report.plan.actions
    assert "keeps every edge: pass data=..." in capsys.readouterr().out
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(new(x)), np.asarray(model(x)), atol=1e-6)


def test_a_model_with_nothing_to_transform_returns_an_equal_copy(capsys):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, name="only")(inputs)
    model = keras.Model(inputs, outputs, name="single_dense")
    new = nat_keras.transform(model, policy=Policy(seed=0), verbose=1)
    assert "nothing NAT can transform" in capsys.readouterr().out
    x = np.ones((2, 4), "float32")
    np.testing.assert_array_equal(np.asarray(new(x)), np.asarray(model(x)))
    assert not new.nat_report.plan.actions


def test_a_policy_in_another_action_space_is_a_clear_error():
    with pytest.raises(nat_keras.NatKerasError, match=r"'nat\+\+' action space but space='nat'"):
        nat_keras.transform(small_resnet(), policy=Policy(seed=0), space="nat", verbose=0)
    new = nat_keras.transform(small_resnet(), policy=Policy(space="nat", seed=0), verbose=0)
    assert new.nat_report.plan.space == "nat"


def test_bad_data_is_a_clear_error():
    with pytest.raises(TypeError, match=r"NatSplits or a tf\.data\.Dataset"):
        nat_keras.transform(small_resnet(), data=[1, 2, 3], policy=Policy(seed=0), verbose=0)


class _StopAtSearch(Exception):
    """Raised by the stand-in search: the test only needs the config it was given."""


@pytest.mark.parametrize(
    ("seed", "config", "expected"),
    [(3, None, 3), (None, SearchConfig(epochs=1, seed=5), 5), (7, SearchConfig(epochs=1, seed=7), 7)],
)
def test_the_seed_reaches_the_search(digits, monkeypatch, seed, config, expected):
    seen = {}

    def stand_in(environment, policy, *, config, directory):
        seen["config"] = config
        raise _StopAtSearch

    monkeypatch.setattr(nat_keras.search, "NATSearch", stand_in)
    with pytest.raises(_StopAtSearch):
        nat_keras.transform(
            small_resnet(), data=digits, policy=Policy(seed=0), seed=seed, search_config=config, verbose=0
        )
    assert seen["config"].seed == expected
    if config is None:  # the documented default search
        config = seen["config"]
        assert (config.epochs, config.weight_steps, config.policy_steps) == (10, 50, 20)


def test_a_seed_that_contradicts_the_search_config_is_an_error(digits):
    with pytest.raises(nat_keras.errors.ConfigError, match=r"seed=1 but search_config.seed=2"):
        nat_keras.transform(
            small_resnet(), data=digits, seed=1, search_config=SearchConfig(seed=2), verbose=0
        )


@pytest.mark.parametrize("space", ["nat", "nat++"])
def test_transform_without_data_uses_the_default_policy(space, monkeypatch):
    model = nat_keras.models.resnet20()
    graph = nat_keras.encode(model)
    # The shipped policy keeps every edge greedily, as a fresh policy would, so
    # a plan alone cannot tell which policy ran: stand in one that changes edges.
    asked = []

    def stand_in(space: str = "nat++"):
        asked.append(space)
        return policy_off_keep(space=space)

    monkeypatch.setattr(nat_keras.policy, "default_policy", stand_in)
    new = nat_keras.transform(model, space=space, verbose=0)
    report = new.nat_report
    assert asked == [space]
    assert report.plan.actions and report.plan == policy_off_keep(space=space).sample(graph, greedy=True)
    assert set(report.plan.actions.values()) <= set(nat_keras.ops.ACTION_SPACES[space])
    assert nat_keras.Budget().allows(report.cost_after, report.cost_before)
    assert new.count_params() == report.cost_after.params
    assert new.output_shape == model.output_shape and "greedy" in report.message


def test_default_policy_ships_inside_the_package():
    policy = default_policy()
    assert os.path.dirname(DEFAULT_POLICY_DIR).endswith(os.path.join("nat_keras", "assets"))
    assert (
        sum(os.path.getsize(os.path.join(DEFAULT_POLICY_DIR, f)) for f in os.listdir(DEFAULT_POLICY_DIR))
        < 5e6
    )
    assert policy.space == "nat++"
