"""`nat_keras.transform`: NAT on a user's Keras model, end to end.

Without data, the default policy shipped in the package decodes a plan
greedily. With data, the model's supernet is built from its weights (inside
the given `tf.distribute` strategy), supernet weights and policy are trained
alternately (40% / 60% of the data) with the model's own objective (its
compiled loss, else the one its output activation implies: see
`nat_keras.objective`), `num_candidates` plans are sampled and
the best by supernet accuracy on held-out policy data is kept, and the model
is rebuilt: kept layers (nested ones too) carry the source weights, new
layers the supernet's.
Its BN statistics are then recalibrated on training images (after the
optional fine-tuning), since ops upstream of kept BNs may have changed; a
kept source architecture that was not fine-tuned is returned as it was.
Every returned plan meets the cost budget.

Example:
  >>> new_model = nat_keras.transform(model)                      # default policy
  >>> new_model = nat_keras.transform(model, data=splits, fine_tune_epochs=1)
  >>> print(new_model.nat_report)
"""

from __future__ import annotations

import os
from typing import Any

import keras
import tensorflow as tf

from nat_keras import compat
from nat_keras.errors import ConfigError, NatKerasError, UnsupportedModelError
from nat_keras.graph import cost
from nat_keras.graph.arch_graph import ArchGraph
from nat_keras.graph.costs import Budget, Cost, minimum_cost
from nat_keras.graph.encode import encode
from nat_keras.objective import Objective, objective_of
from nat_keras.plan import TransformPlan, plan_cost
from nat_keras.rebuild.apply import apply_plan
from nat_keras.report import TransformReport
from nat_keras.supernet.batchnorm import recalibrate


