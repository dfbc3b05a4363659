"""Baselines for NAT's search: the same plan space, budget and supernet.

NAT is judged against what a user could do instead with the same means
(docs/design.md section 7): each baseline here chooses a TransformPlan for
one input architecture, scoring plans with the same `Environment` (the same
trained supernet, the same held-out batches) and meeting the same `Budget`.

- `random_search`: random legal plans within the budget; the best wins.
- `large_edge`: keep the edges whose trained weights are largest, turn the
  smallest to skip (or none) where legal (the rule is in its docstring).
- `tuner_search`: a keras-tuner oracle (`RandomSearch` or
  `BayesianOptimization`) over one `Choice` per transformable edge, each
  trial scored through the supernet instead of training a model; trials
  resume from keras-tuner's own project directory.

Equal evaluation budget: NAT's policy scores `evaluations_of(config)` plans
(one reward each, on one held-out batch) while it learns, then `derive`
scores its candidates on more held-out batches. Random search and the
tuners get the same number of single-batch rewards, then the same final
choice among their `num_candidates` best (`loop.choose`, the source included,
fitted to a compact budget, and winning ties). LargeEdge needs no search: it
scores only its candidates.

Example:
  >>> result = random_search(environment, graph, evaluations=200, budget=Budget(macs_ratio=0.5))
  >>> result.plan, result.candidates[0]
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from nat_keras import compat, ops
from nat_keras.errors import ConfigError
from nat_keras.graph.arch_graph import ArchGraph, Edge
from nat_keras.graph.costs import Budget
from nat_keras.plan import TransformPlan, fit_to_budget, repair, sample_plan_within
from nat_keras.search.environment import Environment
from nat_keras.search.loop import SearchConfig, choose

#: The methods `nat_keras.transform(method=...)` knows, NAT's own first.
METHODS = ("nat", "random", "large_edge", "tuner_random", "tuner_bayesian")


@dataclasses.dataclass(frozen=True)
class BaselineResult:
    """What a baseline chose.

    Attributes:
      plan: the chosen plan (within the budget).
      candidates: (plan, score on held-out data), best first, as `derive`
        returns them (the source included; fitted to the budget when it is compact).
      evaluations: supernet evaluations spent (single-batch rewards during
        the search plus the final candidates' scores).
    """

    plan: TransformPlan
    candidates: list[tuple[TransformPlan, float]]
    evaluations: int


def evaluations_of(config: SearchConfig) -> int:
    """Plans NAT's policy scores in a search with `config` (epochs x steps x m x n).

    Example:
      >>> evaluations_of(SearchConfig(epochs=10, policy_steps=20))
      200
    """
    reinforce = config.reinforce
    return config.epochs * config.policy_steps * reinforce.num_inputs * reinforce.num_samples


def random_search(
    environment: Environment,
    graph: ArchGraph,
    *,
    evaluations: int,
    budget: Budget | None = None,
    space: str = "nat++",
    num_candidates: int = 10,
    chunk: int = 1,
    seed: Any = 0,
    verbose: int = 0,
) -> BaselineResult:
    """Random search: `evaluations` random legal plans, the best on held-out data.

    Each plan changes every transformable edge with its own probability,
    drawn uniformly from (0, 0.5] per plan, so the search covers plans near
    the source (where trained networks mostly stay good) as well as far ones;
    a plan over budget is made cheaper edge by edge (`sample_plan_within`).
    Plans are rewarded `chunk` at a time on one held-out batch, as NAT's
    policy steps reward their `n` samples; the `num_candidates` best are then
    scored again on more held-out data, against the source.

    Args:
      environment: scores plans (a `SupernetEnvironment` whose weights are trained).
      graph: the input architecture.
      evaluations: single-batch rewards to spend (`evaluations_of(config)`
        for NAT's budget).
      budget: every plan meets it (default: Budget()).
      space: the action space.
      num_candidates: the best plans scored again at the end.
      chunk: plans per reward batch.
      seed: seeds the plans.
      verbose: 1 shows a progress bar.

    Returns:
      The BaselineResult.

    Example:
      >>> result = random_search(env, graph, evaluations=200, num_candidates=10)
    """
    budget = budget or Budget()
    rng = np.random.default_rng(seed)
    progbar = keras.utils.Progbar(evaluations, stateful_metrics=["best"]) if verbose else None
    rewarded: dict[TransformPlan, float] = {}
    done = 0
    while done < evaluations:
        size = min(chunk, evaluations - done)
        plans = [sample_plan_within(graph, rng, budget, space=space) for _ in range(size)]
        for plan, reward in zip(plans, environment.rewards(graph, plans)):
            rewarded[plan] = max(float(reward), rewarded.get(plan, -math.inf))
        done += size
        if progbar is not None:
            progbar.update(done, [("best", max(rewarded.values()))])
    return _finish(environment, graph, rewarded, budget, space, num_candidates, evaluations)


def edge_magnitudes(model: keras.Model, graph: ArchGraph) -> dict[str, float]:
    """How large each transformable edge's trained weights are, comparable across ops.

    The magnitude of one kernel is its root mean square times the square root
    of its fan-in (Keras's convention: input channels times the receptive
    field), i.e. its size in units of the He/Glorot initial scale, so a 3x3
    conv over 64 channels and a 1x1 conv over 16 compare. An edge with
    several kernels (a separable conv) takes their geometric mean. Edges
    whose layers have no kernel (pooling, identity, placeholders) have none.

    Args:
      model: a model holding the edges' layers by name (the source, or the
        supernet's keep-all `extract`).
      graph: its ArchGraph.

    Returns:
      {edge id: magnitude} for transformable edges with kernels.

    Example:
      >>> magnitudes = edge_magnitudes(model, nat_keras.encode(model))
    """
    layers = {layer.name: layer for layer in compat.all_layers(model)}
    magnitudes = {}
    for edge in graph.transformable_edges():
        logs = []
        for name in edge.layers:
            layer = layers.get(name)
            for weight in [] if layer is None else layer.weights:
                value = np.asarray(weight)
                if value.ndim < 2 or "kernel" not in weight.name:
                    continue  # biases, BN statistics, scales
                fan_in = value.shape[-2] * math.prod(value.shape[:-2])
                rms = float(np.sqrt(np.mean(np.square(value))))
                logs.append(math.log(max(rms * math.sqrt(fan_in), 1e-12)))
        if logs:
            magnitudes[edge.id] = math.exp(sum(logs) / len(logs))
    return magnitudes


def large_edge(
    environment: Environment,
    graph: ArchGraph,
    magnitudes: Mapping[str, float],
    *,
    budget: Budget | None = None,
    space: str = "nat++",
    num_candidates: int = 10,
) -> BaselineResult:
    """LargeEdge: keep the edges with the largest weights, turn the smallest off.

    The rule. Edges with weights are ranked by `magnitudes` (see
    `edge_magnitudes`). Candidate k turns the k smallest to skip where skip
    is legal, else to none where legal (else they stay), for `num_candidates`
    values of k spread evenly from 0 (the source) to half of those edges;
    `repair` restores what must stay, and a candidate over budget then drops
    more edges, smallest first (`fit_to_budget` with preference 1 /
    magnitude). The candidates are scored on held-out data as `derive`
    scores NAT's, and the best wins (ties: fewer changes).

    Args:
      environment: scores the candidates.
      graph: the input architecture.
      magnitudes: {edge id: weight magnitude}, e.g. from `edge_magnitudes`.
      budget: every candidate meets it (default: Budget()).
      space: the action space.
      num_candidates: how many values of k are tried.

    Returns:
      The BaselineResult.

    Example:
      >>> result = large_edge(env, graph, edge_magnitudes(model, graph), budget=Budget(macs_ratio=0.5))
    """
    budget = budget or Budget()
    allowed = set(ops.ACTION_SPACES[ops.check_space(space, where="large_edge")])
    ranked = sorted(
        (e for e in graph.transformable_edges() if e.id in magnitudes), key=lambda e: magnitudes[e.id]
    )
    floor = min(magnitudes.values(), default=1.0)

    def off(edge: Edge) -> str | None:
        for action in (ops.SKIP, ops.NONE):
            if action in edge.actions and action in allowed:
                return action
        return None

    def preference(edge: Edge, action: str) -> float:
        return 1.0 / max(magnitudes.get(edge.id, floor), 1e-12)

    counts = np.linspace(0, len(ranked) // 2, max(num_candidates, 1)).round().astype(int)
    plans = []
    for k in dict.fromkeys(counts.tolist()):
        actions = {e.id: off(e) for e in ranked[:k] if off(e) is not None}
        plan = repair(graph, TransformPlan(graph.name, graph.fingerprint(), actions, space))
        plans.append(fit_to_budget(graph, plan, budget, preference=preference))
    plan, scored = choose(environment, graph, plans, budget=budget, space=space)
    return BaselineResult(plan, scored, len(scored))


def tuner_search(
    environment: Environment,
    graph: ArchGraph,
    *,
    oracle: str = "bayesian",
    evaluations: int,
    budget: Budget | None = None,
    space: str = "nat++",
    num_candidates: int = 10,
    seed: int = 0,
    directory: str | os.PathLike | None = None,
    verbose: int = 0,
) -> BaselineResult:
    """A keras-tuner oracle over the per-edge actions, each trial scored by the supernet.

    The search space has one `Choice` per transformable edge (its legal
    actions in `space`, keep first). A trial's plan is repaired and fitted
    to the budget, then rewarded on one held-out batch: no model is trained
    per trial, the supernet's shared weights stand in for it. keras-tuner
    keeps the trials in `directory` (`<directory>/<oracle>`), so a stopped
    search resumes where it was; without a directory they live in a
    temporary one.

    Args:
      environment: scores plans.
      graph: the input architecture.
      oracle: "random" (`keras_tuner.oracles.RandomSearchOracle`) or
        "bayesian" (`BayesianOptimizationOracle`, a Gaussian process over the
        one-hot actions).
      evaluations: trials (single-batch rewards).
      budget: every plan meets it (default: Budget()).
      space: the action space.
      num_candidates: the best trials' plans scored again at the end.
      seed: the oracle's seed.
      directory: keras-tuner's project directory (resumable).
      verbose: 1 shows a progress bar.

    Returns:
      The BaselineResult.

    Example:
      >>> result = tuner_search(env, graph, oracle="bayesian", evaluations=200, directory="runs/kt")
    """
    import keras_tuner  # a heavy import (TensorBoard, SciPy): only when a tuner is asked for

    budget = budget or Budget()
    allowed = ops.ACTION_SPACES[ops.check_space(space, where="tuner_search")]
    choices = {}
    for edge in graph.transformable_edges():
        legal = [a for a in allowed if a in edge.actions]
        if len(legal) > 1:
            choices[f"edge_{len(choices):04d}"] = (edge.id, sorted(legal, key=lambda a: a != ops.KEEP))
    objective = keras_tuner.Objective("reward", direction="max")
    if oracle == "random":
        kt_oracle = keras_tuner.oracles.RandomSearchOracle(objective, max_trials=evaluations, seed=seed)
    elif oracle == "bayesian":
        kt_oracle = keras_tuner.oracles.BayesianOptimizationOracle(
            objective,
            max_trials=evaluations,
            # keras-tuner's default (3 per dimension) would leave no trial to the model.
            num_initial_points=max(2, min(3 * len(choices), evaluations // 3)),
            seed=seed,
        )
    else:
        raise ConfigError(f"tuner_search: oracle must be 'random' or 'bayesian', got {oracle!r}.")

    def plan_of(values: Mapping[str, Any]) -> TransformPlan:
        actions = {
            choices[name][0]: values[name] for name in choices if values.get(name, ops.KEEP) != ops.KEEP
        }
        plan = repair(graph, TransformPlan(graph.name, graph.fingerprint(), actions, space))
        return fit_to_budget(graph, plan, budget)

    tuner = _plan_tuner(
        kt_oracle,
        choices=choices,
        reward=lambda values: float(environment.rewards(graph, [plan_of(values)])[0]),
        progbar=keras.utils.Progbar(evaluations, stateful_metrics=["best"]) if verbose else None,
        directory=os.fspath(directory)
        if directory is not None
        else tempfile.mkdtemp(prefix="nat_keras_tuner_"),
        project_name=oracle,
    )
    tuner.search(verbose=0)
    trials = [t for t in tuner.oracle.trials.values() if t.score is not None]
    rewarded: dict[TransformPlan, float] = {}
    for trial in trials:
        plan = plan_of(trial.hyperparameters.values)
        rewarded[plan] = max(float(trial.score), rewarded.get(plan, -math.inf))
    return _finish(environment, graph, rewarded, budget, space, num_candidates, len(trials))


def _plan_tuner_class() -> type:
    import keras_tuner

    class PlanTuner(keras_tuner.engine.base_tuner.BaseTuner):
        """A keras-tuner tuner whose trial scores a plan instead of training a model."""

        def __init__(self, oracle, *, choices, reward, progbar, directory, project_name):
            self._choices, self._reward, self._progbar = choices, reward, progbar
            super().__init__(
                oracle, hypermodel=None, directory=directory, project_name=project_name, overwrite=False
            )
            # The whole space up front, so even the first trial draws every edge's action.
            space = keras_tuner.HyperParameters()
            for name, (_, legal) in choices.items():
                space.Choice(name, legal, default=ops.KEEP)
            self.oracle.update_space(space)

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            values = {
                name: hp.Choice(name, legal, default=ops.KEEP) for name, (_, legal) in self._choices.items()
            }
            return {"reward": self._reward(values)}

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            if self._progbar is not None:
                done = [t.score for t in self.oracle.trials.values() if t.score is not None]
                self._progbar.update(len(done), [("best", max(done, default=0.0))])

    return PlanTuner


def _plan_tuner(oracle: Any, **kwargs: Any) -> Any:
    """A PlanTuner; the class is made on first use, as keras-tuner is imported only then."""
    return _plan_tuner_class()(oracle, **kwargs)


def _finish(
    environment: Environment,
    graph: ArchGraph,
    rewarded: Mapping[TransformPlan, float],
    budget: Budget,
    space: str,
    num_candidates: int,
    evaluations: int,
) -> BaselineResult:
    """The final choice, as NAT's: the `num_candidates` best by reward, scored again with the source."""
    best = sorted(rewarded, key=lambda p: -rewarded[p])[:num_candidates]
    plan, scored = choose(environment, graph, best, budget=budget, space=space)
    return BaselineResult(plan, scored, evaluations + len(scored))


def run_method(
    method: str,
    environment: Environment,
    graph: ArchGraph,
    *,
    config: SearchConfig,
    magnitudes: Mapping[str, float] | None = None,
    budget: Budget | None = None,
    space: str = "nat++",
    num_candidates: int = 10,
    directory: str | os.PathLike | None = None,
    verbose: int = 0,
) -> BaselineResult:
    """Train the environment's weights as NAT's search would, then run baseline `method`.

    The supernet gets the same `config.epochs * config.weight_steps` weight
    steps NAT's search gives it (all before the search, since no policy
    interleaves), and the searches the same `evaluations_of(config)` rewards.

    Args:
      method: one of `METHODS` other than "nat".
      environment: a SupernetEnvironment.
      graph: the input architecture.
      config: NAT's SearchConfig whose budget the baseline matches (its seed seeds it).
      magnitudes: edge magnitudes, for "large_edge"; None measures them on the
        environment's supernet once its weights are trained (its keep-all network).
      budget: the cost budget (default: Budget()).
      space: the action space.
      num_candidates: plans scored at the end.
      directory: keras-tuner's project directory, for the tuners.
      verbose: 1 shows progress bars.

    Returns:
      The BaselineResult.

    Example:
      >>> result = run_method("random", env, graph, config=SearchConfig(epochs=10))
    """
    if config.weight_steps:
        environment.train_weights(config.epochs * config.weight_steps, verbose=verbose)
    evaluations = evaluations_of(config)
    if method == "random":
        return random_search(
            environment, graph, evaluations=evaluations, budget=budget, space=space,
            num_candidates=num_candidates, chunk=config.reinforce.num_samples, seed=config.seed,
            verbose=verbose,
        )  # fmt: skip
    if method == "large_edge":
        if magnitudes is None:
            magnitudes = _trained_magnitudes(environment, graph, space)
        return large_edge(
            environment, graph, magnitudes, budget=budget, space=space, num_candidates=num_candidates
        )
    if method in ("tuner_random", "tuner_bayesian"):
        return tuner_search(
            environment, graph, oracle=method.removeprefix("tuner_"), evaluations=evaluations,
            budget=budget, space=space, num_candidates=num_candidates, seed=config.seed,
            directory=directory, verbose=verbose,
        )  # fmt: skip
    raise ConfigError(f"Unknown search method {method!r}; choose one of {', '.join(METHODS)}.")


def _trained_magnitudes(environment: Environment, graph: ArchGraph, space: str) -> dict[str, float]:
    """`edge_magnitudes` of the supernet's keep-all network: the weights NAT's supernet trained."""
    supernet = getattr(environment, "supernet", None)
    if supernet is None:
        raise ConfigError(
            f"run_method('large_edge'): {type(environment).__name__} has no supernet to measure; "
            "pass magnitudes (see edge_magnitudes)."
        )
    keep = supernet.arch_of(graph, TransformPlan.keep_all(graph, space=space))
    return edge_magnitudes(supernet.extract(keep), graph)


__all__ = [
    "METHODS",
    "BaselineResult",
    "edge_magnitudes",
    "evaluations_of",
    "large_edge",
    "random_search",
    "run_method",
    "tuner_search",
]
