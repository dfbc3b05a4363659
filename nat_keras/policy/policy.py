"""The NAT policy: for every edge of an ArchGraph, a distribution over actions.

ArchGraph in, TransformPlan out; the GraphTensor and the GNN stay inside.
Illegal actions get probability zero through the edge masks (and the action
space: "nat" allows keep / skip / none, "nat++" also the cheaper ops). Masks
are local; two global rules are enforced after sampling:

- every node keeps an input (`plan.repair` restores the first edge of a node
  left without one), and
- the cost budget: a plan over budget is resampled (up to `max_tries`), then
  made cheaper edge by edge (`plan.fit_to_budget`, moves this policy finds
  likely first). Each legal local action costs no more than what it
  replaces, so the default Budget always holds; compact budgets
  (`Budget(macs_ratio=0.5)`) are met by the shrinking, never by endless
  resampling.

The keep prior. NAT transforms trained models, and a plan that changes most
edges of one scores chance (on digits, ResNet-20 plans changing half of
the edges scored 0.11-0.19 against the source's 0.99 in the supernet), so
uniform initial distributions would give every sampled plan the same
reward and no signal. `keep_prior` adds a fixed bias to each edge's "keep"
logit so that, where the network's logits are equal, keep has that
probability and the rest is spread over the other legal actions: a fresh
policy proposes a few changes per plan and decodes greedily to the input
itself. The network learns on top of it; `keep_prior=None` is the paper's
plain softmax.

Seeds. `Policy(seed=...)` seeds only the policy's own initial weights: it
never reseeds Python, NumPy or TensorFlow globally, so creating a policy
leaves the user's random streams where they were. `sample(seed=...)` uses a
local NumPy generator too.

Example:
  >>> policy = Policy(space="nat")
  >>> plan = policy.sample(graph, seed=0)            # or greedy=True
  >>> policy.log_prob(graph, plan), policy.entropy(graph)
  >>> nat_policy = Policy(space="nat++").with_space("nat")  # a copy; the original is unchanged
  >>> policy.save("policy_dir"); Policy.load("policy_dir")
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras import ops
from nat_keras.errors import NatKerasError
from nat_keras.graph import cost
from nat_keras.graph.arch_graph import ArchGraph, Edge, Node
from nat_keras.graph.costs import Budget
from nat_keras.plan import TransformPlan, fit_to_budget, plan_cost, repair, resolve
from nat_keras.policy.graph_tensor import to_graph_tensor_batch
from nat_keras.policy.network import MASKED_LOGIT, PolicyNetwork

POLICY_FORMAT_VERSION = 1
CONFIG_FILE = "policy.json"
WEIGHTS_FILE = "policy.weights.h5"


class Policy:
    """A GNN policy over NAT's actions.

    Args:
      space: "nat" or "nat++".
      hidden: width of the GNN's node and edge states.
      rounds: rounds of message passing.
      seed: seeds the GNN's initial weights (equal seeds, equal weights), and
        nothing else: the global Python / NumPy / TensorFlow seeds are left
        alone. None: fresh weights from OS entropy.
      keep_prior: probability of "keep" on each edge when the network's
        logits are equal (see the module docstring), in (0, 1); None for no
        prior.

    Raises:
      ActionSpaceError: `space` is not an action space (a ValueError).
      NatKerasError: `keep_prior` is outside (0, 1).

    Example:
      >>> policy = Policy(space="nat", seed=0)
      >>> plan = policy.sample(nat_keras.encode(model), greedy=True)
    """

    def __init__(
        self,
        *,
        space: str = "nat++",
        hidden: int = 64,
        rounds: int = 2,
        seed: int | None = 0,
        keep_prior: float | None = 0.9,
    ):
        ops.check_space(space, where="Policy")
        if keep_prior is not None and not 0.0 < keep_prior < 1.0:
            raise NatKerasError(f"keep_prior must be in (0, 1) or None, got {keep_prior!r}.")
        self.space = space
        self.keep_prior = keep_prior
        self.hidden = hidden
        self.rounds = rounds
        # Keras draws a default seed from Python's global `random` for every
        # unseeded initializer it creates: restore that stream, then draw the
        # weights again from seeds of our own.
        with _global_python_random_kept():
            self.network = PolicyNetwork(hidden=hidden, rounds=rounds, name="nat_policy")
            self.network(graph=to_graph_tensor_batch([_tiny_graph()]))  # build the weights
        _draw_initial_weights(self.network, seed)
        self._space_mask = _space_mask(space)
        # One traced graph per GraphTensor shape family; eager Keras calls
        # would spend most of a search step in Python overhead.
        self._forward = tf.function(lambda gt: self.network(graph=gt), reduce_retracing=True)

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return self.network.trainable_variables

    # -- distributions ------------------------------------------------------

    def logits(self, graphs: ArchGraph | Sequence[ArchGraph]) -> tf.Tensor:
        """Masked logits, one row per edge (graphs concatenated in order)."""
        graphs = (graphs,) if isinstance(graphs, ArchGraph) else tuple(graphs)
        logits = self._forward(_graph_tensor(graphs))
        logits = tf.where(self._space_mask[tf.newaxis, :], logits, MASKED_LOGIT)
        if self.keep_prior is None:
            return logits
        # log(p / (1 - p) * (K - 1)) on keep gives it probability p among K
        # legal actions of equal logits; an edge with one legal action gets 0.
        legal = tf.reduce_sum(tf.cast(logits > MASKED_LOGIT / 2, tf.float32), axis=-1, keepdims=True)
        odds = self.keep_prior / (1.0 - self.keep_prior)
        bias = tf.where(legal > 1, tf.math.log(odds * tf.maximum(legal - 1.0, 1.0)), 0.0)
        return logits + bias * tf.one_hot(_ACTION_INDEX[ops.KEEP], len(ops.ACTIONS))

    def probabilities(self, graph: ArchGraph) -> np.ndarray:
        """[num_edges, len(ops.ACTIONS)] action probabilities (0 where illegal)."""
        return tf.nn.softmax(self.logits(graph)).numpy()

    def log_prob(self, graph: ArchGraph, plan: TransformPlan) -> tf.Tensor:
        """log pi(plan | graph): the sum of per-edge log-probabilities."""
        return self.log_probs([graph], [[plan]])[0][0]

    def log_probs(
        self, graphs: Sequence[ArchGraph], plans: Sequence[Sequence[TransformPlan]]
    ) -> list[list[tf.Tensor]]:
        """log pi for plans[i][j] of graphs[i], from one GNN pass over all graphs."""
        log_softmax = tf.nn.log_softmax(self.logits(graphs))
        results, row = [], 0
        for graph, graph_plans in zip(graphs, plans):
            rows = log_softmax[row : row + len(graph.edges)]
            row += len(graph.edges)
            # [plans, edges] action indices -> one gather for all plans of a graph.
            chosen = tf.gather(rows, _action_indices(graph, graph_plans), axis=1, batch_dims=1)
            totals = tf.reduce_sum(chosen, axis=0)
            results.append([totals[j] for j in range(len(graph_plans))])
        return results

    def entropy(self, graph: ArchGraph | Sequence[ArchGraph]) -> tf.Tensor:
        """Entropy of the factorised distribution (sum over edges; mean over graphs)."""
        graphs = [graph] if isinstance(graph, ArchGraph) else list(graph)
        logits = self.logits(graphs)
        probs, log_probs = tf.nn.softmax(logits), tf.nn.log_softmax(logits)
        per_edge = -tf.reduce_sum(tf.where(probs > 0, probs * log_probs, 0.0), axis=-1)
        return tf.reduce_sum(per_edge) / len(graphs)

    # -- decoding -----------------------------------------------------------

    def sample(
        self,
        graph: ArchGraph,
        *,
        seed: Any = None,
        greedy: bool = False,
        budget: Budget | None = None,
        max_tries: int = 10,
    ) -> TransformPlan:
        """A plan for `graph` that is legal and within `budget` (default Budget()).

        Args:
          graph: the input architecture.
          seed: seeds sampling (equal seeds give equal plans).
          greedy: take each edge's most likely action instead of sampling.
          budget: the cost budget relative to `graph` (default: Budget()).
          max_tries: samples drawn while they are over budget; the last one is
            then made cheaper, edge by edge, preferring the moves this policy
            finds likely (`nat_keras.plan.fit_to_budget`): a compact budget
            such as `Budget(macs_ratio=0.5)` is met without endless resampling.

        Raises:
          BudgetError: no plan in the action space can meet `budget` (even the
            cheapest action on every edge costs more).
        """
        return self.sample_many(graph, 1, seed=seed, greedy=greedy, budget=budget, max_tries=max_tries)[0]

    def sample_many(
        self,
        graph: ArchGraph,
        count: int,
        *,
        seed: Any = None,
        greedy: bool = False,
        budget: Budget | None = None,
        max_tries: int = 10,
    ) -> list[TransformPlan]:
        """`count` plans from one GNN pass (see `sample`)."""
        return list(itertools.islice(self._draws(graph, seed, greedy, budget, max_tries), count))

    def sample_distinct(
        self,
        graph: ArchGraph,
        count: int,
        *,
        seed: Any = None,
        budget: Budget | None = None,
        max_draws: int | None = None,
    ) -> list[TransformPlan]:
        """Up to `count` different plans, drawn (from one GNN pass) until that many differ.

        A policy that has learned to keep most edges draws the same plan over
        and over (for some cells all 10 samples were one plan). `derive` scores what this
        returns, so its final choice is among `count` different plans, as the
        baselines' is (`loop.choose` scores each plan once).

        Args:
          graph: the architecture to transform.
          count: how many different plans are wanted.
          seed: seeds the draws.
          budget: every plan meets it (see `sample`).
          max_draws: draws at most (default `10 * count`): a policy certain of
            its plan returns fewer than `count`.

        Returns:
          The different plans, in the order they were first drawn.

        Example:
          >>> plans = policy.sample_distinct(graph, 10, seed=0)
          >>> len(set(plans)) == len(plans) <= 10
          True
        """
        distinct: dict[TransformPlan, None] = {}
        draws = self._draws(graph, seed, False, budget, 10)
        for plan in itertools.islice(draws, 10 * count if max_draws is None else max_draws):
            distinct[plan] = None
            if len(distinct) >= count:
                break
        return list(distinct)

    def _draws(
        self, graph: ArchGraph, seed: Any, greedy: bool, budget: Budget | None, max_tries: int
    ) -> Iterator[TransformPlan]:
        """Plans within `budget` (default Budget()), one after another, from one GNN pass."""
        probs = self.probabilities(graph)
        rng = np.random.default_rng(seed)
        budget = budget or Budget()
        reference = cost(graph)
        while True:
            yield self._decode_within(graph, probs, rng, greedy, budget, reference, max_tries)

    def _decode_within(self, graph, probs, rng, greedy, budget, reference, max_tries) -> TransformPlan:
        for _ in range(1 if greedy else max_tries):
            plan = self._decode(graph, probs, rng, greedy)
            if budget.allows(plan_cost(graph, plan), reference):
                return plan
        # Over budget (a compact target, mostly): shrink the last plan, preferring the moves
        # this policy finds likely, instead of resampling without end.
        index = {edge.id: i for i, edge in enumerate(graph.edges)}
        action_index = {a: i for i, a in enumerate(ops.ACTIONS)}

        def preference(edge: Any, action: str) -> float:
            return float(probs[index[edge.id]][action_index[action]]) + 1e-6  # all moves stay possible

        return fit_to_budget(graph, plan, budget, preference=preference)

    def _decode(
        self, graph: ArchGraph, probs: np.ndarray, rng: np.random.Generator, greedy: bool
    ) -> TransformPlan:
        allowed = set(ops.ACTION_SPACES[self.space])
        actions = {}
        for edge, p in zip(graph.edges, probs):
            # Belt and braces: only legal actions can be drawn, whatever the numbers say.
            legal = np.array([a in edge.actions and a in allowed for a in ops.ACTIONS])
            p = np.where(legal, np.nan_to_num(p, nan=0.0), 0.0)
            if p.sum() <= 0:
                actions[edge.id] = ops.KEEP
                continue
            index = int(np.argmax(p)) if greedy else int(rng.choice(len(p), p=p / p.sum()))
            actions[edge.id] = ops.ACTIONS[index]
        plan = repair(graph, TransformPlan(graph.name, graph.fingerprint(), actions, self.space))
        resolve(graph, plan)  # raises only on a bug: masks + repair make plans valid
        return plan

    def with_space(self, space: str) -> Policy:
        """A new policy with a copy of these weights, deciding in another action space.

        This policy is left as it was, and the copy's weights are its own
        (training one does not move the other).

        Args:
          space: "nat" (keep / skip / none) or "nat++" (also the cheaper ops).

        Raises:
          ActionSpaceError: `space` is not an action space.

        Example:
          >>> nat_policy = default_policy().with_space("nat")
        """
        ops.check_space(space, where="Policy.with_space")
        copy = Policy(space=space, hidden=self.hidden, rounds=self.rounds, seed=0, keep_prior=self.keep_prior)
        copy.network.set_weights(self.network.get_weights())  # numpy copies: nothing is shared
        return copy

    # -- persistence --------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return {
            "format_version": POLICY_FORMAT_VERSION,
            "space": self.space,
            "hidden": self.hidden,
            "rounds": self.rounds,
            "keep_prior": self.keep_prior,
        }

    def save(self, directory: str | os.PathLike) -> None:
        """Write policy.json and policy.weights.h5 into `directory`."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(self.get_config(), f, indent=2)
        self.network.save_weights(os.path.join(directory, WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Policy:
        """A policy saved by `save`."""
        directory = os.fspath(directory)
        config_path = os.path.join(directory, CONFIG_FILE)
        if not os.path.exists(config_path):
            raise NatKerasError(
                f"No {CONFIG_FILE} in {directory!r}: not a saved nat_keras policy (see Policy.save)."
            )
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        if config.get("format_version") != POLICY_FORMAT_VERSION:
            raise NatKerasError(
                f"Policy in {directory!r} has format {config.get('format_version')}; this nat_keras "
                f"reads {POLICY_FORMAT_VERSION}."
            )
        policy = cls(
            space=config["space"],
            hidden=config["hidden"],
            rounds=config["rounds"],
            seed=None,
            keep_prior=config.get("keep_prior"),  # policies saved before the prior had none
        )
        policy.network.load_weights(os.path.join(directory, WEIGHTS_FILE))
        return policy


@functools.lru_cache(maxsize=64)
def _graph_tensor(graphs: tuple[ArchGraph, ...]) -> Any:
    """GraphTensors of recent graphs: a search asks for the same ones each step."""
    return to_graph_tensor_batch(graphs)


_ACTION_INDEX = {a: i for i, a in enumerate(ops.ACTIONS)}


DEFAULT_POLICY_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "default_policy"
)


def default_policy(*, space: str = "nat++") -> Policy:
    """The policy shipped with nat_keras (trained by examples/train_policy.py).

    It was trained in the NAT++ action space; `space="nat"` masks it to keep /
    skip / none.

    Raises:
      NatKerasError: the package was installed without its policy weights.

    Example:
      >>> plan = default_policy().sample(nat_keras.encode(model), greedy=True)
    """
    if not os.path.exists(os.path.join(DEFAULT_POLICY_DIR, CONFIG_FILE)):
        raise NatKerasError(
            f"The default policy is missing from {DEFAULT_POLICY_DIR!r}; reinstall nat_keras, or train one "
            "with examples/train_policy.py and pass it as policy=Policy.load(...)."
        )
    policy = Policy.load(DEFAULT_POLICY_DIR)
    return policy if policy.space == space else policy.with_space(space)


def _space_mask(space: str) -> tf.Tensor:
    """[len(ops.ACTIONS)] bools: which actions `space` allows."""
    return tf.constant([a in ops.ACTION_SPACES[space] for a in ops.ACTIONS])


@contextlib.contextmanager
def _global_python_random_kept() -> Iterator[None]:
    """Whatever runs inside leaves the state of Python's global `random` as it found it."""
    state = random.getstate()
    try:
        yield
    finally:
        random.setstate(state)


def _leaf_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers under `layer` that hold weights themselves (models and Sequentials opened)."""
    children = getattr(layer, "layers", None)
    if children is None:
        return [layer]
    return [leaf for child in children for leaf in _leaf_layers(child)]


def _draw_initial_weights(network: keras.Model, seed: int | None) -> None:
    """Draws every weight of `network` again from its layer's initializer, seeded from `seed` only.

    Each weight gets its own seed from a local `np.random.SeedSequence`, so
    equal seeds give equal weights and no global random state is read or
    advanced (Keras initializers with an int seed are stateless). seed=None
    takes fresh OS entropy.
    """
    pairs = [(layer, variable) for layer in _leaf_layers(network) for variable in layer.weights]
    if len(pairs) != len(network.weights):
        raise NatKerasError(
            f"Policy: found {len(pairs)} of the {len(network.weights)} weights of {network.name!r} in its "
            "layers; _draw_initial_weights cannot seed them all (a bug in nat_keras.policy)."
        )
    seeds = np.random.SeedSequence(seed).generate_state(len(pairs))
    for (layer, variable), variable_seed in zip(pairs, seeds):
        initializer = getattr(layer, f"{variable.name}_initializer", None)
        if initializer is None:
            raise NatKerasError(
                f"Policy: no initializer for weight {variable.path!r} (looked for "
                f"{type(layer).__name__}.{variable.name}_initializer); cannot seed it (a bug in "
                "nat_keras.policy)."
            )
        config = initializer.get_config()
        if "seed" in config:  # constant initializers (zeros, ones) have none and need none
            initializer = type(initializer).from_config({**config, "seed": int(variable_seed)})
        variable.assign(initializer(tuple(variable.shape), dtype=variable.dtype))


def _action_indices(graph: ArchGraph, plans: Sequence[TransformPlan]) -> tf.Tensor:
    """[edges, plans] indices of each plan's action on each edge."""
    return tf.constant([[_ACTION_INDEX[p.action(e.id)] for p in plans] for e in graph.edges], dtype=tf.int32)


def _tiny_graph() -> ArchGraph:
    """The smallest ArchGraph, to build the GNN's weights."""
    nodes = (Node("in", (4, 4, 1), "input", "in"), Node("out", (4, 4, 1), "none", "out", is_output=True))
    edge = Edge("op", "in", "out", 0, "unit", "conv_3x3", input_shape=(4, 4, 1), output_shape=(4, 4, 1))
    return ArchGraph("tiny", nodes, (edge,), ("in",), ("out",))
