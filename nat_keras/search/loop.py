"""NAT's alternating search: a pass of supernet weights, then a pass of policy.

Per epoch (docs/design.md section 2): the environment trains its shared weights w
for `weight_steps` steps on its weight split, then the policy takes
`policy_steps` REINFORCE steps; each draws m input architectures and n plans
per input, scores them on one held-out batch and updates theta. Checkpoints
(policy, its optimizer, the baseline, the epoch; the supernet trainer keeps
its own) let a stopped search resume, and the per-epoch history is kept
beside them (`history.json`), so a resumed run returns every epoch's;
TensorBoard gets reward, baseline,
entropy and cost ratio; a Keras Progbar shows the policy pass.

Example:
  >>> search = NATSearch(env, policy, config=SearchConfig(epochs=10), directory="runs/nat")
  >>> history = search.run()
  >>> plan, scores = derive(env, policy, graph, num_candidates=10)
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras.errors import BudgetError
from nat_keras.graph import cost
from nat_keras.graph.arch_graph import ArchGraph
from nat_keras.graph.costs import Budget, Cost, minimum_cost
from nat_keras.plan import TransformPlan, fit_to_budget, plan_cost
from nat_keras.policy.policy import Policy
from nat_keras.policy.reinforce import Reinforce, ReinforceConfig
from nat_keras.search.environment import Environment


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """How long to search, and the policy's learning settings.

    Attributes:
      epochs: alternations of weight and policy passes (the paper: 100; 200
        for NAT++).
      weight_steps: supernet weight steps per epoch (0: none).
      policy_steps: policy steps per epoch.
      reinforce: the policy-gradient settings (m, n, Adam, baseline, entropy).
      seed: seeds input-architecture and plan sampling.
      checkpoint_every: epochs between checkpoints.
      budget: the budget the policy learns under (None: `Budget()`, NAT's
        "no extra cost"). The plans of a policy pass meet it (cost-aware
        sampling: resampled, then shrunk by `fit_to_budget`), so the policy
        is rewarded for plans it could return.
      cost_penalty: > 0 learns a compact budget by penalty instead: plans
        are sampled within `Budget()` only, and each reward loses
        `cost_penalty` times the plan's relative excess over `budget`'s
        limits (the larger of params and MACs); `derive` still shrinks
        what it returns to `budget`. `benchmarks/policy_known_reward.py
        --macs_ratio` compares the two.
    """

    epochs: int = 100
    weight_steps: int = 100
    policy_steps: int = 100
    reinforce: ReinforceConfig = dataclasses.field(default_factory=ReinforceConfig)
    seed: int = 0
    checkpoint_every: int = 1
    budget: Budget | None = None
    cost_penalty: float = 0.0

    def __post_init__(self):
        if not self.cost_penalty >= 0:
            raise ValueError(f"SearchConfig.cost_penalty must be >= 0, got {self.cost_penalty}.")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "reinforce": self.reinforce.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        budget = data.get("budget")
        return cls(
            **{
                **data,
                "reinforce": ReinforceConfig.from_dict(data.get("reinforce", {})),
                "budget": Budget.from_dict(budget) if budget is not None else None,
            }
        )


# How `derive` draws its candidates: 1, the paper's (num_candidates samples,
# repeats included); 2, num_candidates different plans (2026-12-06). Benchmarks
# put it in the keys of NAT's cached rows, so rows of one rule never mix with
# the other's.
DERIVE_VERSION = 2

# What competes with the candidates in `choose` under a compact budget: 1,
# nothing; 2, the input fitted to the budget (2026-12-07). At half the MACs
# that plan alone scored above NAT's choices on the supernet, and above random
# search's on 3 of 4 networks (docs/design.md section 4). Benchmarks key
# compact rows by it.
CHOOSE_VERSION = 2


# How often `_sample_within_reach` loosens a budget an input cannot meet before it uses Budget().
_LOOSENINGS = 4


def _halfway_to_source(budget: Budget) -> Budget:
    """`budget` with each ratio below 1 halfway to the source's (1)."""

    def halfway(ratio: float) -> float:
        return max(ratio, (ratio + 1.0) / 2.0)

    if budget.macs_ratio is None:
        return Budget(params_ratio=halfway(budget.params_ratio), macs_eps=budget.macs_eps)
    return Budget(params_ratio=halfway(budget.params_ratio), macs_ratio=halfway(budget.macs_ratio))