def transform(
    model: keras.Model,
    *,
    data: Any = None,
    policy: Any = None,
    space: str | None = None,
    budget: Budget | None = None,
    strategy: tf.distribute.Strategy | None = None,
    num_candidates: int = 10,
    greedy: bool = False,
    method: str = "nat",
    seed: int | None = None,
    search_config: Any = None,
    supernet_config: Any = None,
    fine_tune_epochs: int = 0,
    directory: str | os.PathLike | None = None,
    verbose: int = 1,
) -> keras.Model:
    """Transform `model` with NAT; returns a new model (the input is untouched).

    Args:
      model: a Keras 3 functional or Sequential model.
      data: None (use the policy as it is), a `nat_keras.data.NatSplits`, or
        a tf.data.Dataset of (inputs, labels) training batches (split 40% /
        60% per example by `nat_keras.data.split`, by content, so a
        reshuffling dataset never mixes the parts). With data, the model must
        be a classifier with one output (any number of inputs: `inputs` then
        has the structure the model takes); labels may be class ids or
        one-hot. It is trained with its compiled loss if it is compiled,
        else with the loss its output activation implies (softmax: categorical
        crossentropy on probabilities, sigmoid: binary, otherwise logits).
      policy: a `nat_keras.policy.Policy`; default: the shipped default policy.
      space: "nat" (keep / skip / none) or "nat++" (also cheaper ops);
        default: the policy's space ("nat++" for the default policy).
      budget: cost budget relative to `model` (default: Budget()).
      strategy: tf.distribute strategy for the supernet and fine-tuning.
      num_candidates: plans sampled and scored at the end (with data); the
        source itself is scored too and kept when no plan beats it.
      greedy: decode the policy's most likely plan instead of sampling
        `num_candidates` (with data it still competes with the source).
      method: how the plan is chosen (with data): "nat" (the policy, learned
        by REINFORCE), or a baseline over the same plan space, budget,
        supernet and number of supernet evaluations (`nat_keras.search.
        baselines`): "random" (random search), "large_edge" (keep the edges
        with the largest weights), "tuner_random" / "tuner_bayesian"
        (keras-tuner's RandomSearch / BayesianOptimization oracles). The
        baselines ignore `policy` and `greedy`.
      seed: seeds the data split, the search and the candidates' sampling;
        None: `search_config.seed` when a config is passed, else 0. A seed
        that contradicts the passed config's raises ConfigError.
      search_config: a `nat_keras.SearchConfig` (with data); None means a
        short search, `SearchConfig(epochs=10, weight_steps=50,
        policy_steps=20, seed=seed)` (the paper's is 100 epochs of 100 + 100
        steps).
      supernet_config: a `nat_keras.SupernetConfig` for the supernet's weight
        steps; None means its defaults, the paper's (SGD 0.01, momentum 0.9,
        weight decay 3e-4, gradient clip 5).
      fine_tune_epochs: epochs of `fit` on `data` after the rebuild, compiled
        with the source's loss and metrics and a fresh optimizer of its
        optimizer's class and config (if the source is compiled; else SGD
        with momentum, the inferred loss and accuracy).
      directory: checkpoints and TensorBoard logs; a rerun resumes there.
      verbose: 0 silent, 1 progress bars and a summary.

    Returns:
      The transformed keras.Model, with the TransformReport as `.nat_report`.
    """
    from nat_keras.policy import Policy, default_policy
    from nat_keras.search.baselines import METHODS

    budget = budget or Budget()
    seed = _resolve_seed(model.name, seed, search_config)
    if method not in METHODS:
        raise ConfigError(
            f"transform({model.name!r}): unknown method {method!r}; choose one of {', '.join(METHODS)}."
        )
    if method != "nat" and data is None:
        raise ConfigError(
            f"transform({model.name!r}, method={method!r}): the baselines search with the supernet, so they "
            "need data=...; without data only the policy (method='nat') can decode a plan."
        )
    strategy = strategy or tf.distribute.get_strategy()
    graph = encode(model)
    if policy is None:
        policy = default_policy(space=space or "nat++")
    elif not isinstance(policy, Policy):
        raise TypeError(f"policy must be a nat_keras.policy.Policy, got {type(policy).__name__}.")
    elif space is not None and space != policy.space:
        raise NatKerasError(
            f"transform({model.name!r}): the policy decides in the {policy.space!r} action space but "
            f"space={space!r}; leave space unset, or pass policy.with_space({space!r})."
        )
    space = policy.space
    before = cost(graph)
    # Before any training: a budget below what the protected layers alone cost is refused now.
    budget.check_reachable(minimum_cost(graph, space), before, what=f"transform({model.name!r})")
    if not any(e.transformable for e in graph.edges):
        plan = TransformPlan.keep_all(graph, space=space)
        with strategy.scope():
            result = apply_plan(model, plan, graph=graph)
        message = (
            f"Model {model.name!r} has nothing NAT can transform (every edge is protected: stem, head, "
            "shared or opaque layers); returned an equal copy."
        )
        return _attach(
            result, TransformReport(model.name, plan, graph, before, before, message=message), verbose
        )
    if data is None:
        # Without data there is nothing to score candidates on: decode greedily.
        plan = policy.sample(graph, greedy=True, budget=budget)
        with strategy.scope():
            result = apply_plan(model, plan, graph=graph, check_budget=budget)
        after = plan_cost(graph, plan)
        how = "the policy's greedy plan"
        if not plan.actions:
            how += " (it keeps every edge: pass data=... to search on this model and its data)"
        message = _summary(model.name, plan, graph, before, after, how)
        return _attach(
            result, TransformReport(model.name, plan, graph, before, after, message=message), verbose
        )
    options = {
        "space": space,
        "budget": budget,
        "strategy": strategy,
        "num_candidates": num_candidates,
        "greedy": greedy,
        "method": method,
        "seed": seed,
        "search_config": search_config,
        "supernet_config": supernet_config,
        "fine_tune_epochs": fine_tune_epochs,
        "directory": None if directory is None else os.fspath(directory),
        "verbose": verbose,
    }
    return _transform_with_data(model, graph, data, policy, **options)


