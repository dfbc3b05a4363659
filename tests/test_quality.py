"""benchmarks/quality.py: its table from known rows, and the smoke preset end to end (cached on rerun).

The end-to-end run is a fresh interpreter (the benchmark defines absl flags)
and reads Debian's Fashion-MNIST files, so it runs where they are installed.
"""

from __future__ import annotations

import csv
import pathlib
import subprocess
import sys

import pytest
from conftest import import_benchmark

from nat_keras.cells import PUBLISHED, Genotype
from nat_keras.search import CHOOSE_VERSION

REPO = pathlib.Path(__file__).resolve().parents[1]
quality = import_benchmark("quality")
needs_fashion_mnist = pytest.mark.skipif(
    __import__("nat_keras").data.fashion_mnist.find_directory() is None,
    reason="needs Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist)",
)


def _row(method, seed, accuracy, *, budget="equal", macs=100):
    return {
        "part": "row", "input": "resnet8", "budget": budget, "method": method, "seed": seed,
        "test_accuracy": accuracy, "params": 10, "macs": macs, "macs_ratio": macs / 100, "changed": 0,
        "search_seconds": 1.0,
    }  # fmt: skip


def test_each_seed_has_its_own_row():
    """The source's seed (Settings.seed) must not overwrite the row's seed in the cache key."""
    settings = quality.PRESETS["smoke"].replace(seed=0)
    keys = [quality.row_key(settings, "resnet8", "equal", "nat", seed) for seed in (0, 1)]
    assert [k["seed"] for k in keys] == [0, 1] and keys[0] != keys[1]
    assert keys[0]["source_seed"] == keys[1]["source_seed"] == 0
    # The original is one network at every budget: one row, whichever budget runs first.
    originals = [quality.row_key(settings, "resnet8", b, "original", 0) for b in ("half_macs", "equal")]
    assert originals[0] == originals[1] and originals[0]["budget"] == "-"


def test_the_reinforce_baseline_is_in_nat_s_keys_only_when_not_the_moving_average():
    """Rows cached before the option keep their keys; the baselines learn no policy: their rows are shared."""
    smoke = quality.PRESETS["smoke"]
    loo = smoke.replace(baseline_update="leave_one_out")
    assert loo.reinforce_config().baseline_update == "leave_one_out"
    assert loo.reinforce_config().num_samples == smoke.samples
    for method in ("nat", "nat++"):
        assert "baseline_update" not in quality.row_key(smoke, "resnet8", "half_macs", method, 0)
        assert quality.row_key(loo, "resnet8", "half_macs", method, 0)["baseline_update"] == "leave_one_out"
    for method in ("original", "fitted", "random"):
        assert quality.row_key(loo, "resnet8", "half_macs", method, 0) == quality.row_key(
            smoke, "resnet8", "half_macs", method, 0
        )
    cpu = quality.PRESETS["cpu"]
    stem = quality.table_stem(cpu.replace(baseline_update="leave_one_out"), cpu)
    assert stem == "quality-baseline_update=leave_one_out"


def test_rows_that_differ_only_after_the_search_share_it():
    cpu = quality.PRESETS["cpu"]
    clipped = quality.row_key(cpu, "resnet20", "half_macs", "nat", 0)
    unclipped = quality.row_key(cpu.replace(fine_tune_grad_clip=None), "resnet20", "half_macs", "nat", 0)
    assert clipped != unclipped and clipped["fine_tune_grad_clip"] == 5.0
    assert quality._search_key(clipped) == quality._search_key(unclipped)
    # The search key is exactly the key rows had before the clipping existed (their directories).
    assert not set(quality.AFTER_SEARCH_ONLY) & set(quality._search_key(clipped))
    # A compact row's key names the final-choice rule; the search it reuses does not.
    assert clipped["choose_version"] == CHOOSE_VERSION
    assert "choose_version" not in quality.row_key(cpu, "resnet20", "equal", "nat", 0)
    other_search = quality.row_key(cpu.replace(policy_steps=6), "resnet20", "half_macs", "nat", 0)
    assert quality._search_key(other_search) != quality._search_key(clipped)


