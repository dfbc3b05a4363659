"""The TF-GNN policy, REINFORCE and the search loop, on known rewards."""

from __future__ import annotations

import dataclasses
import random

import keras
import numpy as np
import pytest
import tensorflow as tf

import nat_keras
from nat_keras import ops
from nat_keras.errors import ActionSpaceError
from nat_keras.graph.costs import minimum_cost
from nat_keras.plan import fit_to_budget, repair
from nat_keras.policy.policy import Policy
from nat_keras.policy.reinforce import Reinforce, ReinforceConfig
from nat_keras.search import KnownRewardEnvironment, NATSearch, SearchConfig, derive


@pytest.fixture(scope="module")
def graph():
    return nat_keras.encode(nat_keras.models.resnet(depth=8))


@pytest.fixture(scope="module")
def policy():
    return Policy(space="nat++", seed=0)


@pytest.mark.parametrize("space", ["nat", "nat++"])
def test_illegal_actions_have_zero_probability(graph, space):
    probs = Policy(space=space, seed=1).probabilities(graph)
    for edge, row in zip(graph.edges, probs):
        legal = np.array(edge.mask(space))
        assert np.all(row[~legal] == 0.0), edge.id
        np.testing.assert_allclose(row[legal].sum(), 1.0, rtol=1e-5)


def test_an_edge_decision_depends_on_its_own_op(graph, policy):
    # The authors' GCN had no self-loops: an edge never saw its own op.
    edge_index = next(i for i, e in enumerate(graph.edges) if e.op == "conv_3x3" and e.transformable)
    edge = graph.edges[edge_index]
    changed = dataclasses.replace(edge, op="conv_5x5")
    other = dataclasses.replace(
        graph, edges=(*graph.edges[:edge_index], changed, *graph.edges[edge_index + 1 :])
    )
    before, after = policy.probabilities(graph)[edge_index], policy.probabilities(other)[edge_index]
    assert np.abs(before - after).max() > 1e-4


def test_batches_of_graphs_match_single_graphs(graph, policy):
    vgg = nat_keras.encode(nat_keras.models.vgg16())
    batched = policy.logits([graph, vgg]).numpy()
    np.testing.assert_allclose(batched[: len(graph.edges)], policy.logits(graph).numpy(), atol=1e-5)
    np.testing.assert_allclose(batched[len(graph.edges) :], policy.logits(vgg).numpy(), atol=1e-5)


def test_sampling_is_seeded_and_greedy_is_argmax(graph, policy):
    assert policy.sample(graph, seed=3) == policy.sample(graph, seed=3)
    assert len({policy.sample(graph, seed=s) for s in range(8)}) > 1
    greedy = policy.sample(graph, greedy=True)
    probs = policy.probabilities(graph)
    argmax = {e.id: ops.ACTIONS[int(np.argmax(row))] for e, row in zip(graph.edges, probs)}
    # Greedy is the per-edge argmax, with nodes left without input repaired.
    expected = repair(graph, nat_keras.TransformPlan(graph.name, graph.fingerprint(), argmax, "nat++"))
    assert greedy == expected


def test_log_prob_and_entropy_match_the_distribution(graph, policy):
    probs = policy.probabilities(graph)
    plan = policy.sample(graph, seed=0)
    index = {a: i for i, a in enumerate(ops.ACTIONS)}
    expected = sum(np.log(probs[i, index[plan.action(e.id)]]) for i, e in enumerate(graph.edges))
    np.testing.assert_allclose(float(policy.log_prob(graph, plan)), expected, rtol=1e-4)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_entropy = -np.nansum(np.where(probs > 0, probs * np.log(probs), 0.0))
    np.testing.assert_allclose(float(policy.entropy(graph)), expected_entropy, rtol=1e-4)


def test_sampled_plans_are_valid_and_within_budget(graph, policy):
    strict = nat_keras.Budget(params_ratio=0.9)
    reference = nat_keras.cost(graph)
    for plan in policy.sample_many(graph, 10, seed=0, budget=strict):
        plan.validate(graph)
        assert strict.allows(nat_keras.plan_cost(graph, plan), reference)
    with pytest.raises(nat_keras.BudgetError, match="No plan can meet it"):
        policy.sample(graph, seed=0, budget=nat_keras.Budget(params_ratio=0.01), max_tries=5)


