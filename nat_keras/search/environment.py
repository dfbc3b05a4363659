"""Where NAT's rewards come from.

An Environment hands the search loop input architectures (as ArchGraphs),
scores plans for them (R = acc(alpha) - acc(beta) on one held-out batch for
supernet environments), and trains whatever shared weights it has.

- `SupernetEnvironment`: rewards from a weight-sharing supernet (the model
  plan space or the cell space), with its weights trained on one data split
  and rewards measured on another.
- `KnownRewardEnvironment`: a reward that is a known function of the plan,
  to test the learning machinery free of training noise.

Example:
  >>> env = SupernetEnvironment(supernet, weights_data=splits.weights, reward_data=splits.policy)
  >>> graphs = env.input_graphs(rng, 1)
  >>> env.rewards(graphs[0], [plan])
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from nat_keras import ops
from nat_keras.graph.arch_graph import PLACEHOLDER, ArchGraph
from nat_keras.plan import TransformPlan
from nat_keras.supernet.base import Supernet
from nat_keras.supernet.batchnorm import calibration_images
from nat_keras.supernet.trainer import SupernetTrainer

# Held-out batches `score` (what `derive` ranks candidates by) measures on.
# benchmarks/reward_fidelity.py (docs/design.md section 6): among ResNet-20
# plans within a point of the source, Kendall's tau between the score and the
# fine-tuned accuracy was 0.50 with 4 batches and 0.84 with 16 (n = 8).
SCORE_BATCHES = 16


class Environment(abc.ABC):
    """Input architectures, rewards and (optionally) shared-weight training."""

    @abc.abstractmethod
    def input_graphs(self, rng: np.random.Generator, count: int) -> list[ArchGraph]:
        """`count` input architectures beta (may repeat)."""

    @abc.abstractmethod
    def rewards(self, graph: ArchGraph, plans: Sequence[TransformPlan]) -> np.ndarray:
        """The reward of each plan for input `graph`, measured on one shared batch."""

    def train_weights(self, steps: int, *, verbose: int = 0) -> dict[str, float]:
        """Train shared weights up to global step `steps` (no-op by default)."""
        del steps, verbose
        return {}

    def score(self, graph: ArchGraph, plan: TransformPlan) -> float:
        """How good a plan looks, for choosing among candidates (higher is better)."""
        return float(self.rewards(graph, [plan])[0])


class SupernetEnvironment(Environment):
    """Rewards from a supernet: acc(alpha; w) - acc(beta; w) on one batch.

    Accuracies are measured in inference mode. Before each one, the BN
    statistics are recalibrated for the architecture measured, on a fixed
    set of `calibration_size` images from the weight split (see
    `nat_keras.supernet.batchnorm`): the supernet's own moving statistics are shared
    by every architecture it trains and fit none of them (on digits, the
    source ResNet-20 scored 0.39 with them and 0.98 recalibrated after 50
    supernet steps).

    Args:
      supernet: a Supernet with `input_graphs(rng, count)` and
        `arch_of(graph, plan)` (ModelSupernet and CellSupernet have them).
      weights_data: batches for the supernet's shared weights (the 40% split).
      reward_data: batches for rewards (the 60% split; never the test split).
      trainer: the SupernetTrainer of `supernet` (made with defaults if None).
      score_data: held-out batches for `score` (default: `reward_data`).
      score_batches: how many batches of `score_data` `score` measures on
        (`SCORE_BATCHES`; an 11-plan derive then measures 176 batches).
      calibration_size: images of `weights_data` whose statistics each
        measured architecture's BNs take; 0 measures with the supernet's
        shared statistics instead.

    Attributes:
      calibration: the fixed calibration images (None when
        `calibration_size` is 0).
    """

    def __init__(
        self,
        supernet: Supernet,
        *,
        weights_data: tf.data.Dataset,
        reward_data: tf.data.Dataset,
        trainer: SupernetTrainer | None = None,
        score_data: tf.data.Dataset | None = None,
        score_batches: int = SCORE_BATCHES,
        calibration_size: int = 256,
    ):
        self.supernet = supernet
        self.weights_data = weights_data
        self.trainer = trainer or SupernetTrainer(supernet)
        self._reward_batches = iter(reward_data.repeat())
        self._score_data = (score_data or reward_data).take(score_batches).cache()
        self.calibration = None
        if calibration_size:
            # The same images for every architecture, so rewards compare
            # architectures, not calibration draws.
            self.calibration = calibration_images(weights_data, calibration_size)

    def _accuracy(self, graph: ArchGraph, plan: TransformPlan, data: Any) -> float:
        arch = self.supernet.arch_of(graph, plan)
        return self.supernet.accuracy(arch, data, calibration=self.calibration)

    def input_graphs(self, rng: np.random.Generator, count: int) -> list[ArchGraph]:
        return self.supernet.input_graphs(rng, count)

    def rewards(self, graph: ArchGraph, plans: Sequence[TransformPlan]) -> np.ndarray:
        batch = next(self._reward_batches)
        keep = TransformPlan.keep_all(graph, space=plans[0].space if plans else "nat++")
        before = self._accuracy(graph, keep, batch)
        return np.array([self._accuracy(graph, p, batch) - before for p in plans], dtype=np.float32)

    def train_weights(self, steps: int, *, verbose: int = 0) -> dict[str, float]:
        return self.trainer.train(self.weights_data, steps=steps, verbose=verbose)

    def score(self, graph: ArchGraph, plan: TransformPlan) -> float:
        return self._accuracy(graph, plan, self._score_data)


class KnownRewardEnvironment(Environment):
    """R(plan) = mean over transformable edges of value[edge op, action].

    The values are drawn once per (op type, action) from `seed`, with "none"
    worth 0, so the optimum takes each edge's best legal action and is always
    a valid plan. A policy must read each edge's own op to find it.

    Args:
      graph: the single input architecture.
      space: action space the values cover.
      seed: draws the value table.
    """

    def __init__(self, graph: ArchGraph, *, space: str = "nat++", seed: int = 0):
        self.graph = graph
        self.space = space
        rng = np.random.default_rng(seed)
        self.edges = [
            e for e in graph.edges if len([a for a in e.actions if a in ops.ACTION_SPACES[space]]) > 1
        ]
        op_types = sorted({_op_type(e) for e in self.edges})
        self.values = {op: dict(zip(ops.ACTIONS, rng.uniform(size=len(ops.ACTIONS)))) for op in op_types}
        for table in self.values.values():
            table[ops.NONE] = 0.0

    def _legal(self, edge: Any) -> list[str]:
        return [a for a in edge.actions if a in ops.ACTION_SPACES[self.space]]

    def input_graphs(self, rng: np.random.Generator, count: int) -> list[ArchGraph]:
        return [self.graph] * count

    def reward_of(self, plan: TransformPlan) -> float:
        total = sum(self.values[_op_type(e)][plan.action(e.id)] for e in self.edges)
        return total / max(len(self.edges), 1)

    def rewards(self, graph: ArchGraph, plans: Sequence[TransformPlan]) -> np.ndarray:
        return np.array([self.reward_of(p) for p in plans], dtype=np.float32)

    def optimal_plan(self) -> TransformPlan:
        actions = {
            e.id: max(self._legal(e), key=lambda a, e=e: self.values[_op_type(e)][a]) for e in self.edges
        }
        return TransformPlan.from_actions(self.graph, actions, space=self.space)

    def optimal_reward(self) -> float:
        return self.reward_of(self.optimal_plan())


def _op_type(edge: Any) -> str:
    return f"{edge.kind}:{edge.op}" if edge.kind == PLACEHOLDER else edge.op