def test_a_row_finds_the_row_that_ran_its_search_first(tmp_path):
    cpu = quality.PRESETS["cpu"]
    cache = quality.RowCache(tmp_path)
    key = quality.row_key(cpu, "resnet20", "half_macs", "nat", 0)
    assert quality.first_row_of_search(cache, key) is None
    # A row of the earlier final-choice rule, with every other setting equal, ran it.
    before_rule = {k: v for k, v in key.items() if k != "choose_version"}
    cache.put(before_rule, {"search_seconds": 300.0})
    assert quality.first_row_of_search(cache, key)["search_seconds"] == 300.0
    # A row from before the fine-tuning settings existed ran it earlier still.
    cache.put(quality._search_key(key), {"search_seconds": 280.0})
    assert quality.first_row_of_search(cache, key)["search_seconds"] == 280.0
    other_seed = quality.row_key(cpu, "resnet20", "half_macs", "nat", 1)
    assert quality.first_row_of_search(cache, other_seed) is None


def test_an_input_built_at_another_width_is_its_own_input():
    settings = quality.PRESETS["cpu"]
    full = quality.row_key(settings, "resnet20", "equal", "nat", 0)
    assert "width" not in full  # rows cached before widths existed keep their keys
    assert quality.row_key(settings, "vgg16", "equal", "nat", 0)["width"] == 0.25
    narrower = quality.row_key(settings.replace(widths=(("vgg16", 0.5),)), "vgg16", "equal", "nat", 0)
    assert narrower["width"] == 0.5
    rows = [_row("original", 0, 0.9), {**_row("original", 0, 0.8), "width": 0.5}]
    assert [r["input"] for r in quality.summarise(rows)] == ["resnet8", "resnet8 x0.5"]


def test_the_table_holds_only_rows_of_the_run_s_settings():
    cpu = quality.PRESETS["cpu"]
    rows = [
        {**quality.row_key(cpu, "resnet20", "equal", "nat", 1), "test_accuracy": 0.8},
        {**quality.row_key(cpu, "vgg16", "half_macs", "random", 0), "test_accuracy": 0.7},
        {
            **quality.row_key(cpu.replace(fine_tune_epochs=3), "resnet20", "equal", "nat", 1),
            "test_accuracy": 0.9,
        },
        {**quality.row_key(cpu.replace(widths=()), "vgg16", "equal", "nat", 0), "test_accuracy": 0.9},
        {"part": "source", "input": "resnet20", "test_accuracy": 0.5},
    ]
    kept = quality.of_settings(cpu, rows)
    assert [(r["input"], r["test_accuracy"]) for r in kept] == [("resnet20", 0.8), ("vgg16", 0.7)]


def test_widths_flag_is_parsed_and_checked():
    assert quality.parse_widths(["vgg16=0.25"]) == (("vgg16", 0.25),)
    with pytest.raises(quality.app.UsageError, match="name=width"):
        quality.parse_widths(["vgg99=0.25"])
    with pytest.raises(quality.app.UsageError, match="must be a number"):
        quality.parse_widths(["vgg16=quarter"])


def test_a_run_with_an_override_writes_its_own_tables():
    cpu = quality.PRESETS["cpu"]
    assert quality.table_stem(cpu.replace(seeds=(0,), inputs=("vgg16",)), cpu) == "quality"
    assert quality.table_stem(cpu.replace(fine_tune_epochs=5), cpu) == "quality-fine_tune_epochs=5"
    assert quality.table_stem(cpu.replace(widths=()), cpu) == "quality-widths="