@pytest.mark.parametrize("budget", [nat_keras.Budget(macs_ratio=0.5), nat_keras.Budget(params_ratio=0.75)])
def test_compact_budgets_are_met_without_endless_resampling(graph, policy, budget):
    reference = nat_keras.cost(graph)
    for greedy in (False, True):
        for plan in policy.sample_many(graph, 5, seed=1, budget=budget, greedy=greedy, max_tries=2):
            plan.validate(graph)
            assert budget.allows(nat_keras.plan_cost(graph, plan), reference)
            assert plan.actions  # the source itself is over a compact budget


def test_sample_distinct_draws_until_the_plans_differ(graph, policy):
    budget = nat_keras.Budget(macs_ratio=0.5)
    reference = nat_keras.cost(graph)
    plans = policy.sample_distinct(graph, 10, seed=0, budget=budget)
    assert len(plans) == len(set(plans)) == 10
    assert all(budget.allows(nat_keras.plan_cost(graph, p), reference) for p in plans)
    assert plans == policy.sample_distinct(graph, 10, seed=0, budget=budget)  # seeded
    # A policy sure of its plan: few differ, and the draws stop at max_draws.
    sure = Policy(space="nat++", seed=3, keep_prior=0.999)
    few = sure.sample_distinct(graph, 10, seed=0, max_draws=20)
    assert 1 <= len(few) < 10 and len(few) == len(set(few))


def test_save_and_load(graph, policy, tmp_path):
    policy.save(tmp_path / "policy")
    loaded = Policy.load(tmp_path / "policy")
    assert loaded.space == policy.space and loaded.keep_prior == policy.keep_prior == 0.9
    np.testing.assert_allclose(loaded.probabilities(graph), policy.probabilities(graph), atol=1e-6)
    with pytest.raises(nat_keras.NatKerasError, match="not a saved nat_keras policy"):
        Policy.load(tmp_path)


def _random_draws() -> tuple[float, ...]:
    """One draw from each global stream a user may have seeded."""
    return (
        random.random(),
        float(np.random.rand()),
        float(tf.random.uniform([])),
        float(keras.random.uniform([])),
    )


def test_a_seeded_policy_leaves_the_global_random_streams_alone():
    keras.utils.set_random_seed(123)
    expected = _random_draws()
    keras.utils.set_random_seed(123)
    Policy(space="nat", seed=7)
    Policy(seed=None)
    assert _random_draws() == expected


def test_equal_seeds_give_equal_weights_and_other_seeds_other_weights():
    first, second = Policy(seed=4).network.get_weights(), Policy(seed=4).network.get_weights()
    other = Policy(seed=5).network.get_weights()
    unseeded = Policy(seed=None).network.get_weights(), Policy(seed=None).network.get_weights()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    # Biases start at zero whatever the seed; every kernel and embedding differs.
    random_weights = [i for i, w in enumerate(first) if np.any(w != 0)]
    assert len(random_weights) > len(first) / 2
    for i in random_weights:
        assert not np.array_equal(first[i], other[i]), i
        assert not np.array_equal(unseeded[0][i], unseeded[1][i]), i


