"""NAT against the original and the baselines, on the networks users bring (docs/design.md section 7).

For each input network: the source is trained from scratch once (the
recipe, `--source_epochs`, seed `--seed`). Then, for each budget (equal
cost, and 50% of the source's MACs), method and seed, `nat_keras.transform`
chooses a plan on the training split's held-out part (never the test split),
every method with the same supernet settings and the same number of
supernet evaluations (`nat_keras.search.baselines`), and the chosen network
(inherited weights) is fine-tuned with the same recipe, epochs and seed,
gradients clipped to norm 5 (`fine_tune_grad_clip`, the paper's retraining
clip), and its BN statistics re-estimated on 1,024 training images before
the test (`fine_tune_bn_examples`). The original is fine-tuned the same
way, so every row had the same treatment. A row that differs from a cached
one only in its fine-tuning reuses that row's finished search (its
directory) and its search time.

Methods: original, fitted (no search: the source fitted to a compact
budget by `fit_to_budget`'s rule alone, `nat_keras.search.input_plan`, new
layers freshly initialised; the plan every method's choice must beat; at
equal cost it is the original, so it has no row there), nat (NAT's policy in
the keep / skip / none space),
nat++ (also cheaper ops), random (random search), large_edge (keep the edges
with the largest weights), tuner_bayesian (keras-tuner's
BayesianOptimization oracle). NAT and NAT++ start from the shipped default
policy and learn on the input during the search, like `transform` does.

Writes to `--run_dir`: rows.jsonl (finished rows, cached: a rerun skips them),
rows.csv, quality.md (mean and spread over seeds of test accuracy, params,
MACs and search time per input, budget and method), quality.csv (the same)
and quality.png (test accuracy against MACs, one panel per input), and
provenance.jsonl (machine, versions, command of each run). A run that
overrides a setting of its preset (other than which inputs, methods, budgets
and seeds) writes its tables beside those, named by the override:
`--fine_tune_epochs=5` writes quality-fine_tune_epochs=5.md, .csv, .png and
rows-quality-fine_tune_epochs=5.csv. `--baseline_update=leave_one_out`
(REINFORCE's baseline for NAT and NAT++, docs/design.md section 2) is such
an override too; the other methods' rows, which learn no policy, are shared.

The paper's cells (DARTS, ResBlock, VGG, MobileNetV2, ENAS: `CELLS`) are
inputs too, under the paper's protocol (benchmarks/cell_protocol.py, whose
app is benchmarks/paper_protocol.py and whose caches are `--cell_run_dir`):
one cell supernet and policy per cell structure, trained on random cells, the
choices scored on held-out training data, and the networks of the original
and the chosen cells retrained from scratch with one recipe and the same
seeds. NAT searches NAT's space, NAT++ its own (a search of its own), the
baselines NAT's space with NAT's supernet and number of evaluations, and
"fitted" is the input cut down by the same rule as the networks'. A cell's
budget is the cells' MACs (the stem and the classifier are not transformed),
so "MACs vs source", the network's, is above 50% at half the MACs. Asking
for one cell also runs the cells that share its search (its key holds them).
The cell settings are the cell protocol's preset of the same name, so the
tables of a run with overrides (below) hold no cells.

Presets (flags override them):

- `smoke`: ResNet-8, 512 training images, 256 test images, the equal budget,
  original / nat / random, 1 seed; about 2 minutes (tests/test_quality.py).
- `cpu`: ResNet-20, ResNet-56 at half width, VGG-16 at a quarter width and
  MobileNetV2 at half width (`CPU_WIDTHS`: 20-41M MACs each, tables say
  "vgg16 x0.25") on 10,000 training images (32x32x3 Fashion-MNIST), source 3
  epochs, search 6 epochs of 30 weight + 5 policy steps (4 samples),
  fine-tuning 2 epochs, both budgets, all methods, 2 seeds: 4 inputs x (1 + 2 x
  5 searched + 1 fitted) rows x 2 seeds = 96 rows, the searched ones 10-17 min
  on one core, the others 1-6: about 10 hours per core, so it runs over
  several sessions (`--inputs`, `--budgets`, `--methods` and `--seeds` run
  part of it, in the order given; finished rows stay cached
  in git). Two fine-tuning epochs, not one: after one, the same ResNet-20,
  seed and recipe tested 0.8037 on one core and 0.8511 on two (the order of
  floating-point sums differs); after two, 0.8792 and 0.8779 (2026-12-06).
  Memory grows with every searched row (TensorFlow keeps each supernet's
  traced graphs; README, "Supernets, search and distribution"): a
  MobileNetV2 run reached 16 GB, so on a 24 GB machine run it in a process
  of its own, beside nothing larger than a cell benchmark. The five cells
  (the cell protocol's cpu preset, module docstring of
  benchmarks/paper_protocol.py): 6 searches of 10-18 min (one per cell
  structure in NAT's space and one in NAT++'s), then 0.5-5 min per network
  (about 90 networks, fewer trained: a method that chose another's cell
  reuses its row); run them in a process of their own too
  (`--inputs=DARTS,ENAS`).
- `gpu`: every input at full width, the full 60,000 images, source 30 epochs, search 50 x (100 + 50),
  fine-tuning 10 epochs, 3 seeds; the cells at the paper's scale (the cell protocol's gpu preset);
  documented, not run here.

  python benchmarks/quality.py --preset=smoke --run_dir=/tmp/quality
  python benchmarks/quality.py --preset=cpu --inputs=resnet20            # -> benchmarks/results/quality
  python benchmarks/quality.py --preset=cpu --inputs=DARTS,ENAS          # cells -> results/paper_protocol
  python benchmarks/quality.py --preset=cpu --table_only                  # the table of what is cached
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import nat_keras  # first: prepares the two Kerases (docs/design.md section 5)

# isort: split
import keras
from absl import app, flags, logging

from nat_keras.cells import PUBLISHED, Genotype, genotype_actions
from nat_keras.policy import ReinforceConfig, default_policy
from nat_keras.policy.reinforce import BASELINE_UPDATES
from nat_keras.search import CHOOSE_VERSION, DERIVE_VERSION, SearchConfig, input_plan
from nat_keras.supernet.base import BUDGET_PROB
from nat_keras.train import INHERITED, SCRATCH, Recipe, train

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cell_protocol  # sibling modules, not a package
from rows import RESULTS_DIR, RowCache, save_provenance, write_csv

METHODS = ("original", "fitted", "nat", "nat++", "random", "large_edge", "tuner_bayesian")
BUDGETS = {"equal": nat_keras.Budget(), "half_macs": nat_keras.Budget(macs_ratio=0.5)}
# The paper's cells, inputs beside the networks of nat_keras.models: their rows
# come from the cell protocol (benchmarks/cell_protocol.py), whose baselines
# are quality's.
CELLS = cell_protocol.MAIN_INPUTS
NETWORKS = ("resnet20", "resnet56", "vgg16", "mobilenet_v2")  # the networks of the cpu and gpu presets


@dataclasses.dataclass(frozen=True)
class Settings:
    """One scale of the benchmark (see the module docstring)."""

    inputs: tuple[str, ...]
    methods: tuple[str, ...]
    budgets: tuple[str, ...]
    seeds: tuple[int, ...]
    train_examples: int
    test_examples: int
    source_epochs: int
    search_epochs: int
    weight_steps: int
    policy_steps: int
    samples: int
    num_candidates: int
    fine_tune_epochs: int
    recipe: str = "cpu"
    dataset: str = "fashion_mnist"
    batch_size: int = 64
    seed: int = 0
    # (input, width) pairs: the inputs built at a width multiplier other than 1
    # (nat_keras.models.width), so that the deeper or wider ones fit a CPU.
    widths: tuple[tuple[str, float], ...] = ()
    # Global-norm gradient clipping of every fine-tuning (`Recipe.grad_clip`;
    # 5 is the paper's retraining value). Without it, a ResNet-56 plan whose
    # last blocks became identities (x + x per block: logits 10x the
    # source's) diverged to chance: 0.1165 without, 0.7446 with (2026-12-06).
    fine_tune_grad_clip: float | None = 5.0
    # BN statistics re-estimated on this many training images after every
    # fine-tuning (`Recipe.bn_calibration_examples`): with Keras's lagging
    # moving averages the same NAT++ plan tested 0.7734, recalibrated 0.8642.
    fine_tune_bn_examples: int = 1024
    # REINFORCE's baseline for NAT's and NAT++'s policy (`ReinforceConfig`):
    # in their rows' keys only when not the moving average, so the rows
    # cached before it existed keep their keys.
    baseline_update: str = "standard"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def reinforce_config(self) -> ReinforceConfig:
        """NAT's and NAT++'s policy updates (ReinforceConfig checks the combination)."""
        return ReinforceConfig(num_samples=self.samples, baseline_update=self.baseline_update)

    def width(self, name: str) -> float:
        return dict(self.widths).get(name, 1.0)

    def input_key(self, name: str) -> dict[str, Any]:
        """What identifies input `name` in a cache key; the width only if not 1, so
        rows cached before widths existed keep their keys.

        Example:
          >>> PRESETS["cpu"].input_key("vgg16")
          {'input': 'vgg16', 'width': 0.25}
        """
        width = self.width(name)
        return {"input": name} if width == 1.0 else {"input": name, "width": width}


# Widths of the cpu preset: each input at 20-41M MACs, near ResNet-20's 40.8M,
# where a row takes 8-15 minutes on one core (at full width VGG-16 has 313M,
# ResNet-56 126M, MobileNetV2 88M: a row of VGG-16 would take over an hour).
CPU_WIDTHS = (("resnet56", 0.5), ("vgg16", 0.25), ("mobilenet_v2", 0.5))

PRESETS = {
    "smoke": Settings(
        inputs=("resnet8",), methods=("original", "nat", "random"), budgets=("equal",),
        seeds=(0,), train_examples=512, test_examples=256, source_epochs=1, search_epochs=1, weight_steps=3,
        policy_steps=1, samples=2, num_candidates=2, fine_tune_epochs=1,
    ),
    "cpu": Settings(
        inputs=(*NETWORKS, *CELLS), methods=METHODS, budgets=tuple(BUDGETS),
        seeds=(0, 1), train_examples=10_000, test_examples=0, source_epochs=3, search_epochs=6,
        weight_steps=30, policy_steps=5, samples=4, num_candidates=10, fine_tune_epochs=2,
        widths=CPU_WIDTHS,
    ),
    "gpu": Settings(
        inputs=(*NETWORKS, *CELLS), methods=METHODS, budgets=tuple(BUDGETS),
        seeds=(0, 1, 2), train_examples=0, test_examples=0, source_epochs=30, search_epochs=50,
        weight_steps=100, policy_steps=50, samples=4, num_candidates=10, fine_tune_epochs=10, recipe="gpu",
    ),
}  # fmt: skip

_PRESET = flags.DEFINE_enum("preset", "cpu", sorted(PRESETS), "Scale of the run (module docstring).")
_RUN_DIR = flags.DEFINE_string("run_dir", os.fspath(RESULTS_DIR / "quality"), "Cache, models, table.")
_CELL_RUN_DIR = flags.DEFINE_string(
    "cell_run_dir", os.fspath(RESULTS_DIR / "paper_protocol"), "The cell protocol's caches (the cells' rows)."
)
_INPUTS = flags.DEFINE_list(
    "inputs", None, f"Input networks (names of nat_keras.models.MODELS) and cells (any of {list(CELLS)})."
)
_METHODS = flags.DEFINE_list("methods", None, f"Methods, any of {list(METHODS)}.")
_BUDGETS = flags.DEFINE_list("budgets", None, f"Budgets, any of {list(BUDGETS)}.")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds of the searches and fine-tuning.")
_WIDTHS = flags.DEFINE_list(
    "widths", None, "Width multipliers of inputs as name=width (e.g. vgg16=0.25); others are built at 1."
)
# Integer overrides of the preset, one flag per Settings field.
_INT_FIELDS = (
    "train_examples", "test_examples", "source_epochs", "search_epochs", "weight_steps", "policy_steps",
    "samples", "num_candidates", "fine_tune_epochs", "fine_tune_bn_examples",
)  # fmt: skip
for _field in _INT_FIELDS:
    flags.DEFINE_integer(_field, None, f"Overrides the preset's {_field} (see Settings).")
_BASELINE_UPDATE = flags.DEFINE_enum(
    "baseline_update", None, list(BASELINE_UPDATES),
    "REINFORCE's baseline for NAT and NAT++ (ReinforceConfig.baseline_update; default: the preset's).",
)  # fmt: skip
_TABLE_ONLY = flags.DEFINE_bool("table_only", False, "Train nothing: write the table of the cached rows.")
_VERBOSE = flags.DEFINE_integer("verbose", 1, "0 silent, 1 progress bars.")


def settings_from_flags() -> Settings:
    settings = PRESETS[_PRESET.value]
    changes: dict[str, Any] = {}
    for name, flag, allowed in (
        ("inputs", _INPUTS, (*nat_keras.models.MODELS, *CELLS)),
        ("methods", _METHODS, METHODS),
        ("budgets", _BUDGETS, tuple(BUDGETS)),
    ):
        if flag.value is not None:
            unknown = sorted(set(flag.value) - set(allowed))
            if unknown:
                raise app.UsageError(f"--{name}: unknown {unknown}; choose from {list(allowed)}.")
            changes[name] = tuple(flag.value)
    if _SEEDS.value is not None:
        changes["seeds"] = tuple(int(s) for s in _SEEDS.value)
    if _WIDTHS.value is not None:
        changes["widths"] = parse_widths(_WIDTHS.value)
    for name in _INT_FIELDS:
        if flags.FLAGS[name].value is not None:
            changes[name] = flags.FLAGS[name].value
    if _BASELINE_UPDATE.value is not None:
        changes["baseline_update"] = _BASELINE_UPDATE.value
    settings = settings.replace(**changes)
    try:  # before any training, not at the first search
        settings.reinforce_config()
    except ValueError as error:
        raise app.UsageError(f"--baseline_update / --samples: {error}") from None
    return settings


def parse_widths(values: Sequence[str]) -> tuple[tuple[str, float], ...]:
    """`--widths` as (input, width) pairs.

    Example:
      >>> parse_widths(["vgg16=0.25", "resnet56=0.5"])
      (('resnet56', 0.5), ('vgg16', 0.25))
    """
    pairs = {}
    for value in values:
        name, _, width = value.partition("=")
        if name not in nat_keras.models.MODELS or not width:
            raise app.UsageError(
                f"--widths: expected name=width, name in {sorted(nat_keras.models.MODELS)}; got {value!r}."
            )
        try:
            pairs[name] = float(width)
        except ValueError:
            raise app.UsageError(f"--widths: {value!r}: the width must be a number.") from None
    return tuple(sorted(pairs.items()))


def label(row: Mapping[str, Any]) -> str:
    """An input's name in tables: with its width when it is not 1 ("vgg16 x0.25")."""
    return row["input"] if row.get("width", 1.0) == 1.0 else f"{row['input']} x{row['width']:g}"


