"""SupernetTrainer under tf.distribute, and resuming after a killed process.

Every distributed run happens in a subprocess: logical CPU devices and
MultiWorkerMirroredStrategy must be set up before TensorFlow initialises its
devices, which the test process did long ago. The subprocesses run this file's
`_WORKER` script, which imports the recipes below (`build`, `train`, the
datasets) so that the test process can train the single-device reference
with exactly the same code.

The supernets here use the "nat" action space (keep / skip / none): the
distributed machinery is the same as for "nat++", and a train step traces in
about a quarter of the time. The first Mirrored run (replica agreement) uses "nat++".

Equality with a single-device run needs every replica to compute what one
device would: `duplicated_dataset` makes each global batch of 16 out of 4
images, each used 4 times, laid out so that any split into two halves (the
first and second 8, or the even and odd elements) gives every replica the same
multiset of images. Per-replica BatchNormalization then sees the statistics of
the whole batch, and the summed gradient is the one-device gradient.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from conftest import (  # tests/ is on sys.path (pytest, _WORKER)
    colour_data,
    free_ports,
    randomize,
    tiny_resnet,
)

from nat_keras.supernet import ModelSupernet
from nat_keras.supernet.trainer import SupernetConfig, SupernetTrainer

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
STEPS = 4
GLOBAL_BATCH = 16
# No weight decay, no clipping: the plain update.
PLAIN = SupernetConfig(learning_rate=0.05, weight_decay=0.0, clip_norm=None)
# Strong weight decay and a clip that always bites (tiny supernet gradients are ~1).
TRANSFORMED = SupernetConfig(learning_rate=0.05, weight_decay=0.01, clip_norm=0.01)
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}  # summation order differs between one and two replicas


# -- recipes shared by the test process and the subprocesses -------------------------


def duplicated_dataset(steps: int = STEPS, seed: int = 0) -> tf.data.Dataset:
    """Global batches of 16 in which either half-split holds each of 4 images twice."""
    pattern = np.array([0, 0, 1, 1, 2, 2, 3, 3] * 2)
    images, labels = [], []
    for step in range(steps):
        x, y = colour_data(4, seed=seed * 1000 + step)
        images.append(x[pattern])
        labels.append(y[pattern])
    data = (np.concatenate(images), np.concatenate(labels))
    return tf.data.Dataset.from_tensor_slices(data).batch(GLOBAL_BATCH, drop_remainder=True)


def plain_dataset(steps: int = STEPS, seed: int = 0) -> tf.data.Dataset:
    """Ordinary batches: different images on every replica."""
    x, y = colour_data(steps * GLOBAL_BATCH, seed=seed)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH, drop_remainder=True)


def build(strategy: tf.distribute.Strategy, *, space: str = "nat", seed: int = 1) -> ModelSupernet:
    """The tiny supernet, built in `strategy`'s scope, with weights fixed by `seed`."""
    with strategy.scope():
        supernet = ModelSupernet(tiny_resnet(), space=space)
    randomize(supernet.weights, seed=seed)  # the same start in every process, any strategy
    return supernet


def flat(variables: list) -> np.ndarray:
    unique = list({id(v): v for v in variables}.values())
    return np.concatenate([np.asarray(v.numpy(), np.float64).ravel() for v in unique])


def train(
    supernet: ModelSupernet,
    strategy: tf.distribute.Strategy,
    config: SupernetConfig,
    data: tf.data.Dataset,
    steps: int = STEPS,
) -> dict[str, Any]:
    trainer = SupernetTrainer(supernet, config=config, strategy=strategy)
    result = trainer.train(data, steps=steps, verbose=0)
    result["step"] = int(trainer.step.numpy())
    result["iterations"] = int(trainer.optimizer.iterations.numpy())
    return result


# -- the subprocess script --------------------------------------------------------------

