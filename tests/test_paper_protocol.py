"""benchmarks/paper_protocol.py: the paper's protocol (docs/design.md, sections 2 and 8) at smoke scale.

The end-to-end test runs `--preset=smoke` twice in a temporary run dir: the
first run trains the search, derives DARTS and retrains both networks; the
second must find everything cached (no search, no derive, no training) and
write the same table. It needs Debian's Fashion-MNIST files and skips without
them.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import pytest
from absl import app
from conftest import import_benchmark

import nat_keras
from nat_keras.cells import PUBLISHED
from nat_keras.search import CHOOSE_VERSION

ROOT = pathlib.Path(__file__).resolve().parents[1]
pp = import_benchmark("cell_protocol")  # paper_protocol.py's functions; its tests run the app

FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


def test_each_input_gets_the_supernet_structure_it_needs():
    assert pp.structure_of(PUBLISHED["DARTS"]) == (4, "full")
    assert pp.structure_of(PUBLISHED["ENAS"]) == (5, "loose_end")
    for name in ("ResBlock", "VGG", "Mobilenetv2"):
        assert pp.structure_of(PUBLISHED[name]) == (4, "loose_end"), name


def test_a_compact_budget_shares_the_search_and_keeps_its_own_choices_and_tables():
    equal = pp.PRESETS["cpu"]
    half = equal.replace(macs_ratio=0.5)
    assert half.search_key("full4") == equal.search_key("full4")  # one search serves both budgets
    assert "macs_ratio" not in equal.derive_key("DARTS", "full4")  # equal-cost rows keep their keys
    assert half.derive_key("DARTS", "full4")["macs_ratio"] == 0.5
    assert half.derive_key("DARTS", "full4")["choose_version"] == CHOOSE_VERSION
    assert "choose_version" not in equal.derive_key("DARTS", "full4")
    assert equal.budget() == nat_keras.Budget() and half.budget() == nat_keras.Budget(macs_ratio=0.5)
    assert (equal.table_suffix(), half.table_suffix()) == ("", "-macs0.5")
    assert half.replace(space="nat++").table_suffix() == "-natpp-macs0.5"  # NAT's tables stay
    # A policy learned at the target, and a supernet trained on it: searches and tables of their own.
    learned = half.replace(search_macs_ratio=0.5)
    trained = learned.replace(supernet_macs_ratio=0.5)
    assert len({str(s.search_key("full4")) for s in (half, learned, trained)}) == 3
    assert "supernet_macs_ratio" not in learned.search_key("full4")  # older searches keep their keys
    assert (learned.table_suffix(), trained.table_suffix()) == (
        "-macs0.5-learned0.5",
        "-macs0.5-learned0.5-supernet0.5",
    )
    # A longer search: a search of its own, and tables named after it next to the preset's.
    longer = half.replace(search_epochs=4 * half.search_epochs)
    assert longer.search_key("full4") != half.search_key("full4")
    assert (half.table_suffix(half), longer.table_suffix(half)) == ("-macs0.5", "-macs0.5-search48")
    # Another REINFORCE baseline: a search and tables of its own; the moving average keeps its keys.
    loo, authors = (half.replace(baseline_update=b) for b in ("leave_one_out", "authors"))
    assert "baseline_update" not in half.search_key("full4")
    assert loo.search_key("full4")["baseline_update"] == "leave_one_out"
    assert loo.search_config().reinforce.baseline_update == "leave_one_out"
    assert (loo.table_suffix(), authors.table_suffix()) == ("-macs0.5-loo", "-macs0.5-authors")
    assert "large_edge" in pp.BASELINES
    # NAT's choices carry the derive rule; a baseline's key is what it was before that rule.
    nat, random = equal.derive_key("DARTS", "full4"), equal.derive_key("DARTS", "full4", "random")
    assert nat["derive_version"] == nat_keras.search.DERIVE_VERSION and "method" not in nat
    assert random == {**{k: v for k, v in nat.items() if k != "derive_version"}, "method": "random"}


def test_changes_and_agreement_with_the_published_transformation():
    darts, nat_darts = PUBLISHED["DARTS"], PUBLISHED["NAT_DARTS"]
    changes = pp.describe_changes(darts, nat_darts)
    assert "normal/node1_edge0(from 0) sep_conv_3x3->skip_connect" in changes
    assert pp.describe_changes(darts, darts) == "none (the input won)"
    assert pp.published_agreement("DARTS", nat_darts, "nat") == "5/5"
    assert pp.published_agreement("DARTS", darts, "nat") == "0/5"


def test_summary_pairs_seeds_and_reports_the_spread():
    row = {"input": "DARTS", "params": 10, "macs": 20, "train_seconds": 3.0}
    rows = [
        {**row, "variant": "original", "seed": 0, "test_accuracy": 0.80},
        {**row, "variant": "original", "seed": 1, "test_accuracy": 0.82},
        {**row, "variant": "transformed", "seed": 0, "test_accuracy": 0.85},
        # seed 1 of the transformed network is unfinished: seed 1 must not enter the comparison
    ]
    settings = pp.PRESETS["smoke"].replace(seeds=(0, 1))
    (line,) = pp.summarise(rows, {"DARTS": {"changes": "x", "structure": "full4"}}, settings, {"full4": 5.0})
    assert line["seeds"] == "0"
    assert line["original acc"] == "0.8000 (1 seed)"
    assert line["delta"] == "0.0500 (1 seed)"
    rows.append({**row, "variant": "transformed", "seed": 1, "test_accuracy": 0.86})
    (line,) = pp.summarise(rows, {}, settings, {})
    assert line["seeds"] == "0,1"
    assert line["original acc"] == "0.8100 ± 0.0141 [0.8000-0.8200]"
    assert set(line) == set(pp.TABLE_COLUMNS)


def _run_smoke(
    run_dir: pathlib.Path, script: str = "paper_protocol.py", extra: tuple[str, ...] = ("--preset=smoke",)
) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *extra, f"--run_dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_smoke_run_writes_the_table_and_a_rerun_skips_finished_rows(tmp_path):
    run_dir = tmp_path / "pp"
    first = _run_smoke(run_dir)
    assert "DARTS original seed 0: trained" in first
    assert "DARTS transformed seed 0: trained" in first
    assert "DARTS random seed 0: trained" in first
    assert "5 parts computed this run" in first  # NAT's derive, random search's, three networks

    with (run_dir / "table.csv").open() as stream:
        table = list(csv.DictReader(stream))
    assert list(table[0]) == list(pp.TABLE_COLUMNS)
    assert [line["input"] for line in table] == ["DARTS"]
    assert table[0]["seeds"] == "0"
    assert (run_dir / "table.md").read_text().count("| DARTS | 0 |") == 1  # one line in the main table
    with (run_dir / "rows.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(r["variant"] for r in rows) == ["original", "random", "transformed"]
    for r in rows:
        assert 0.0 <= float(r["test_accuracy"]) <= 1.0
        assert int(r["params"]) > 0 and int(r["macs"]) > 0
    # The table's MACs are nat_keras.cost's (cell ops included: tests/test_costs.py checks that).
    original = next(r for r in rows if r["variant"] == "original")
    assert int(table[0]["MACs orig"]) == int(original["macs"])
    assert int(table[0]["params orig"]) == int(original["params"])
    # The trained search is kept: the policy (Policy.save) and its summary.
    (search_dir,) = (run_dir / "search").iterdir()
    assert (search_dir / "policy" / "policy.json").exists()
    summary = json.loads((search_dir / "search.json").read_text())
    assert summary["key"]["structure"] == "full4"
    assert summary["resumed_at_epoch"] == 0 and summary["seconds"] > 0  # every epoch's time, summed
    # NAT and the baseline side by side, each against the original of the same seed.
    with (run_dir / "methods.csv").open() as stream:
        methods = list(csv.DictReader(stream))
    assert [(m["input"], m["method"], m["seeds"]) for m in methods] == [
        ("DARTS", "NAT", "0"),
        ("DARTS", "random", "0"),
    ]
    assert methods[0]["test acc"] == table[0]["transformed acc"]
    assert "| DARTS | random | 0 |" in (run_dir / "table.md").read_text()
    lines_before = (run_dir / "rows.jsonl").read_text()
    derive_before = (run_dir / "derive" / "rows.jsonl").read_text()

    second = _run_smoke(run_dir)
    assert "0 parts computed this run" in second
    assert "DARTS original seed 0: cached" in second
    assert "DARTS transformed seed 0: cached" in second
    assert "DARTS random seed 0: cached" in second
    assert "search full4" not in second  # the derive row is cached, so no supernet is even built
    assert (run_dir / "rows.jsonl").read_text() == lines_before
    assert (run_dir / "derive" / "rows.jsonl").read_text() == derive_before
    with (run_dir / "table.csv").open() as stream:
        assert list(csv.DictReader(stream)) == table
    assert len((run_dir / "provenance.jsonl").read_text().splitlines()) == 2

    # The cell space's reward fidelity reuses this run's search and its original network.
    fidelity = _run_smoke(run_dir, "cell_fidelity.py")
    assert "search full4-" in fidelity and "when run)" in fidelity  # restored, not trained again
    assert "DARTS #0 (input) seed 0: cached" in fidelity  # the protocol's original row
    assert "3 networks trained this run" in fidelity  # 2 plans of DARTS and 1 random cell
    with (run_dir / "cell_fidelity" / "rows.csv").open() as stream:
        kinds = [r["kind"] for r in csv.DictReader(stream)]
    assert kinds == ["input", "plan", "cell", "plan"]
    summary = json.loads((run_dir / "cell_fidelity" / "summary.json").read_text())
    assert summary["trained"] == 4 and summary["all"]["n"] == 4
    assert "| all | 4 |" in (run_dir / "cell_fidelity" / "report.md").read_text()
    again = _run_smoke(run_dir, "cell_fidelity.py")
    assert "pool of 4 architectures: cached" in again and "0 networks trained this run" in again


def test_dry_run_caps_every_count_and_keeps_the_presets_sizes_and_recipe():
    gpu = pp.PRESETS["gpu"]
    dry = pp.dry_run_of(gpu)
    # Every gpu count is above its cap; train_batches and test_batches are 0
    # ("the whole split"), which must become the cap too, not stay "everything".
    for name, cap in pp.DRY_RUN.items():
        assert getattr(dry, name) == cap, name
    assert (dry.inputs, dry.seeds) == (gpu.inputs[:1], gpu.seeds[:1])
    same = ("supernet_cells", "supernet_channels", "net_cells", "net_channels", "recipe", "batch_size")
    assert all(getattr(dry, name) == getattr(gpu, name) for name in same)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_gpu_preset_dry_run_on_the_cpu(tmp_path):
    # The GPU scale's command, a few steps of each part: the 600-epoch recipe's
    # schedule, the whole-split data paths (train_batches=0 capped), the derive.
    # Its sizes are shrunk here: the paper's 8-cell C=20 supernet takes over
    # 7 GB and minutes to trace on the CPU, and sizes are plain parameters
    # that the cpu preset's runs exercise.
    small = ("--supernet_cells=2", "--supernet_channels=8", "--net_cells=2", "--net_channels=8")
    out = _run_smoke(tmp_path / "dry", extra=("--preset=gpu", "--dry_run", *small))
    assert "DARTS original seed 0: trained" in out
    assert "DARTS transformed seed 0: trained" in out
    settings = json.loads(out.split("settings: ", 1)[1].splitlines()[0])
    assert (settings["recipe"], settings["epochs"], settings["seeds"]) == ("gpu", 1, [0])
    assert settings["weight_steps"] == pp.DRY_RUN["weight_steps"]


def test_a_kept_input_or_a_cell_another_method_chose_reuses_that_row(tmp_path):
    settings = pp.PRESETS["smoke"]
    cache = pp.RowCache(tmp_path)
    darts, resblock = PUBLISHED["DARTS"], PUBLISHED["ResBlock"]
    kept = {"original": darts, "random": darts}
    assert pp.reuse_twin_row(cache, settings, "DARTS", "random", kept, 0) is None  # no original yet
    cache.put(pp.network_key(settings, "DARTS", "original", darts, 0), {"test_accuracy": 0.81, "params": 5})
    row = pp.reuse_twin_row(cache, settings, "DARTS", "random", kept, 0)
    assert (row["variant"], row["test_accuracy"], row["same_as_original"]) == ("random", 0.81, True)
    # Stored under the method's own key, so a rerun finds it as a cached row.
    again = pp.RowCache(tmp_path).get(pp.network_key(settings, "DARTS", "random", darts, 0))
    assert again == row
    assert pp.reuse_twin_row(cache, settings, "DARTS", "random", kept, 1) is None  # other seeds stay apart
    # Two methods that chose one cell (not the input's): the second reuses the first's row.
    chosen = {"original": darts, "large_edge": resblock, "fitted": resblock, "nat": darts}
    assert pp.reuse_twin_row(cache, settings, "DARTS", "fitted", chosen, 0) is None
    cache.put(pp.network_key(settings, "DARTS", "large_edge", resblock, 0), {"test_accuracy": 0.7})
    row = pp.reuse_twin_row(cache, settings, "DARTS", "fitted", chosen, 0)
    assert (row["variant"], row["test_accuracy"], row["same_as"]) == ("fitted", 0.7, "large_edge")
    assert "same_as_original" not in row


def test_recipe_fields_added_later_leave_cached_keys_alone():
    """A Recipe field at its no-op value stays out of a row's key, so rows cached before it match."""
    before = {
        field: value
        for field, value in nat_keras.train.Recipe.cpu().to_dict().items()
        if field not in pp.LATER_RECIPE_FIELDS
    }
    assert pp.recipe_key(nat_keras.train.Recipe.cpu()) == before
    clipped = nat_keras.train.Recipe.cpu(grad_clip=5.0, bn_calibration_examples=512)
    assert pp.recipe_key(clipped) == {**before, "grad_clip": 5.0, "bn_calibration_examples": 512}