def budget_excess(planned: Cost, limit: Cost) -> float:
    """How far a plan costing `planned` is over `limit`: max(0, cost / limit - 1), params or MACs.

    Example:
      >>> budget_excess(Cost(10, 150), Budget(macs_ratio=0.5).limits(Cost(10, 100)))
      2.0
    """
    return max(0.0, planned.params / max(limit.params, 1) - 1.0, planned.macs / max(limit.macs, 1) - 1.0)


_PER_EPOCH = ("reward", "baseline", "entropy", "cost_ratio", "epoch_evaluations", "epoch_seconds")


@dataclasses.dataclass
class SearchHistory:
    """Per-epoch means of the policy pass, one entry per epoch run so far.

    Attributes:
      reward / baseline / entropy / cost_ratio: per-epoch means.
      epoch_evaluations: plans scored in each epoch.
      epoch_seconds: wall time of each epoch (weight training and policy
        pass), so a search resumed in several runs still says what it cost.
      evaluations: plans scored in all epochs.
    """

    reward: list[float] = dataclasses.field(default_factory=list)
    baseline: list[float] = dataclasses.field(default_factory=list)
    entropy: list[float] = dataclasses.field(default_factory=list)
    cost_ratio: list[float] = dataclasses.field(default_factory=list)
    evaluations: int = 0
    epoch_evaluations: list[int] = dataclasses.field(default_factory=list)
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        """Wall time of all epochs, or None when some epochs were run before times were kept.

        Example:
          >>> SearchHistory(reward=[0.1, 0.2], epoch_seconds=[3.0, 4.0]).seconds
          7.0
        """
        if len(self.epoch_seconds) != len(self.reward):
            return None
        return float(sum(self.epoch_seconds))

    def truncated(self, epochs: int) -> SearchHistory:
        """The history of the first `epochs` epochs."""
        kept = {key: list(getattr(self, key)[:epochs]) for key in _PER_EPOCH}
        return SearchHistory(**kept, evaluations=int(sum(kept["epoch_evaluations"])))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchHistory:
        """Inverse of `to_dict`.

        Example:
          >>> SearchHistory.from_dict(history.to_dict()) == history
          True
        """
        kept = {key: list(data.get(key, [])) for key in _PER_EPOCH}
        return cls(**kept, evaluations=int(data.get("evaluations", sum(kept["epoch_evaluations"]))))


