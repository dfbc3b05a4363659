"""NATSearch keeps its history with its checkpoints, so a resumed run reports every epoch."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import residual_model  # tests/ is on sys.path

import nat_keras
from nat_keras.policy import Policy, ReinforceConfig
from nat_keras.search import KnownRewardEnvironment, NATSearch, SearchConfig, SearchHistory

CONFIG = SearchConfig(epochs=2, weight_steps=0, policy_steps=2, reinforce=ReinforceConfig(num_samples=2))


@pytest.fixture(scope="module")
def environment():
    return KnownRewardEnvironment(nat_keras.encode(residual_model()), space="nat", seed=0)


def test_a_resumed_search_returns_every_epochs_history(environment, tmp_path):
    search = NATSearch(environment, Policy(space="nat", seed=0), config=CONFIG, directory=tmp_path)
    first = search.run(verbose=0)
    assert len(first.reward) == 2 and (tmp_path / "history.json").exists()
    longer = dataclasses.replace(CONFIG, epochs=4)
    resumed = NATSearch(environment, Policy(space="nat", seed=0), config=longer, directory=tmp_path)
    assert resumed.resumed_epoch == 2
    history = resumed.run(verbose=0)
    for key in ("reward", "baseline", "entropy", "cost_ratio", "epoch_evaluations"):
        values = getattr(history, key)
        assert len(values) == 4, key
        assert values[:2] == getattr(first, key), key
    assert history.evaluations == sum(history.epoch_evaluations) > first.evaluations
    assert len(history.epoch_seconds) == 4 and history.epoch_seconds[:2] == first.epoch_seconds
    assert history.seconds == pytest.approx(sum(history.epoch_seconds))
    assert history.seconds > first.seconds > 0
    saved = SearchHistory.from_dict(json.loads((tmp_path / "history.json").read_text()))
    assert saved == history


def test_a_search_resumed_from_a_history_without_times_has_no_total(environment, tmp_path):
    """A history written before epochs were timed: a total would leave those epochs out."""
    NATSearch(environment, Policy(space="nat", seed=0), config=CONFIG, directory=tmp_path).run(verbose=0)
    path = tmp_path / "history.json"
    older = json.loads(path.read_text())
    del older["epoch_seconds"]
    path.write_text(json.dumps(older))
    longer = dataclasses.replace(CONFIG, epochs=3)
    search = NATSearch(environment, Policy(space="nat", seed=0), config=longer, directory=tmp_path)
    history = search.run(verbose=0)
    assert len(history.reward) == 3 and len(history.epoch_seconds) == 1
    assert history.seconds is None


def test_a_history_ahead_of_the_checkpoint_is_cut_back(environment, tmp_path):
    """A stop between writing the history and the checkpoint leaves extra epochs: they are dropped."""
    NATSearch(environment, Policy(space="nat", seed=0), config=CONFIG, directory=tmp_path).run(verbose=0)
    path = tmp_path / "history.json"
    ahead = json.loads(path.read_text())
    for key in ("reward", "baseline", "entropy", "cost_ratio", "epoch_evaluations"):
        ahead[key].append(ahead[key][-1])
    path.write_text(json.dumps(ahead))
    resumed = NATSearch(environment, Policy(space="nat", seed=0), config=CONFIG, directory=tmp_path)
    assert len(resumed.history.reward) == 2
    assert resumed.history.evaluations == sum(ahead["epoch_evaluations"][:2])


def test_without_a_directory_the_history_covers_the_run(environment):
    history = NATSearch(environment, Policy(space="nat", seed=0), config=CONFIG).run(verbose=0)
    assert len(history.reward) == 2 and history.evaluations == sum(history.epoch_evaluations) > 0


def test_a_compact_budget_is_learned_by_sampling_within_it_or_by_penalty(environment):
    compact = nat_keras.Budget(macs_ratio=0.5)
    within = dataclasses.replace(CONFIG, budget=compact)
    history = NATSearch(environment, Policy(space="nat", seed=0), config=within).run(verbose=0)
    assert max(history.cost_ratio) <= 0.5
    # By penalty: the same plans as an unconstrained search (within Budget()), rewards lowered.
    plain = NATSearch(environment, Policy(space="nat", seed=0), config=CONFIG).run(verbose=0)
    penalized = dataclasses.replace(CONFIG, budget=compact, cost_penalty=1.0)
    history = NATSearch(environment, Policy(space="nat", seed=0), config=penalized).run(verbose=0)
    assert history.cost_ratio[0] == plain.cost_ratio[0] > 0.5
    assert history.reward[0] < plain.reward[0]
    assert SearchConfig.from_dict(json.loads(json.dumps(penalized.to_dict()))) == penalized
    with pytest.raises(ValueError, match="cost_penalty"):
        SearchConfig(cost_penalty=-1.0)