_WORKER = r"""
import json, os, sys, time, traceback
sys.path.insert(0, TESTS_DIR)
import nat_keras  # before TensorFlow
import numpy as np
import tensorflow as tf

mode, out = sys.argv[1], sys.argv[2]
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
if mode == "mirrored":  # logical devices first: TF has not touched its devices yet
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
elif mode == "multiworker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
else:
    strategy = tf.distribute.get_strategy()

import test_distributed as recipes
from nat_keras.supernet import ModelSupernet
from nat_keras.supernet.trainer import SupernetConfig, SupernetTrainer

result = {"replicas": strategy.num_replicas_in_sync}


def attempt(name, fn):
    try:
        result[name] = fn()
    except Exception as error:  # reported to the test, which decides
        message = f"{type(error).__name__}: {str(error)[:1500]}"
        result[name] = {"error": message, "traceback": traceback.format_exc()[-3000:]}


def agreement():
    supernet = recipes.build(strategy, space="nat++", seed=0)
    before = recipes.flat(supernet.trainable_variables)
    run = recipes.train(supernet, strategy, SupernetConfig(learning_rate=0.05), recipes.plain_dataset())
    run["changed"] = bool(np.any(recipes.flat(supernet.trainable_variables) != before))
    run["copies"], run["disagree"] = [], {"trainable": [], "non_trainable": []}
    trainable = {id(v) for v in supernet.trainable_variables}
    for v in {id(v): v for v in supernet.weights}.values():
        copies = [c.numpy() for c in strategy.experimental_local_results(v.value)]
        run["copies"].append(len(copies))
        if any(not np.array_equal(copies[0], c) for c in copies[1:]):
            run["disagree"]["trainable" if id(v) in trainable else "non_trainable"].append(v.path)
    return run


def equivalence(name, config):
    supernet = recipes.build(strategy)
    run = recipes.train(supernet, strategy, config, recipes.duplicated_dataset())
    np.save(os.path.join(out, name + ".npy"), recipes.flat(supernet.weights))
    return run


def source_outside_scope():
    model = recipes.tiny_resnet()  # the user's model, built before the strategy scope
    with strategy.scope():
        supernet = ModelSupernet(model, space="nat")
    return recipes.train(supernet, strategy, recipes.PLAIN, recipes.plain_dataset(), steps=1)


def calibrated():
    supernet = recipes.build(strategy, seed=0)
    recipes.train(supernet, strategy, recipes.PLAIN, recipes.plain_dataset(), steps=2)
    images, labels = recipes.colour_data(48, seed=11)
    calibration = recipes.colour_data(64, seed=12)[0]
    statistics = supernet.batch_norm_calibration.variables
    shared = [[c.numpy() for c in strategy.experimental_local_results(v.value)] for v in statistics]
    run = {"pairs": []}
    for seed in range(3):
        arch = supernet.sample_arch(seed)
        extracted = nat_keras.recalibrate(supernet.extract(arch), calibration)
        expected = float(np.mean(extracted(images, training=False).numpy().argmax(-1) == labels))
        run["pairs"].append([supernet.accuracy(arch, (images, labels), calibration=calibration), expected])
    after = [[c.numpy() for c in strategy.experimental_local_results(v.value)] for v in statistics]
    run["restored"] = all(
        np.array_equal(a, b) for copies, again in zip(shared, after) for a, b in zip(copies, again)
    )
    return run


def transform():
    from nat_keras.policy import Policy, ReinforceConfig
    from nat_keras.search import SearchConfig

    splits = nat_keras.data.load_splits("digits", batch_size=32, image_size=16)
    with strategy.scope():
        model = nat_keras.models.resnet(depth=8, input_shape=(16, 16, 3))
    search = SearchConfig(epochs=1, weight_steps=2, policy_steps=1, reinforce=ReinforceConfig(num_samples=2))
    new = nat_keras.transform(
        model, data=splits, strategy=strategy, policy=Policy(seed=0), search_config=search,
        num_candidates=2, fine_tune_epochs=1, verbose=0,
    )  # fmt: skip
    report = new.nat_report
    images = next(iter(splits.test))[0]
    return {
        "within_budget": nat_keras.Budget().allows(report.cost_after, report.cost_before),
        "shape": list(np.asarray(new(images)).shape),
        "accuracy_before": report.accuracy_before,
    }


def resume():
    config = SupernetConfig(learning_rate=0.05, checkpoint_every=5)
    trainer = SupernetTrainer(recipes.build(strategy), config=config, directory=args["directory"])
    start = {
        "resumed_from": trainer.resumed_from,
        "step": int(trainer.step.numpy()),
        "iterations": int(trainer.optimizer.iterations.numpy()),
    }
    print("START " + json.dumps(start), flush=True)
    data = recipes.plain_dataset(steps=8)
    if args.get("delay"):  # slow steps, so that the test can kill the process mid-run

        def slow(x, y):
            done = tf.py_function(lambda: time.sleep(args["delay"]) or 0, [], tf.int32)
            with tf.control_dependencies([done]):
                return tf.identity(x), tf.identity(y)

        data = data.map(slow)
    run = trainer.train(data, steps=args["steps"], verbose=0)
    run.update(start=start, step=int(trainer.step.numpy()))
    run["iterations"] = int(trainer.optimizer.iterations.numpy())
    return run


if mode == "mirrored":
    attempt("agreement", agreement)
    attempt("plain", lambda: equivalence("plain", recipes.PLAIN))
    attempt("transformed", lambda: equivalence("transformed", recipes.TRANSFORMED))
    attempt("outside", source_outside_scope)
    attempt("calibrated", calibrated)
    attempt("transform", transform)
elif mode == "multiworker":
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    supernet = recipes.build(strategy)
    np.save(os.path.join(out, f"initial{index}.npy"), recipes.flat(supernet.weights))
    result["run"] = recipes.train(supernet, strategy, recipes.PLAIN, recipes.duplicated_dataset())
    np.save(os.path.join(out, f"final{index}.npy"), recipes.flat(supernet.weights))
else:
    result["run"] = resume()
print("RESULT " + json.dumps(result), flush=True)
"""


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(f"TESTS_DIR = {TESTS_DIR!r}\n" + _WORKER)
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def _start(tmp_path: Path, mode: str, args: dict | None = None, **env: str) -> subprocess.Popen:
    command = [sys.executable, str(_script(tmp_path)), mode, str(tmp_path), json.dumps(args or {})]
    return subprocess.Popen(
        command, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )


