"""Benchmark: the paper's protocol on Fashion-MNIST (docs/design.md, sections 2 and 8).

NAT's own evaluation (Guo et al. 2019): a cell supernet and the policy are
trained on random input cells, alternating a pass of supernet-weight steps on
40% of the training data with a pass of REINFORCE policy steps on the other
60% (`NATSearch`, as `examples/train_policy.py` does); the trained policy then
transforms each published input cell, the best of 10 sampled candidates by
supernet accuracy on held-out training data (the policy split, never the test
split; the input competes, `derive(include_input=True)`, docs/design.md
section 2, difference 4); finally the original and the transformed networks
(`cells.build_network`, same depth and channels) are retrained from scratch
with one recipe (`nat_keras.train`, docs/design.md section 8) over several
seeds and scored on the test split.

One supernet and policy per cell structure: the supernet's concat rule and
node count must match the input's (`CellSupernet.genotype_to_arch` refuses
otherwise), so DARTS (4 nodes, full concat), the hand-made cells VGG /
ResBlock / MobileNetV2 (4 nodes, their last node only, which is the loose-end
rule) and ENAS (5 nodes, loose end) each get their own search, run when the
first input needing it comes up. All use the NAT++ op list so every input's
ops exist; the action space (--space) is NAT's ("nat") unless asked.

Everything is cached in --run_dir (default benchmarks/results/paper_protocol,
where git keeps the rows and tables but not the checkpoints): each
search in `search/<structure>-<settings hash>/` (supernet checkpoints, the
policy by `Policy.save`, `search.json` when finished; a killed search resumes
from its checkpoints), each derived cell in `derive/rows.jsonl`, each
retrained network as one row of `rows.jsonl` (`benchmarks/rows.py`); a rerun
computes only what is missing, then writes `table.md` and `table.csv`.

Data: `load_splits("fashion_mnist")`, 32x32x3 (zero-padded, grey repeated).
`load_splits` has no subset option, so retraining uses the first
--train_batches batches of each (reshuffled) pass of `splits.train`
(`dataset.take(n)`), and the test score the first --test_batches batches of
`splits.test` (0: all 10,000 images); the search takes --weight_steps /
--policy_steps batches of its splits per epoch. The splits are reloaded for
every network so that original and transformed see the same data order.

Presets (flags given on the command line override them):

- smoke: 2-cell supernet and networks with C=8, 1 search epoch of 2 weight
  steps and 1 policy step (2 plans), 10 training batches, 1 epoch, 4 test
  batches, DARTS only, seed 0, NAT and the random-search baseline; 2-4 min on
  2 shared cores, mostly the first traces of the supernet
  (tests/test_paper_protocol.py runs it). With 2 cells both are reduction
  cells, so changes to the normal cell do not show in the networks' costs.
- cpu: 5-cell supernet with C=8 and 12 search epochs of 80 weight steps and
  4 policy steps (1 input x 4 plans); 5-cell networks with C=8, 2 epochs of
  150 batches of 64 (Recipe.cpu schedule), the full test split; inputs DARTS,
  ResBlock, VGG, Mobilenetv2, ENAS (in that order: the most informative
  first), seeds 0 and 1; NAT and the baselines (the input fitted to the budget
  without search, random search, LargeEdge, keras-tuner Bayesian:
  `BASELINES`); anchored searches (`anchor_prob` 0.5). On one
  core of this 2-core machine (2026-12-06): 10-18 min per search (3
  structures), 1-5 min per network (20 for NAT alone, 20 more for the
  baselines), so about 1.5 h for NAT on 2 cores and as much again for the
  baselines. The search was 6 epochs of 30 weight steps until 2026-12-06
  (220 s), after which its supernet scored DARTS's candidates at 0.10-0.28
  accuracy, too close to chance to rank them.
- gpu: the paper's scale (documented, not run here): the paper's 8-cell
  supernet with C=20 and 100 search epochs, each a pass over the 40% (375
  steps of 64) and 100 policy steps of 1 input x 4 plans (our choice of m,
  n); 20-cell networks with C=36 (DARTS's CIFAR size) and Recipe.gpu (600
  epochs; no cutout, drop path or auxiliary head, see `Recipe`); every
  input, seeds 0, 1, 2.

Candidates are scored inside the supernet and networks built by
`build_network`; only LargeEdge calls `CellSupernet.extract`, on the inputs'
own cells (its "No such layer" failure was seen on some other loose-end ENAS
cells, never on the inputs).

Budgets: equal cost by default, as the paper; `--macs_ratio=0.5` has NAT and
the baselines choose within half the cells' MACs from the same searches (the
search does not depend on the budget), and writes its tables as
`table-macs0.5.md` etc. beside the equal-cost ones. `--search_macs_ratio=0.5`
has NAT's policy learn at that budget instead (searches of their own; tables
`table-macs0.5-learned0.5.md`), `--supernet_macs_ratio=0.5` trains the
supernet on plans of the inputs within that budget half the time (tables
`...-supernet0.5.md`), `--search_epochs=48` searches four times as long as
the cpu preset (tables `...-search48.md`; benchmarks/longer_supernet.py
measures what that does to the scores), `--baseline_update=leave_one_out`
has REINFORCE compare each plan with the other plans of its step instead of
a moving average (tables `...-loo.md`; docs/design.md section 6), and
`--space=nat++` runs NAT++ (its own searches; tables `table-natpp*.md`).

--dry_run caps every count of a preset (`DRY_RUN`: a few steps of the
search, the derive and the retraining) and keeps its sizes and recipe, for
the first input and seed, in a temporary run dir: `--preset=gpu --dry_run`
checks the GPU command on any machine (tests/test_paper_protocol.py runs it
on the CPU with smaller cells; at the gpu sizes the supernet alone takes
over 7 GB on the CPU).

  python benchmarks/paper_protocol.py --preset=gpu --dry_run
  python benchmarks/paper_protocol.py --preset=smoke --run_dir=/tmp/paper_protocol_smoke
  nohup python benchmarks/paper_protocol.py --preset=cpu > /tmp/paper_protocol.log 2>&1 &
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

import nat_keras  # noqa: F401  first: prepares the two Kerases (docs/design.md, section 5)

# isort: split
from absl import app, flags, logging

from nat_keras.policy.reinforce import BASELINE_UPDATES

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from cell_protocol import (  # a sibling module
    ALL_INPUTS,
    BASELINES,
    PRESETS,
    Settings,
    dry_run_of,
    run,
)
from rows import RESULTS_DIR, run_dir_for

_PRESET = flags.DEFINE_enum("preset", "smoke", sorted(PRESETS), "Scale of the run (module docstring).")
_RUN_DIR = flags.DEFINE_string(
    "run_dir",
    os.fspath(RESULTS_DIR / "paper_protocol"),
    "Caches, rows, table (relative: to the cwd).",
)
_INPUTS = flags.DEFINE_list("inputs", None, f"Input cells, in run order; any of {list(ALL_INPUTS)}.")
_SEEDS = flags.DEFINE_list("seeds", None, "Retraining seeds.")
_SPACE = flags.DEFINE_enum("space", None, ["nat", "nat++"], "Action space (the paper's NAT: nat).")
_BASELINES = flags.DEFINE_list("baselines", None, f"Baselines besides NAT, any of {list(BASELINES)}.")
# Integer and float overrides of the preset, one flag per Settings field.
_INT_FIELDS = [
    "supernet_cells",
    "supernet_channels",
    "search_epochs",
    "weight_steps",
    "policy_steps",
    "policy_inputs",
    "policy_samples",
    "num_candidates",
    "score_batches",
    "calibration_size",
    "search_seed",
    "net_cells",
    "net_channels",
    "epochs",
    "train_batches",
    "test_batches",
    "batch_size",
]
_FLOAT_FIELDS = (
    "policy_learning_rate",
    "entropy_weight",
    "anchor_prob",
    "macs_ratio",
    "search_macs_ratio",
    "supernet_macs_ratio",
)
for _field in _INT_FIELDS:
    flags.DEFINE_integer(_field, None, f"Overrides the preset's {_field} (see Settings).")
for _field in _FLOAT_FIELDS:
    flags.DEFINE_float(_field, None, f"Overrides the preset's {_field} (see Settings).")
_TABLE_ONLY = flags.DEFINE_boolean(
    "table_only",
    False,
    "Compute nothing: write the table of what the run dir holds for these settings.",
)
_RECIPE = flags.DEFINE_enum("recipe", None, ["cpu", "gpu"], "Overrides the preset's Recipe preset.")
_BASELINE_UPDATE = flags.DEFINE_enum(
    "baseline_update",
    None,
    list(BASELINE_UPDATES),
    "Overrides the preset's baseline_update (see Settings): REINFORCE's baseline.",
)
_VERBOSE = flags.DEFINE_integer(
    "verbose",
    1,
    "0 silent, 1 progress bars (search passes, training epochs), 2 a line per epoch.",
)
_DRY_RUN = flags.DEFINE_boolean(
    "dry_run",
    False,
    "A few steps of every part at the preset's sizes and recipe (DRY_RUN), the first input and seed, in "
    "a temporary run dir unless --run_dir is given: check a --preset=gpu command before a long run.",
)


def settings_from_flags() -> Settings:
    """The preset named by --preset with every flag given on the command line applied."""
    settings = PRESETS[_PRESET.value]
    changes: dict[str, Any] = {}
    for name in (*_INT_FIELDS, *_FLOAT_FIELDS, "space", "recipe", "baseline_update"):
        value = flags.FLAGS[name].value
        if value is not None:
            changes[name] = value
    if _INPUTS.value is not None:
        unknown = [n for n in _INPUTS.value if n not in ALL_INPUTS]
        if unknown:
            raise app.UsageError(f"--inputs: unknown {unknown}; choose from {list(ALL_INPUTS)}.")
        changes["inputs"] = tuple(_INPUTS.value)
    if _SEEDS.value is not None:
        changes["seeds"] = tuple(int(s) for s in _SEEDS.value)
    if _BASELINES.value is not None:
        unknown = [m for m in _BASELINES.value if m not in BASELINES]
        if unknown:
            raise app.UsageError(f"--baselines: unknown {unknown}; choose from {list(BASELINES)}.")
        changes["baselines"] = tuple(_BASELINES.value)
    settings = settings.replace(**changes)
    return dry_run_of(settings) if _DRY_RUN.value else settings


def run_dir_from_flags() -> pathlib.Path:
    """--run_dir; for a --dry_run without one, a new temporary folder (dry rows are no results)."""
    return run_dir_for(
        _RUN_DIR.value,
        dry_run=_DRY_RUN.value,
        given=flags.FLAGS["run_dir"].present,
        name="paper_protocol",
    )


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    run(
        settings_from_flags(),
        run_dir_from_flags(),
        table_only=_TABLE_ONLY.value,
        verbose=_VERBOSE.value,
        preset=dry_run_of(PRESETS[_PRESET.value]) if _DRY_RUN.value else PRESETS[_PRESET.value],
    )


if __name__ == "__main__":
    app.run(main)
