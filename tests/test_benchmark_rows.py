"""benchmarks/rows.py: finished rows survive a killed run and are never mixed across settings."""

from __future__ import annotations

import csv
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

from rows import RESULTS_DIR, RowCache, dry_run_counts, provenance, run_dir_for, write_csv


def test_rows_resume_by_key_whatever_the_key_order(tmp_path):
    cache = RowCache(tmp_path)
    assert cache.get({"net": "resnet20", "seed": 0}) is None
    cache.put({"net": "resnet20", "seed": 0}, {"accuracy": 0.9})
    cache.put({"net": "resnet20", "seed": 1}, {"accuracy": 0.8})
    again = RowCache(tmp_path)  # a later run
    assert len(again) == 2
    assert again.get({"seed": 0, "net": "resnet20"}) == {"net": "resnet20", "seed": 0, "accuracy": 0.9}
    assert again.get({"net": "resnet20", "seed": 0, "epochs": 5}) is None  # other settings: other row


def test_a_line_cut_by_a_kill_is_dropped_and_the_rest_kept(tmp_path):
    cache = RowCache(tmp_path)
    cache.put({"seed": 0}, {"accuracy": 0.5})
    with cache.path.open("a") as stream:
        stream.write('{"key": {"seed": 1}, "val')  # killed mid-write
    again = RowCache(tmp_path)
    assert [row["seed"] for row in again.rows()] == [0]
    again.put({"seed": 1}, {"accuracy": 0.6})
    assert [row["seed"] for row in RowCache(tmp_path).rows()] == [0, 1]


def test_csv_has_every_field_and_provenance_names_the_versions(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"a": 1}, {"a": 2, "b": 3}])
    with path.open() as stream:
        assert list(csv.DictReader(stream)) == [{"a": "1", "b": ""}, {"a": "2", "b": "3"}]
    facts = provenance()
    assert {"command", "machine", "cores_used", "tensorflow", "keras", "nat_keras"} <= set(facts)
    assert 1 <= facts["cores_used"] <= os.cpu_count()


def test_dry_run_counts_cap_every_count_and_all_becomes_the_cap():
    values = {"epochs": 600, "train_batches": 0, "plans": 1, "model": "resnet20"}
    caps = {"epochs": 1, "train_batches": 2, "plans": 2}
    assert dry_run_counts(values, caps) == {"epochs": 1, "train_batches": 2, "plans": 1}


def test_a_dry_run_without_a_given_run_dir_writes_outside_the_results():
    given = run_dir_for(RESULTS_DIR / "x", dry_run=True, given=True, name="x")
    assert given == RESULTS_DIR / "x"
    assert run_dir_for(RESULTS_DIR / "x", dry_run=False, given=False, name="x") == RESULTS_DIR / "x"
    temporary = run_dir_for(RESULTS_DIR / "x", dry_run=True, given=False, name="x")
    assert temporary.is_dir() and RESULTS_DIR not in temporary.parents
    temporary.rmdir()