def _tails(stdout: str, stderr: str) -> str:
    return f"stdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-6000:]}"


def _finish(process: subprocess.Popen, timeout: float, what: str) -> dict[str, Any]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"{what} did not finish in {timeout} s.\n{_tails(stdout, stderr)}")
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not lines:
        pytest.fail(f"{what} failed (exit {process.returncode}).\n{_tails(stdout, stderr)}")
    return json.loads(lines[-1][len("RESULT ") :])


def _ok(run: dict[str, Any]) -> dict[str, Any]:
    assert "error" not in run, f"{run['error']}\n{run['traceback']}"
    return run


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """Single-device runs in this process: (result, flattened weights) per config."""
    runs = {}
    for name, config in (("plain", PLAIN), ("transformed", TRANSFORMED)):
        strategy = tf.distribute.get_strategy()
        supernet = build(strategy)
        runs[name] = (train(supernet, strategy, config, duplicated_dataset()), flat(supernet.weights))
    return runs


# -- (a) MirroredStrategy over two logical CPUs -----------------------------------------


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory) -> tuple[dict[str, Any], Path]:
    directory = tmp_path_factory.mktemp("mirrored")
    # A guard against a hung subprocess, not a speed check: it takes 160-170 s alone on
    # 2 cores, and went past 300 s beside the other xdist worker's heavy tests.
    return _finish(_start(directory, "mirrored"), 900, "The MirroredStrategy subprocess"), directory


def test_mirrored_replicas_agree_on_trained_weights(mirrored):
    result, _ = mirrored
    assert result["replicas"] == 2
    run = _ok(result["agreement"])
    assert run["step"] == run["iterations"] == STEPS and run["steps_run"] == STEPS
    assert np.isfinite(run["loss"]) and run["changed"]
    assert set(run["copies"]) == {2}  # every variable is mirrored on both devices
    assert run["disagree"]["trainable"] == []