class NATSearch:
    """Alternates shared-weight training and policy learning (see module docstring).

    Args:
      environment: where rewards come from.
      policy: the Policy to train (modified in place).
      config: search settings.
      directory: checkpoints, the history so far (`history.json`) and
        TensorBoard logs; resumes from a checkpoint found there, history
        included. None keeps nothing on disk.

    Attributes:
      history: every epoch's means so far (restored on resume).
    """

    def __init__(
        self,
        environment: Environment,
        policy: Policy,
        *,
        config: SearchConfig | None = None,
        directory: str | os.PathLike | None = None,
    ):
        self.environment = environment
        self.policy = policy
        self.config = config or SearchConfig()
        self.learner = Reinforce(policy, self.config.reinforce)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="search_epoch")
        self._checkpoint = tf.train.Checkpoint(epoch=self.epoch, **self.learner.checkpoint_objects())
        self._manager = self._writer = self._history_path = None
        self.history = SearchHistory()
        if directory is not None:
            directory = os.fspath(directory)
            self._manager = tf.train.CheckpointManager(
                self._checkpoint, os.path.join(directory, "search_checkpoints"), max_to_keep=3
            )
            self._history_path = os.path.join(directory, "history.json")
            if self._manager.latest_checkpoint:
                self._checkpoint.restore(self._manager.latest_checkpoint).assert_existing_objects_matched()
                self.history = self._load_history(int(self.epoch.numpy()))
            self._writer = tf.summary.create_file_writer(os.path.join(directory, "tensorboard"))

    def _load_history(self, epochs: int) -> SearchHistory:
        """The saved history of the first `epochs` epochs (those of the restored checkpoint).

        The history is written before each checkpoint, so it may run ahead of
        the latest checkpoint (a stop between the two), never behind it,
        except for a directory written before histories were kept: then the
        earlier epochs' entries are missing and the history starts empty.
        """
        if self._history_path is None or not os.path.exists(self._history_path):
            return SearchHistory()
        with open(self._history_path) as file:
            saved = SearchHistory.from_dict(json.load(file))
        return saved.truncated(epochs) if len(saved.reward) >= epochs else SearchHistory()

    def _save_history(self) -> None:
        """Write `history.json` atomically: a stop mid-write leaves the old file whole."""
        directory = os.path.dirname(self._history_path)
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".history.", suffix=".json")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(self.history.to_dict(), file)
            os.replace(temporary, self._history_path)
        except BaseException:
            os.unlink(temporary)
            raise

    @property
    def resumed_epoch(self) -> int:
        return int(self.epoch.numpy())

    def run(self, *, verbose: int = 1) -> SearchHistory:
        """Run the remaining epochs (all of them unless resumed).

        Returns:
          The history of every epoch, those run before a resume included.
        """
        history = self.history
        config = self.config
        for epoch in range(int(self.epoch.numpy()), config.epochs):
            start = time.perf_counter()
            if config.weight_steps:
                self.environment.train_weights((epoch + 1) * config.weight_steps, verbose=0)
            stats = self._policy_pass(epoch, verbose)
            for key in ("reward", "baseline", "entropy", "cost_ratio"):
                getattr(history, key).append(stats[key])
            history.epoch_evaluations.append(int(stats["evaluations"]))
            history.evaluations += int(stats["evaluations"])
            history.epoch_seconds.append(time.perf_counter() - start)
            self.epoch.assign(epoch + 1)
            if self._writer is not None:
                with self._writer.as_default(step=epoch + 1):
                    for key in ("reward", "baseline", "entropy", "cost_ratio"):
                        tf.summary.scalar(f"policy/{key}", stats[key])
            if self._manager is not None and (
                (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs
            ):
                # History first: on resume it is cut back to the checkpoint's epoch.
                self._save_history()
                self._manager.save(checkpoint_number=epoch + 1)
        return history

    def _sample_within_reach(
        self, graph: ArchGraph, count: int, rng: np.random.Generator, budget: Budget
    ) -> list[TransformPlan]:
        """`count` plans of `graph` within `budget`, or as near to it as this input gets.

        Over random cells some cannot get down to a compact target: their
        floor (`minimum_cost`) is above it (`Budget.within_reach`), or
        `fit_to_budget`'s moves stall above it because `repair` undoes the
        last ones. Such an input is learned at a budget loosened towards the
        source (halfway each time, the source's own at last) instead of
        stopping the search. The one model `transform` searches is checked
        up front instead (`Budget.check_reachable`).
        """
        if budget.is_compact:  # Budget() is always within reach: no floor to compute on every step
            budget = budget.within_reach(minimum_cost(graph, self.policy.space), cost(graph))
        for _ in range(_LOOSENINGS):
            try:
                return self.policy.sample_many(graph, count, seed=rng, budget=budget)
            except BudgetError:
                budget = _halfway_to_source(budget)
        return self.policy.sample_many(graph, count, seed=rng, budget=Budget())

    def _policy_pass(self, epoch: int, verbose: int) -> dict[str, float]:
        config = self.config
        m, n = config.reinforce.num_inputs, config.reinforce.num_samples
        progbar = (
            keras.utils.Progbar(config.policy_steps, stateful_metrics=["reward", "baseline", "entropy"])
            if verbose
            else None
        )
        if progbar is not None:
            print(f"Epoch {epoch + 1}/{config.epochs}: policy")
        sums = {"reward": 0.0, "baseline": 0.0, "entropy": 0.0, "cost_ratio": 0.0}
        evaluations = 0
        budget = config.budget or Budget()
        sample_budget = Budget() if config.cost_penalty else budget
        for step in range(config.policy_steps):
            rng = np.random.default_rng((config.seed, epoch, step))
            graphs = self.environment.input_graphs(rng, m)
            plans = [self._sample_within_reach(g, n, rng, sample_budget) for g in graphs]
            rewards = np.stack([self.environment.rewards(g, p) for g, p in zip(graphs, plans)])
            evaluations += rewards.size
            if config.cost_penalty:
                limits = [budget.limits(cost(g)) for g in graphs]
                excess = [
                    [budget_excess(plan_cost(g, p), limit) for p in ps]
                    for g, ps, limit in zip(graphs, plans, limits)
                ]
                rewards = rewards - config.cost_penalty * np.asarray(excess, dtype=rewards.dtype)
            stats = self.learner.update(graphs, plans, rewards)
            ratio = np.mean(
                [plan_cost(g, p).macs / max(cost(g).macs, 1) for g, ps in zip(graphs, plans) for p in ps]
            )
            for key in ("reward", "baseline", "entropy"):
                sums[key] += stats[key]
            sums["cost_ratio"] += float(ratio)
            if progbar is not None:
                progbar.update(step + 1, [(k, stats[k]) for k in ("reward", "baseline", "entropy")])
        means = {k: v / max(config.policy_steps, 1) for k, v in sums.items()}
        return {**means, "evaluations": evaluations}


def derive(
    environment: Environment,
    policy: Policy,
    graph: ArchGraph,
    *,
    num_candidates: int = 10,
    greedy: bool = False,
    seed: Any = 0,
    budget: Any = None,
    include_input: bool = True,
) -> tuple[TransformPlan, list[tuple[TransformPlan, float]]]:
    """Pick the final plan: the best of `num_candidates` sampled plans (or of
    the greedy plan) by the environment's score (supernet accuracy on
    held-out data, never the test split).

    The candidates are `num_candidates` different plans
    (`Policy.sample_distinct`, at most 10 draws per plan): the paper scores
    10 samples, repeats included, and a policy that keeps most edges then
    offers 1-3 different plans, where the baselines choose among 10
    (`DERIVE_VERSION` 2; 1 was the paper's rule).

    With `include_input`, the input architecture itself (the keep-all plan)
    is scored as well and wins ties, so a search whose plans all score below
    the input returns the input unchanged rather than a worse model; under a
    budget that rules the input out (e.g. `Budget(macs_ratio=0.5)`), the
    input fitted to it competes instead (see `choose`).

    Args:
      environment: scores plans (`Environment.score`).
      policy: proposes the plans.
      graph: the input architecture.
      num_candidates: plans to sample (ignored when `greedy`).
      greedy: score the policy's most likely plan instead of samples.
      seed: seeds sampling.
      budget: the cost budget every candidate meets (default: Budget()).
      include_input: let the input architecture compete (see above).

    Returns:
      The chosen plan and every (candidate, score), best first.

    Example:
      >>> plan, scored = derive(env, policy, graph, num_candidates=10)
      >>> scored[0] == (plan, max(score for _, score in scored))
      True
    """
    if greedy:
        candidates = [policy.sample(graph, greedy=True, budget=budget)]
    else:
        candidates = policy.sample_distinct(graph, num_candidates, seed=seed, budget=budget)
    return choose(
        environment, graph, candidates, budget=budget, space=policy.space, include_input=include_input
    )


def input_plan(graph: ArchGraph, budget: Budget | None = None, *, space: str = "nat++") -> TransformPlan:
    """The input as a plan within `budget`: what competes with every method's candidates.

    The keep-all plan when `budget` allows the source; under a compact budget,
    the source fitted to it by `fit_to_budget`'s rule alone (the largest
    saving first, ties in graph order), the plan a user gets without any
    search (`CHOOSE_VERSION` 2).

    Example:
      >>> input_plan(graph).actions, bool(input_plan(graph, Budget(macs_ratio=0.5)).actions)
      ({}, True)
    """
    source = cost(graph)
    budget = budget or Budget()
    keep = TransformPlan.keep_all(graph, space=space)
    return keep if budget.allows(source, source) else fit_to_budget(graph, keep, budget)


def choose(
    environment: Environment,
    graph: ArchGraph,
    candidates: list[TransformPlan],
    *,
    budget: Any = None,
    space: str = "nat++",
    include_input: bool = True,
) -> tuple[TransformPlan, list[tuple[TransformPlan, float]]]:
    """The best of `candidates` by `environment.score`; NAT's `derive` and the baselines end here.

    With `include_input`, the input competes first and wins ties
    (`input_plan`: under a compact budget, the source fitted to it), so no
    search returns a worse-scoring network than its input. Repeated plans
    are scored once.

    Example:
      >>> half = Budget(macs_ratio=0.5)
      >>> plan, scored = choose(env, graph, plans, budget=half)
      >>> scored[0][1] >= dict(scored)[input_plan(graph, half)]
      True
    """
    candidates = list(candidates)
    if include_input:
        candidates.insert(0, input_plan(graph, budget, space=space))
    unique = list(dict.fromkeys(candidates))  # sampled plans often repeat
    # A stable sort: among equal scores the earlier candidate (the input) stays first.
    scored = sorted(((p, environment.score(graph, p)) for p in unique), key=lambda pair: -pair[1])
    return scored[0][0], scored
