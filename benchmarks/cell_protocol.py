"""The paper's protocol on cells, as functions: searches, choices, retrained networks, tables.

`benchmarks/paper_protocol.py` runs it as an absl app (its docstring has the
protocol, the presets and the commands) and `benchmarks/quality.py` puts its
cell rows into the quality table. This module defines no flags, so both can
import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import nat_keras  # first: prepares the two Kerases (docs/design.md, section 5)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from nat_keras.cells import (
    PUBLISHED,
    TRANSFORMED,
    Genotype,
    build_network,
    fully_concat,
    genotype_actions,
)
from nat_keras.cells.genotype import loose_end_concat
from nat_keras.policy import Policy, ReinforceConfig
from nat_keras.search import (
    CHOOSE_VERSION,
    DERIVE_VERSION,
    NATSearch,
    SearchConfig,
    SupernetEnvironment,
    derive,
    input_plan,
)
from nat_keras.search.baselines import run_method
from nat_keras.train import Recipe

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from rows import (  # a sibling module, not a package
    RowCache,
    dry_run_counts,
    save_provenance,
    write_csv,
)

MAIN_INPUTS = ("DARTS", "ResBlock", "VGG", "Mobilenetv2", "ENAS")
ALL_INPUTS = MAIN_INPUTS + tuple(name for name in TRANSFORMED if name not in MAIN_INPUTS)
VARIANTS = ("original", "transformed")
# Baselines in the cell space (`nat_keras.search.baselines`), run on each input's
# cell graph with the search's trained supernet. LargeEdge measures each edge's
# op in every cell of the supernet's keep-all network (`edge_magnitudes`: a cell
# graph's edge names its layer in each copy of the cell).
# "fitted" is no search: the input cut down to the budget by `fit_to_budget`'s
# rule alone (`input_plan`), what every choice competes with; at equal cost it
# is the input itself.
BASELINES = ("fitted", "random", "large_edge", "tuner_bayesian")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of one run (a preset with the flags' overrides).

    Attributes:
      inputs: published input cells (keys of `cells.TRANSFORMED`), in run order.
      seeds: retraining seeds (`Recipe.seed`).
      space: NAT action space, "nat" (the paper) or "nat++".
      supernet_cells / supernet_channels: the CellSupernet's depth and C.
      search_epochs / weight_steps / policy_steps: the 40/60 alternation.
      policy_inputs / policy_samples: m input cells and n plans per policy step.
      policy_learning_rate / entropy_weight: REINFORCE settings (the paper's defaults).
      num_candidates: plans sampled by `derive` (the paper: 10).
      score_batches: policy-split batches `derive` scores candidates on.
      calibration_size: weight-split images recalibrating BN before each score.
      search_seed: seeds the policy, the sampled cells and `derive`.
      net_cells / net_channels: depth and C of the retrained networks.
      recipe: "cpu" or "gpu" (`Recipe.preset`); `epochs` overrides its epochs.
      epochs: retraining epochs.
      train_batches: batches per retraining epoch (0: the whole training split).
      test_batches: test batches scored (0: the whole test split).
      batch_size: batch size of every split.
      baselines: methods of `BASELINES` run on each input besides NAT, each
        with NAT's supernet, budget and number of supernet evaluations
        (`run_method`), and retrained like NAT's cells.
      anchor_prob: how often the search's supernet and policy train on a
        random plan of an input of its structure (`anchors_of`) instead of a
        random cell (`CellSupernet.anchor_prob`); 0 is the paper's search.
      macs_ratio: the budget of NAT's and the baselines' choices: 1 is equal
        cost (`Budget()`, the paper's), below 1 `Budget(macs_ratio=...)` of
        the cells' MACs (the cell graph: cells and their input preprocessing;
        the stem and classifier are not transformed). The search is the
        same for every budget (NAT's policy learns under `Budget()`, `derive`
        fits its plans to the target), so only the choices differ.
      search_macs_ratio: the budget NAT's policy learns under
        (`SearchConfig.budget`): 1 is `Budget()` (the paper's, and the
        default); below 1, `Budget(macs_ratio=...)` of each cell it samples,
        a search of its own.
      supernet_macs_ratio: below 1, half of the supernet's training cells
        are plans of the inputs within `Budget(macs_ratio=...)`
        (`CellSupernet(budget=...)`), so the plans a compact choice meets
        are trained, not only met when scored; 1 (the default): none. A
        search of its own.
      baseline_update: REINFORCE's baseline (`ReinforceConfig`): "standard"
        (the paper's moving average, the default) or "leave_one_out" (each
        plan against the other plans of its input in the same step; a
        search of its own, tables "-loo"; "authors": tables "-authors").
    """

    inputs: tuple[str, ...]
    seeds: tuple[int, ...]
    space: str
    supernet_cells: int
    supernet_channels: int
    search_epochs: int
    weight_steps: int
    policy_steps: int
    policy_inputs: int
    policy_samples: int
    policy_learning_rate: float
    entropy_weight: float
    num_candidates: int
    score_batches: int
    calibration_size: int
    search_seed: int
    net_cells: int
    net_channels: int
    recipe: str
    epochs: int
    train_batches: int
    test_batches: int
    batch_size: int
    baselines: tuple[str, ...] = ()
    anchor_prob: float = 0.0
    macs_ratio: float = 1.0
    search_macs_ratio: float = 1.0
    supernet_macs_ratio: float = 1.0
    baseline_update: str = "standard"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def search_key(self, structure: str) -> dict[str, Any]:
        """What determines a search (and so its supernet and policy)."""
        fields = [
            "space",
            "supernet_cells",
            "supernet_channels",
            "search_epochs",
            "weight_steps",
            "policy_steps",
            "policy_inputs",
            "policy_samples",
            "policy_learning_rate",
            "entropy_weight",
            "calibration_size",
            "search_seed",
            "batch_size",
        ]
        key = {
            "structure": structure,
            **{f: getattr(self, f) for f in fields},
            "pipeline": nat_keras.data.PIPELINE_VERSION,  # which data order the seeds gave
        }
        if self.anchor_prob:  # absent when 0, so searches without anchors keep their keys
            key["anchor_prob"] = self.anchor_prob
            key["anchors"] = anchors_of(self.inputs, structure)
        for ratio in ("search_macs_ratio", "supernet_macs_ratio"):  # likewise
            if getattr(self, ratio) != 1.0:
                key[ratio] = getattr(self, ratio)
        if self.baseline_update != "standard":  # likewise
            key["baseline_update"] = self.baseline_update
        return key

    def derive_key(self, name: str, structure: str, method: str = "nat") -> dict[str, Any]:
        """What determines a cell chosen by `method` (NAT's `derive` or a baseline of `BASELINES`).

        The budget is in it only below equal cost, so older rows keep their
        keys, and with it `CHOOSE_VERSION` (whether the input fitted to the
        budget competed); NAT's `DERIVE_VERSION` only in NAT's.
        """
        extra = {
            "num_candidates": self.num_candidates,
            "score_batches": self.score_batches,
        }
        if self.macs_ratio != 1.0:
            extra["macs_ratio"] = self.macs_ratio
            extra["choose_version"] = CHOOSE_VERSION
        if method == "nat" and DERIVE_VERSION != 1:
            extra["derive_version"] = DERIVE_VERSION
        if method != "nat":
            extra["method"] = method
        return {"input": name, **self.search_key(structure), **extra}

    def budget(self) -> nat_keras.Budget:
        """The budget every choice meets (`macs_ratio`)."""
        return _budget(self.macs_ratio)

    def table_suffix(self, preset: Settings | None = None) -> str:
        """The tables' file suffix: "-natpp" for the NAT++ space, "-macs0.5" below equal cost.

        Each space and budget gets its own files, so a NAT++ run leaves NAT's
        tables alone; likewise a search longer or shorter than `preset`'s
        ("-search48": its epochs), when a preset is given.
        """
        space = "" if self.space == "nat" else "-natpp"
        budget = "" if self.macs_ratio == 1.0 else f"-macs{self.macs_ratio:g}"
        learned = "" if self.search_macs_ratio == 1.0 else f"-learned{self.search_macs_ratio:g}"
        trained = "" if self.supernet_macs_ratio == 1.0 else f"-supernet{self.supernet_macs_ratio:g}"
        length = ""
        if preset is not None and self.search_epochs != preset.search_epochs:
            length = f"-search{self.search_epochs}"
        name = _BASELINE_SUFFIX.get(self.baseline_update, self.baseline_update)
        baseline = "" if self.baseline_update == "standard" else f"-{name}"
        return space + budget + learned + trained + length + baseline

    def search_config(self) -> SearchConfig:
        """The search's SearchConfig: NAT's alternation, and the budget the baselines match."""
        return SearchConfig(
            epochs=self.search_epochs,
            weight_steps=self.weight_steps,
            policy_steps=self.policy_steps,
            reinforce=ReinforceConfig(
                learning_rate=self.policy_learning_rate,
                num_inputs=self.policy_inputs,
                num_samples=self.policy_samples,
                entropy_weight=self.entropy_weight,
                baseline_update=self.baseline_update,
            ),
            seed=self.search_seed,
            budget=None if self.search_macs_ratio == 1.0 else _budget(self.search_macs_ratio),
        )

    def training(self, seed: int) -> Recipe:
        """The one retraining recipe (docs/design.md section 8), from scratch."""
        return Recipe.preset(self.recipe, epochs=self.epochs, seed=seed, init="scratch")


