"""Benchmark: what the shipped default policy does to trained reference networks.

`nat_keras.transform(model)` with no data decodes the default policy's most
likely plan. Each network is trained on the offline digits data, transformed,
and both are measured on the test split after the same BN recalibration and,
optionally, the same fine-tuning epochs: a default policy must not cost
accuracy for the params and MACs it saves.

  python benchmarks/default_policy.py --models=resnet20,mobilenet_v2 --epochs=5
"""

from __future__ import annotations

import time
from typing import Any

import nat_keras  # first: prepares the two Kerases

# isort: split
import keras
from absl import app, flags

from nat_keras.policy import Policy, default_policy

_MODELS = flags.DEFINE_list("models", ["resnet20", "mobilenet_v2"], "Reference networks.")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Epochs to train each source network.")
_LR = flags.DEFINE_float("learning_rate", 0.05, "SGD learning rate (VGG-16 without BN needs less).")
_FINE_TUNE = flags.DEFINE_integer("fine_tune_epochs", 1, "Epochs for both nets after the transform.")
_SPACE = flags.DEFINE_enum("space", "nat++", ["nat", "nat++"], "Action space.")
_POLICY_DIR = flags.DEFINE_string("policy_dir", None, "A saved policy to check instead of the shipped one.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")


def _compile(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=_LR.value, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _test_accuracy(model: keras.Model, splits: nat_keras.data.NatSplits, calibration: Any) -> float:
    nat_keras.recalibrate(model, calibration)
    return float(model.evaluate(splits.test, verbose=0)[1])


def main(argv: list[str]) -> None:
    del argv
    splits = nat_keras.data.load_splits("digits", batch_size=64, seed=_SEED.value)
    calibration = nat_keras.supernet.batchnorm.calibration_images(splits.weights)
    policy = (
        default_policy(space=_SPACE.value) if _POLICY_DIR.value is None else Policy.load(_POLICY_DIR.value)
    )
    print(
        f"{'model':<14}{'changed':>9}{'params':>9}{'MACs':>8}{'source acc':>12}{'new acc':>9}{'seconds':>9}"
    )
    for name in _MODELS.value:
        keras.utils.set_random_seed(_SEED.value)
        model = _compile(
            nat_keras.models.get_model(name, input_shape=splits.image_shape, num_classes=splits.num_classes)
        )
        model.fit(splits.train, epochs=_EPOCHS.value, verbose=0)
        start = time.perf_counter()
        new_model = _compile(
            nat_keras.transform(model, policy=policy.with_space(_SPACE.value), space=_SPACE.value, verbose=0)
        )
        seconds = time.perf_counter() - start
        report = new_model.nat_report
        if _FINE_TUNE.value:
            model.fit(splits.train, epochs=_FINE_TUNE.value, verbose=0)
            new_model.fit(splits.train, epochs=_FINE_TUNE.value, verbose=0)
        source, new = (
            _test_accuracy(model, splits, calibration),
            _test_accuracy(new_model, splits, calibration),
        )
        ratio = report.cost_after.ratio(report.cost_before)
        changed = f"{len(report.plan.actions)}/{len(report.graph.transformable_edges())}"
        print(
            f"{name:<14}{changed:>9}{ratio['params']:>9.1%}{ratio['macs']:>8.1%}"
            f"{source:>12.4f}{new:>9.4f}{seconds:>9.1f}"
        )


if __name__ == "__main__":
    app.run(main)
