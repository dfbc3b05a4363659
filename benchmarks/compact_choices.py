"""Why the cells chosen at a compact budget retrain as they do: capacity against the supernet's score.

Reads what benchmarks/paper_protocol.py left in its run dir (no training, no
search; a few seconds) and writes `compact_choices-macs<ratio>.md` there:

1. Per input, every distinct cell some method chose at `--macs_ratio` (in
   any search of NAT's space), with its params, MACs and mean retrained test
   accuracy, and Spearman's rho between params and accuracy over them: at a
   fixed MACs budget, how much the parameters a cell keeps decide.
2. Per search variant (the policy and the supernet at equal cost, or
   learned / trained at the target) and input, Kendall's tau between the
   supernet's score of each method's chosen cell and that cell's retrained
   accuracy, and between the score and the cell's params: whether the
   supernet orders the choices it makes.

Every chosen cell was retrained with the protocol's recipe and seeds
(`rows.jsonl`); a choice's score is the one `derive` or the baseline gave it
(`derive/rows.jsonl`; the scores on `--score_batches` held-out batches,
the cpu preset's 16).

  python benchmarks/compact_choices.py
  python benchmarks/compact_choices.py --macs_ratio=0.5 --run_dir=benchmarks/results/paper_protocol
"""

from __future__ import annotations

import collections
import os
import pathlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
# sibling modules, not a package
from chosen_cells import choices, read_jsonl, retrained_cells, search_variant
from ranking import correlations, signed
from rows import RESULTS_DIR

_RUN_DIR = flags.DEFINE_string(
    "run_dir",
    os.fspath(RESULTS_DIR / "paper_protocol"),
    "paper_protocol.py's run dir (relative: to the cwd).",
)
_MACS_RATIO = flags.DEFINE_float("macs_ratio", 0.5, "The compact budget whose choices are read.")
_SCORE_BATCHES = flags.DEFINE_integer(
    "score_batches", 16, "Whose scores are compared: choices scored on this many held-out batches."
)


def compact_choices(
    rows: Iterable[Mapping[str, Any]],
    derive_rows: Iterable[Mapping[str, Any]],
    macs_ratio: float,
    score_batches: int = 16,
) -> dict[str, Any]:
    """The two tables of the module docstring, as data.

    Returns:
      {"cells": {input: [(params, MACs, mean accuracy, seeds), ...]},
       "capacity": {input: correlations(params, accuracy)},
       "ranking": {(variant, input): {"accuracy": correlations(score, accuracy),
                                      "params": correlations(score, params)}}}
      A choice whose cell was never retrained is left out.

    Example:
      >>> found = compact_choices(rows, derive_rows, 0.5)
      >>> found["capacity"]["VGG"]["n"]   # VGG cells chosen at half the MACs, all retrained
      8
    """
    retrained = retrained_cells(rows)
    chosen: dict[str, set[str]] = collections.defaultdict(set)
    scored: dict[tuple[str, str], dict[str, float]] = collections.defaultdict(dict)
    for key, genotype, score in choices(derive_rows, retrained, macs_ratio):
        chosen[key["input"]].add(genotype)
        if key.get("score_batches") == score_batches:  # one score; other counts were checks of its noise
            scored[(search_variant(key), key["input"])][genotype] = score
    cells, capacity = {}, {}
    for name, genotypes in sorted(chosen.items()):
        found = [retrained[(name, g)] for g in sorted(genotypes)]
        cells[name] = sorted(
            (c["params"], c["macs"], float(np.mean(c["accuracy"])), len(c["accuracy"])) for c in found
        )
        capacity[name] = correlations([c[0] for c in cells[name]], [c[2] for c in cells[name]])
    ranking = {}
    for (variant, name), scores in sorted(scored.items()):
        if len(scores) < 2:  # one method's choice alone (a search only NAT ran): nothing to order
            continue
        found = [retrained[(name, g)] for g in scores]
        accuracy = [float(np.mean(c["accuracy"])) for c in found]
        ranking[(variant, name)] = {
            "accuracy": correlations(list(scores.values()), accuracy),
            "params": correlations(list(scores.values()), [float(c["params"]) for c in found]),
        }
    return {"cells": cells, "capacity": capacity, "ranking": ranking}


def markdown(found: Mapping[str, Any], macs_ratio: float) -> str:
    """`compact_choices`' result as the two Markdown tables of the module docstring."""
    lines = [
        f"Cells chosen at {macs_ratio:.0%} of the cells' MACs (benchmarks/compact_choices.py; the paper's "
        "protocol's rows and choices). Accuracy: mean retrained test accuracy over seeds.",
        "",
        "| input | cells | params of each (accuracy) | rho(params, accuracy) |",
        "|---|---|---|---|",
    ]
    for name, cells in found["cells"].items():
        listed = ", ".join(f"{params:,} ({accuracy:.4f})" for params, _, accuracy, _ in cells)
        lines.append(f"| {name} | {len(cells)} | {listed} | {signed(found['capacity'][name]['rho'])} |")
    lines += [
        "",
        "| search | input | choices | tau(score, accuracy) | tau(score, params) |",
        "|---|---|---|---|---|",
    ]
    by_variant: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for (variant, name), stats in found["ranking"].items():
        taus = stats["accuracy"]["tau"], stats["params"]["tau"]
        by_variant[variant].append(taus)
        lines.append(
            f"| {variant} | {name} | {stats['accuracy']['n']} | {signed(taus[0])} | {signed(taus[1])} |"
        )
    for variant, taus in by_variant.items():
        mean = [np.nanmean(c) if np.isfinite(c).any() else np.nan for c in map(np.array, zip(*taus))]
        lines.append(f"| {variant} | mean over inputs | | {signed(mean[0])} | {signed(mean[1])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run_dir = pathlib.Path(_RUN_DIR.value)
    found = compact_choices(
        read_jsonl(run_dir / "rows.jsonl"),
        read_jsonl(run_dir / "derive" / "rows.jsonl"),
        _MACS_RATIO.value,
        _SCORE_BATCHES.value,
    )
    text = markdown(found, _MACS_RATIO.value)
    path = run_dir / f"compact_choices-macs{_MACS_RATIO.value:g}.md"
    path.write_text(text)
    print(text + f"\nwritten to {path}")


if __name__ == "__main__":
    app.run(main)