# Table suffixes of REINFORCE baselines other than the moving average (others: their own name).
_BASELINE_SUFFIX = {"leave_one_out": "loo"}


def _budget(macs_ratio: float) -> nat_keras.Budget:
    return nat_keras.Budget() if macs_ratio == 1.0 else nat_keras.Budget(macs_ratio=macs_ratio)


# anchor_prob 0.5: a supernet trained on random cells alone scored the hand-made
# cells (ResBlock, VGG, MobileNetV2) at chance, 0.10-0.14, against 0.26-0.37
# for random cells (docs/design.md section 6).
_COMMON = {
    "policy_learning_rate": 3e-4, "entropy_weight": 0.003, "search_seed": 0, "batch_size": 64,
    "anchor_prob": 0.5,
}  # fmt: skip
PRESETS: dict[str, Settings] = {
    "smoke": Settings(
        inputs=("DARTS",), seeds=(0,), space="nat", supernet_cells=2, supernet_channels=8, search_epochs=1,
        weight_steps=2, policy_steps=1, policy_inputs=1, policy_samples=2, num_candidates=10, score_batches=1,
        calibration_size=64, net_cells=2, net_channels=8, recipe="cpu", epochs=1, train_batches=10,
        test_batches=4, baselines=("random",), **_COMMON,
    ),
    "cpu": Settings(
        inputs=MAIN_INPUTS, seeds=(0, 1), space="nat", supernet_cells=5, supernet_channels=8,
        search_epochs=12, weight_steps=80, policy_steps=4, policy_inputs=1, policy_samples=4,
        num_candidates=10, score_batches=16, calibration_size=256, net_cells=5, net_channels=8, recipe="cpu",
        epochs=2, train_batches=150, test_batches=0, baselines=BASELINES, **_COMMON,
    ),
    "gpu": Settings(
        inputs=ALL_INPUTS, seeds=(0, 1, 2), space="nat", supernet_cells=8, supernet_channels=20,
        search_epochs=100, weight_steps=375, policy_steps=100, policy_inputs=1, policy_samples=4,
        num_candidates=10, score_batches=16, calibration_size=256, net_cells=20, net_channels=36,
        recipe="gpu", epochs=600, train_batches=0, test_batches=0, **_COMMON,
    ),
}  # fmt: skip