def test_compact_choices_relates_params_and_scores_to_retrained_accuracy():
    choices = import_benchmark("compact_choices")
    net = {"net_cells": 5, "train_batches": 150}
    cells = {"a": (100, 0.70), "b": (200, 0.75), "c": (300, 0.80)}  # more params, better retrained
    rows = [
        {"key": {**net, "input": "VGG", "genotype": g, "seed": seed},
         "values": {"params": p, "macs": 50, "test_accuracy": acc + 0.01 * seed}}
        for g, (p, acc) in cells.items() for seed in (0, 1)
    ]  # fmt: skip
    smoke = {"net_cells": 2, "train_batches": 10, "input": "VGG", "genotype": "a", "seed": 0}
    rows.append({"key": smoke, "values": {"params": 100, "macs": 50, "test_accuracy": 0.99}})  # left out
    compact = {"macs_ratio": 0.5, "space": "nat", "score_batches": 16, "input": "VGG"}
    derive_rows = [  # the supernet scores the cells against their retrained order
        {"key": {**compact, "method": m}, "values": {"genotype": g, "scores": [s, 0.1]}}
        for m, g, s in (("nat", "a", 0.6), ("random", "b", 0.5), ("fitted", "c", 0.4))
    ]
    derive_rows.append({"key": {**compact, "macs_ratio": 1.0}, "values": {"genotype": "a", "scores": [0.9]}})
    found = choices.compact_choices(rows, derive_rows, 0.5)
    assert found["cells"]["VGG"] == [(100, 50, 0.705, 2), (200, 50, 0.755, 2), (300, 50, 0.805, 2)]
    assert found["capacity"]["VGG"]["rho"] == pytest.approx(1.0)
    ((variant, name), stats), *_ = found["ranking"].items()
    assert (variant, name) == ("policy at equal cost, supernet at equal cost", "VGG")
    assert stats["accuracy"]["tau"] == pytest.approx(-1.0) and stats["params"]["tau"] == pytest.approx(-1.0)
    table = choices.markdown(found, 0.5)
    assert "| VGG | 3 | 100 (0.7050), 200 (0.7550), 300 (0.8050) | +1.00 |" in table
    assert "| policy at equal cost, supernet at equal cost | mean over inputs | | -1.00 | -1.00 |" in table


