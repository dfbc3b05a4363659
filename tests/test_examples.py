"""examples/train_policy.py: where it writes (never into the installed package unless asked).

Each run is a fresh interpreter (the example defines absl flags, which are
process-global) with tiny settings on the embedded digits data.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

from nat_keras.policy.policy import CONFIG_FILE, DEFAULT_POLICY_DIR, WEIGHTS_FILE

REPO = pathlib.Path(__file__).resolve().parent.parent
TRAIN_POLICY = REPO / "examples" / "train_policy.py"
# One cell of one node, one step of each kind: seconds, not minutes.
TINY_FLAGS = [
    "--epochs=1",
    "--weight_steps=1",
    "--policy_steps=1",
    "--inputs=1",
    "--samples=1",
    "--num_cells=1",
    "--channels=2",
    "--num_nodes=1",
    "--image_size=8",
]


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    return env


def _run(args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=600
    )


def _package_assets() -> dict[str, tuple[str, int]]:
    """Every file under the package's default policy: its sha256 and mtime."""
    found = {}
    for root, _, files in os.walk(DEFAULT_POLICY_DIR):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            found[os.path.relpath(path, DEFAULT_POLICY_DIR)] = (digest, os.stat(path).st_mtime_ns)
    return found


def test_train_policy_writes_to_runs_policy_and_leaves_the_package_alone(tmp_path):
    before = _package_assets()
    assert {CONFIG_FILE, WEIGHTS_FILE} <= set(before), "the package ships a default policy"
    run = _run([str(TRAIN_POLICY), *TINY_FLAGS], cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _package_assets() == before
    output = tmp_path / "runs" / "policy"
    assert {p.name for p in output.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE, "training.json"}
    assert f"Saved the policy to {os.path.join('runs', 'policy')} " in run.stdout
    summary = json.loads((output / "training.json").read_text(encoding="utf-8"))
    # The recorded command reproduces the run's settings, and says nothing of where files went.
    assert summary["command"].startswith("python examples/train_policy.py ")
    assert set(TINY_FLAGS) | {"--seed=0"} == set(summary["command"].split()[2:])
    assert len(summary["reward_per_epoch"]) == 1
    # Nothing else was written next to it.
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]


def test_train_policy_ships_as_default_only_when_asked(tmp_path):
    """--ship_as_default picks the package's assets; with --output_dir too it is a usage error.

    Checked on the example's `output_directory` and its flag handling, so the
    shipped policy itself is never overwritten by the test.
    """
    driver = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("train_policy", {str(TRAIN_POLICY)!r})
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
        from absl import app, flags
        results = {{
            "default": example.output_directory("runs/policy", False, output_dir_given=False),
            "given": example.output_directory("elsewhere", False, output_dir_given=True),
            "ship": example.output_directory("runs/policy", True, output_dir_given=False),
        }}
        try:
            example.output_directory("elsewhere", True, output_dir_given=True)
        except app.UsageError as error:
            results["both"] = str(error)
        flags.FLAGS(["train_policy", "--ship_as_default", "--output_dir=elsewhere"])
        try:
            example.main([])
        except app.UsageError as error:
            results["main_both"] = str(error)
        print(json.dumps(results))
        """
    )
    run = _run(["-c", driver], cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert results["default"] == "runs/policy" and results["given"] == "elsewhere"
    assert os.path.samefile(results["ship"], DEFAULT_POLICY_DIR)
    for key in ("both", "main_both"):
        assert "--ship_as_default" in results[key] and "--output_dir=elsewhere" in results[key], results
    assert list(tmp_path.iterdir()) == []