# What --dry_run caps: every count that sets how long a run takes. The sizes
# (cells, channels, batch), the recipe and the data stay the preset's, so the
# code a long run takes is the code the dry run takes.
DRY_RUN = {
    "search_epochs": 1, "weight_steps": 2, "policy_steps": 1, "policy_inputs": 1, "policy_samples": 2,
    "num_candidates": 2, "score_batches": 1, "epochs": 1, "train_batches": 2, "test_batches": 2,
}  # fmt: skip


def dry_run_of(settings: Settings) -> Settings:
    """`settings` with every count capped by `DRY_RUN`, the first input and seed, one calibration batch.

    Example:
      >>> dry_run_of(PRESETS["gpu"]).net_channels, dry_run_of(PRESETS["gpu"]).weight_steps
      (36, 2)
    """
    return settings.replace(
        **dry_run_counts(dataclasses.asdict(settings), DRY_RUN),
        inputs=settings.inputs[:1],
        seeds=settings.seeds[:1],
        calibration_size=settings.batch_size,
    )


# -- data ------------------------------------------------------------------------


def load_data(settings: Settings) -> nat_keras.data.NatSplits:
    """Fashion-MNIST as NAT's splits (data seed fixed at 0: every row sees the same splits)."""
    return nat_keras.data.load_splits("fashion_mnist", batch_size=settings.batch_size, seed=0)


def _first(dataset: tf.data.Dataset, batches: int) -> tf.data.Dataset:
    # take() keeps a known cardinality only when the source has one; asserting
    # it spares train() a counting pass over the data.
    if batches <= 0:
        return dataset
    return dataset.take(batches).apply(tf.data.experimental.assert_cardinality(batches))


# -- search (supernet + policy on random cells) ----------------------------------


def structure_of(genotype: Genotype) -> tuple[int, str]:
    """(nodes per cell, concat rule) of a genotype: which supernet can run it."""
    nodes = genotype.num_nodes
    cells = [genotype.cell(which) for which in ("normal", "reduce")]
    if all(tuple(concat) == fully_concat(nodes) for _, concat in cells):
        return nodes, "full"
    if all(tuple(concat) == loose_end_concat(entries) for entries, concat in cells):
        return nodes, "loose_end"
    raise ValueError(f"Genotype {genotype} follows neither the full nor the loose-end concat rule.")


def _structure_name(structure: tuple[int, str]) -> str:
    return f"{structure[1]}{structure[0]}"


def anchors_of(inputs: Sequence[str], structure: tuple[int, str] | str) -> list[str]:
    """The inputs whose cells the search of `structure` (or its name, e.g. "loose_end4") serves.

    Example:
      >>> anchors_of(MAIN_INPUTS, "loose_end4")
      ['ResBlock', 'VGG', 'Mobilenetv2']
    """
    label = structure if isinstance(structure, str) else _structure_name(structure)
    return [name for name in inputs if _structure_name(structure_of(PUBLISHED[name])) == label]