def _transform_with_data(
    model: keras.Model, graph: ArchGraph, data: Any, policy: Any, *, space: str, budget: Budget,
    strategy: tf.distribute.Strategy, num_candidates: int, greedy: bool, method: str, seed: int,
    search_config: Any, supernet_config: Any, fine_tune_epochs: int, directory: str | None, verbose: int,
) -> keras.Model:  # fmt: skip
    """The data path of `transform` (see its docstring)."""
    from nat_keras.search import NATSearch, SearchConfig, SupernetEnvironment, derive, input_plan
    from nat_keras.search.baselines import run_method
    from nat_keras.supernet import ModelSupernet
    from nat_keras.supernet.trainer import SupernetTrainer

    outputs = compat.model_outputs(model)
    if len(outputs) != 1:
        raise UnsupportedModelError(
            f"Model {model.name!r} has {len(outputs)} outputs; transform(data=...) trains the supernet "
            "with the model's classification loss and scores plans by the top-1 accuracy of one "
            "classifier output. Call transform(model) without data, or search on a model with that "
            "single output."
        )
    objective = objective_of(model)  # a model that is no classifier fails here, before any training
    weights_data, reward_data, train_data = _split(data, seed=seed)
    with strategy.scope():
        supernet = ModelSupernet(model, graph=graph, space=space, budget=budget)
    supernet.objective = objective
    trainer = SupernetTrainer(
        supernet,
        config=supernet_config,
        strategy=strategy,
        directory=None if directory is None else os.path.join(directory, "supernet"),
        objective=objective,
    )
    environment = SupernetEnvironment(
        supernet, weights_data=weights_data, reward_data=reward_data, trainer=trainer
    )
    search_config = search_config or SearchConfig(epochs=10, weight_steps=50, policy_steps=20, seed=seed)
    search_directory = None if directory is None else os.path.join(directory, "search")
    if method == "nat":
        search = NATSearch(environment, policy, config=search_config, directory=search_directory)
        history = search.run(verbose=verbose)
        plan, candidates = derive(
            environment, policy, graph, num_candidates=num_candidates, greedy=greedy, seed=seed, budget=budget
        )
        evaluations = history.evaluations + len(candidates)
        names = ("reward", "baseline", "entropy", "cost_ratio")
        per_epoch = {name: tuple(getattr(history, name)) for name in names}
        how = "the policy's greedy plan" if greedy else f"the best of {num_candidates} searched plans"
    else:
        chosen = run_method(
            method, environment, graph, config=search_config, budget=budget, space=space,
            num_candidates=num_candidates, directory=search_directory, verbose=verbose,
        )  # fmt: skip
        plan, candidates, evaluations, per_epoch = chosen.plan, chosen.candidates, chosen.evaluations, {}
        how = f"the best plan of the {method!r} baseline"
    keep = TransformPlan.keep_all(graph, space=space)
    accuracy_before = dict(candidates).get(keep)
    if accuracy_before is None:
        accuracy_before = environment.score(graph, keep)
    arch = supernet.plan_to_arch(plan)
    with strategy.scope():
        result = apply_plan(model, plan, graph=graph, check_budget=budget)
        inherit_new_layers(result, supernet.extract(arch), model)
    if fine_tune_epochs:
        with strategy.scope():
            _compile_like(result, model, objective)
        result.fit(train_data, epochs=fine_tune_epochs, verbose=verbose, shuffle=False)  # data is shuffled
    # A kept architecture that was not fine-tuned is the source itself: leave
    # its statistics alone. Otherwise ops upstream of kept BNs, or the
    # weights, changed.
    if environment.calibration is not None and (plan.actions or fine_tune_epochs):
        with strategy.scope():
            recalibrate(result, environment.calibration)
    before, after = cost(graph), plan_cost(graph, plan)
    if not plan.actions:
        how += " (no plan scored above the source on held-out data, so its architecture is kept)"
    elif plan == input_plan(graph, budget, space=space):  # a compact budget's fitted source
        how += (
            " (no searched plan scored above the source made to fit the budget by cutting its costliest "
            "edges first, so that plan is returned)"
        )
    message = _summary(model.name, plan, graph, before, after, how)
    report = TransformReport(
        model.name,
        plan,
        graph,
        before,
        after,
        candidates=tuple(candidates),
        accuracy_before=accuracy_before,
        accuracy_after=dict(candidates).get(plan),
        rewards=per_epoch.get("reward", ()),
        history=per_epoch,
        method=method,
        evaluations=evaluations,
        message=message,
    )
    return _attach(result, report, verbose)


