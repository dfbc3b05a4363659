"""Transform a reference network with NAT on a dataset, evaluate it, export it.

The main job of nat_keras as an absl app:

1. load the data (`nat_keras.data`: digits offline by default; TFDS
   cifar10 / cifar100 / imagenet2012 when prepared),
2. build the network and train it briefly (NAT transforms trained models),
3. encode it and print its DAG (per-edge op, shapes, params, MACs, actions),
4. `nat_keras.transform`: supernet + policy search, best of k candidates,
   rebuild with inherited weights, fine-tune,
5. compare test accuracy (both nets get the same fine-tuning epochs and BN
   recalibration) and cost, export a SavedModel with plan.json and
   cost.json, and check the served outputs.

  python examples/transform.py --model=resnet20 --dataset=cifar10 --export_dir=out/resnet20
  python examples/transform.py --dataset=digits --search_epochs=2   # offline, a few minutes
"""

from __future__ import annotations

import os
import time

import nat_keras  # first: prepares the two Kerases (docs/design.md section 5)

# isort: split
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from nat_keras.policy import Policy, ReinforceConfig, default_policy
from nat_keras.search import SearchConfig

_MODEL = flags.DEFINE_enum("model", "resnet20", sorted(nat_keras.models.MODELS), "Reference network.")
_DATASET = flags.DEFINE_enum("dataset", "digits", sorted(nat_keras.data.DATASETS), "Dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Let TFDS download a dataset that is not prepared.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size (the paper: 64).")
_SPACE = flags.DEFINE_enum("space", "nat++", ["nat", "nat++"], "Action space.")
_PRETRAIN = flags.DEFINE_integer("pretrain_epochs", 3, "Epochs to train the source network first.")
_EPOCHS = flags.DEFINE_integer("search_epochs", 10, "Alternations of supernet and policy passes.")
_WEIGHT_STEPS = flags.DEFINE_integer("weight_steps", 20, "Supernet weight steps per search epoch.")
_POLICY_STEPS = flags.DEFINE_integer("policy_steps", 10, "Policy steps per search epoch.")
_SAMPLES = flags.DEFINE_integer("samples", 4, "Plans sampled per policy step (n).")
_CANDIDATES = flags.DEFINE_integer("num_candidates", 10, "Plans scored at the end (the paper: 10).")
_FINE_TUNE = flags.DEFINE_integer("fine_tune_epochs", 2, "Epochs to fine-tune the transformed network.")
_FRESH_POLICY = flags.DEFINE_bool("fresh_policy", False, "Start from a random policy, not the default one.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored"], "tf.distribute strategy.")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Checkpoints and TensorBoard logs (resumable).")
_EXPORT_DIR = flags.DEFINE_string("export_dir", "out/nat", "Where to write the SavedModel.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")


def _compile(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _policy() -> Policy:
    if _FRESH_POLICY.value:
        return Policy(space=_SPACE.value, seed=_SEED.value)
    return default_policy(space=_SPACE.value)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # TF's SavedModel writer is chatty at INFO
    keras.utils.set_random_seed(_SEED.value)
    mirrored = _STRATEGY.value == "mirrored"
    strategy = tf.distribute.MirroredStrategy() if mirrored else tf.distribute.get_strategy()
    splits = nat_keras.data.load_splits(
        _DATASET.value,
        batch_size=_BATCH.value,
        data_dir=_DATA_DIR.value,
        download=_DOWNLOAD.value,
        seed=_SEED.value,
    )
    print(
        f"Data {_DATASET.value!r}: {splits.num_weights_examples} supernet-weight / "
        f"{splits.num_policy_examples} policy / {splits.num_test_examples} test examples."
    )

    with strategy.scope():
        model = nat_keras.models.get_model(
            _MODEL.value, input_shape=splits.image_shape, num_classes=splits.num_classes
        )
        _compile(model)
    if _PRETRAIN.value:
        print(f"Training the source {_MODEL.value} for {_PRETRAIN.value} epochs.")
        model.fit(splits.train, epochs=_PRETRAIN.value, verbose=2)

    print(nat_keras.format_graph(nat_keras.encode(model), placeholders=False), end="\n\n")

    config = SearchConfig(
        epochs=_EPOCHS.value,
        weight_steps=_WEIGHT_STEPS.value,
        policy_steps=_POLICY_STEPS.value,
        reinforce=ReinforceConfig(num_samples=_SAMPLES.value),
        seed=_SEED.value,
    )
    start = time.perf_counter()
    new_model = nat_keras.transform(
        model,
        data=splits,
        policy=_policy(),
        space=_SPACE.value,
        strategy=strategy,
        num_candidates=_CANDIDATES.value,
        seed=_SEED.value,
        search_config=config,
        fine_tune_epochs=_FINE_TUNE.value,
        directory=_RUN_DIR.value,
        verbose=1,
    )
    print(f"\nSearch, derivation and fine-tuning took {time.perf_counter() - start:.0f} s.")
    print(new_model.nat_report, end="\n\n")

    if _FINE_TUNE.value:  # a fair comparison: the source gets the same extra epochs
        model.fit(splits.train, epochs=_FINE_TUNE.value, verbose=0)
    # ... and the BN recalibration `transform` gave the new model (on 256 weight-split images).
    with strategy.scope():
        nat_keras.recalibrate(model, nat_keras.supernet.batchnorm.calibration_images(splits.weights))
    _, source_accuracy = model.evaluate(splits.test, verbose=0)
    with strategy.scope():
        _compile(new_model)
    _, new_accuracy = new_model.evaluate(splits.test, verbose=0)
    before, after = new_model.nat_report.cost_before, new_model.nat_report.cost_after
    print(f"{'':<12}{'test acc':>10}{'params':>14}{'MACs':>16}")
    print(f"{'source':<12}{source_accuracy:>10.4f}{before.params:>14,}{before.macs:>16,}")
    print(f"{'transformed':<12}{new_accuracy:>10.4f}{after.params:>14,}{after.macs:>16,}")

    result = nat_keras.export(
        new_model, _EXPORT_DIR.value, plan=new_model.nat_report.plan, source=model, overwrite=True
    )
    images = next(iter(splits.test))[0][:4]
    loaded = tf.saved_model.load(os.fspath(result.export_dir))  # keep a reference: it owns the variables
    gap = float(np.max(np.abs(np.asarray(loaded.serve(images)) - np.asarray(new_model(images)))))
    print(f"Exported to {result.export_dir} (SavedModel, plan.json, cost.json); serve() gap {gap:.1e}.")


if __name__ == "__main__":
    app.run(main)