def _digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:10]


def load_data(settings: Settings, seed: int) -> Any:
    """NAT's splits of the dataset for `seed`; the test part cut to `test_examples` (0: all)."""
    options = {"batch_size": settings.batch_size, "seed": seed}
    if settings.train_examples:
        options["train_examples"] = settings.train_examples
    splits = nat_keras.data.load_splits(settings.dataset, **options)
    if settings.test_examples:
        batches = -(-settings.test_examples // settings.batch_size)
        splits = dataclasses.replace(splits, test=splits.test.take(batches))
    return splits


def recipe(settings: Settings, **changes: Any) -> Recipe:
    return (Recipe.gpu if settings.recipe == "gpu" else Recipe.cpu)(**changes)


def source_model(
    settings: Settings, name: str, run_dir: pathlib.Path, cache: RowCache
) -> tuple[keras.Model, dict[str, Any]]:
    """The input network trained from scratch (cached as a .keras file beside its row)."""
    key = {
        "part": "source", **settings.input_key(name), "dataset": settings.dataset,
        "train_examples": settings.train_examples, "epochs": settings.source_epochs,
        "recipe": settings.recipe, "seed": settings.seed, "pipeline": nat_keras.data.PIPELINE_VERSION,
    }  # fmt: skip
    path = run_dir / "models" / f"source-{name}-{_digest(key)}.keras"
    row = cache.get(key)
    if row is not None and path.exists():
        print(f"{name}: source cached (test accuracy {row['test_accuracy']:.4f})")
        return keras.models.load_model(path), row
    splits = load_data(settings, settings.seed)
    model = nat_keras.models.get_model(
        name, input_shape=splits.image_shape, num_classes=splits.num_classes, width=settings.width(name)
    )
    print(f"{name}: training the source for {settings.source_epochs} epochs")
    result = train(
        model, splits, recipe(settings, epochs=settings.source_epochs, init=SCRATCH, seed=settings.seed),
        checkpoint_dir=run_dir / "checkpoints" / path.stem, verbose=2 if _VERBOSE.value else 0,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    result.model.save(path)
    values = {"test_accuracy": result.test_accuracy, "seconds": round(result.wall_time, 1)}
    return result.model, cache.put(key, values)


# Settings that pick which rows a run makes, not how a row is made.
SELECTION = ("inputs", "methods", "budgets", "seeds")


def row_key(settings: Settings, name: str, budget: str, method: str, seed: int) -> dict[str, Any]:
    """What determines one row: its input, budget, method and seed, and the settings.

    `Settings.seed` (the source's seed) goes in as "source_seed": under
    "seed" it would overwrite the row's own seed, and every seed would read
    seed 0's row from the cache. NAT's rows carry `DERIVE_VERSION`, so rows
    chosen under an older derive rule are not reused, and the rows of a
    compact budget the supernet's `BUDGET_PROB` (how often it trained on
    plans within that budget; rows from before it existed are not reused)
    and `CHOOSE_VERSION` (whether the input fitted to the budget competed).

    Example:
      >>> row_key(PRESETS["cpu"], "resnet20", "equal", "nat", 1)["seed"]
      1
    """
    shared = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(Settings)
        # seed and widths enter the key under their own names; baseline_update only NAT's
        if f.name not in (*SELECTION, "seed", "widths", "baseline_update")
    }
    key = {
        "part": "row", **settings.input_key(name), "method": method, "seed": int(seed),
        "budget": "-" if method == "original" else budget,  # the original is one net at every budget
        **shared, "source_seed": settings.seed, "pipeline": nat_keras.data.PIPELINE_VERSION,
    }  # fmt: skip
    if method in ("nat", "nat++") and DERIVE_VERSION != 1:  # how NAT's derive drew its candidates
        key["derive_version"] = DERIVE_VERSION
    if method in ("nat", "nat++") and settings.baseline_update != "standard":
        key["baseline_update"] = settings.baseline_update
    if method != "original" and budget != "equal":  # the supernet trains on plans of a compact budget
        key["supernet_budget_prob"] = BUDGET_PROB
        if CHOOSE_VERSION != 1:  # the input fitted to the budget competes in the final choice
            key["choose_version"] = CHOOSE_VERSION
    return key


# Settings only the final choice or the fine-tuning read, added after rows
# were cached: left out of a search's key, so those rows' finished searches
# are reused.
AFTER_SEARCH_ONLY = ("choose_version", "fine_tune_grad_clip", "fine_tune_bn_examples")


def _search_key(key: Mapping[str, Any]) -> dict[str, Any]:
    """`key` without `AFTER_SEARCH_ONLY`, so rows that differ only in those share one search.

    The search directories are named by its digest; rows cached before
    those settings existed have exactly these keys.

    Example:
      >>> "fine_tune_grad_clip" in _search_key(row_key(PRESETS["cpu"], "resnet20", "equal", "nat", 0))
      False
    """
    return {k: v for k, v in key.items() if k not in AFTER_SEARCH_ONLY}


def first_row_of_search(cache: RowCache, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cached row that ran the search of row `key` first, if another row did.

    Rows that differ only in `AFTER_SEARCH_ONLY` share a search: the row keyed
    by the search key itself (from before those settings existed), else one
    that had every setting of `key` but the final-choice rule.

    Example:
      >>> first_row_of_search(RowCache(run_dir), row_key(PRESETS["cpu"], "resnet20", "half_macs", "nat", 0))
    """
    earlier = cache.get(_search_key(key))
    if earlier is None and "choose_version" in key:
        earlier = cache.get({k: v for k, v in key.items() if k != "choose_version"})
    return earlier


def method_row(
    settings: Settings, source: keras.Model, name: str, budget: str, method: str, seed: int,
    run_dir: pathlib.Path, cache: RowCache,
) -> dict[str, Any]:  # fmt: skip
    """One (input, budget, method, seed) row: the plan chosen, fine-tuned, tested."""
    key = row_key(settings, name, budget, method, seed)
    row = cache.get(key)
    if row is not None:
        print(f"{name} {budget} {method} seed {seed}: cached, test accuracy {row['test_accuracy']:.4f}")
        return row
    search_key = _search_key(key)
    earlier = first_row_of_search(cache, key)
    directory = run_dir / "searches" / f"{name}-{budget}-{method}-{seed}-{_digest(search_key)}"
    resumed = directory.exists()
    splits = load_data(settings, seed)
    start = time.perf_counter()
    plan, report = None, None
    if method == "original":
        chosen = source
    elif method == "fitted":
        graph = nat_keras.encode(source)
        plan = input_plan(graph, BUDGETS[budget], space="nat")
        chosen = nat_keras.apply_plan(source, plan, graph=graph, check_budget=BUDGETS[budget])
    else:
        space = "nat" if method == "nat" else "nat++"  # the baselines search the larger space
        config = SearchConfig(
            epochs=settings.search_epochs, weight_steps=settings.weight_steps,
            policy_steps=settings.policy_steps, reinforce=settings.reinforce_config(), seed=seed,
        )  # fmt: skip
        chosen = nat_keras.transform(
            source, data=splits, method="nat" if method in ("nat", "nat++") else method,
            policy=default_policy(space=space) if method in ("nat", "nat++") else None, space=space,
            budget=BUDGETS[budget], num_candidates=settings.num_candidates, search_config=config,
            directory=directory, verbose=_VERBOSE.value,
        )  # fmt: skip
        plan, report = chosen.nat_report.plan, chosen.nat_report
    search_seconds = time.perf_counter() - start
    epochs = settings.fine_tune_epochs
    fine_tune = recipe(
        settings, epochs=epochs, init=INHERITED, warmup_epochs=0.0, seed=seed,
        grad_clip=settings.fine_tune_grad_clip, bn_calibration_examples=settings.fine_tune_bn_examples,
    )  # fmt: skip
    result = train(chosen, splits, fine_tune, verbose=0)
    cost = nat_keras.cost(result.model)
    source_cost = nat_keras.cost(source)
    values = {
        "test_accuracy": result.test_accuracy,
        "params": cost.params,
        "macs": cost.macs,
        "macs_ratio": cost.macs / source_cost.macs,
        "changed": 0 if plan is None else len(plan.actions),
        "supernet_accuracy": None if report is None else report.accuracy_after,
        "evaluations": 0 if report is None else report.evaluations,
        "search_seconds": round(search_seconds, 1),
        "fine_tune_seconds": round(result.wall_time, 1),
        "plan": None if plan is None else plan.to_dict()["actions"],
    }
    if earlier is not None and method != "original" and resumed:
        # The search resumed from an earlier row's directory: its time is that run's.
        values["search_seconds"], values["search_resumed"] = earlier["search_seconds"], True
    print(
        f"{name} {budget} {method} seed {seed}: test accuracy {result.test_accuracy:.4f}, "
        f"MACs {values['macs_ratio']:.1%} of the source, {values['changed']} edges changed, "
        f"search {search_seconds:.0f} s"
    )
    keras.backend.clear_session(free_memory=False)
    return cache.put(key, values)


# -- the paper's cells --------------------------------------------------------------


def cell_settings(
    preset: str, settings: Settings, name: str, budget: str, space: str
) -> cell_protocol.Settings:
    """The cell protocol's settings for `name`'s rows at `budget`, NAT in `space` ("nat" or "nat++").

    The cell protocol's preset of the same name, with this run's seeds. Its
    inputs are every cell of that preset that shares `name`'s search (their
    cells anchor it, so they are in its key): asking for one such cell runs
    them all. The baselines of `settings.methods` run in NAT's space only,
    as the cell protocol's tables have them.

    Example:
      >>> cell_settings("cpu", PRESETS["cpu"], "VGG", "half_macs", "nat").inputs
      ('ResBlock', 'VGG', 'Mobilenetv2')
    """
    base = cell_protocol.PRESETS[preset]
    structure = cell_protocol.structure_of(PUBLISHED[name])
    mates = [*cell_protocol.anchors_of(base.inputs, structure), name]
    baselines = tuple(m for m in cell_protocol.BASELINES if m in settings.methods) if space == "nat" else ()
    return base.replace(
        inputs=tuple(dict.fromkeys(mates)),
        seeds=settings.seeds,
        space=space,
        baselines=baselines,
        macs_ratio=BUDGETS[budget].macs_ratio or 1.0,
    )


def cell_spaces(settings: Settings) -> tuple[str, ...]:
    """The cell protocol's spaces `settings.methods` need: NAT's for all but NAT++."""
    spaces = ("nat",) if set(settings.methods) - {"nat++"} else ()
    return spaces + (("nat++",) if "nat++" in settings.methods else ())


def cell_rows(
    results: cell_protocol.Results, name: str, budget: str, space: str, settings: Settings
) -> list[dict[str, Any]]:
    """`results`' networks of cell `name` as rows of this table (input "<name> cell").

    Params and MACs are the cell protocol's (cell ops included); "search
    seconds" are the shared search's plus the method's own choice (the
    fitted cell's: its choice alone).

    Example:
      >>> results = cell_protocol.collect(cell_settings("cpu", PRESETS["cpu"], "DARTS", "equal", "nat"),
      ...                                 RESULTS_DIR / "paper_protocol", table_only=True)
      >>> {row["method"] for row in cell_rows(results, "DARTS", "equal", "nat", PRESETS["cpu"])}
      {'original', 'nat', 'random', 'large_edge', 'tuner_bayesian'}
    """
    derived = results.derived.get(name)
    if derived is None:
        return []
    costs = results.costs[name]
    searched = results.search_seconds.get(derived["structure"], 0.0)
    rows = []
    for row in results.rows:
        variant = row["variant"]
        if row["input"] != name or row["seed"] not in settings.seeds:
            continue
        if space != "nat" and variant != "transformed":  # the original and baselines: NAT's space's rows
            continue
        if variant == "original":
            method, choice = "original", None
        elif variant == "transformed":
            method, choice = ("nat" if space == "nat" else "nat++"), derived
        else:
            method, choice = variant, derived["baselines"][variant]
        if method not in settings.methods or (method == "fitted" and budget == "equal"):
            continue  # at equal cost the fitted cell is the input: the original's row
        params, macs = costs[variant]
        seconds = 0.0 if choice is None else choice["derive_seconds"]
        seconds += searched if choice is not None and method != "fitted" else 0.0  # fitted: no search
        chosen = None if choice is None else Genotype.from_json(choice["genotype"])
        changed = 0 if chosen is None else len(genotype_actions(PUBLISHED[name], chosen))
        rows.append({
            "part": "row", "input": f"{name} cell", "budget": "-" if choice is None else budget,
            "method": method, "seed": row["seed"], "test_accuracy": row["test_accuracy"],
            "params": params, "macs": macs, "macs_ratio": macs / costs["original"][1], "changed": changed,
            "search_seconds": round(seconds, 1),
        })  # fmt: skip
    return rows


def run_cells(
    preset: str, settings: Settings, names: Sequence[str], cell_run_dir: pathlib.Path, *, table_only: bool
) -> list[dict[str, Any]]:
    """The rows of cells `names` at every budget and method of `settings`, computed (or cached) by the
    cell protocol in `cell_run_dir`; with `table_only`, only what is cached.

    Cells that share a search share its settings (`cell_settings`), so the
    protocol runs once per group, not once per cell (each run builds every
    chosen network to count its cost).
    """
    rows = []
    for budget in settings.budgets:
        for space in cell_spaces(settings):
            groups: dict[cell_protocol.Settings, list[str]] = {}
            for name in names:
                groups.setdefault(cell_settings(preset, settings, name, budget, space), []).append(name)
            for options, members in groups.items():
                results = cell_protocol.collect(
                    options, cell_run_dir, table_only=table_only, verbose=_VERBOSE.value
                )
                rows += [row for name in members for row in cell_rows(results, name, budget, space, settings)]
    return rows


def is_cell(name: str) -> bool:
    """Whether a table's input is one of the paper's cells (they come after the networks)."""
    return name.endswith(" cell")


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds per (input, budget, method); the original appears once per input."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("part") != "row":
            continue
        budget = "-" if row["method"] == "original" else row["budget"]
        groups.setdefault((label(row), budget, row["method"]), []).append(row)
    table = []
    for (name, budget, method), members in groups.items():
        if method == "original":  # the same net at every budget: one entry, each seed once
            members = list({m["seed"]: m for m in members}.values())
        accuracies = [float(m["test_accuracy"]) for m in members]
        table.append({
            "input": name, "budget": budget, "method": method, "seeds": len(members),
            "accuracy_mean": statistics.fmean(accuracies),
            "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "params": round(statistics.fmean(float(m["params"]) for m in members)),
            "macs": round(statistics.fmean(float(m["macs"]) for m in members)),
            "macs_ratio": statistics.fmean(float(m["macs_ratio"]) for m in members),
            "changed": statistics.fmean(float(m["changed"]) for m in members),
            "search_seconds": statistics.fmean(float(m["search_seconds"]) for m in members),
        })  # fmt: skip
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(
        table,
        key=lambda r: (is_cell(r["input"]), r["input"], r["budget"] != "-", r["budget"], order[r["method"]]),
    )


def markdown(table: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| input | budget | method | seeds | test accuracy | params | MACs | MACs vs source | edges changed "
        "| search s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['input']} | {r['budget']} | {r['method']} | {r['seeds']} | "
            f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f} | {r['params']:,} | {r['macs']:,} | "
            f"{r['macs_ratio']:.1%} | {r['changed']:.1f} | {r['search_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: Sequence[Mapping[str, Any]], path: pathlib.Path) -> pathlib.Path:
    """Test accuracy (mean, spread as error bars) against MACs, one panel per input.

    A method keeps its colour at every budget; the marker says the budget
    (circle: equal cost, square: half the MACs, star: the original). Methods
    that chose the same network have the same MACs and would hide one another,
    so each method is drawn a little to the side of its MACs (at most 2% of
    the source's; the table has the exact figures), and one legend serves all
    panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    inputs = sorted({r["input"] for r in table}, key=lambda name: (is_cell(name), name))
    columns = min(len(inputs), 5)  # wraps onto more rows: nine panels in one row would be unreadable
    lines = -(-len(inputs) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.5 * columns, 4 * lines), squeeze=False)
    for axis in axes.flat[len(inputs) :]:
        axis.set_visible(False)
    colours = dict(zip(METHODS, plt.get_cmap("tab10").colors))
    budgets = {"-": ("*", "original"), "equal": ("o", "equal cost"), "half_macs": ("s", "50% MACs")}
    offsets = {m: (i - (len(METHODS) - 1) / 2) / len(METHODS) * 0.04 for i, m in enumerate(METHODS)}
    for axis, name in zip(axes.flat, inputs):
        members = [r for r in table if r["input"] == name]
        source_macs = max(r["macs"] / r["macs_ratio"] for r in members) / 1e6
        for r in members:
            x = r["macs"] / 1e6 + offsets[r["method"]] * source_macs
            axis.errorbar(
                x, r["accuracy_mean"], yerr=r["accuracy_std"], marker=budgets[r["budget"]][0],
                color=colours[r["method"]], linestyle="none", capsize=3,
                markersize=11 if r["method"] == "original" else 6,
            )  # fmt: skip
        axis.set_title(name)
        axis.set_xlabel("MACs (millions)")
        axis.set_ylabel("test accuracy")
        axis.grid(alpha=0.3)
    # One legend for all panels: a colour per method (the original with its star), then a grey
    # marker per budget.
    methods = [m for m in METHODS if any(r["method"] == m for r in table)]
    shapes = [budgets[b] for b in budgets if b != "-" and any(r["budget"] == b for r in table)]
    method_markers = [budgets["-"][0] if m == "original" else "o" for m in methods]
    handles = [Line2D([], [], color=colours[m], marker=k, ls="none") for m, k in zip(methods, method_markers)]
    handles += [Line2D([], [], color="grey", marker=marker, ls="none") for marker, _ in shapes]
    names = methods + [name for _, name in shapes]
    figure.legend(handles, names, loc="lower center", ncol=len(names))
    figure.tight_layout(rect=(0, 0.1 / lines, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def of_settings(settings: Settings, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows made with `settings` (any input, budget, method or seed): a run dir that also
    holds rows of other settings (a smaller test, an older recipe) must not mix them into a table.

    Example:
      >>> of_settings(PRESETS["cpu"], [row_key(PRESETS["smoke"], "resnet8", "equal", "nat", 0)])
      []
    """
    matching = []
    for row in rows:
        if row.get("part") != "row" or row.get("input") not in nat_keras.models.MODELS:
            continue
        key = row_key(settings, row["input"], row["budget"], row["method"], row["seed"])
        same = all(row.get(field) == value for field, value in key.items())
        if same and row.get("width", 1.0) == settings.width(row["input"]):  # a key holds widths other than 1
            matching.append(dict(row))
    return matching


def table_stem(settings: Settings, preset: Settings) -> str:
    """The tables' file name: "quality" for the preset's settings, else with what differs.

    So a run with an override (say longer fine-tuning) writes its own tables
    beside the preset's instead of over them.

    Example:
      >>> table_stem(PRESETS["cpu"].replace(fine_tune_epochs=5, seeds=(0,)), PRESETS["cpu"])
      'quality-fine_tune_epochs=5'
    """
    changed = [
        f"{f.name}={getattr(settings, f.name)}"
        for f in dataclasses.fields(Settings)
        if f.name not in SELECTION and getattr(settings, f.name) != getattr(preset, f.name)
    ]
    return re.sub(r"[^\w=.,-]", "", "-".join(["quality", *changed]))


def write_table(
    run_dir: pathlib.Path,
    cache: RowCache,
    settings: Settings,
    stem: str = "quality",
    cells: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Writes `stem`.md, .csv and .png (and rows.csv) from the cached rows of `settings` and the
    rows of the cells (`cell_rows`)."""
    rows = of_settings(settings, cache.rows()) + [dict(row) for row in cells]
    table = summarise(rows)
    if not table:
        print("no finished rows yet")
        return table
    rows_name = "rows.csv" if stem == "quality" else f"rows-{stem}.csv"
    write_csv(run_dir / rows_name, [{k: v for k, v in r.items() if k != "plan"} for r in rows])
    write_csv(run_dir / f"{stem}.csv", table)
    (run_dir / f"{stem}.md").write_text(markdown(table))
    plot(table, run_dir / f"{stem}.png")
    print(markdown(table))
    print(f"wrote {run_dir / stem}.md, .csv and .png, and {rows_name}")
    return table


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint writer is chatty at INFO
    settings = settings_from_flags()
    run_dir = pathlib.Path(_RUN_DIR.value)
    cache = RowCache(run_dir)
    save_provenance(run_dir)
    print("settings: " + json.dumps(dataclasses.asdict(settings)))
    preset = PRESETS[_PRESET.value]
    cell_run_dir = pathlib.Path(_CELL_RUN_DIR.value)
    if not _TABLE_ONLY.value:
        start = time.perf_counter()
        for name in settings.inputs:
            if name in CELLS:
                run_cells(_PRESET.value, settings, [name], cell_run_dir, table_only=False)
                continue
            source, _ = source_model(settings, name, run_dir, cache)
            for seed in settings.seeds:
                for budget in settings.budgets:
                    for method in settings.methods:
                        if method == "fitted" and budget == "equal":
                            continue  # the source itself: the original's row
                        method_row(settings, source, name, budget, method, seed, run_dir, cache)
        print(f"all rows done in {time.perf_counter() - start:.0f} s")
    stem = table_stem(settings, preset)
    # The preset's own table holds every cached row of the preset's cells and
    # of the cells asked for (the cells' settings are the cell protocol's:
    # this run's overrides do not apply to them, so a table of overrides has none).
    both = {f: tuple(dict.fromkeys((*getattr(preset, f), *getattr(settings, f)))) for f in SELECTION}
    wanted = [name for name in both["inputs"] if name in CELLS]
    cells = run_cells(_PRESET.value, preset.replace(**both), wanted, cell_run_dir, table_only=True)
    write_table(run_dir, cache, settings, stem, cells if stem == "quality" else ())


if __name__ == "__main__":
    app.run(main)
