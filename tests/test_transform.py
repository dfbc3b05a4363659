"""nat_keras.transform end to end on small models and the embedded digits data."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

import nat_keras
from nat_keras.policy import Policy, ReinforceConfig, default_policy
from nat_keras.policy.policy import DEFAULT_POLICY_DIR
from nat_keras.search import SearchConfig

TINY_SEARCH = SearchConfig(epochs=2, weight_steps=3, policy_steps=2, reinforce=ReinforceConfig(num_samples=2))


@pytest.fixture(scope="module")
def digits():
    return nat_keras.data.load_splits("digits", batch_size=32, image_size=16)


def _small_resnet() -> keras.Model:
    return nat_keras.models.resnet(depth=8, input_shape=(16, 16, 3))


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def test_transform_with_data_searches_derives_and_fine_tunes(digits, tmp_path):
    model = _small_resnet()
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
    assert 1 <= len(report.candidates) <= 3 and report.candidates[0][0] == report.plan
    assert report.accuracy_before is not None and report.accuracy_after == report.candidates[0][1]
    assert len(report.rewards) == 2
    assert "Supernet accuracy" in str(report)
    # The user's model is never touched.
    assert model.get_config() == config
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "search" / "search_checkpoints").exists()
    assert (tmp_path / "supernet" / "checkpoints").exists()


def test_transform_accepts_a_plain_dataset(digits):
    model = _small_resnet()
    new = nat_keras.transform(
        model,
        data=digits.train,
        policy=Policy(seed=1),
        search_config=TINY_SEARCH,
        num_candidates=2,
        verbose=0,
    )
    assert new.nat_report.plan.validate(nat_keras.encode(model))


def test_transform_with_a_policy_and_no_data_is_greedy():
    model = _small_resnet()
    policy = Policy(seed=2)
    new = nat_keras.transform(model, policy=policy, verbose=0)
    assert new.nat_report.plan == policy.sample(nat_keras.encode(model), greedy=True)
    assert new.nat_report.accuracy_before is None


def test_a_model_with_nothing_to_transform_returns_an_equal_copy(capsys):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, name="only")(inputs)
    model = keras.Model(inputs, outputs, name="single_dense")
    new = nat_keras.transform(model, policy=Policy(seed=0), verbose=1)
    assert "nothing NAT can transform" in capsys.readouterr().out
    x = np.ones((2, 4), "float32")
    np.testing.assert_array_equal(np.asarray(new(x)), np.asarray(model(x)))
    assert not new.nat_report.plan.actions


def test_bad_data_is_a_clear_error():
    with pytest.raises(TypeError, match=r"NatSplits or a tf\.data\.Dataset"):
        nat_keras.transform(_small_resnet(), data=[1, 2, 3], policy=Policy(seed=0), verbose=0)


@pytest.mark.parametrize("space", ["nat", "nat++"])
def test_transform_without_data_uses_the_shipped_default_policy(space):
    model = nat_keras.models.resnet20()
    graph = nat_keras.encode(model)
    new = nat_keras.transform(model, space=space, verbose=0)
    report = new.nat_report
    assert report.plan == default_policy(space=space).sample(graph, greedy=True)
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
