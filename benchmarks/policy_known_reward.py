"""Benchmark: does the policy's learning machinery work, free of training noise?

On a known reward (KnownRewardEnvironment: a fixed value per (op type,
action), optimum known), the policy is trained with REINFORCE for a budget of
reward evaluations and compared to random search given the same number of
evaluations (the best of that many random legal plans, mean over seeds).

  python benchmarks/policy_known_reward.py --model=resnet20 --steps=300 --samples=8

With `--macs_ratio` (e.g. 0.5) it compares, under that compact budget, the
ways the policy can learn it (`SearchConfig.budget` / `cost_penalty`), each
given the same evaluations, by the known reward of the plan `derive` would
return (greedy, shrunk to the budget by `fit_to_budget`):

- "derive only": learns under Budget() (no extra cost), shrunk at the end;
- "sampling": every plan of the policy pass is drawn within the budget;
- "penalty L": drawn within Budget(), reward minus L x the excess over it;
- random search: the best of as many random plans, each shrunk to it.

  python benchmarks/policy_known_reward.py --macs_ratio=0.5 --steps=100 --seeds=3
"""

from __future__ import annotations

import time

import nat_keras  # first: prepares the two Kerases

# isort: split
import numpy as np
from absl import app, flags

from nat_keras.plan import fit_to_budget
from nat_keras.policy import Policy, ReinforceConfig
from nat_keras.search import KnownRewardEnvironment, NATSearch, SearchConfig

_MODEL = flags.DEFINE_enum("model", "resnet20", sorted(nat_keras.models.MODELS), "Reference network.")
_STEPS = flags.DEFINE_integer("steps", 300, "Policy steps.")
_SAMPLES = flags.DEFINE_integer("samples", 8, "Plans per policy step (n).")
_LR = flags.DEFINE_float("learning_rate", 1e-2, "Adam learning rate.")
_SEEDS = flags.DEFINE_integer("random_search_seeds", 5, "Random-search repeats to average.")
_MACS_RATIO = flags.DEFINE_float("macs_ratio", None, "Compare ways to learn this compact budget instead.")
_PENALTIES = flags.DEFINE_list("penalties", ["1", "5"], "Cost penalties compared with --macs_ratio.")
_RUN_SEEDS = flags.DEFINE_integer("seeds", 3, "Policy and value-table seeds with --macs_ratio.")


def compare_compact(graph: nat_keras.ArchGraph, macs_ratio: float) -> None:
    """Under Budget(macs_ratio=...): learn it by sampling, by penalty or not at all; random search."""
    budget = nat_keras.Budget(macs_ratio=macs_ratio)
    variants = {"derive only": {}, "sampling": {"budget": budget}}
    variants.update({f"penalty {p}": {"budget": budget, "cost_penalty": float(p)} for p in _PENALTIES.value})
    print(f"Budget(macs_ratio={macs_ratio}); known reward of the returned plan, mean ± std over seeds")
    print(f"{'space':<7}{'variant':<16}{'reward':>16}{'MACs':>8}{'evals':>7}{'seconds':>9}")
    for space in ("nat", "nat++"):
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in [*variants, "random search"]}
        evaluations = seconds = 0.0
        for seed in range(_RUN_SEEDS.value):
            env = KnownRewardEnvironment(graph, space=space, seed=seed)
            for name, options in variants.items():
                policy = Policy(space=space, seed=seed)
                config = SearchConfig(
                    epochs=1,
                    weight_steps=0,
                    policy_steps=_STEPS.value,
                    seed=seed,
                    reinforce=ReinforceConfig(learning_rate=_LR.value, num_samples=_SAMPLES.value),
                    **options,
                )
                start = time.perf_counter()
                history = NATSearch(env, policy, config=config).run(verbose=0)
                seconds += time.perf_counter() - start
                evaluations = history.evaluations
                plan = policy.sample(graph, greedy=True, budget=budget)
                found[name].append((env.reward_of(plan), nat_keras.plan_cost(graph, plan).macs))
            rng = np.random.default_rng(seed)
            plans = [
                fit_to_budget(graph, nat_keras.sample_random_plan(graph, rng, space=space), budget)
                for _ in range(evaluations)
            ]
            best = max(plans, key=env.reward_of)
            found["random search"].append((env.reward_of(best), nat_keras.plan_cost(graph, best).macs))
        source_macs = nat_keras.cost(graph).macs
        for name, results in found.items():
            rewards = [r for r, _ in results]
            macs = np.mean([m for _, m in results]) / source_macs
            print(
                f"{space:<7}{name:<16}{np.mean(rewards):>9.3f} ± {np.std(rewards, ddof=1):.3f}"
                f"{macs:>8.1%}{int(evaluations):>7}{seconds / len(variants) / _RUN_SEEDS.value:>9.1f}"
            )
    print("seconds: one search's time (the policy's variants); MACs: of the returned plan, of the source's")


def main(argv: list[str]) -> None:
    del argv
    graph = nat_keras.encode(nat_keras.models.get_model(_MODEL.value))
    if _MACS_RATIO.value is not None:
        compare_compact(graph, _MACS_RATIO.value)
        return
    print(f"{'space':<7}{'edges':>6}{'evals':>7}{'policy':>9}{'random search':>15}{'seconds':>9}")
    for space in ("nat", "nat++"):
        env = KnownRewardEnvironment(graph, space=space, seed=0)
        optimum = env.optimal_reward()
        policy = Policy(space=space, seed=0)
        config = SearchConfig(
            epochs=1,
            weight_steps=0,
            policy_steps=_STEPS.value,
            reinforce=ReinforceConfig(learning_rate=_LR.value, num_samples=_SAMPLES.value),
        )
        start = time.perf_counter()
        history = NATSearch(env, policy, config=config).run(verbose=0)
        seconds = time.perf_counter() - start
        learned = env.reward_of(policy.sample(graph, greedy=True)) / optimum
        random_best = []
        for seed in range(_SEEDS.value):
            rng = np.random.default_rng(seed)
            plans = (
                nat_keras.sample_random_plan(graph, rng, space=space) for _ in range(history.evaluations)
            )
            random_best.append(max(env.reward_of(p) for p in plans) / optimum)
        print(
            f"{space:<7}{len(env.edges):>6}{history.evaluations:>7}{learned:>9.3f}"
            f"{np.mean(random_best):>15.3f}{seconds:>9.1f}"
        )
    print("policy / random search: greedy plan's reward and best random plan's, as fractions of the optimum")


if __name__ == "__main__":
    app.run(main)