def _digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:10]


@dataclasses.dataclass
class Search:
    """A trained (or restored) cell supernet and policy for one cell structure."""

    supernet: Any
    environment: SupernetEnvironment
    policy: Policy
    summary: dict[str, Any]


def search_dir_of(settings: Settings, run_dir: pathlib.Path, structure: tuple[int, str]) -> pathlib.Path:
    """Where the search of `structure` under `settings` lives in `run_dir` (its key's digest)."""
    label = _structure_name(structure)
    return run_dir / "search" / f"{label}-{_digest(settings.search_key(label))}"


def run_search(
    settings: Settings,
    structure: tuple[int, str],
    directory: pathlib.Path,
    *,
    verbose: int = 0,
) -> Search:
    """Trains a CellSupernet and a policy on random cells of `structure`, or restores a finished one.

    The same library pieces as `examples/train_policy.py`: `CellSupernet`,
    `SupernetTrainer`, `SupernetEnvironment` (weights on `splits.weights`,
    rewards on `splits.policy`) and `NATSearch`. With a `search.json` in
    `directory` the trainer and the search restore their last checkpoints,
    so nothing is trained again (`NATSearch.run` has no epochs left).
    """
    from nat_keras.supernet import CellSupernet
    from nat_keras.supernet.trainer import SupernetConfig, SupernetTrainer

    start = time.perf_counter()
    keras.utils.set_random_seed(settings.search_seed)  # the supernet's initial weights
    key = settings.search_key(_structure_name(structure))
    done_path = directory / "search.json"
    finished = done_path.exists() and json.loads(done_path.read_text()).get("key") == key
    splits = load_data(settings)
    num_nodes, concat = structure
    supernet = CellSupernet(
        op_list="natpp",  # every input's ops (conv_1x1 of MobileNetV2, the 5x5s of ENAS) exist
        num_nodes=num_nodes,
        num_cells=settings.supernet_cells,
        channels=settings.supernet_channels,
        num_classes=splits.num_classes,
        input_shape=splits.image_shape,
        space=settings.space,
        concat=concat,
        anchors=[PUBLISHED[name] for name in anchors_of(settings.inputs, structure)],
        anchor_prob=settings.anchor_prob,
        budget=_budget(settings.supernet_macs_ratio),  # Budget() at 1: trains as without one
    )
    trainer = SupernetTrainer(
        supernet,
        config=SupernetConfig(seed=settings.search_seed),
        directory=str(directory / "supernet"),
    )
    environment = SupernetEnvironment(
        supernet,
        weights_data=splits.weights,
        reward_data=splits.policy,
        trainer=trainer,
        score_batches=settings.score_batches,
        calibration_size=settings.calibration_size,
    )
    policy_dir = directory / "policy"
    if finished and (trainer.resumed_from is None or not (policy_dir / "policy.json").exists()):
        # benchmarks/results keeps a search's summary but not its checkpoints
        # (13 MB each): without them the supernet would score with fresh weights.
        print(f"search {directory.name}: summary found, checkpoints not; searching again")
        finished = False
    if finished:
        policy = Policy.load(policy_dir)
        summary = json.loads(done_path.read_text())
        print(f"search {directory.name}: cached ({summary['seconds']:.0f} s when run)")
        return Search(supernet, environment, policy, summary)
    policy = Policy(space=settings.space, seed=settings.search_seed)
    search = NATSearch(
        environment,
        policy,
        config=settings.search_config(),
        directory=str(directory / "search"),
    )
    resumed_at = search.resumed_epoch
    history = search.run(verbose=verbose)
    policy.save(policy_dir)
    summary = {
        "key": key,
        # A search resumed in several runs: every epoch's time, not this run's
        # (unknown, hence this run's, for epochs run before times were kept).
        "seconds": history.seconds if history.seconds is not None else time.perf_counter() - start,
        "resumed_at_epoch": resumed_at,
        "reward_per_epoch": [round(float(r), 4) for r in history.reward],
        "evaluations": history.evaluations,
    }
    done_path.write_text(json.dumps(summary, indent=2))
    print(f"search {directory.name}: {summary['seconds']:.0f} s, rewards {summary['reward_per_epoch']}")
    return Search(supernet, environment, policy, summary)


def derive_cell(search: Search, settings: Settings, genotype: Genotype) -> tuple[Genotype, list[float]]:
    """The transformed genotype: best of `num_candidates` plans by supernet accuracy, input included.

    `derive` scores on the first `score_batches` batches of the policy split
    (`SupernetEnvironment.score`); the test split is never read here.

    Returns:
      The chosen genotype and every candidate's score, best first (the input's among them).
    """
    graph = search.supernet.graph_of(genotype)
    plan, scored = derive(
        search.environment,
        search.policy,
        graph,
        num_candidates=settings.num_candidates,
        seed=settings.search_seed,
        budget=settings.budget(),
        include_input=True,
    )
    transformed = search.supernet.arch_to_genotype(search.supernet.arch_of(graph, plan))
    return transformed, [float(score) for _, score in scored]