def test_with_space_returns_a_new_policy_with_copied_weights(graph):
    original = Policy(space="nat++", seed=2, keep_prior=0.8)
    probs_before = original.probabilities(graph)
    restricted = original.with_space("nat")
    assert restricted is not original
    assert (original.space, restricted.space) == ("nat++", "nat")
    assert (restricted.hidden, restricted.rounds, restricted.keep_prior) == (64, 2, 0.8)
    np.testing.assert_array_equal(original.probabilities(graph), probs_before)
    for a, b in zip(original.network.get_weights(), restricted.network.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The other space, from the same network: no probability outside "nat", and
    # the same logits where both spaces allow the action.
    nat = np.array([a in ops.ACTION_SPACES["nat"] for a in ops.ACTIONS])
    restricted_probs = restricted.probabilities(graph)
    assert np.all(restricted_probs[:, ~nat] == 0.0) and np.any(probs_before[:, ~nat] > 0.0)
    np.testing.assert_allclose(
        original.logits(graph).numpy()[:, nat] - _keep_bias(original, graph, "nat++"),
        restricted.logits(graph).numpy()[:, nat] - _keep_bias(restricted, graph, "nat"),
        atol=1e-5,
    )
    # The weights are copies: training one does not move the other.
    kernel = restricted.network.logits.kernel
    kernel.assign(kernel + 1.0)
    np.testing.assert_array_equal(original.probabilities(graph), probs_before)


def _keep_bias(policy: Policy, graph, space: str) -> np.ndarray:
    """[edges, 1] the keep prior's bias on each edge's keep logit (0 on the other actions)."""
    legal = np.array([np.sum(np.array(e.mask(space))) for e in graph.edges], dtype=float)[:, None]
    odds = policy.keep_prior / (1.0 - policy.keep_prior)
    bias = np.where(legal > 1, np.log(odds * np.maximum(legal - 1.0, 1.0)), 0.0)
    nat = [a for a in ops.ACTIONS if a in ops.ACTION_SPACES["nat"]]
    return bias * (np.array(nat) == ops.KEEP)[None, :]


def test_an_unknown_action_space_is_an_action_space_error():
    with pytest.raises(ActionSpaceError, match=r"Policy: unknown action space 'nas'"):
        Policy(space="nas")
    try:
        Policy(space="nas")
    except ValueError as error:  # callers that catch the built-in base still work
        assert isinstance(error, ActionSpaceError)
    else:
        pytest.fail("Policy(space='nas') did not raise")
    policy = Policy(space="nat", seed=0)
    with pytest.raises(ActionSpaceError, match="'nas'"):
        policy.with_space("nas")
    assert policy.space == "nat"


def _flat_logits(policy: Policy) -> Policy:
    """Zero the last layer: every legal action gets the same network logit."""
    layer = policy.network.logits
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    return policy


@pytest.mark.parametrize("space", ["nat", "nat++"])
def test_keep_prior_sets_the_probability_of_keep(graph, space):
    probs = _flat_logits(Policy(space=space, seed=0, keep_prior=0.8)).probabilities(graph)
    uniform = _flat_logits(Policy(space=space, seed=0, keep_prior=None)).probabilities(graph)
    keep = ops.ACTIONS.index(ops.KEEP)
    for edge, row, flat in zip(graph.edges, probs, uniform):
        legal = int(np.sum(edge.mask(space)))
        np.testing.assert_allclose(flat[np.array(edge.mask(space))], 1.0 / legal, rtol=1e-5)
        np.testing.assert_allclose(row[keep], 0.8 if legal > 1 else 1.0, rtol=1e-5, err_msg=edge.id)
        others = np.delete(row, keep)[np.delete(np.array(edge.mask(space)), keep)]
        np.testing.assert_allclose(others, 0.2 / max(legal - 1, 1), rtol=1e-5)


def test_a_fresh_policy_proposes_few_changes_and_decodes_to_the_input(graph):
    policy = Policy(space="nat++", seed=3)
    assert policy.sample(graph, greedy=True).actions == {}
    changed = np.mean([len(p.actions) for p in policy.sample_many(graph, 50, seed=0)])
    transformable = len(graph.transformable_edges())
    assert 0 < changed < 0.3 * transformable, (changed, transformable)


def test_keep_prior_is_checked():
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(nat_keras.NatKerasError, match="keep_prior"):
            Policy(keep_prior=bad)


class _ChangesCost(KnownRewardEnvironment):
    """Every change lowers the score: only the input itself scores 0."""

    def score(self, graph, plan):
        return -float(len(plan.actions))


def test_derive_returns_the_input_when_no_plan_beats_it(graph):
    env = _ChangesCost(graph, space="nat++")
    policy = Policy(space="nat++", seed=0, keep_prior=None)  # samples plans that change a lot
    plan, scored = derive(env, policy, graph, num_candidates=5, seed=0)
    assert plan.actions == {} and scored[0] == (plan, 0.0)
    assert len(scored) > 1 and all(score < 0 for _, score in scored[1:])
    plan, scored = derive(env, policy, graph, num_candidates=5, seed=0, include_input=False)
    assert plan.actions and len(scored) <= 5
    # A budget the input itself breaks keeps it out of the running; the input made to fit
    # the budget (its costliest edges cut first) competes instead, and wins ties.
    budget = nat_keras.Budget(params_ratio=0.9)
    plan, scored = derive(env, policy, graph, num_candidates=5, seed=0, budget=budget)
    assert plan.actions and all(p.actions for p, _ in scored)
    assert all(budget.allows(nat_keras.plan_cost(graph, p), nat_keras.cost(graph)) for p, _ in scored)
    fitted = fit_to_budget(graph, nat_keras.TransformPlan.keep_all(graph), budget)
    assert scored[0] == (fitted, -len(fitted.actions)) and plan == fitted  # the fewest changes
    _, unfitted = derive(env, policy, graph, num_candidates=5, seed=0, budget=budget, include_input=False)
    assert fitted not in dict(unfitted)


@pytest.mark.parametrize("update", ["standard", "authors", "leave_one_out"])
def test_baseline_updates(graph, update):
    learner = Reinforce(
        Policy(space="nat", seed=0),
        ReinforceConfig(baseline_update=update, baseline_decay=0.9, num_samples=2),
    )
    plans = [[learner.policy.sample(graph, seed=s) for s in range(2)]]
    first = learner.update([graph], plans, np.array([[0.2, 0.4]]))
    second = learner.update([graph], plans, np.array([[0.5, 0.5]]))
    if update == "standard":  # starts at the first mean, then tracks the mean reward
        assert first["baseline"] == pytest.approx(0.3)
        assert second["baseline"] == pytest.approx(0.9 * 0.3 + 0.1 * 0.5)
        assert second["advantage"] == pytest.approx(0.5 - 0.3)
    elif update == "authors":  # the authors' code: starts at 0 and tracks the advantage
        assert first["advantage"] == pytest.approx(0.3)
        assert first["baseline"] == pytest.approx(0.1 * 0.3)
        assert second["advantage"] == pytest.approx(0.5 - 0.03)
    else:  # each plan against the other plan of its input: 0.2 - 0.4 and 0.4 - 0.2
        assert first["advantage"] == pytest.approx(0.0, abs=1e-6)
        assert second["advantage"] == pytest.approx(0.0, abs=1e-6)
        assert first["baseline"] == pytest.approx(0.3)  # the moving average is still reported


def test_leave_one_out_needs_two_plans_per_input(graph):
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        ReinforceConfig(baseline_update="leave_one_out", num_samples=1)
    config = ReinforceConfig(baseline_update="leave_one_out", num_samples=2)
    learner = Reinforce(Policy(space="nat", seed=0), config)
    with pytest.raises(ValueError, match="at least 2 plans per input"):
        learner.update([graph], [[learner.policy.sample(graph, seed=0)]], np.array([[0.1]]))


def test_drifting_rewards_collapse_the_moving_average_but_not_leave_one_out(graph):
    """Rewards that carry no information but fall step by step, as a supernet's do while it trains.

    A moving average lags them, every advantage is negative, and at a compact
    budget (plans cut down to it) that common push drives the policy to one
    plan with saturated logits; comparing plans of the same step does not.
    """
    half = nat_keras.Budget(macs_ratio=0.5)
    entropies = {}
    for update in ("standard", "leave_one_out"):
        config = ReinforceConfig(baseline_update=update, num_samples=4)
        learner = Reinforce(Policy(space="nat", seed=0), config)
        rng = np.random.default_rng(0)
        for step in range(40):
            plans = learner.policy.sample_many(graph, 4, seed=rng, budget=half)
            stats = learner.update([graph], [plans], -0.1 - 0.01 * step + rng.normal(0, 0.1, size=(1, 4)))
        entropies[update] = stats["entropy"]
    start = float(Policy(space="nat", seed=0).entropy(graph))
    assert entropies["standard"] < 1e-3 * start
    assert entropies["leave_one_out"] > 0.5 * start


def test_a_search_learns_an_input_that_cannot_reach_its_budget_at_that_input_s_floor(graph):
    """Over random cells, some cannot get down to a compact target; the search learns them at their floor."""
    floor, reference = minimum_cost(graph, "nat"), nat_keras.cost(graph)
    unreachable = nat_keras.Budget(macs_ratio=0.5 * floor.macs / reference.macs)
    config = SearchConfig(epochs=1, weight_steps=0, policy_steps=2, budget=unreachable,
                          reinforce=ReinforceConfig(num_samples=2))  # fmt: skip
    history = NATSearch(KnownRewardEnvironment(graph, space="nat", seed=0), Policy(space="nat", seed=0),
                        config=config).run(verbose=0)  # fmt: skip
    assert history.evaluations == 4
    # Every plan it learned from was as cheap as that input goes.
    assert history.cost_ratio[0] == pytest.approx(floor.macs / reference.macs, rel=0.01)


def test_a_search_loosens_a_budget_its_plans_cannot_be_fitted_to(graph, monkeypatch):
    """fit_to_budget can stall above a reachable floor (repair undoes its moves); the search goes on."""
    asked = []
    sample_many = Policy.sample_many

    def stalling(self, graph, count, *, budget=None, **options):
        asked.append(budget.macs_ratio)
        if budget.macs_ratio is not None and budget.macs_ratio < 0.7:
            raise nat_keras.BudgetError("No cheaper plan was found within the budget")
        return sample_many(self, graph, count, budget=budget, **options)

    monkeypatch.setattr(Policy, "sample_many", stalling)
    config = SearchConfig(epochs=1, weight_steps=0, policy_steps=1, budget=nat_keras.Budget(macs_ratio=0.5),
                          reinforce=ReinforceConfig(num_samples=2))  # fmt: skip
    history = NATSearch(KnownRewardEnvironment(graph, space="nat", seed=0), Policy(space="nat", seed=0),
                        config=config).run(verbose=0)  # fmt: skip
    assert asked == [0.5, 0.75] and history.evaluations == 2
    assert history.cost_ratio[0] <= 0.75


@pytest.mark.parametrize("space", ["nat", "nat++"])
def test_policy_learns_a_known_reward_better_than_random_search(graph, space):
    env = KnownRewardEnvironment(graph, space=space, seed=0)
    policy = Policy(space=space, seed=0)
    config = SearchConfig(
        epochs=1,
        weight_steps=0,
        policy_steps=50,
        reinforce=ReinforceConfig(learning_rate=1e-2, num_samples=4),
    )
    history = NATSearch(env, policy, config=config).run(verbose=0)
    learned = env.reward_of(policy.sample(graph, greedy=True))
    assert learned >= 0.95 * env.optimal_reward()
    rng = np.random.default_rng(0)
    random_best = max(
        env.reward_of(nat_keras.sample_random_plan(graph, rng, space=space))
        for _ in range(history.evaluations)
    )
    assert learned > random_best


def test_search_checkpoints_and_resumes(graph, tmp_path):
    env = KnownRewardEnvironment(graph, space="nat", seed=0)
    config = SearchConfig(epochs=2, weight_steps=0, policy_steps=3, reinforce=ReinforceConfig(num_samples=2))
    first = NATSearch(env, Policy(space="nat", seed=0), config=config, directory=tmp_path)
    first.run(verbose=0)
    resumed = NATSearch(
        env, Policy(space="nat", seed=5), config=dataclasses.replace(config, epochs=3), directory=tmp_path
    )
    assert resumed.resumed_epoch == 2
    assert float(resumed.learner.baseline.numpy()) == pytest.approx(float(first.learner.baseline.numpy()))
    np.testing.assert_allclose(
        resumed.policy.probabilities(graph), first.policy.probabilities(graph), atol=1e-6
    )
    first_rewards = first.run(verbose=0).reward  # nothing left to run: the restored history
    history = resumed.run(verbose=0)
    # A resumed search reports every epoch, the restored ones first.
    assert len(history.reward) == 3 and int(resumed.epoch.numpy()) == 3
    assert history.reward[:2] == first_rewards
    assert list((tmp_path / "tensorboard").iterdir())
