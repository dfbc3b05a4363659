"""How faithful are the cell space's rewards? Supernet scores against networks trained from scratch.

The cell-space half of the reward-fidelity question (docs/design.md section 6;
benchmarks/reward_fidelity.py is the model plan space's half). The paper's
protocol picks a cell by its supernet accuracy on held-out data; if that
ranking does not follow the accuracy the cells' networks reach when trained,
the search is noise, whatever the policy learns.

1. Search: the protocol's trained CellSupernet for the input's structure,
   `cell_protocol.run_search` in `--run_dir/search`, so a run of
   benchmarks/paper_protocol.py with the same settings and run dir is reused
   (and the other way round).
2. Architectures: the input cell (the first of `--inputs`: DARTS by default),
   then, alternating, random legal plans of it (`ranking.plan_pool`, change
   probability spread from 0.05 to 0.5: what `derive` chooses among) and
   random cells of the kind the supernet trains on (`input_graphs`),
   `--cells` of them besides the input.
3. Scores: `SupernetEnvironment.score`, exactly what `derive` ranks by (BN
   recalibrated per architecture, the search's `score_batches` batches of the
   policy split; never the test split). Cached with the pool, so a rerun
   builds no supernet.
4. Standalone: each architecture's network trained from scratch with the
   protocol's recipe (`cell_protocol.train_network`) with the first of
   `--seeds`; the input with every seed (the noise floor). Rows go in the
   protocol's own cache (`rows.jsonl` of the run dir), so the input's
   networks are the protocol's "original" rows, trained once.
5. Report (printed; `cell_fidelity/report.md` and `rows.csv` in the run dir):
   Kendall's tau and Spearman's rho with p-values over all architectures,
   over the input's plans, over the random cells and over those within one
   point of the input's accuracy; whether the top-scored plan beats the
   input, and how often among random `num_candidates`-plan sets (what
   `derive` samples); the noise floor.

Settings are paper_protocol's (`--preset` and the same flags), plus
`--cells` (smoke 3, cpu 20, gpu 40). On the cpu preset a network takes 2-7
minutes on one core, so 20 cells and 2 seeds take 1.5-3 hours.

  python benchmarks/cell_fidelity.py --preset=smoke --run_dir=/tmp/pp
  python benchmarks/cell_fidelity.py --preset=cpu      # beside benchmarks/results/paper_protocol
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
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
from ranking import correlations, plan_pool, top_beats_source
from rows import RowCache, save_provenance, write_csv

CELLS = {"smoke": 3, "cpu": 20, "gpu": 40}
VARIANT = "fidelity"  # the rows of the sampled architectures; the input's are "original"
_CELLS = flags.DEFINE_integer("cells", None, "Architectures besides the input (default: by --preset).")


def architecture_pool(search: cp.Search, settings: cp.Settings, source: Genotype, count: int) -> list[dict]:
    """The input, then `count` architectures: plans of the input and random cells, alternating.

    Each entry: kind ("input", "plan" or "cell"), change probability (plans),
    genotype, and its score as `derive` measures it.
    """
    supernet = search.supernet
    graph = supernet.graph_of(source)
    plans = plan_pool(
        graph,
        {
            "space": settings.space,
            "min_change": 0.05,
            "max_change": 0.5,
            "plans": (count + 1) // 2 + 1,
            "seed": settings.search_seed,
        },
    )[1:]
    cells = supernet.input_graphs(np.random.default_rng(settings.search_seed + 1), count // 2)
    chosen = [("input", 0.0, graph, TransformPlan.keep_all(graph, space=settings.space))]
    for index in range(max(len(plans), len(cells))):
        if index < len(plans):
            chosen.append(("plan", plans[index][0], graph, plans[index][1]))
        if index < len(cells):
            chosen.append(
                ("cell", 0.0, cells[index], TransformPlan.keep_all(cells[index], space=settings.space))
            )
    pool = []
    for kind, prob, arch_graph, plan in chosen[: count + 1]:
        genotype = supernet.arch_to_genotype(supernet.arch_of(arch_graph, plan))
        score = search.environment.score(arch_graph, plan)
        pool.append({"kind": kind, "change_prob": prob, "genotype": genotype.to_json(), "score": score})
    return pool


def summarise(
    pool: Sequence[Mapping[str, Any]], rows: Mapping[tuple[int, int], float], settings: cp.Settings
) -> dict:
    """Rank statistics of score against trained accuracy (seed = the first of `settings.seeds`)."""
    seed = settings.seeds[0]
    trained = [i for i in range(len(pool)) if (i, seed) in rows]
    summary: dict[str, Any] = {"trained": len(trained)}
    if (0, seed) not in rows:
        return summary
    source = rows[(0, seed)]
    summary["source_accuracy"] = source

    def corr(members: Sequence[int]) -> dict[str, float]:
        return correlations([pool[i]["score"] for i in members], [rows[(i, seed)] for i in members])

    summary["all"] = corr(trained)
    summary["plans"] = corr([i for i in trained if pool[i]["kind"] in ("input", "plan")])
    summary["cells"] = corr([i for i in trained if pool[i]["kind"] == "cell"])
    summary["near"] = corr([i for i in trained if abs(rows[(i, seed)] - source) <= 0.01])
    plans = [i for i in trained if pool[i]["kind"] == "plan"]
    if plans:
        top = max(plans, key=lambda i: (pool[i]["score"], -i))
        summary["top_plan"] = top
        summary["top_beats_source"] = rows[(top, seed)] > source
        summary["candidate_sets"] = top_beats_source(
            [pool[i]["score"] for i in plans],
            [rows[(i, seed)] for i in plans],
            source,
            size=settings.num_candidates,
            seed=0,
        )
    noise = [rows[(0, s)] for s in settings.seeds if (0, s) in rows]
    summary["noise"] = {
        "seeds": len(noise),
        "mean": statistics.fmean(noise),
        "std": statistics.stdev(noise) if len(noise) > 1 else float("nan"),
    }
    return summary


def report(summary: Mapping[str, Any], name: str, settings: cp.Settings) -> str:
    """The report's Markdown."""
    lines = [
        f"Cell-space reward fidelity: {name}, {summary['trained']} architectures trained "
        f"(benchmarks/cell_fidelity.py; seeds {list(settings.seeds)}).",
        "",
        "| architectures | n | Kendall tau (p) | Spearman rho (p) |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("all", "all"),
        ("plans", "the input and its plans"),
        ("cells", "random cells"),
        ("near", "within 1 point of the input"),
    ):
        c = summary.get(key)
        if c is not None:
            lines.append(
                f"| {label} | {c['n']} | {c['tau']:.2f} ({c['tau_p']:.2g}) "
                f"| {c['rho']:.2f} ({c['rho_p']:.2g}) |"
            )
    if "source_accuracy" in summary:
        noise = summary["noise"]
        lines += [
            "",
            f"Input: {summary['source_accuracy']:.4f} at seed {settings.seeds[0]}; over "
            f"{noise['seeds']} seeds {noise['mean']:.4f} ± {noise['std']:.4f} (the noise floor).",
        ]
    if "top_plan" in summary:
        sets = summary["candidate_sets"]
        verdict = "beats" if summary["top_beats_source"] else "does not beat"
        lines.append(
            f"The top-scored plan (#{summary['top_plan']}) {verdict} the input; among "
            f"{sets['sets']} random sets of {settings.num_candidates} plans the top-scored one beats it "
            f"{sets['beats']:.0%} of the time."
        )
    return "\n".join(lines) + "\n"


