"""nat_keras.train: the recipe's schedule and loss, clones that never touch the source, resumption."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nat_keras

# isort: split
import keras
import tensorflow as tf

from nat_keras.errors import ConfigError
from nat_keras.objective import ClassificationCrossentropy, objective_of
from nat_keras.train import (
    CoupledWeightDecaySGD,
    Recipe,
    initial_model,
    learning_rate_schedule,
    smoothed_loss,
    train,
)

REPO = pathlib.Path(__file__).resolve().parent.parent
NUM_CLASSES = 4
# A few tiny steps per epoch: seconds, not minutes.
EXAMPLES, BATCH = 24, 8


def tiny_classifier(activation: str | None = None, name: str = "tiny") -> keras.Model:
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation=activation, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_data(one_hot: bool = False, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(EXAMPLES, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=EXAMPLES).astype("int32")
    if one_hot:
        labels = np.eye(NUM_CLASSES, dtype="float32")[labels]
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def shifted(model: keras.Model) -> keras.Model:
    """`model` with every weight moved by 0.5: no fresh initialisation can match it."""
    model.set_weights([w + 0.5 for w in model.get_weights()])
    return model


# -- the recipe -------------------------------------------------------------------


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_zero():
    recipe = Recipe(epochs=4, learning_rate=0.1, reference_batch_size=64, warmup_epochs=1)
    schedule = learning_rate_schedule(recipe, steps_per_epoch=10, batch_size=128)  # peak 0.2
    peak, warmup, total = 0.2, 10, 40

    def expected(step: int) -> float:
        if step < warmup:
            return peak * step / warmup
        return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    for step in (0, 3, 5, 10, 17, 25, 39, 40):
        assert float(schedule(step)) == pytest.approx(expected(step), abs=1e-6), step
    assert float(schedule(25)) == pytest.approx(0.1, abs=1e-6)  # half way down the cosine
    # Without warm-up the first step has the peak; without a reference batch, no scaling.
    flat = learning_rate_schedule(
        recipe.replace(warmup_epochs=0, reference_batch_size=None), steps_per_epoch=10
    )
    assert float(flat(0)) == pytest.approx(0.1) and float(flat(20)) == pytest.approx(0.05)


def test_presets_validation_and_round_trip():
    assert Recipe.preset("cpu") == Recipe.cpu() == Recipe()
    gpu = Recipe.gpu()
    assert (gpu.epochs, gpu.learning_rate, gpu.reference_batch_size, gpu.warmup_epochs) == (600, 0.025, 96, 0)
    assert gpu.peak_learning_rate(64) == pytest.approx(0.025 * 64 / 96)
    assert Recipe.from_dict(json.loads(json.dumps(gpu.to_dict()))) == gpu
    with pytest.raises(ConfigError, match="Unknown recipe preset 'tpu'"):
        Recipe.preset("tpu")
    with pytest.raises(ConfigError, match=r"Recipe\.init"):
        Recipe(init="pretrained")
    with pytest.raises(ConfigError, match="warmup_epochs"):
        Recipe(epochs=2, warmup_epochs=3)
    with pytest.raises(ConfigError, match="mixed_precision"):
        Recipe(mixed_precision="yes")
    with pytest.raises(ConfigError, match=r"Recipe\.grad_clip must be > 0"):
        Recipe(grad_clip=0.0)
    # The paper's retraining clips at 5.
    assert (Recipe.gpu().grad_clip, Recipe.cpu().grad_clip) == (5.0, None)


def test_grad_clip_bounds_the_first_step_of_train():
    # One SGD step without momentum or decay moves the weights by lr times the
    # gradient: clipped to norm 1e-3, by at most lr * 1e-3.
    source = tiny_classifier()
    recipe = Recipe(epochs=1, warmup_epochs=0, learning_rate=0.1, reference_batch_size=None, momentum=0.0,
                    nesterov=False, weight_decay=0.0, init="inherited")  # fmt: skip
    data = tiny_data().take(1)
    moved = {}
    for clip in (None, 1e-3):
        trained = train(source, data, recipe.replace(grad_clip=clip), verbose=0).model
        pairs = zip(trained.trainable_weights, source.trainable_weights)
        deltas = [np.array(a) - np.array(b) for a, b in pairs]
        moved[clip] = math.sqrt(sum(float(np.sum(d**2)) for d in deltas))
    assert moved[1e-3] == pytest.approx(0.1 * 1e-3, rel=1e-3) and moved[None] > 10 * moved[1e-3]


def test_coupled_weight_decay_adds_l2_to_the_gradient():
    # One plain SGD step with weight decay 0.1 on w=2, gradient 1: w - lr * (1 + 0.1 * 2).
    variable = keras.Variable(np.array([2.0], "float32"))
    optimizer = CoupledWeightDecaySGD(learning_rate=0.5, l2=0.1)
    optimizer.apply([np.array([1.0], "float32")], [variable])
    assert float(variable.numpy()[0]) == pytest.approx(2.0 - 0.5 * 1.2)
    assert CoupledWeightDecaySGD.from_config(optimizer.get_config()).l2 == pytest.approx(0.1)


def test_bn_calibration_sets_the_statistics_of_the_training_examples():
    # The first 16 training examples' batch statistics of the BN's input
    # become its moving statistics (tiny_data does not shuffle).
    source = tiny_classifier()
    recipe = Recipe(epochs=1, warmup_epochs=0, init="inherited")
    calibrated = train(source, tiny_data(), recipe.replace(bn_calibration_examples=16), verbose=0).model
    features = keras.Model(calibrated.inputs, calibrated.get_layer("conv").output)
    images = np.concatenate([x for x, _ in tiny_data().take(2).as_numpy_iterator()])
    expected = np.asarray(features(images)).reshape(-1, 4)
    bn = calibrated.get_layer("bn")
    assert np.allclose(np.asarray(bn.moving_mean), expected.mean(axis=0), atol=1e-5)
    assert np.allclose(np.asarray(bn.moving_variance), expected.var(axis=0), rtol=1e-3, atol=1e-5)
    plain = train(source, tiny_data(), recipe, verbose=0).model  # Keras's moving averages: not those
    assert not np.allclose(np.asarray(plain.get_layer("bn").moving_mean), expected.mean(axis=0), atol=1e-3)
    with pytest.raises(ConfigError, match="bn_calibration_examples"):
        Recipe(bn_calibration_examples=-1)


# -- label smoothing through the model's loss ----------------------------------------


def test_label_smoothing_shifts_the_loss_by_the_right_amount():
    logits = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5]], "float32")
    labels = np.array([0, 2])
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    plain = -log_p[np.arange(2), labels]
    s = 0.1
    # Smoothed targets (1 - s) * one_hot + s / C: the loss moves towards the mean of -log p.
    expected = (1 - s) * plain + s * (-log_p.mean(axis=-1))
    assert not np.allclose(expected, plain)

    smoothed = ClassificationCrossentropy(from_logits=True, label_smoothing=s)
    assert float(smoothed(labels, logits)) == pytest.approx(expected.mean(), rel=1e-5)
    assert float(smoothed(np.eye(4)[labels], logits)) == pytest.approx(expected.mean(), rel=1e-5)
    assert float(ClassificationCrossentropy(from_logits=True)(labels, logits)) == pytest.approx(
        plain.mean(), rel=1e-5
    )
    restored = ClassificationCrossentropy.from_config(smoothed.get_config())
    assert restored.label_smoothing == s

    # A model compiled with sparse crossentropy (which Keras cannot smooth) keeps its loss, smoothed.
    model = tiny_classifier()
    model.compile(loss="sparse_categorical_crossentropy")
    loss = smoothed_loss(objective_of(model), s)
    probabilities = np.exp(log_p)  # the compiled loss reads probabilities
    assert float(loss(labels, probabilities)) == pytest.approx(expected.mean(), rel=1e-4)
    # A compiled CategoricalCrossentropy stays one, with the recipe's smoothing.
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    loss = smoothed_loss(objective_of(model), s)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy) and loss.from_logits
    assert float(loss(np.eye(4)[labels], logits)) == pytest.approx(expected.mean(), rel=1e-5)
    # A loss without label smoothing is refused, naming the model and the way out.
    model.compile(loss="kl_divergence")
    with pytest.raises(ConfigError, match=r"'tiny'.*label_smoothing=0\.0"):
        smoothed_loss(objective_of(model), s, model_name=model.name)


# -- clones: scratch, inherited, never the source --------------------------------------


def test_scratch_reinitialises_inherited_keeps_and_the_source_is_never_changed():
    source = shifted(tiny_classifier())
    before = snapshot(source)
    fresh = initial_model(source, Recipe(init="scratch"))
    kept = initial_model(source, Recipe(init="inherited"))
    assert fresh is not source and kept is not source
    assert not any(np.allclose(a, b) for a, b in zip(snapshot(fresh), before))
    assert all(np.array_equal(a, b) for a, b in zip(snapshot(kept), before))

    for init in ("scratch", "inherited"):
        result = train(source, tiny_data(), Recipe(epochs=1, init=init), verbose=0)
        assert result.model is not source
        assert all(np.array_equal(a, b) for a, b in zip(snapshot(source), before)), init
        assert not source.compiled  # train compiles its clone, never the source
    # Inherited training starts from the source: one epoch leaves it close (fresh weights are far).
    trained = snapshot(result.model)
    assert np.abs(trained[0] - before[0]).max() < 0.5


def test_mixed_precision_computes_in_float16_but_outputs_float32():
    clone = initial_model(tiny_classifier(), Recipe(mixed_precision=True))
    policies = {layer.name: layer.dtype_policy.name for layer in clone.layers if layer.name != "image"}
    assert policies["conv"] == policies["bn"] == "mixed_float16"
    assert policies["logits"] == "float32"
    assert clone(np.zeros((1, 8, 8, 3), "float32")).dtype == "float32"
    assert not Recipe(mixed_precision=False).uses_mixed_precision()


def test_compiled_loss_is_honoured_with_one_hot_labels():
    model = tiny_classifier(activation="softmax")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    result = train(
        model, tiny_data(one_hot=True), Recipe(epochs=1), test_data=tiny_data(one_hot=True), verbose=0
    )
    assert "compiled loss categorical_crossentropy (probabilities)" in result.objective
    assert isinstance(result.model.loss, keras.losses.CategoricalCrossentropy)
    assert result.model.loss.label_smoothing == pytest.approx(0.1) and not result.model.loss.from_logits
    assert np.isfinite(result.history["loss"]).all()
    assert 0.0 <= result.test_accuracy <= 1.0
    assert isinstance(model.optimizer, keras.optimizers.Adam)  # the source's compile state is its own


def test_result_reports_history_and_the_cost_of_the_trained_model():
    source = tiny_classifier()
    result = train(source, tiny_data(), Recipe(epochs=2, warmup_epochs=1), verbose=0)
    assert result.cost == nat_keras.graph.cost(result.model) == nat_keras.graph.cost(source)
    assert result.cost.params == source.count_params()
    assert result.steps_per_epoch == EXAMPLES // BATCH and result.batch_size == BATCH
    assert set(result.history) == {"loss", "accuracy", "learning_rate"}
    assert all(len(values) == 2 for values in result.history.values())
    schedule = learning_rate_schedule(result.recipe, steps_per_epoch=3, batch_size=BATCH)
    # Each epoch reports the rate of its last step: the end of the warm-up, then near the end of the cosine.
    assert result.history["learning_rate"] == pytest.approx([float(schedule(2)), float(schedule(5))])
    assert result.test_accuracy is None and result.wall_time > 0
    json.dumps(result.to_dict())


# -- resumption -----------------------------------------------------------------------


class _Interrupt(keras.callbacks.Callback):
    """Stops the process's training at the end of an epoch, after the checkpoint is written."""

    def __init__(self, after_epoch: int):
        super().__init__()
        self.after_epoch = after_epoch
        self.logs: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))
        if epoch == self.after_epoch:
            raise KeyboardInterrupt(f"interrupted after epoch {epoch}")


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    source = tiny_classifier()
    recipe = Recipe(epochs=3, warmup_epochs=0)
    interrupt = _Interrupt(after_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        train(source, tiny_data(), recipe, checkpoint_dir=tmp_path, callbacks=[interrupt], verbose=0)
    assert len(interrupt.logs) == 2

    resumed = train(source, tiny_data(), recipe, checkpoint_dir=tmp_path, verbose=0)
    assert resumed.initial_epoch == 2 and resumed.epochs == 3
    assert len(resumed.history["loss"]) == 3
    assert list(resumed.history["loss"][:2]) == pytest.approx([logs["loss"] for logs in interrupt.logs])
    # The optimizer's step count was restored: the last epoch ran on the end of the cosine.
    schedule = learning_rate_schedule(recipe, steps_per_epoch=3, batch_size=BATCH)
    assert resumed.history["learning_rate"][2] == pytest.approx(float(schedule(8)))
    assert int(resumed.model.optimizer.iterations.numpy()) == 9

    # A finished run returns its model without training again.
    again = train(source, tiny_data(), recipe, checkpoint_dir=tmp_path, verbose=0)
    assert again.initial_epoch == 3 and again.history == resumed.history
    assert all(np.allclose(a, b) for a, b in zip(snapshot(again.model), snapshot(resumed.model)))
    # Another recipe in the same directory would mix two runs.
    with pytest.raises(ConfigError, match="differs from this one in \\['recipe'\\]"):
        train(source, tiny_data(), recipe.replace(epochs=4), checkpoint_dir=tmp_path, verbose=0)
    # A directory recorded before a Recipe field existed still resumes (the field had its default).
    run_file = tmp_path / "run.json"
    run = json.loads(run_file.read_text())
    del run["recipe"]["grad_clip"]
    run_file.write_text(json.dumps(run))
    assert train(source, tiny_data(), recipe, checkpoint_dir=tmp_path, verbose=0).initial_epoch == 3


# -- examples/retrain.py ----------------------------------------------------------------


def test_retrain_example_applies_a_plan_and_writes_the_json(tmp_path):
    """One fresh interpreter (absl flags are process-global): a run through `app.run`'s parsing and
    `main`, then the example's checks on flags and plans."""
    source = nat_keras.models.resnet(depth=8, input_shape=(8, 8, 3), num_classes=10, name="small")
    source.save(tmp_path / "small.keras")
    graph = nat_keras.encode(source)
    edge = next(e.id for e in graph.transformable_edges() if "skip" in e.actions)
    plan = nat_keras.TransformPlan.from_actions(graph, {edge: "skip"})
    plan.save(tmp_path / "plan.json")
    expected = nat_keras.graph.cost(nat_keras.apply_plan(source, plan))
    other = nat_keras.models.resnet(depth=8, input_shape=(8, 8, 3), num_classes=10, name="other")
    nat_keras.TransformPlan.keep_all(nat_keras.encode(other)).save(tmp_path / "other_plan.json")

    args = ["--model=small.keras", "--plan=plan.json", "--image_size=8", "--epochs=1", "--init=inherited"]
    args.append("--batch_size=256")  # few steps
    driver = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("retrain", {str(REPO / "examples" / "retrain.py")!r})
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
        from absl import app, flags
        errors = {{}}
        for bad in (["--model=nope"], ["--plan=missing.json"], ["--epochs=0"]):
            try:
                flags.FLAGS(["retrain", *bad])
            except flags.Error as error:
                errors[bad[0]] = str(error)
            flags.FLAGS.unparse_flags()
        flags.FLAGS(["retrain", *{args!r}, "--output=out/result.json"])
        example.main(["retrain"])
        splits = example.nat_keras.data.load_splits("digits", image_size=8)
        model = example.load_model("resnet20", splits)
        try:
            example.apply_plan_file(model, "other_plan.json", "resnet20")
        except app.UsageError as error:
            errors["plan"] = str(error)
        print(json.dumps(errors))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    run = subprocess.run(
        [sys.executable, "-c", driver], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]

    result = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert (result["params"], result["macs"]) == (expected.params, expected.macs)
    assert result["params"] < source.count_params()
    assert len(result["history"]["loss"]) == 1 and len(result["history"]["learning_rate"]) == 1
    assert result["recipe"] == Recipe.cpu(epochs=1, init="inherited").to_dict()
    assert result["command"].startswith("python examples/retrain.py ")
    assert set(args) <= set(result["command"].split()[2:])

    errors = json.loads(run.stdout.strip().splitlines()[-1])
    assert (
        "--model must be a reference network" in errors["--model=nope"]
        and "resnet20" in errors["--model=nope"]
    )
    assert "--plan must be an existing plan.json" in errors["--plan=missing.json"]
    assert "--epochs must be at least 1" in errors["--epochs=0"]
    # A plan made for another model is a usage error naming both flags.
    assert "--plan=other_plan.json" in errors["plan"] and "--model=resnet20" in errors["plan"]
    assert "'other'" in errors["plan"]


def test_top_level_names_are_listed_and_a_trained_model_loads_in_a_fresh_process(tmp_path):
    import nat_keras.train as module

    assert nat_keras.Recipe is Recipe and nat_keras.TrainResult is module.TrainResult
    assert nat_keras.train is module and nat_keras.train.train is train
    assert {"Recipe", "TrainResult", "train"} <= set(nat_keras.__all__) & set(dir(nat_keras))
    # The saved compile config names the recipe's optimizer: `import nat_keras` alone must register it.
    model = nat_keras.models.resnet(depth=8, input_shape=(8, 8, 3), num_classes=3)
    images = np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((images, np.arange(8) % 3)).batch(4)
    result = train(model, data, Recipe.cpu(epochs=1, warmup_epochs=0.0), verbose=0)
    result.model.save(tmp_path / "trained.keras")
    code = f"import nat_keras, keras; keras.saving.load_model({str(tmp_path / 'trained.keras')!r})"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