def test_mirrored_training_equals_one_device(mirrored, reference):
    result, directory = mirrored
    run = _ok(result["plain"])
    expected, weights = reference["plain"]
    assert run["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert run["accuracy"] == pytest.approx(expected["accuracy"])
    np.testing.assert_allclose(np.load(directory / "plain.npy"), weights, **TOLERANCE)


def test_mirrored_replicas_agree_on_batchnorm_statistics(mirrored):
    run = _ok(mirrored[0]["agreement"])
    assert run["disagree"]["non_trainable"] == []


def test_mirrored_weight_decay_and_clipping_equal_one_device(mirrored, reference):
    result, directory = mirrored
    _ok(result["transformed"])
    np.testing.assert_allclose(
        np.load(directory / "transformed.npy"), reference["transformed"][1], **TOLERANCE
    )


def test_mirrored_calibrated_accuracy_equals_the_calibrated_extract(mirrored):
    run = _ok(mirrored[0]["calibrated"])
    for measured, expected in run["pairs"]:
        assert measured == pytest.approx(expected)
    assert run["restored"]  # every replica's copy of the shared statistics is back


def test_mirrored_transform_with_data(mirrored):
    run = _ok(mirrored[0]["transform"])
    assert run["within_budget"] and run["shape"] == [32, 10] and 0.0 <= run["accuracy_before"] <= 1.0


def test_mirrored_with_source_model_built_outside_the_scope(mirrored):
    run = _ok(mirrored[0]["outside"])
    assert run["step"] == 1


# -- (b) MultiWorkerMirroredStrategy, two workers on localhost ------------------------------


@pytest.fixture(scope="module")
def multiworker(tmp_path_factory) -> tuple[list[dict[str, Any]], Path]:
    directory = tmp_path_factory.mktemp("multiworker")
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(_start(directory, "multiworker", TF_CONFIG=json.dumps(config)))
    results = []
    try:
        for index, process in enumerate(processes):
            results.append(_finish(process, 180, f"MultiWorkerMirroredStrategy worker {index}"))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results, directory


def test_multiworker_workers_end_with_equal_weights(multiworker):
    results, directory = multiworker
    for result in results:
        assert result["replicas"] == 2
        assert result["run"]["step"] == result["run"]["iterations"] == STEPS
    initial = [np.load(directory / f"initial{i}.npy") for i in range(2)]
    final = [np.load(directory / f"final{i}.npy") for i in range(2)]
    np.testing.assert_array_equal(initial[0], initial[1])
    np.testing.assert_allclose(final[0], final[1], atol=1e-6, rtol=0)
    assert np.abs(final[0] - initial[0]).max() > 1e-3  # training did move the weights


def test_multiworker_training_equals_one_device(multiworker, reference):
    results, directory = multiworker
    expected, weights = reference["plain"]
    assert results[0]["run"]["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    np.testing.assert_allclose(np.load(directory / "final0.npy"), weights, **TOLERANCE)


# -- (c) a killed run resumes from its last checkpoint ------------------------------------


def test_resume_after_sigkill(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    args = {"directory": str(tmp_path / "run"), "steps": 200, "delay": 0.05}
    first = _start(tmp_path, "resume", args)
    deadline = time.monotonic() + 120
    try:
        while tf.train.get_checkpoint_state(str(checkpoints)) is None:
            if first.poll() is not None:
                stdout, stderr = first.communicate()
                pytest.fail(
                    f"The training process ended (exit {first.returncode}).\n{_tails(stdout, stderr)}"
                )
            if time.monotonic() > deadline:
                pytest.fail("No checkpoint appeared within 120 s.")
            time.sleep(0.05)
        assert first.poll() is None  # still training
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == -signal.SIGKILL
    state = tf.train.get_checkpoint_state(str(checkpoints))
    last = int(state.model_checkpoint_path.rsplit("-", 1)[1])
    assert last % 5 == 0 and 5 <= last < 200

    target = last + 10
    result = _finish(
        _start(tmp_path, "resume", {**args, "steps": target, "delay": 0}), 180, "The resumed run"
    )
    run = result["run"]
    assert run["start"]["resumed_from"].endswith(f"ckpt-{last}")
    assert run["start"]["step"] == run["start"]["iterations"] == last
    assert run["steps_run"] == 10
    assert run["step"] == run["iterations"] == target
    assert np.isfinite(run["loss"])
