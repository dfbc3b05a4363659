"""Baselines at NAT's evaluation budget: random search, LargeEdge, keras-tuner oracles."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import small_resnet, tiny_resnet

import nat_keras
from nat_keras.errors import ConfigError
from nat_keras.policy import ReinforceConfig
from nat_keras.search import KnownRewardEnvironment, SearchConfig
from nat_keras.search.baselines import (
    edge_magnitudes,
    evaluations_of,
    large_edge,
    random_search,
    run_method,
    tuner_search,
)


class _Counting(KnownRewardEnvironment):
    """A known reward that counts the plans it rewards (search) and scores (final choice)."""

    def __init__(self, graph, **kwargs):
        super().__init__(graph, **kwargs)
        self.rewarded = self.scored = 0

    def rewards(self, graph, plans):
        self.rewarded += len(plans)
        return super().rewards(graph, plans)

    def score(self, graph, plan):
        self.scored += 1
        return self.reward_of(plan)


@pytest.fixture(scope="module")
def graph():
    return nat_keras.encode(tiny_resnet())


def _within(graph, plans, budget):
    source = nat_keras.cost(graph)
    return all(budget.allows(nat_keras.plan_cost(graph, p), source) for p in plans)


def test_evaluations_of_counts_policy_rewards():
    config = SearchConfig(epochs=3, policy_steps=4, reinforce=ReinforceConfig(num_inputs=2, num_samples=5))
    assert evaluations_of(config) == 3 * 4 * 2 * 5


@pytest.mark.parametrize("budget", [nat_keras.Budget(), nat_keras.Budget(macs_ratio=0.6)])
def test_random_search_spends_its_budget_and_returns_the_best_plan_within_budget(graph, budget):
    env = _Counting(graph, seed=1)
    result = random_search(env, graph, evaluations=40, budget=budget, num_candidates=5, chunk=4, seed=0)
    assert env.rewarded == 40
    assert env.scored == len(result.candidates) <= 6  # 5 best and the source
    assert result.evaluations == 40 + len(result.candidates)
    scores = [s for _, s in result.candidates]
    assert scores == sorted(scores, reverse=True) and result.plan == result.candidates[0][0]
    assert _within(graph, [p for p, _ in result.candidates], budget)
    keep = nat_keras.TransformPlan.keep_all(graph)
    if budget.allows(nat_keras.cost(graph), nat_keras.cost(graph)):
        assert keep in dict(result.candidates)  # the source competes when it may
        assert env.reward_of(result.plan) >= env.reward_of(keep)
    else:
        assert keep not in dict(result.candidates)
    again = random_search(
        _Counting(graph, seed=1), graph, evaluations=40, budget=budget, num_candidates=5, chunk=4
    )
    assert again.plan == result.plan  # seeded


def test_random_search_finds_better_plans_with_more_evaluations(graph):
    env = KnownRewardEnvironment(graph, seed=3)
    few = random_search(env, graph, evaluations=2, num_candidates=2, seed=0)
    many = random_search(env, graph, evaluations=300, num_candidates=2, seed=0)
    assert env.reward_of(many.plan) >= env.reward_of(few.plan)
    assert env.reward_of(many.plan) > env.reward_of(nat_keras.TransformPlan.keep_all(graph))


def _two_convs(kernel_scale: float) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    stem = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    wide = keras.layers.Conv2D(8, 3, padding="same", name="wide")(stem)
    narrow = keras.layers.Conv2D(8, 1, padding="same", name="narrow")(wide)
    tail = keras.layers.Conv2D(8, 3, padding="same", name="tail")(narrow)
    outputs = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(tail))
    model = keras.Model(inputs, outputs, name="two_convs")
    kernel, bias = model.get_layer("tail").get_weights()
    model.get_layer("tail").set_weights([kernel * kernel_scale, bias])
    return model


def test_edge_magnitudes_compare_ops_of_different_size_by_their_initial_scale():
    keras.utils.set_random_seed(0)
    model = _two_convs(kernel_scale=0.01)
    magnitudes = edge_magnitudes(model, nat_keras.encode(model))
    # Freshly initialized 3x3 and 1x1 convs sit at the same scale; the shrunk one far below.
    assert set(magnitudes) >= {"wide", "narrow", "tail"}
    assert 0.5 < magnitudes["wide"] / magnitudes["narrow"] < 2.0
    assert magnitudes["tail"] < 0.05 * min(magnitudes["wide"], magnitudes["narrow"])


def test_edge_magnitudes_of_a_cell_graph_read_each_edge_s_op_in_every_cell():
    """A cell graph's edge names its op's layer in each copy of the cell, so LargeEdge works on cells."""
    from nat_keras.cells import PUBLISHED, build_network, genotype_to_arch_graph

    genotype = PUBLISHED["DARTS"]
    graph = genotype_to_arch_graph(genotype, cell="both", channels=8, spatial=16, num_cells=5)
    model = build_network(genotype, channels=8, num_cells=5, input_shape=(16, 16, 1))
    present = {layer.name for layer in model.layers}
    conv = graph.edge("normal/node0_edge0")  # sep_conv_3x3, in the 3 normal cells
    assert conv.layers == ("cell0_node0_edge0_sep_conv_3x3", "cell2_node0_edge0_sep_conv_3x3",
                           "cell4_node0_edge0_sep_conv_3x3")  # fmt: skip
    assert all(name in present for edge in graph.edges for name in edge.layers)
    magnitudes = edge_magnitudes(model, graph)
    with_kernels = {e.id for e in graph.transformable_edges() if "conv" in e.op}
    assert set(magnitudes) == with_kernels  # pools and identities have no kernel
    assert all(0.1 < m < 10.0 for m in magnitudes.values())  # freshly initialized: about 1


def test_large_edge_turns_off_the_smallest_edges_first_and_meets_compact_budgets(graph):
    edges = [e for e in graph.transformable_edges() if nat_keras.ops.SKIP in e.actions]
    magnitudes = {e.id: float(i + 1) for i, e in enumerate(edges)}  # the first edge is the smallest
    env = _Counting(graph, space="nat", seed=0)
    result = large_edge(env, graph, magnitudes, space="nat", num_candidates=4)
    plans = [p for p, _ in result.candidates]
    assert nat_keras.TransformPlan.keep_all(graph, space="nat") in plans  # k = 0 is the source
    changed = [p for p in plans if p.actions]
    assert changed and all(edges[0].id in p.actions for p in changed)
    assert result.evaluations == env.scored == len(result.candidates)
    budget = nat_keras.Budget(macs_ratio=0.7)
    compact = large_edge(env, graph, magnitudes, space="nat", budget=budget, num_candidates=4)
    assert _within(graph, [p for p, _ in compact.candidates], budget)


@pytest.mark.parametrize("oracle", ["random", "bayesian"])
def test_tuner_search_scores_each_trial_through_the_environment_and_resumes(graph, oracle, tmp_path):
    budget = nat_keras.Budget(macs_ratio=0.8)
    env = _Counting(graph, seed=2)
    first = tuner_search(env, graph, oracle=oracle, evaluations=6, budget=budget, num_candidates=3,
                         directory=tmp_path)  # fmt: skip
    assert env.rewarded == 6
    assert _within(graph, [p for p, _ in first.candidates], budget)
    resumed_env = _Counting(graph, seed=2)
    second = tuner_search(resumed_env, graph, oracle=oracle, evaluations=10, budget=budget, num_candidates=3,
                          directory=tmp_path)  # fmt: skip
    assert resumed_env.rewarded == 4  # the 6 trials on disk are not run again
    assert second.evaluations == 10 + len(second.candidates)
    assert resumed_env.reward_of(second.plan) >= max(
        resumed_env.reward_of(p) for p, _ in first.candidates[:1]
    )


def test_tuner_search_rejects_an_unknown_oracle(graph):
    with pytest.raises(ConfigError, match="oracle"):
        tuner_search(KnownRewardEnvironment(graph), graph, oracle="grid", evaluations=2)


@pytest.fixture(scope="module")
def digits():
    return nat_keras.data.load_splits("digits", batch_size=32, image_size=16)


TINY = SearchConfig(epochs=2, weight_steps=3, policy_steps=2, reinforce=ReinforceConfig(num_samples=2))


@pytest.mark.parametrize("method", ["random", "tuner_random"])
def test_run_method_trains_weights_like_nat_then_spends_nat_s_evaluations(graph, method, tmp_path):
    class Trained(_Counting):
        def train_weights(self, steps, *, verbose=0):
            self.steps = steps
            return {}

    env = Trained(graph, seed=4)
    config = SearchConfig(epochs=3, weight_steps=5, policy_steps=2, reinforce=ReinforceConfig(num_samples=3))
    result = run_method(method, env, graph, config=config, num_candidates=2, directory=tmp_path)
    assert env.steps == 15 and env.rewarded == evaluations_of(config) == 18
    assert result.evaluations == 18 + len(result.candidates)


def test_run_method_needs_magnitudes_for_large_edge_and_a_known_method(graph):
    with pytest.raises(ConfigError, match="magnitudes"):
        run_method("large_edge", KnownRewardEnvironment(graph), graph, config=SearchConfig(epochs=1))
    with pytest.raises(ConfigError, match="Unknown search method 'grid'"):
        run_method("grid", KnownRewardEnvironment(graph), graph, config=SearchConfig(epochs=1))


# End to end through transform: LargeEdge has its own step there (the magnitudes of the
# trained supernet's keep-all network); the other baselines share run_method (tested above).
@pytest.mark.parametrize("method", ["large_edge"])
def test_transform_with_a_baseline_method_reports_it_at_nat_s_budget(digits, method, tmp_path):
    model = small_resnet()
    before = [np.array(w) for w in model.get_weights()]
    budget = nat_keras.Budget(macs_ratio=0.8)
    new = nat_keras.transform(
        model, data=digits, method=method, budget=budget, search_config=TINY, num_candidates=3,
        directory=tmp_path, verbose=0,
    )  # fmt: skip
    report = new.nat_report
    assert report.method == method
    assert budget.allows(report.cost_after, report.cost_before)
    assert nat_keras.cost(new).macs == report.cost_after.macs
    assert report.candidates and report.plan == report.candidates[0][0]
    if method == "large_edge":
        assert report.evaluations == len(report.candidates)
    else:
        assert report.evaluations == evaluations_of(TINY) + len(report.candidates)
    assert method in report.message
    assert nat_keras.TransformReport.from_json(report.to_json()) == report
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the source is untouched


def test_transform_method_errors_are_clear(digits):
    model = small_resnet()
    with pytest.raises(ConfigError, match="unknown method 'grid'"):
        nat_keras.transform(model, data=digits, method="grid", verbose=0)
    with pytest.raises(ConfigError, match="need data"):
        nat_keras.transform(model, method="random", verbose=0)
