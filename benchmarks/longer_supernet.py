"""Would a longer-trained supernet rank the cells chosen at a compact budget by their retrained accuracy?

At half the cells' MACs the paper's protocol retrained 7-11 distinct cells
per input (every method's choice), and their accuracy follows the params
they keep while the supernet's score of them does not
(benchmarks/compact_choices.py; docs/design.md section 6). The cpu preset's
supernet trains for 960 weight steps; the paper's for 37,500. This
benchmark asks whether the shortfall is the cause: it trains the protocol's
search again with `--factors` times its epochs (the same alternation, data
and seed; `cell_protocol.run_search`, cached in `--run_dir/search`), scores
every one of those retrained cells with each search's supernet (exactly
`derive`'s score: `SupernetEnvironment.score`, BN recalibrated, the policy
split's `score_batches` batches; never the test split) and reports, per
input and length:

- Kendall's tau between score and retrained accuracy, and between score
  and params, over the input's chosen cells;
- the retrained accuracy of the top-scored cell against the best and the
  mean of them: what `derive` would gain by choosing among them.

No network is retrained: accuracies are the protocol's rows (`rows.jsonl`
of the run dir, mean over its seeds). Scores are cached in
`--run_dir/longer_supernet/rows.jsonl`; the report is
`longer_supernet/report-macs<ratio>.md`. Settings are paper_protocol's
(`--preset`, `--inputs`, `--macs_ratio` and the rest), so the searches are
the protocol's own: factor 1 is the search its tables used.

On the cpu preset a factor-4 search takes 30-50 minutes on one core per
cell structure (DARTS: full4, ENAS: loose_end5, ResBlock / VGG /
MobileNetV2: loose_end4); run one structure per core:

  python benchmarks/longer_supernet.py --preset=cpu --macs_ratio=0.5 --inputs=ResBlock,VGG,Mobilenetv2
  python benchmarks/longer_supernet.py --preset=cpu --macs_ratio=0.5 --inputs=DARTS,ENAS
  python benchmarks/longer_supernet.py --preset=cpu --macs_ratio=0.5   # every input, from the caches
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import json
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

# isort: split
import numpy as np
from absl import app, flags, logging

from nat_keras.cells import PUBLISHED, Genotype
from nat_keras.plan import TransformPlan

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cell_protocol as cp  # sibling modules, not a package
import paper_protocol as pp  # defines the shared flags
from chosen_cells import chosen_cells, read_jsonl
from ranking import correlations, signed
from rows import RowCache, save_provenance

_FACTORS = flags.DEFINE_list(
    "factors", ["1", "4"], "Search lengths, as multiples of the preset's search_epochs."
)


def score_cells(search: cp.Search, settings: cp.Settings, genotypes: Sequence[str]) -> list[float]:
    """`derive`'s score of each cell (genotype JSON) on `search`'s supernet, as it stands.

    A chosen cell is scored as its own input, unchanged (its keep-all plan):
    the same architecture `derive` scored as a plan of the input it came from.
    """
    scores = []
    for genotype in genotypes:
        graph = search.supernet.graph_of(Genotype.from_json(genotype))
        scores.append(search.environment.score(graph, TransformPlan.keep_all(graph, space=settings.space)))
    return scores


def summarise(
    scores: Mapping[str, Sequence[float]], accuracy: Sequence[float], params: Sequence[float]
) -> dict[str, dict[str, Any]]:
    """Per search length: score's rank agreement with accuracy and params, and the top-scored cell's accuracy.

    Args:
      scores: {length label: each cell's score}, cells in the order of `accuracy`.
      accuracy: each cell's mean retrained test accuracy.
      params: each cell's parameter count.

    Example:
      >>> found = summarise({"x1": [0.1, 0.3, 0.2]}, [0.70, 0.75, 0.72], [10, 30, 20])
      >>> found["x1"]["top_accuracy"], round(found["x1"]["accuracy"]["tau"], 2)
      (0.75, 1.0)
    """
    best, mean = max(accuracy), float(np.mean(accuracy))
    found = {}
    for label, cell_scores in scores.items():
        top = int(np.argmax(cell_scores))
        found[label] = {
            "accuracy": correlations(list(cell_scores), list(accuracy)),
            "params": correlations(list(cell_scores), [float(p) for p in params]),
            "top_accuracy": accuracy[top],
            "best_accuracy": best,
            "mean_accuracy": mean,
        }
    return found


def markdown(
    found: Mapping[str, Mapping[str, Mapping[str, Any]]],
    macs_ratio: float,
    seconds: Mapping[str, Sequence[float]],
) -> str:
    """The report: one row per input and search length, then the means over inputs."""
    lines = [
        f"Cells chosen at {macs_ratio:.0%} of the cells' MACs, scored by supernets trained for longer "
        "(benchmarks/longer_supernet.py). Accuracy: the protocol's mean retrained test accuracy; "
        "top: that of the top-scored cell.",
        "",
        "| input | search | cells | tau(score, accuracy) | tau(score, params) | top | best | mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    means: dict[str, list[list[float]]] = collections.defaultdict(list)
    for name, by_length in found.items():
        for label, stats in by_length.items():
            taus = stats["accuracy"]["tau"], stats["params"]["tau"]
            gap = stats["top_accuracy"] - stats["mean_accuracy"]
            means[label].append([*taus, gap])
            accuracies = (stats[k] for k in ("top_accuracy", "best_accuracy", "mean_accuracy"))
            lines.append(
                f"| {name} | {label} | {stats['accuracy']['n']} | {signed(taus[0])} | {signed(taus[1])} | "
                + " | ".join(f"{a:.4f}" for a in accuracies)
                + " |"
            )
    lines += [
        "",
        "| search | seconds per search | mean tau(score, accuracy) | mean tau(score, params) "
        "| top minus mean (points) |",
        "|---|---|---|---|---|",
    ]
    for label, values in means.items():
        mean = np.nanmean(np.array(values, dtype=float), axis=0)
        spent = ", ".join(f"{s:.0f}" for s in seconds.get(label, []))
        lines.append(f"| {label} | {spent} | {signed(mean[0])} | {signed(mean[1])} | {100 * mean[2]:+.2f} |")
    return "\n".join(lines) + "\n"


def run(settings: cp.Settings, run_dir: pathlib.Path, factors: Sequence[int], *, verbose: int = 0) -> str:
    """Searches (or restores) each length, scores the chosen cells, writes and returns the report."""
    cells = chosen_cells(
        read_jsonl(run_dir / "rows.jsonl"), read_jsonl(run_dir / "derive" / "rows.jsonl"), settings.macs_ratio
    )
    missing = [name for name in settings.inputs if name not in cells]
    if missing:
        raise app.UsageError(
            f"No retrained cells chosen at macs_ratio={settings.macs_ratio:g} for {missing} in {run_dir}: "
            "run benchmarks/paper_protocol.py with that --macs_ratio and --baselines first."
        )
    out = run_dir / "longer_supernet"
    cache = RowCache(out)
    save_provenance(out)
    structures = collections.defaultdict(list)
    for name in settings.inputs:
        structures[cp.structure_of(PUBLISHED[name])].append(name)
    scores: dict[str, dict[str, list[float]]] = collections.defaultdict(dict)
    seconds: dict[str, list[float]] = collections.defaultdict(list)
    for structure, names in structures.items():
        for factor in factors:
            length = settings.replace(search_epochs=settings.search_epochs * factor)
            label = f"x{factor} ({length.search_epochs * length.weight_steps} weight steps)"
            search_dir = cp.search_dir_of(length, run_dir, structure)
            search = None
            for name in names:
                genotypes = [genotype for genotype, _ in cells[name]]
                key = {"input": name, "search": search_dir.name, "score_batches": length.score_batches}
                row = cache.get(key)
                if row is None or row["genotypes"] != genotypes:
                    if search is None:
                        search = cp.run_search(length, structure, search_dir, verbose=verbose)
                    start = time.perf_counter()
                    row = cache.put(
                        key,
                        {
                            "genotypes": genotypes,
                            "scores": score_cells(search, length, genotypes),
                            "seconds": round(time.perf_counter() - start, 1),
                        },
                    )
                scores[name][label] = row["scores"]
                print(f"{name}, {label}: scores {[round(s, 4) for s in row['scores']]}")
            summary = json.loads((search_dir / "search.json").read_text())
            seconds[label].append(summary["seconds"])
            del search
            gc.collect()  # one supernet in memory at a time
    found = {}
    for name in settings.inputs:
        entries = [entry for _, entry in cells[name]]
        found[name] = summarise(
            scores[name],
            [float(np.mean(entry["accuracy"])) for entry in entries],
            [entry["params"] for entry in entries],
        )
    text = markdown(found, settings.macs_ratio, seconds)
    path = out / f"report-macs{settings.macs_ratio:g}.md"
    path.write_text(text)
    print(text + f"\nwritten to {path}")
    return text


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    factors = [int(f) for f in _FACTORS.value]
    if not factors or min(factors) < 1:
        raise app.UsageError(f"--factors: positive integers, got {_FACTORS.value}.")
    settings = pp.settings_from_flags()
    print("settings: " + json.dumps({**dataclasses.asdict(settings), "factors": factors}))
    run(settings, pp.run_dir_from_flags(), factors, verbose=flags.FLAGS.verbose)


if __name__ == "__main__":
    app.run(main)