@needs_fashion_mnist
def test_the_fitted_row_is_the_source_fitted_to_the_budget_with_no_search(tmp_path):
    import nat_keras
    from nat_keras.search import input_plan

    settings = quality.PRESETS["smoke"].replace(fine_tune_epochs=1)
    splits = quality.load_data(settings, 0)
    source = nat_keras.models.get_model("resnet8", input_shape=splits.image_shape, num_classes=10)
    weights = [w.copy() for w in source.get_weights()]
    cache = quality.RowCache(tmp_path)
    row = quality.method_row(settings, source, "resnet8", "half_macs", "fitted", 0, tmp_path, cache)
    expected = input_plan(nat_keras.encode(source), quality.BUDGETS["half_macs"], space="nat")
    assert row["plan"] == expected.to_dict()["actions"] and row["changed"] == len(expected.actions) > 0
    assert row["macs_ratio"] <= 0.5 and row["evaluations"] == 0 and row["supernet_accuracy"] is None
    assert 0.0 <= row["test_accuracy"] <= 1.0
    assert all((a == b).all() for a, b in zip(weights, source.get_weights()))  # the source is not touched
    assert not (tmp_path / "searches").exists()


def test_summary_gives_mean_and_spread_and_the_original_once():
    rows = [
        _row("original", 0, 0.90),
        _row("original", 1, 0.92),
        _row("original", 0, 0.90, budget="half_macs"),  # the same net: counted once
        _row("random", 0, 0.80, budget="half_macs", macs=50),
        _row("random", 1, 0.84, budget="half_macs", macs=50),
        {"part": "source", "input": "resnet8", "test_accuracy": 0.5},
    ]
    table = quality.summarise(rows)
    assert [(r["budget"], r["method"]) for r in table] == [("-", "original"), ("half_macs", "random")]
    original, random = table
    assert original["seeds"] == 2 and original["accuracy_mean"] == pytest.approx(0.91)
    assert original["accuracy_std"] == pytest.approx(0.0141421, rel=1e-4)
    assert random["macs_ratio"] == pytest.approx(0.5) and random["accuracy_mean"] == pytest.approx(0.82)
    text = quality.markdown(table)
    assert "| resnet8 | half_macs | random | 2 | 0.8200 ± 0.0283 |" in text


def test_a_cell_uses_the_cell_protocol_s_own_search_at_each_budget_and_space():
    cells = quality.cell_protocol
    cpu = quality.PRESETS["cpu"]
    half = quality.cell_settings("cpu", cpu, "VGG", "half_macs", "nat")
    # Its search is the cell protocol's preset's (the same anchors, so the same key): reused, not redone.
    assert half.search_key("loose_end4") == cells.PRESETS["cpu"].search_key("loose_end4")
    assert half.inputs == ("ResBlock", "VGG", "Mobilenetv2") and half.macs_ratio == 0.5
    assert half.baselines == cells.BASELINES and half.seeds == cpu.seeds
    plus = quality.cell_settings("cpu", cpu, "DARTS", "equal", "nat++")
    assert (plus.space, plus.baselines, plus.macs_ratio, plus.inputs) == ("nat++", (), 1.0, ("DARTS",))
    assert quality.cell_spaces(cpu) == ("nat", "nat++")
    assert quality.cell_spaces(cpu.replace(methods=("nat++",))) == ("nat++",)
    assert quality.cell_spaces(cpu.replace(methods=("original", "fitted"))) == ("nat",)


