"""The cells the paper's protocol chose and retrained, read from its run dir (no flags, no training).

benchmarks/paper_protocol.py leaves every retrained network in `rows.jsonl`
and every choice (NAT's `derive` and the baselines', with their supernet
scores) in `derive/rows.jsonl`; benchmarks/compact_choices.py and
benchmarks/longer_supernet.py read them through these functions.
"""

from __future__ import annotations

import collections
import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any


def read_jsonl(path: pathlib.Path) -> Iterable[dict[str, Any]]:
    """The rows of a `RowCache` file, each {"key": ..., "values": ...}."""
    with open(path) as file:
        for line in file:
            if line.strip():
                yield json.loads(line)


def search_variant(key: Mapping[str, Any]) -> str:
    """How a choice's search was run: where its policy learned and its supernet trained, how long,
    and REINFORCE's baseline when it was not the moving average.

    Example:
      >>> search_variant({"search_macs_ratio": 0.5, "search_epochs": 12})
      'policy at 0.5, supernet at equal cost, 12 epochs'
    """
    policy = key.get("search_macs_ratio")
    supernet = key.get("supernet_macs_ratio")
    epochs = key.get("search_epochs")
    baseline = key.get("baseline_update")
    return (
        (f"policy at {policy:g}" if policy else "policy at equal cost")
        + (f", supernet at {supernet:g}" if supernet else ", supernet at equal cost")
        + (f", {epochs} epochs" if epochs else "")
        + (f", {baseline} baseline" if baseline else "")
    )


def retrained_cells(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """{(input, genotype JSON): params, MACs, test accuracies over seeds} of every retrained network.

    Only the rows of the run dir's usual network (its most common cell count
    and training batches) count, so a smoke row never mixes in.
    """
    rows = list(rows)
    if not rows:
        return {}
    usual = collections.Counter((r["key"].get("net_cells"), r["key"].get("train_batches")) for r in rows)
    cells, train_batches = usual.most_common(1)[0][0]
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key, values = row["key"], row["values"]
        if (key.get("net_cells"), key.get("train_batches")) != (cells, train_batches):
            continue
        cell = found.setdefault(
            (key["input"], key["genotype"]),
            {"params": values["params"], "macs": values["macs"], "accuracy": []},
        )
        cell["accuracy"].append(values["test_accuracy"])
    return found


def choices(
    derive_rows: Iterable[Mapping[str, Any]], retrained: Mapping[tuple[str, str], Any], macs_ratio: float
) -> Iterable[tuple[Mapping[str, Any], str, float]]:
    """(derive key, genotype JSON, score) of every retrained cell chosen at `macs_ratio` in NAT's space."""
    for row in derive_rows:
        key, values = row["key"], row["values"]
        if (
            key.get("macs_ratio") == macs_ratio
            and key.get("space") == "nat"
            and (key["input"], values["genotype"]) in retrained
        ):
            yield key, values["genotype"], values["scores"][0]


def chosen_cells(
    rows: Iterable[Mapping[str, Any]], derive_rows: Iterable[Mapping[str, Any]], macs_ratio: float
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Every retrained cell chosen at `macs_ratio`: {input: [(genotype JSON, its `retrained_cells` entry)]}.

    Example:
      >>> cells = chosen_cells(rows, derive_rows, 0.5)
      >>> len(cells["VGG"])   # VGG cells chosen at half the MACs by any method, all retrained
      8
    """
    retrained = retrained_cells(rows)
    chosen = {(key["input"], genotype) for key, genotype, _ in choices(derive_rows, retrained, macs_ratio)}
    found: dict[str, list[tuple[str, dict[str, Any]]]] = collections.defaultdict(list)
    for name, genotype in sorted(chosen):
        found[name].append((genotype, retrained[(name, genotype)]))
    return dict(found)