def run(settings: cp.Settings, run_dir: pathlib.Path, count: int, *, verbose: int = 0) -> dict[str, Any]:
    """Builds (or resumes) the pool, trains what is missing, writes the report; returns the summary."""
    name = settings.inputs[0]
    source = PUBLISHED[name]
    structure = cp.structure_of(source)
    search_dir = cp.search_dir_of(settings, run_dir, structure)
    out = run_dir / "cell_fidelity"
    pools, networks = RowCache(out), RowCache(run_dir)
    save_provenance(out)
    start = time.perf_counter()
    pool_key = {
        "part": "pool",
        "input": name,
        "search": search_dir.name,
        "cells": count,
        "score_batches": settings.score_batches,
    }
    cached = pools.get(pool_key)
    if cached is None:
        search = cp.run_search(settings, structure, search_dir, verbose=verbose)
        cached = pools.put(
            pool_key,
            {
                "pool": architecture_pool(search, settings, source, count),
                "seconds": round(time.perf_counter() - start, 1),
            },
        )
        del search  # the networks train without the supernet in memory
        print(f"pool of {len(cached['pool'])} architectures scored in {cached['seconds']:.0f} s")
    else:
        print(f"pool of {len(cached['pool'])} architectures: cached")
    pool = cached["pool"]
    order = [(0, s) for s in settings.seeds] + [(i, settings.seeds[0]) for i in range(1, len(pool))]
    accuracies: dict[tuple[int, int], float] = {}
    trained = 0
    for index, seed in order:
        genotype = Genotype.from_json(pool[index]["genotype"])
        variant = "original" if index == 0 else VARIANT
        key = cp.network_key(settings, name, variant, genotype, seed)
        row = networks.get(key)
        if row is None:
            row = networks.put(key, cp.train_network(settings, genotype, seed, verbose=verbose))
            trained += 1
            status = "trained"
        else:
            status = "cached"
        accuracies[(index, seed)] = row["test_accuracy"]
        print(
            f"{name} #{index} ({pool[index]['kind']}) seed {seed}: {status}, "
            f"score {pool[index]['score']:.4f}, "
            f"test accuracy {row['test_accuracy']:.4f}"
        )
    summary = summarise(pool, accuracies, settings)
    text = report(summary, name, settings)
    print(text)
    (out / "report.md").write_text(text)
    write_csv(
        out / "rows.csv",
        [
            {
                "index": i,
                "kind": pool[i]["kind"],
                "change_prob": pool[i]["change_prob"],
                "score": pool[i]["score"],
                "seed": s,
                "test_accuracy": accuracies[(i, s)],
            }
            for i, s in order
        ],
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"{trained} networks trained this run; report in {out / 'report.md'}")
    return summary


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    settings = pp.settings_from_flags()
    count = _CELLS.value if _CELLS.value is not None else CELLS[flags.FLAGS.preset]
    if flags.FLAGS.dry_run:
        count = min(count, 2)
    print("settings: " + json.dumps({**dataclasses.asdict(settings), "cells": count}))
    run(settings, pp.run_dir_from_flags(), count, verbose=flags.FLAGS.verbose)


if __name__ == "__main__":
    app.run(main)
