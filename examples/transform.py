"""Transform any Keras model with NAT on a dataset, compare it with its source, write everything.

The main job of nat_keras as an absl app:

1. load the data (`nat_keras.data`: digits offline by default; Fashion-MNIST
   from Debian's package or TFDS; cifar10 / cifar100 / imagenet2012 when
   prepared in TFDS),
2. get the model: a reference network, `keras.applications:<Name>` (both
   built for the data and, being untrained, trained for --pretrain_epochs
   with `nat_keras.train`), or your trained `.keras` file,
3. encode it and print its DAG (per-edge op, shapes, params, MACs, actions),
4. `nat_keras.transform`: supernet + policy search, best of k candidates on
   held-out training data, rebuild with inherited weights,
5. give source and result the same treatment (--fine_tune_epochs of the same
   recipe, then BN statistics recalibrated on the same images), compare test
   accuracy and cost in one table,
6. write to --output_dir: model.keras, plan.json, report.json, plan.png (the
   architecture before and after), search.png (reward, baseline, entropy per
   epoch) and saved_model/ (SavedModel with plan.json, cost.json and
   report.json beside it), and check that the SavedModel serves what the
   model computes.

Flag groups (each has an example in the README):
  model:     --model, --pretrain_epochs
  data:      --dataset, --data_dir, --download, --image_size, --batch_size, --train_examples
  policy:    --policy_dir, --fresh_policy, --space, --greedy, --num_candidates
  search:    --method, --search_epochs, --weight_steps, --policy_steps, --samples, --run_dir
  budget:    --params_ratio, --macs_eps or --macs_ratio (compact: e.g. --macs_ratio=0.5)
  compare:   --fine_tune_epochs
  strategy:  --strategy (default, mirrored, multi_worker from TF_CONFIG, tpu with --tpu)
  output:    --output_dir, --seed

  python examples/transform.py --model=resnet20 --dataset=fashion_mnist --output_dir=out/resnet20
  python examples/transform.py --model=my_model.keras --dataset=cifar10 --fine_tune_epochs=5
  python examples/transform.py --model=keras.applications:MobileNetV2 --dataset=digits --space=nat
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import nat_keras  # first: prepares the two Kerases (docs/design.md section 5)

# isort: split
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from nat_keras.errors import ConfigError, NatKerasError
from nat_keras.objective import objective_of
from nat_keras.policy import Policy, ReinforceConfig, default_policy
from nat_keras.search import SearchConfig
from nat_keras.search.baselines import METHODS
from nat_keras.supernet.batchnorm import calibration_images
from nat_keras.train import INHERITED, SCRATCH, Recipe, train

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

_MODEL = flags.DEFINE_string(
    "model",
    "resnet20",
    "A reference network (" + ", ".join(sorted(nat_keras.models.MODELS)) + "), "
    "keras.applications:<Name>, or the path of a trained .keras file.",
)
_PRETRAIN = flags.DEFINE_integer(
    "pretrain_epochs", 3, "Epochs of nat_keras.train for a built (untrained) model; a .keras file is kept."
)
_DATASET = flags.DEFINE_enum("dataset", "digits", sorted(nat_keras.data.DATASETS), "Dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory, or the Fashion-MNIST IDX files.")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Let TFDS download a dataset that is not prepared.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Image height and width (default: the dataset's).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size (the paper: 64).")
_TRAIN_EXAMPLES = flags.DEFINE_integer(
    "train_examples", None, "Use a seeded subset of this many training examples (default: all)."
)
_POLICY_DIR = flags.DEFINE_string("policy_dir", None, "A saved Policy (Policy.save) to start from.")
_FRESH_POLICY = flags.DEFINE_bool("fresh_policy", False, "Start from a random policy, not the default one.")
_SPACE = flags.DEFINE_enum("space", "nat++", ["nat", "nat++"], "Action space.")
_GREEDY = flags.DEFINE_bool("greedy", False, "Score the policy's most likely plan instead of sampling.")
_CANDIDATES = flags.DEFINE_integer("num_candidates", 10, "Plans scored at the end (the paper: 10).")
_METHOD = flags.DEFINE_enum(
    "method", "nat", list(METHODS), "How the plan is chosen: NAT's policy, or a baseline at its budget."
)
_EPOCHS = flags.DEFINE_integer("search_epochs", 10, "Alternations of supernet and policy passes.")
_WEIGHT_STEPS = flags.DEFINE_integer("weight_steps", 20, "Supernet weight steps per search epoch.")
_POLICY_STEPS = flags.DEFINE_integer("policy_steps", 10, "Policy steps per search epoch.")
_SAMPLES = flags.DEFINE_integer("samples", 4, "Plans sampled per policy step (n).")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Checkpoints and TensorBoard logs (a rerun resumes).")
_PARAMS_RATIO = flags.DEFINE_float("params_ratio", 1.0, "Budget: params at most this times the source's.")
_MACS_EPS = flags.DEFINE_float("macs_eps", 0.01, "Budget: MACs at most (1 + this) times the source's.")
_MACS_RATIO = flags.DEFINE_float(
    "macs_ratio", None, "Budget: MACs at most this times the source's (e.g. 0.5; replaces --macs_eps)."
)
_FINE_TUNE = flags.DEFINE_integer(
    "fine_tune_epochs", 1, "Epochs of the same recipe for source and result before they are compared."
)
_STRATEGY = flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or address, for --strategy=tpu ('' for a local TPU VM).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/nat", "Where the model, plan, report and pictures go.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the data, the pretraining and the search.")

flags.register_validator(
    "model",
    lambda value: (
        value in nat_keras.models.MODELS
        or value.startswith(nat_keras.models.APPLICATIONS_PREFIX)
        or (value.endswith(".keras") and os.path.isfile(value))
    ),
    message=(
        f"--model must be a reference network ({', '.join(sorted(nat_keras.models.MODELS))}), "
        "keras.applications:<Name>, or the path of an existing .keras file."
    ),
)
flags.register_validator("pretrain_epochs", lambda v: v >= 0, message="--pretrain_epochs must be >= 0.")
flags.register_validator("fine_tune_epochs", lambda v: v >= 0, message="--fine_tune_epochs must be >= 0.")
flags.register_validator(
    "policy_dir",
    lambda value: value is None or os.path.isdir(value),
    message="--policy_dir must be a directory written by Policy.save.",
)
flags.register_multi_flags_validator(
    ["strategy", "tpu"],
    lambda values: values["strategy"] != "tpu" or values["tpu"] is not None,
    message="--strategy=tpu needs --tpu (a TPU name or address; '' on a TPU VM).",
)


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """The --strategy: made first, since multi-worker and TPU set-up must precede any TF op.

    Example:
      >>> make_strategy("multi_worker")   # reads the cluster from TF_CONFIG
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise app.UsageError("--strategy=multi_worker reads the cluster from TF_CONFIG, which is unset.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """Whether this process writes the outputs: the only process, or the cluster's chief (else worker 0)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if not task:
        return True
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def budget() -> nat_keras.Budget:
    """The budget flags as a Budget; a bad combination is a usage error."""
    try:
        if _MACS_RATIO.value is not None:
            return nat_keras.Budget(params_ratio=_PARAMS_RATIO.value, macs_ratio=_MACS_RATIO.value)
        return nat_keras.Budget(params_ratio=_PARAMS_RATIO.value, macs_eps=_MACS_EPS.value)
    except ConfigError as error:
        raise app.UsageError(f"--params_ratio / --macs_eps / --macs_ratio: {error}") from error


def _policy() -> Policy:
    if _POLICY_DIR.value is not None:
        policy = Policy.load(_POLICY_DIR.value)
        return policy if policy.space == _SPACE.value else policy.with_space(_SPACE.value)
    if _FRESH_POLICY.value:
        return Policy(space=_SPACE.value, seed=_SEED.value)
    return default_policy(space=_SPACE.value)


def test_accuracy(model: keras.Model, dataset: tf.data.Dataset) -> float:
    """Top-1 accuracy in inference mode, as the model's own objective counts it."""
    objective = objective_of(model)
    correct = seen = 0
    for images, labels in dataset:
        outputs = model(images, training=False)
        correct += float(objective.correct(labels, outputs))
        seen += int(tf.shape(labels)[0])
    return correct / max(seen, 1)


def load_data() -> Any:
    """The --dataset's splits. Each call starts the seeded pipelines afresh: the same batches again."""
    options = {"batch_size": _BATCH.value, "data_dir": _DATA_DIR.value, "download": _DOWNLOAD.value}
    for name, flag in (("image_size", _IMAGE_SIZE), ("train_examples", _TRAIN_EXAMPLES)):
        if flag.value is not None:
            options[name] = flag.value
    return nat_keras.data.load_splits(_DATASET.value, seed=_SEED.value, **options)


def same_treatment(
    model: keras.Model, calibration: tf.Tensor, strategy: tf.distribute.Strategy
) -> keras.Model:
    """What source and result both get before they are compared: the same recipe, then recalibration."""
    if _FINE_TUNE.value:
        recipe = Recipe.cpu(epochs=_FINE_TUNE.value, init=INHERITED, warmup_epochs=0.0, seed=_SEED.value)
        # Fresh splits: a dataset iterated again yields its next epoch, not the same batches.
        model = train(model, load_data().train, recipe, strategy=strategy, verbose=0).model
        # .model is a trained clone: the caller's net (the source, or transform's result) is unchanged.
    else:
        model = nat_keras.apply_plan(model, nat_keras.TransformPlan.keep_all(nat_keras.encode(model)))
    with strategy.scope():
        nat_keras.recalibrate(model, calibration)
    return model


def get_source(splits: Any, strategy: tf.distribute.Strategy) -> tuple[keras.Model, str]:
    """The --model, trained: a file as it is, a built network after --pretrain_epochs."""
    try:
        with strategy.scope():
            model = nat_keras.models.load_model(
                _MODEL.value, input_shape=splits.image_shape, num_classes=splits.num_classes
            )
    except ConfigError as error:
        raise app.UsageError(f"--model={_MODEL.value} with --dataset={_DATASET.value}: {error}") from error
    if _MODEL.value.endswith(".keras"):
        if flags.FLAGS["pretrain_epochs"].present:
            logging.warning("--pretrain_epochs is ignored: %s is a trained model.", _MODEL.value)
        return model, f"loaded from {_MODEL.value}"
    if not _PRETRAIN.value:
        return model, "untrained (--pretrain_epochs=0)"
    print(f"Training the source {model.name} for {_PRETRAIN.value} epochs (nat_keras.train, Recipe.cpu).")
    recipe = Recipe.cpu(epochs=_PRETRAIN.value, init=SCRATCH, seed=_SEED.value)
    result = train(model, splits.train, recipe, strategy=strategy, verbose=2)
    return result.model, f"trained {_PRETRAIN.value} epochs with nat_keras.train"


def write_outputs(new_model: keras.Model, output_dir: pathlib.Path, probe: tf.Tensor) -> list[pathlib.Path]:
    """model.keras, plan.json, report.json, the pictures and the SavedModel; returns what it wrote."""
    report = new_model.nat_report
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / "model.keras", output_dir / "plan.json", output_dir / "report.json"]
    new_model.save(written[0])
    report.plan.save(written[1])
    report.save(written[2])
    written += nat_keras.plot_plan(report.graph, report.plan, output_dir / "plan.png")
    if report.rewards:
        title = f"NAT on {report.model_name}"
        written.append(nat_keras.plot_history(report, output_dir / "search.png", title=title))
    result = nat_keras.export(new_model, output_dir / "saved_model", overwrite=True)
    loaded = tf.saved_model.load(os.fspath(result.export_dir))  # keep a reference: it owns the variables
    gap = float(np.max(np.abs(np.asarray(loaded.serve(probe)) - np.asarray(new_model(probe)))))
    if gap > 1e-4:
        raise NatKerasError(f"The SavedModel in {result.export_dir} serves outputs {gap:.1e} off the model.")
    return [*written, result.export_dir]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # TF's SavedModel writer is chatty at INFO
    strategy = make_strategy(_STRATEGY.value, _TPU.value)
    keras.utils.set_random_seed(_SEED.value)
    splits = load_data()
    print(
        f"Data {_DATASET.value!r}: {splits.num_weights_examples} supernet-weight / "
        f"{splits.num_policy_examples} policy / {splits.num_test_examples} test examples, "
        f"images {'x'.join(map(str, splits.image_shape))}; strategy {_STRATEGY.value} "
        f"({strategy.num_replicas_in_sync} replicas)."
    )
    model, provenance = get_source(splits, strategy)
    print(f"Source {model.name!r}: {provenance}.")
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
        budget=budget(),
        strategy=strategy,
        num_candidates=_CANDIDATES.value,
        greedy=_GREEDY.value,
        method=_METHOD.value,
        seed=_SEED.value,
        search_config=config,
        directory=_RUN_DIR.value,
        verbose=1,
    )
    report = new_model.nat_report
    print(f"\nSearch and derivation took {time.perf_counter() - start:.0f} s.")
    print(report, end="\n\n")

    # Like with like: both nets get the same recipe and the same recalibration.
    calibration = calibration_images(splits.weights)
    treated = {
        "source": same_treatment(model, calibration, strategy),
        "transformed": same_treatment(new_model, calibration, strategy),
    }
    costs = {"source": report.cost_before, "transformed": report.cost_after}
    treatment = (
        f"{_FINE_TUNE.value} epoch(s) of nat_keras.train (inherited weights, seed {_SEED.value}), then"
        if _FINE_TUNE.value
        else "no fine-tuning;"
    )
    images = int(calibration.shape[0])
    print(f"Both nets: {treatment} BN statistics recalibrated on the same {images} weight-split images.")
    print(f"{'':<12}{'test acc':>10}{'params':>14}{'MACs':>16}")
    for name, net in treated.items():
        accuracy = test_accuracy(net, splits.test)
        print(f"{name:<12}{accuracy:>10.4f}{costs[name].params:>14,}{costs[name].macs:>16,}")

    if is_chief():
        probe = next(iter(splits.test))[0][:4]
        result = treated["transformed"]  # what the table measured
        result.nat_report = report
        written = write_outputs(result, pathlib.Path(_OUTPUT_DIR.value), probe)
        print(f"Wrote to {_OUTPUT_DIR.value}: " + ", ".join(p.name for p in written) + ".")


if __name__ == "__main__":
    app.run(main)