def _resolve_seed(name: str, seed: int | None, search_config: Any) -> int:
    """`seed`, else the config's; one seed rules the run, so a contradiction is an error."""
    config_seed = None if search_config is None else search_config.seed
    if seed is not None and config_seed is not None and seed != config_seed:
        raise ConfigError(
            f"transform({name!r}): seed={seed} but search_config.seed={config_seed}; pass one of "
            "them, or the same value to both."
        )
    for value in (seed, config_seed):
        if value is not None:
            return value
    return 0


def _split(data: Any, *, seed: int) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset]:
    """(supernet-weight data, reward data, fine-tuning data) from `data`."""
    from nat_keras.data import NatSplits, split

    if isinstance(data, tf.data.Dataset):
        # By example content, not batch position: a dataset that reshuffles
        # each epoch would otherwise move examples between the two parts.
        data = split(data, seed=seed)
    if isinstance(data, NatSplits):
        return data.weights, data.policy, data.train
    raise TypeError(
        "data must be a nat_keras.data.NatSplits or a tf.data.Dataset of (images, labels) batches, "
        f"got {type(data).__name__}."
    )


def _compile_like(result: keras.Model, source: keras.Model, objective: Objective) -> None:
    """Compile `result` for fine-tuning as the source is compiled (or with `objective`).

    Keras optimizers bind to the variables they first update, so the
    source's optimizer is never reused: a fresh one of its class and config.
    """
    if source.compiled and getattr(source, "optimizer", None) is not None:
        optimizer = type(source.optimizer).from_config(source.optimizer.get_config())
    else:
        optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    metrics = _compiled_metrics(source) if source.compiled else None
    result.compile(optimizer=optimizer, loss=objective.keras_loss, metrics=metrics or ["accuracy"])


def _compiled_metrics(model: keras.Model) -> Any:
    """The metrics `model` was compiled with, for its one output (None if unknown)."""
    config = model.get_compile_config().get("metrics")
    if not config:
        return None
    try:
        metrics = keras.saving.deserialize_keras_object(config)
    except (TypeError, ValueError):  # e.g. a custom metric that is not registered
        return None
    # Per-output forms of a single-output model: the rebuilt output may be named otherwise.
    if isinstance(metrics, dict) and len(metrics) == 1:
        metrics = next(iter(metrics.values()))
    if isinstance(metrics, (list, tuple)) and len(metrics) == 1 and isinstance(metrics[0], (list, tuple)):
        metrics = metrics[0]
    return metrics


def inherit_new_layers(result: keras.Model, extracted: keras.Model, source: keras.Model) -> None:
    """Layers the source lacks (replacements, projections) take the supernet's weights.

    The rebuilt model is flat, so a layer of a nested block of the source
    sits at its top level: compare with every layer of the source, nested
    ones included, or kept nested layers would lose the user's weights.

    Example:
      >>> rebuilt = nat_keras.apply_plan(model, plan)
      >>> inherit_new_layers(rebuilt, supernet.extract(supernet.plan_to_arch(plan)), model)
    """
    source_names = {layer.name for layer in compat.all_layers(source)}
    for layer in result.layers:
        if layer.name not in source_names and layer.weights:
            layer.set_weights(extracted.get_layer(layer.name).get_weights())


def _summary(name: str, plan: TransformPlan, graph: ArchGraph, before: Cost, after: Cost, how: str) -> str:
    ratio = after.ratio(before)
    return (
        f"nat_keras.transform({name!r}) with {how}: {len(plan.actions)} of "
        f"{len(graph.transformable_edges())} transformable edges change; params {ratio['params']:.1%}, "
        f"MACs {ratio['macs']:.1%} of the source."
    )


def _attach(model: keras.Model, report: TransformReport, verbose: int) -> keras.Model:
    # A plain attribute: Keras tracks layers and variables, not dataclasses.
    model.nat_report = report
    if verbose:
        print(report.message)
    return model