def test_chosen_cells_lists_each_retrained_choice_at_the_budget_once():
    readers = import_benchmark("chosen_cells")
    net = {"net_cells": 5, "train_batches": 150, "input": "VGG"}
    rows = [
        {"key": {**net, "genotype": g, "seed": 0}, "values": {"params": p, "macs": 50, "test_accuracy": 0.7}}
        for g, p in (("a", 100), ("b", 200))
    ]
    compact = {"macs_ratio": 0.5, "space": "nat", "input": "VGG"}
    derive_rows = [
        {"key": {**compact, "method": "nat"}, "values": {"genotype": "a", "scores": [0.6]}},
        {"key": {**compact, "method": "random"}, "values": {"genotype": "a", "scores": [0.6]}},  # same cell
        {"key": {**compact, "space": "nat++"}, "values": {"genotype": "b", "scores": [0.5]}},  # other space
        {"key": compact, "values": {"genotype": "never retrained", "scores": [0.9]}},
    ]
    cells = readers.chosen_cells(rows, derive_rows, 0.5)
    assert [genotype for genotype, _ in cells["VGG"]] == ["a"]
    assert cells["VGG"][0][1] == {"params": 100, "macs": 50, "accuracy": [0.7]}
    assert readers.chosen_cells(rows, derive_rows, 0.75) == {}