def baseline_cell(
    search: Search,
    settings: Settings,
    genotype: Genotype,
    method: str,
    directory: pathlib.Path,
) -> tuple[Genotype, list[float]]:
    """A baseline's genotype for `genotype`, chosen like `derive_cell`'s but by `method`.

    `run_method` gives the supernet NAT's weight steps (already taken by the
    search, so none run) and the search the same number of rewards NAT's
    policy spent, on this input's cell graph; its best `num_candidates`
    plans are scored like `derive`'s, the input's cell competing. "fitted"
    searches nothing: the input fitted to the budget (`input_plan`), scored
    once.
    """
    graph = search.supernet.graph_of(genotype)
    if method == "fitted":
        plan = input_plan(graph, settings.budget(), space=settings.space)
        fitted = search.supernet.arch_to_genotype(search.supernet.arch_of(graph, plan))
        return fitted, [float(search.environment.score(graph, plan))]
    chosen = run_method(
        method, search.environment, graph, config=settings.search_config(), space=settings.space,
        num_candidates=settings.num_candidates, directory=directory, budget=settings.budget(),
    )  # fmt: skip
    transformed = search.supernet.arch_to_genotype(search.supernet.arch_of(graph, chosen.plan))
    return transformed, [float(score) for _, score in chosen.candidates]


def describe_changes(source: Genotype, target: Genotype) -> str:
    """The ops a transformation changed, e.g. "normal/node1_edge0 sep_conv_3x3->skip_connect"."""
    parts = []
    for which in ("normal", "reduce"):
        (old, _), (new, _) = source.cell(which), target.cell(which)
        for position, ((op, index), (new_op, _)) in enumerate(zip(old, new)):
            if op != new_op:
                parts.append(f"{which}/node{position // 2}_edge{position % 2}(from {index}) {op}->{new_op}")
    return "; ".join(parts) or "none (the input won)"


def published_agreement(name: str, target: Genotype, space: str) -> str:
    """How many of the authors' published changes (`TRANSFORMED`) ours repeats: "k/n"."""
    published = TRANSFORMED.get(name, {}).get(space)
    if published is None:
        return "n/a"
    theirs = genotype_actions(PUBLISHED[name], PUBLISHED[published])
    ours = genotype_actions(PUBLISHED[name], target)
    same = sum(1 for edge, action in theirs.items() if ours.get(edge) == action)
    return f"{same}/{len(theirs)}"


# -- retraining ------------------------------------------------------------------


def train_network(settings: Settings, genotype: Genotype, seed: int, *, verbose: int = 0) -> dict[str, Any]:
    """Builds the network of `genotype` and trains it from scratch; test accuracy, params, MACs."""
    # The seed before anything random is made: Keras 3 draws an unseeded
    # initializer's seed from Python's global state when the layer is built,
    # so without it two builds of one genotype differ (seen: 0.195 vs 0.203,
    # when the data pipeline also took TF's global seed).
    keras.utils.set_random_seed(seed)
    splits = load_data(settings)  # fresh datasets: the same data order for every network
    model = build_network(
        genotype,
        num_classes=splits.num_classes,
        input_shape=splits.image_shape,
        channels=settings.net_channels,
        num_cells=settings.net_cells,
    )
    result = nat_keras.train.train(
        model,
        _first(splits.train, settings.train_batches),
        settings.training(seed),
        test_data=_first(splits.test, settings.test_batches),
        verbose=verbose,
    )
    return {
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "params": result.cost.params,
        "macs": result.cost.macs,
        "train_seconds": round(result.wall_time, 1),
        "final_train_accuracy": result.history.get("accuracy", (float("nan"),))[-1],
    }


# Recipe fields added after rows were cached, with their defaults, which change
# nothing: at that value a field stays out of the key, so the older rows match.
LATER_RECIPE_FIELDS = {
    field.name: field.default
    for field in dataclasses.fields(Recipe)
    if field.name in ("grad_clip", "bn_calibration_examples")
}


def recipe_key(recipe: Recipe) -> dict[str, Any]:
    """`recipe.to_dict()` without the `LATER_RECIPE_FIELDS` at their no-op values.

    Example:
      >>> "grad_clip" in recipe_key(Recipe.cpu()), recipe_key(Recipe.gpu())["grad_clip"]
      (False, 5.0)
    """
    return {
        field: value
        for field, value in recipe.to_dict().items()
        if field not in LATER_RECIPE_FIELDS or value != LATER_RECIPE_FIELDS[field]
    }


