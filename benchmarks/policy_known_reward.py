"""Benchmark: does the policy's learning machinery work, free of training noise?

On a known reward (KnownRewardEnvironment: a fixed value per (op type,
action), optimum known), the policy is trained with REINFORCE for a budget of
reward evaluations and compared to random search given the same number of
evaluations (the best of that many random legal plans, mean over seeds).

  python benchmarks/policy_known_reward.py --model=resnet20 --steps=300 --samples=8
"""

from __future__ import annotations

import time

import nat_keras  # first: prepares the two Kerases

# isort: split
import numpy as np
from absl import app, flags

from nat_keras.policy import Policy, ReinforceConfig
from nat_keras.search import KnownRewardEnvironment, NATSearch, SearchConfig

_MODEL = flags.DEFINE_enum("model", "resnet20", sorted(nat_keras.models.MODELS), "Reference network.")
_STEPS = flags.DEFINE_integer("steps", 300, "Policy steps.")
_SAMPLES = flags.DEFINE_integer("samples", 8, "Plans per policy step (n).")
_LR = flags.DEFINE_float("learning_rate", 1e-2, "Adam learning rate.")
_SEEDS = flags.DEFINE_integer("random_search_seeds", 5, "Random-search repeats to average.")


def main(argv: list[str]) -> None:
    del argv
    graph = nat_keras.encode(nat_keras.models.get_model(_MODEL.value))
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