def test_longer_supernet_reports_rank_agreement_and_the_top_scored_cell_per_length():
    longer = import_benchmark("longer_supernet")
    accuracy, params = [0.70, 0.75, 0.80], [100, 200, 300]
    found = longer.summarise({"x1": [0.3, 0.2, 0.1], "x4": [0.1, 0.2, 0.3]}, accuracy, params)
    assert found["x1"]["accuracy"]["tau"] == pytest.approx(-1.0) and found["x1"]["top_accuracy"] == 0.70
    assert found["x4"]["params"]["tau"] == pytest.approx(1.0) and found["x4"]["top_accuracy"] == 0.80
    assert found["x4"]["mean_accuracy"] == pytest.approx(0.75) and found["x4"]["best_accuracy"] == 0.80
    table = longer.markdown({"VGG": found}, 0.5, {"x1": [60.0], "x4": [240.0]})
    assert "| VGG | x4 | 3 | +1.00 | +1.00 | 0.8000 | 0.8000 | 0.7500 |" in table
    assert "| x1 | 60 | -1.00 | -1.00 | -5.00 |" in table


def test_longer_supernet_says_which_inputs_lack_retrained_choices(tmp_path):
    longer = import_benchmark("longer_supernet")
    (tmp_path / "derive").mkdir()
    (tmp_path / "rows.jsonl").write_text("")
    (tmp_path / "derive" / "rows.jsonl").write_text("")
    settings = pp.PRESETS["smoke"].replace(inputs=("DARTS",), macs_ratio=0.5)
    with pytest.raises(app.UsageError, match=r"macs_ratio=0.5 for \['DARTS'\].*paper_protocol.py"):
        longer.run(settings, tmp_path, [1, 4])