def network_key(settings: Settings, name: str, variant: str, genotype: Genotype, seed: int) -> dict[str, Any]:
    """What determines one retrained network's row (in the run dir's `rows.jsonl`)."""
    return {
        "input": name,
        "variant": variant,
        "seed": seed,
        "genotype": genotype.to_json(),
        "dataset": "fashion_mnist",
        "net_cells": settings.net_cells,
        "net_channels": settings.net_channels,
        "train_batches": settings.train_batches,
        "test_batches": settings.test_batches,
        "batch_size": settings.batch_size,
        "recipe": recipe_key(settings.training(seed)),
        "pipeline": nat_keras.data.PIPELINE_VERSION,
    }


def reuse_twin_row(
    rows_cache: RowCache,
    settings: Settings,
    name: str,
    variant: str,
    genotypes: Mapping[str, Genotype],
    seed: int,
) -> dict[str, Any] | None:
    """Stores and returns the cached row of another variant with `variant`'s cell, as `variant`'s.

    The same genotype, seed and recipe train to the same network (seen: 0.7892
    and 0.8348 twice each), so a method that kept the input, or chose the
    cell another method chose, reuses that row instead of training it
    again. The original is looked at first; the row says whose it was
    ("same_as_original", or "same_as" and the variant). None while no such
    row is cached.

    Example:
      >>> reuse_twin_row(cache, settings, "VGG", "fitted", {"large_edge": cell, "fitted": cell}, 0)["same_as"]
      'large_edge'
    """
    genotype = genotypes[variant]
    for twin, chosen in genotypes.items():
        if twin == variant or chosen != genotype:
            continue
        twin_key = network_key(settings, name, twin, genotype, seed)
        trained = rows_cache.get(twin_key)
        if trained is None:
            continue
        values = {k: v for k, v in trained.items() if k not in twin_key and not k.startswith("same_as")}
        same = {"same_as_original": True} if twin == "original" else {"same_as": twin}
        return rows_cache.put(network_key(settings, name, variant, genotype, seed), {**values, **same})
    return None


def network_cost(settings: Settings, genotype: Genotype) -> tuple[int, int]:
    """Params and MACs (one example) of the network of `genotype` at the run's size.

    `nat_keras.cost` counts the cell ops' convs through their own
    `count_macs` (docs/design.md section 4), as TensorFlow's profiler does.
    """
    model = build_network(genotype, channels=settings.net_channels, num_cells=settings.net_cells)
    cost = nat_keras.cost(model)
    return cost.params, cost.macs


# -- the table -------------------------------------------------------------------


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.4f} (1 seed)"
    std = float(np.std(values, ddof=1))
    return f"{mean:.4f} ± {std:.4f} [{min(values):.4f}-{max(values):.4f}]"


TABLE_COLUMNS = (
    "input", "seeds", "original acc", "transformed acc", "delta", "params orig", "params trans",
    "MACs orig", "MACs trans", "changes", "published agreement", "search s", "derive s", "train s/net",
)  # fmt: skip


def summarise(
    rows: Sequence[Mapping[str, Any]],
    derived: Mapping[str, Mapping[str, Any]],
    settings: Settings,
    search_seconds: Mapping[str, float],
    costs: Mapping[str, Mapping[str, tuple[int, int]]] | None = None,
) -> list[dict[str, Any]]:
    """One table line per input: accuracies over seeds, costs, changes, time per part.

    `costs` (input -> variant -> (params, MACs), from `network_cost`) replaces
    the rows' own figures, whose MACs leave out the cell ops.
    """
    lines = []
    for name in settings.inputs:
        mine = {v: [r for r in rows if r["input"] == name and r["variant"] == v] for v in VARIANTS}
        if not any(mine.values()) and name not in derived:
            continue
        # Only seeds finished for both variants enter the comparison.
        both = sorted({r["seed"] for r in mine["original"]} & {r["seed"] for r in mine["transformed"]})
        acc = {v: [r["test_accuracy"] for r in mine[v] if r["seed"] in both] for v in VARIANTS}
        deltas = [t - o for o, t in zip(acc["original"], acc["transformed"])]
        cost = {v: (mine[v][0]["params"], mine[v][0]["macs"]) if mine[v] else ("-", "-") for v in VARIANTS}
        cost.update((costs or {}).get(name, {}))
        info = derived.get(name, {})
        times = [r["train_seconds"] for v in VARIANTS for r in mine[v]]
        lines.append({
            "input": name,
            "seeds": ",".join(str(s) for s in both) or "-",
            "original acc": _spread(acc["original"]),
            "transformed acc": _spread(acc["transformed"]),
            "delta": _spread(deltas),
            "params orig": cost["original"][0],
            "params trans": cost["transformed"][0],
            "MACs orig": cost["original"][1],
            "MACs trans": cost["transformed"][1],
            "changes": info.get("changes", "-"),
            "published agreement": info.get("published_agreement", "-"),
            "search s": round(searched) if (searched := search_seconds.get(info.get("structure"))) else "-",
            "derive s": info.get("derive_seconds", "-"),
            "train s/net": round(float(np.mean(times))) if times else "-",
        })  # fmt: skip
    return lines


