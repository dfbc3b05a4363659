"""Finished benchmark rows, cached on disk so that a long table is built over several runs.

A benchmark that trains networks for hours writes each finished row (one
network, method and seed) the moment it is done, keyed by everything that
determines it. A rerun with the same settings skips the rows it finds and
computes only the missing ones; a row computed with other settings has
another key and is never mixed in. Rows are one JSON object per line
(`rows.jsonl`, appended and flushed, so a killed run loses at most the row in
progress), and `write_csv` turns them into the CSV a table is made from.

`provenance()` says where figures come from: the machine, the versions and the
command, printed at the start of every benchmark and stored beside its rows.

Example:
  >>> cache = RowCache(RESULTS_DIR / "reward_fidelity")
  >>> key = {"space": "model", "plan": 3, "seed": 0}
  >>> row = cache.get(key) or cache.put(key, {"score": 0.91, "accuracy": 0.88})
  >>> row["accuracy"]
  0.88
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import platform
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

# Where the benchmarks keep their runs by default. Git keeps the rows, tables,
# plots and provenance found there (benchmarks/results/.gitignore), not the
# checkpoints and models, so a table built over several sessions survives a
# fresh checkout and a rerun computes only what is missing.
RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"


def _canonical(key: Mapping[str, Any]) -> str:
    # Sorted, compact JSON: equal settings give equal strings whatever their order.
    return json.dumps(dict(key), sort_keys=True, separators=(",", ":"), default=str)


class RowCache:
    """Rows of one benchmark in `directory/rows.jsonl`, keyed by their settings.

    Args:
      directory: where the rows (and `provenance.json`) live; created if missing.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "rows.jsonl"
        self._rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            text = self.path.read_text()
            if text and not text.endswith("\n"):
                # A run killed mid-write left half a row: cut it, so the next row starts a line.
                text = text[: text.rfind("\n") + 1]
                self.path.write_text(text)
            for line in text.splitlines():
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a run killed mid-write: that row is recomputed
                self._rows[_canonical(entry["key"])] = entry

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The cached row for `key` (its key fields and values together), or None."""
        entry = self._rows.get(_canonical(key))
        return None if entry is None else {**entry["key"], **entry["values"]}

    def put(self, key: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
        """Stores a finished row at once (appended and flushed) and returns it as `get` would."""
        entry = {"key": dict(key), "values": dict(values)}
        with self.path.open("a") as stream:
            stream.write(json.dumps(entry, default=float) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        self._rows[_canonical(key)] = entry
        return {**entry["key"], **entry["values"]}

    def rows(self) -> list[dict[str, Any]]:
        """Every cached row, in the order they were first finished."""
        return [{**entry["key"], **entry["values"]} for entry in self._rows.values()]


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> pathlib.Path:
    """Writes `rows` as CSV, with the union of their fields as columns (first seen first)."""
    rows = list(rows)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    path = pathlib.Path(path)
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def dry_run_counts(values: Mapping[str, Any], caps: Mapping[str, int]) -> dict[str, int]:
    """The counts named by `caps`, each at most its cap; a count of 0 ("all") becomes the cap.

    What a benchmark's `--dry_run` runs with: a few steps of every part.

    Example:
      >>> dry_run_counts({"epochs": 600, "train_batches": 0, "seed": 3}, {"epochs": 1, "train_batches": 2})
      {'epochs': 1, 'train_batches': 2}
    """
    return {name: min(values[name] or cap, cap) for name, cap in caps.items()}


def run_dir_for(run_dir: str | os.PathLike, *, dry_run: bool, given: bool, name: str) -> pathlib.Path:
    """`run_dir`, or for a dry run whose run dir was not `given`, a new temporary one.

    A dry run's rows are no results, so they stay out of `RESULTS_DIR`.
    """
    if dry_run and not given:
        return pathlib.Path(tempfile.mkdtemp(prefix=f"{name}_dry_run_"))
    return pathlib.Path(run_dir)


def provenance() -> dict[str, Any]:
    """Where figures come from: command, machine, cores and library versions.

    Example:
      >>> provenance()["command"]
      'python benchmarks/reward_fidelity.py --preset=cpu'
    """
    import keras
    import tensorflow as tf

    import nat_keras

    return {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        # The cores this process may use (taskset): TF's float sums, hence short runs' results, depend on it.
        "cores_used": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "nat_keras": nat_keras.__version__,
    }


def save_provenance(directory: str | os.PathLike) -> dict[str, Any]:
    """Prints `provenance()` and appends it to `directory/provenance.jsonl` (one line per run)."""
    facts = provenance()
    print("; ".join(f"{name}: {value}" for name, value in facts.items()))
    with (pathlib.Path(directory) / "provenance.jsonl").open("a") as stream:
        stream.write(json.dumps(facts) + "\n")
    return facts
