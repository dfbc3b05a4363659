"""benchmarks/reward_fidelity.py: the smoke preset writes its report, a rerun skips finished rows.

The statistics are checked on rows whose answers are known; the end-to-end
run (a fresh interpreter: the benchmark defines absl flags) needs Debian's
Fashion-MNIST files, as `--preset=smoke` reads them (docs/design.md section 7).
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import subprocess
import sys

import pytest
from conftest import import_benchmark

REPO = pathlib.Path(__file__).resolve().parents[1]
# A benchmark script, not a package module: imported for its functions.
rf = import_benchmark("reward_fidelity")

COLUMNS = {
    "plan",
    "seed",
    "change_prob",
    "changed",
    "params",
    "macs",
    "params_ratio",
    "macs_ratio",
    "score",
    "wide_score",
    "test_accuracy",
    "test_accuracy_raw",
    "seconds",
}


def _config(**changes):
    return {"seed": 0, "seeds": 3, "noise_plans": 2, **changes}


def _row(plan, seed, score, accuracy):
    return {"plan": plan, "seed": seed, "score": score, "wide_score": -score, "test_accuracy": accuracy}


def test_correlations_follow_the_ranking_and_need_three_points():
    perfect = rf.correlations([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8])
    assert perfect["tau"] == pytest.approx(1.0) and perfect["rho"] == pytest.approx(1.0)
    reversed_ = rf.correlations([0.1, 0.2, 0.3, 0.4], [0.8, 0.7, 0.6, 0.5])
    assert reversed_["tau"] == pytest.approx(-1.0)
    assert math.isnan(rf.correlations([0.1, 0.2], [0.5, 0.6])["tau"])


def test_top_beats_source_counts_every_candidate_set():
    # Sets of two from three plans: {0,1} and {0,2} pick plan 0 (0.90 > 0.85), {1,2} picks plan 1 (0.80).
    result = rf.top_beats_source([3.0, 2.0, 1.0], [0.90, 0.80, 0.95], 0.85, size=2, seed=0)
    assert result["sets"] == 3
    assert result["beats"] == pytest.approx(2 / 3)


def test_summary_uses_seed_zero_for_ranks_and_other_seeds_for_the_noise_floor():
    rows = [
        _row(0, 0, 0.50, 0.900),
        _row(0, 1, 0.50, 0.910),
        _row(0, 2, 0.50, 0.890),
        _row(1, 0, 0.60, 0.905),  # top-scored, beats the source
        _row(2, 0, 0.40, 0.895),
        _row(3, 0, 0.10, 0.700),  # far from the source: not in the near-source set
    ]
    summary = rf.summarise(rows, _config())
    assert summary["plans_trained"] == 4
    assert summary["source_accuracy"] == pytest.approx(0.900)
    assert summary["all_score"]["tau"] == pytest.approx(1.0)
    assert summary["all_wide_score"]["tau"] == pytest.approx(-1.0)
    assert summary["near_score"]["n"] == 3
    assert summary["top_plan"] == 1 and summary["top_beats_source"]
    assert summary["noise"][0]["seeds"] == 3
    assert summary["noise"][0]["std"] == pytest.approx(0.01)
    assert summary["noise_pooled_std"] == pytest.approx(0.01)


def test_rows_run_noise_floor_first_then_every_plan_then_spread_noise_plans():
    order = rf.rows_to_train(_config(), 6)
    assert order[:3] == [(0, 0), (0, 1), (0, 2)]
    assert order[3:8] == [(i, 0) for i in range(1, 6)]
    assert order[8:] == [(1, 1), (1, 2), (5, 1), (5, 2)]  # a plan with few changes and one with many
    assert len(set(order)) == len(order)


@pytest.mark.skipif(
    __import__("nat_keras").data.fashion_mnist.find_directory() is None,
    reason="needs Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist)",
)
def test_smoke_preset_writes_the_report_and_a_rerun_skips_finished_rows(tmp_path):
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "reward_fidelity.py"),
        "--preset=smoke",
        f"--run_dir={tmp_path}",
        "--verbose=0",
    ]

    def run() -> str:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    first = run()
    with (tmp_path / "reward_fidelity.csv").open() as stream:
        table = list(csv.DictReader(stream))
    assert set(table[0]) == COLUMNS
    # 3 plans at seed 0, and the keep-all plan again at seed 1 (the smoke preset's noise floor).
    assert sorted((int(r["plan"]), int(r["seed"])) for r in table) == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in table)
    assert int(next(r for r in table if r["plan"] == "0")["changed"]) == 0
    assert all(int(r["changed"]) > 0 for r in table if r["plan"] != "0")
    report = (tmp_path / "reward_fidelity.md").read_text()
    for heading in ("Kendall tau", "Spearman rho", "Noise floor", "Top-scored plan", "Time per part"):
        assert heading in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["plans_trained"] == 3 and "0" in summary["noise"]
    rows_before = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert "cached:" not in first

    second = run()
    assert (tmp_path / "rows.jsonl").read_text().splitlines() == rows_before  # nothing recomputed
    assert second.count("cached: row") == 4
    assert "cached: source" in second and "cached: supernet" in second
    with (tmp_path / "reward_fidelity.csv").open() as stream:
        assert list(csv.DictReader(stream)) == table


def test_dry_run_caps_every_count_and_keeps_the_model():
    dry = rf.dry_run_of(rf.PRESETS["gpu"])
    # Every gpu count is above its cap, and "0: all images" becomes the cap too.
    assert {name: dry[name] for name in rf.DRY_RUN} == rf.DRY_RUN
    assert dry["model"] == rf.PRESETS["gpu"]["model"]


@pytest.mark.skipif(
    __import__("nat_keras").data.fashion_mnist.find_directory() is None,
    reason="needs Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist)",
)
def test_gpu_preset_dry_run_on_the_cpu(tmp_path):
    # The GPU command, a few steps of each part (ResNet-8 for ResNet-20 to
    # spare tracing time: the model is a plain parameter the cpu preset runs).
    command = [
        sys.executable, str(REPO / "benchmarks" / "reward_fidelity.py"), "--preset=gpu", "--dry_run",
        "--model=resnet8", f"--run_dir={tmp_path}", "--verbose=0",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    settings = json.loads(done.stdout.split("settings: ", 1)[1].splitlines()[0])
    assert (settings["plans"], settings["train_examples"], settings["supernet_steps"]) == (2, 512, 2)
    with (tmp_path / "reward_fidelity.csv").open() as stream:
        table = list(csv.DictReader(stream))
    assert sorted((int(r["plan"]), int(r["seed"])) for r in table) == [(0, 0), (0, 1), (1, 0)]