# "choice s": NAT's derive (its search, shared by the inputs of one structure,
# is in the main table) or a baseline's whole search on this input.
METHOD_COLUMNS = (
    "input",
    "method",
    "seeds",
    "test acc",
    "delta",
    "params",
    "MACs",
    "changes",
    "choice s",
)


def summarise_methods(
    rows: Sequence[Mapping[str, Any]],
    derived: Mapping[str, Mapping[str, Any]],
    settings: Settings,
    costs: Mapping[str, Mapping[str, tuple[int, int]]],
) -> list[dict[str, Any]]:
    """One line per (input, method): NAT ("transformed") and each baseline against the original.

    Only seeds finished for both the method and the original enter a line.
    """
    lines = []
    for name in settings.inputs:
        info = derived.get(name)
        if info is None:
            continue
        by_seed = {
            v: {r["seed"]: r["test_accuracy"] for r in rows if r["input"] == name and r["variant"] == v}
            for v in ("original", "transformed", *settings.baselines)
        }
        for method in ("transformed", *settings.baselines):
            chosen = info if method == "transformed" else info.get("baselines", {}).get(method)
            if chosen is None:
                continue
            seeds = sorted(set(by_seed[method]) & set(by_seed["original"]))
            params, macs = costs.get(name, {}).get(method, ("-", "-"))
            lines.append({
                "input": name, "method": "NAT" if method == "transformed" else method,
                "seeds": ",".join(str(s) for s in seeds) or "-",
                "test acc": _spread([by_seed[method][s] for s in seeds]),
                "delta": _spread([by_seed[method][s] - by_seed["original"][s] for s in seeds]),
                "params": params, "MACs": macs, "changes": chosen["changes"],
                "choice s": chosen.get("derive_seconds", "-"),
            })  # fmt: skip
    return lines