def test_cell_results_become_rows_of_the_table():
    cells = quality.cell_protocol
    source = PUBLISHED["DARTS"]
    normal, reduce = source.cell("normal"), source.cell("reduce")
    chosen = Genotype(normal=[("skip_connect", normal[0][0][1]), *normal[0][1:]], normal_concat=normal[1],
                      reduce=reduce[0], reduce_concat=reduce[1])  # fmt: skip
    network = {"input": "DARTS", "test_accuracy": 0.8}
    results = cells.Results(
        rows=[
            {**network, "variant": "original", "seed": 0},
            {**network, "variant": "transformed", "seed": 0, "test_accuracy": 0.7},
            {**network, "variant": "random", "seed": 0, "test_accuracy": 0.75},
            {**network, "variant": "random", "seed": 7, "test_accuracy": 0.1},  # not a seed of this run
            {**network, "variant": "fitted", "seed": 0, "test_accuracy": 0.78},
        ],
        derived={"DARTS": {"structure": "full4", "genotype": chosen.to_json(), "derive_seconds": 5.0,
                           "baselines": {"random": {"genotype": source.to_json(), "derive_seconds": 20.0},
                                         "fitted": {"genotype": chosen.to_json(), "derive_seconds": 1.0}}}},
        search_seconds={"full4": 100.0},
        costs={"DARTS": {"original": (40, 200), "transformed": (30, 100), "random": (40, 200),
                         "fitted": (30, 100)}},
        computed=0,
    )  # fmt: skip
    settings = quality.PRESETS["cpu"].replace(seeds=(0,))
    rows = quality.cell_rows(results, "DARTS", "half_macs", "nat", settings)
    by_method = {row["method"]: row for row in rows}
    assert sorted(by_method) == ["fitted", "nat", "original", "random"]
    # At equal cost the fitted cell is the input: no row of its own (the original's).
    equal = quality.cell_rows(results, "DARTS", "equal", "nat", settings)
    assert "fitted" not in {row["method"] for row in equal}
    assert by_method["original"]["budget"] == "-" and by_method["original"]["search_seconds"] == 0.0
    nat = by_method["nat"]
    assert (nat["input"], nat["budget"], nat["test_accuracy"]) == ("DARTS cell", "half_macs", 0.7)
    assert (nat["macs"], nat["macs_ratio"], nat["changed"]) == (100, 0.5, 1)
    assert nat["search_seconds"] == 105.0 and by_method["random"]["search_seconds"] == 120.0
    assert by_method["fitted"]["search_seconds"] == 1.0  # no search, its choice alone
    assert by_method["random"]["changed"] == 0  # it kept the input
    # NAT++'s run: its own NAT row; the original and the baselines come from NAT's space.
    plus = quality.cell_rows(results, "DARTS", "half_macs", "nat++", settings)
    assert [row["method"] for row in plus] == ["nat++"]
    only_nat = quality.cell_rows(results, "DARTS", "half_macs", "nat", settings.replace(methods=("nat",)))
    assert [row["method"] for row in only_nat] == ["nat"]
    table = quality.summarise([*rows, _row("original", 0, 0.9)])
    assert [r["input"] for r in table][-1] == "DARTS cell"  # the cells after the networks


@needs_fashion_mnist
def test_smoke_preset_writes_table_plot_and_a_rerun_trains_nothing(tmp_path):
    script = REPO / "benchmarks" / "quality.py"
    command = [sys.executable, str(script), "--preset=smoke", f"--run_dir={tmp_path}", "--verbose=0"]

    def run() -> str:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    first = run()
    assert "cached" not in first
    with (tmp_path / "quality.csv").open() as stream:
        table = list(csv.DictReader(stream))
    expected = [("-", "original"), ("equal", "nat"), ("equal", "random")]
    assert [(r["budget"], r["method"]) for r in table] == expected
    for r in table:
        assert 0.0 <= float(r["accuracy_mean"]) <= 1.0 and int(r["macs"]) > 0
        assert float(r["macs_ratio"]) <= 1.01  # the equal-cost budget (MACs within 1%)
    assert (tmp_path / "quality.png").stat().st_size > 0
    assert "| resnet8 |" in (tmp_path / "quality.md").read_text()
    rows_before = (tmp_path / "rows.jsonl").read_text()

    second = run()
    assert second.count("cached") == 4  # the source and the three rows
    assert (tmp_path / "rows.jsonl").read_text() == rows_before
