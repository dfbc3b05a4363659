"""examples/transform.py and examples/apply_plan.py on a user's own model, end to end.

Each run is a fresh interpreter (the examples define absl flags, which are
process-global) with tiny settings on the embedded digits data: a ResNet-8 the
test saves as a `.keras` file (the user's model), a keras.applications network
built for the data (MobileNet: depthwise-separable blocks, in 40% less time
than MobileNetV2, whose plans tests/test_networks.py covers), and the same app
on two workers on localhost (MultiWorkerMirroredStrategy from TF_CONFIG). The
"nat" action space keeps the supernets' first trace short.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import free_ports

import nat_keras
from nat_keras.report import TransformReport

REPO = pathlib.Path(__file__).resolve().parent.parent
TRANSFORM = REPO / "examples" / "transform.py"
APPLY_PLAN = REPO / "examples" / "apply_plan.py"
TINY = [
    "--dataset=digits",
    "--space=nat",
    "--search_epochs=1",
    "--weight_steps=1",
    "--policy_steps=1",
    "--samples=2",
    "--num_candidates=2",
    "--fresh_policy",
]


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "TF_CONFIG")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", **extra})
    return env


def _run(args: list[str], cwd: pathlib.Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=_environment(**extra),
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> pathlib.Path:
    """A user's model on disk: ResNet-8 for 16x16 digits."""
    path = tmp_path_factory.mktemp("user") / "my_resnet8.keras"
    nat_keras.models.resnet(depth=8, input_shape=(16, 16, 3), num_classes=10, name="my_resnet8").save(path)
    return path


def _table(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in ("source", "transformed") and len(fields) == 4:
            rows[fields[0]] = fields[1:]
    return rows


def test_a_keras_file_end_to_end_and_its_plan_replayed(user_model, tmp_path):
    out = tmp_path / "out"
    flags = [f"--model={user_model}", "--image_size=16", "--fine_tune_epochs=1", f"--output_dir={out}", *TINY]
    run = _run(
        [TRANSFORM, *flags],
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"Source 'my_resnet8': loaded from {user_model}" in run.stdout
    assert "Both nets: 1 epoch(s) of nat_keras.train" in run.stdout
    table = _table(run.stdout)
    assert set(table) == {"source", "transformed"}
    report = TransformReport.load(out / "report.json")
    assert report.model_name == "my_resnet8" and report.rewards
    assert table["transformed"][1:] == [f"{report.cost_after.params:,}", f"{report.cost_after.macs:,}"]
    if not report.plan.actions:  # the same architecture and the same treatment: the same accuracy
        assert table["source"] == table["transformed"]
    for name in ("model.keras", "plan.json", "plan.png", "search.png"):
        assert (out / name).is_file(), name
    assert {p.name for p in (out / "saved_model").iterdir()} >= {"saved_model.pb", "plan.json", "report.json"}
    assert nat_keras.TransformPlan.load(out / "plan.json") == report.plan

    replay = _run(
        [APPLY_PLAN, f"--model={user_model}", f"--plan={out / 'plan.json'}", f"--output={tmp_path}/re.keras"],
        cwd=tmp_path,
    )
    assert replay.returncode == 0, replay.stderr[-4000:]
    assert nat_keras.cost(nat_keras.models.load_model(str(tmp_path / "re.keras"))) == nat_keras.cost(
        nat_keras.models.load_model(str(out / "model.keras"))
    )
    wrong = _run([APPLY_PLAN, "--model=resnet20", f"--plan={out / 'plan.json'}"], cwd=tmp_path)
    assert wrong.returncode != 0
    assert "was made for model 'my_resnet8'" in wrong.stderr and "not for model 'resnet20'" in wrong.stderr


def test_a_keras_applications_network(tmp_path):
    run = _run(
        [
            TRANSFORM,
            "--model=keras.applications:MobileNet",
            "--pretrain_epochs=0",
            "--fine_tune_epochs=0",
            f"--output_dir={tmp_path / 'out'}",
            *TINY,
        ],
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Source 'mobilenet_1.00_32': untrained (--pretrain_epochs=0)" in run.stdout
    assert "Both nets: no fine-tuning; BN statistics recalibrated" in run.stdout
    assert TransformReport.load(tmp_path / "out" / "report.json").model_name == "mobilenet_1.00_32"


def test_bad_models_are_usage_errors(tmp_path):
    unknown = _run([TRANSFORM, "--model=keras.applications:NoSuchNet", *TINY], cwd=tmp_path)
    assert unknown.returncode != 0 and "keras.applications has" in unknown.stderr
    missing = _run([TRANSFORM, "--model=nowhere.keras", *TINY], cwd=tmp_path)
    assert missing.returncode != 0 and "--model must be a reference network" in missing.stderr
    tpu = _run([TRANSFORM, "--strategy=tpu", *TINY], cwd=tmp_path)
    assert tpu.returncode != 0 and "--strategy=tpu needs --tpu" in tpu.stderr


def test_two_workers_on_localhost(user_model, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    flags = [
        TRANSFORM,
        f"--model={user_model}",
        "--image_size=16",
        "--fine_tune_epochs=0",
        "--strategy=multi_worker",
        *TINY,
    ]
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(
            subprocess.Popen(
                [sys.executable, *map(str, flags), f"--output_dir={tmp_path / f'out{index}'}"],
                cwd=tmp_path,
                env=_environment(TF_CONFIG=config),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [worker.communicate(timeout=1200) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, results):
        assert worker.returncode == 0, stderr[-4000:]
        assert "strategy multi_worker (2 replicas)" in stdout
    assert (tmp_path / "out0" / "report.json").is_file()  # the chief (worker 0) writes
    assert not (tmp_path / "out1").exists()
    assert _table(results[0][0]) == _table(results[1][0])  # both workers measured the same nets