def markdown(lines: Sequence[Mapping[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A Markdown table of `summarise`'s (or `summarise_methods`') lines."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(line[c]) for c in columns) + " |" for line in lines]
    return "\n".join(out)


# -- the run ---------------------------------------------------------------------


@dataclasses.dataclass
class Results:
    """What one run of the protocol made (or found cached).

    Attributes:
      rows: one per retrained network: input, variant ("original",
        "transformed" for NAT's cell, or a baseline's name), seed,
        test_accuracy, train_seconds (its params and MACs leave out the cell
        ops: `costs` has the right ones).
      derived: per input, NAT's choice (genotype, changes, derive_seconds,
        structure) and under "baselines" each baseline's.
      search_seconds: per structure name ("full4"), its finished search's time.
      costs: per input and variant, (params, MACs) from `network_cost`.
      computed: how many parts (choices and networks) this run computed.
    """

    rows: list[dict[str, Any]]
    derived: dict[str, dict[str, Any]]
    search_seconds: dict[str, float]
    costs: dict[str, dict[str, tuple[int, int]]]
    computed: int


def collect(
    settings: Settings,
    run_dir: str | os.PathLike,
    *,
    table_only: bool = False,
    verbose: int = 0,
) -> Results:
    """Runs (or resumes) the protocol in `run_dir`: searches, choices, networks.

    With `table_only`, nothing is computed: the results hold what is cached.
    benchmarks/quality.py reads the cells' rows of its own table through it.

    Example:
      >>> results = collect(PRESETS["cpu"].replace(inputs=("DARTS",)), RESULTS_DIR / "paper_protocol",
      ...                   table_only=True)
      >>> sorted({row["variant"] for row in results.rows})
      ['large_edge', 'original', 'random', 'transformed', 'tuner_bayesian']
    """
    run_dir = pathlib.Path(run_dir)
    rows_cache, derive_cache = RowCache(run_dir), RowCache(run_dir / "derive")
    computed = 0
    current: tuple[str, Search] | None = None  # one live supernet at a time
    derived: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []  # this run's rows, cached or computed
    search_seconds: dict[str, float] = {}

    def search_in(directory: pathlib.Path, structure: tuple[int, str]) -> Search:
        nonlocal current
        if current is None or current[0] != directory.name:
            current = None  # let the previous supernet go before building the next
            current = (
                directory.name,
                run_search(settings, structure, directory, verbose=verbose),
            )
        return current[1]

    for name in settings.inputs:
        source = PUBLISHED[name]
        structure = structure_of(source)
        label = _structure_name(structure)
        search_dir = search_dir_of(settings, run_dir, structure)
        derive_key = settings.derive_key(name, label)
        cached = derive_cache.get(derive_key)
        if cached is None and table_only:
            continue
        if cached is None:
            search = search_in(search_dir, structure)
            start = time.perf_counter()  # the derive alone: the search has its own time
            transformed, scores = derive_cell(search, settings, source)
            cached = derive_cache.put(derive_key, {
                "genotype": transformed.to_json(),
                "scores": scores,
                "changes": describe_changes(source, transformed),
                "published_agreement": published_agreement(name, transformed, settings.space),
                "derive_seconds": round(time.perf_counter() - start, 1),
                "search_dir": search_dir.name,
            })  # fmt: skip
            computed += 1
        done = search_dir / "search.json"
        if done.exists():
            search_seconds[label] = json.loads(done.read_text())["seconds"]
        transformed = Genotype.from_json(cached["genotype"])
        derived[name] = {**cached, "structure": label}
        print(f"{name}: {cached['changes']} (scores {[round(s, 4) for s in cached['scores']]})")
        genotypes = {"original": source, "transformed": transformed}
        for method in settings.baselines:
            key = settings.derive_key(name, label, method)
            chosen = derive_cache.get(key)
            if chosen is None and table_only:
                continue
            if chosen is None:
                search = search_in(search_dir, structure)
                start = time.perf_counter()
                genotype, scores = baseline_cell(
                    search,
                    settings,
                    source,
                    method,
                    run_dir / "tuner" / f"{name}-{_digest(key)}",
                )
                chosen = derive_cache.put(key, {
                    "genotype": genotype.to_json(), "scores": scores,
                    "changes": describe_changes(source, genotype),
                    "derive_seconds": round(time.perf_counter() - start, 1),
                })  # fmt: skip
                computed += 1
            genotypes[method] = Genotype.from_json(chosen["genotype"])
            derived[name].setdefault("baselines", {})[method] = chosen
            print(f"{name} {method}: {chosen['changes']}")
        for seed in settings.seeds:
            for variant, genotype in genotypes.items():
                key = network_key(settings, name, variant, genotype, seed)
                row = rows_cache.get(key)
                if row is None and variant != "original":
                    row = reuse_twin_row(rows_cache, settings, name, variant, genotypes, seed)
                if row is None and table_only:
                    continue
                if row is None:
                    row = rows_cache.put(key, train_network(settings, genotype, seed, verbose=verbose))
                    computed += 1
                    status = "trained"
                else:
                    status = "the original's row" if row.get("same_as_original") else "cached"
                    status = f"{row['same_as']}'s row" if row.get("same_as") else status
                rows.append({k: v for k, v in row.items() if k not in ("genotype", "recipe")})
                print(
                    f"{name} {variant} seed {seed}: {status}, test accuracy {row['test_accuracy']:.4f}, "
                    f"{row['params']:,} params, {row['macs']:,} MACs, {row['train_seconds']:.0f} s"
                )
    costs = {}
    for name, info in derived.items():
        chosen = {
            "original": PUBLISHED[name].to_json(),
            "transformed": info["genotype"],
        }
        chosen.update((method, b["genotype"]) for method, b in info.get("baselines", {}).items())
        costs[name] = {v: network_cost(settings, Genotype.from_json(g)) for v, g in chosen.items()}
    return Results(rows, derived, search_seconds, costs, computed)


def run(
    settings: Settings,
    run_dir: str | os.PathLike,
    *,
    table_only: bool = False,
    verbose: int = 0,
    preset: Settings | None = None,
) -> list[dict[str, Any]]:
    """Runs (or resumes) the whole protocol in `run_dir` (`collect`), writes its tables; returns their lines.

    With `table_only`, nothing is computed: the table holds what is cached.
    `preset`: the settings flags overrode, naming the tables (`table_suffix`).
    """
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_provenance(run_dir)
    print(f"settings: {json.dumps(dataclasses.asdict(settings))}")
    results = collect(settings, run_dir, table_only=table_only, verbose=verbose)
    rows, derived, costs = results.rows, results.derived, results.costs
    lines = summarise(rows, derived, settings, results.search_seconds, costs)
    table = markdown(lines)
    print(table)
    budget = "equal cost" if settings.macs_ratio == 1.0 else f"{settings.macs_ratio:.0%} of the cells' MACs"
    text = (
        f"Fashion-MNIST, the paper's protocol (benchmarks/paper_protocol.py), budget: {budget}. "
        "Accuracy: test-split mean ± "
        "sample std over seeds [min-max]; delta = transformed - original per seed. Params and MACs per "
        "example (nat_keras.cost, cell ops included).\n\n" + table + "\n"
    )
    suffix = settings.table_suffix(preset)
    if settings.baselines:
        baseline_lines = summarise_methods(rows, derived, settings, costs)
        print(markdown(baseline_lines, METHOD_COLUMNS))
        text += (
            "\nNAT and the baselines on the same supernet, budget and number of supernet evaluations; "
            "delta = method - original per seed.\n\n" + markdown(baseline_lines, METHOD_COLUMNS) + "\n"
        )
        write_csv(run_dir / f"methods{suffix}.csv", baseline_lines)
    (run_dir / f"table{suffix}.md").write_text(text)
    write_csv(run_dir / f"table{suffix}.csv", lines)
    write_csv(run_dir / f"rows{suffix}.csv", rows)
    print(f"{results.computed} parts computed this run; table in {run_dir / f'table{suffix}.md'}")
    return lines
