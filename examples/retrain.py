"""Retrain a network with one recipe (`nat_keras.train`) and write what it scored as JSON.

The other half of a NAT comparison (docs/design.md section 8, "Same recipe"):
train the source network and its transformed version with the same recipe,
data and seed, then compare test accuracy, params and MACs.

--model is a reference network (`nat_keras.models.MODELS`) or
`keras.applications:<Name>`, built for the dataset's image shape and classes,
or a `.keras` file (loaded with safe_mode). --plan applies a `TransformPlan` (plan.json, e.g. from
`examples/transform.py`'s export) to that model first; the plan must have
been made for it (same graph fingerprint). --init=scratch retrains from fresh
weights (the paper's protocol), --init=inherited from the model's (after a
plan: kept layers keep theirs).

  python examples/retrain.py --model=resnet20 --dataset=cifar10 --preset=gpu --output=runs/source.json
  python examples/retrain.py --model=resnet20 --dataset=cifar10 --preset=gpu \\
      --plan=out/resnet20/plan.json --output=runs/transformed.json
  python examples/retrain.py --epochs=2            # digits, offline, a few minutes on a CPU
"""

from __future__ import annotations

import json
import os

import nat_keras  # first: prepares the two Kerases (docs/design.md section 5)

# isort: split
import keras
from absl import app, flags, logging

from nat_keras.errors import ConfigError
from nat_keras.train import INITS, Recipe, train

_MODEL = flags.DEFINE_string(
    "model",
    "resnet20",
    f"A reference network ({', '.join(sorted(nat_keras.models.MODELS))}) or a path to a .keras file.",
)
_PLAN = flags.DEFINE_string("plan", None, "A plan.json (TransformPlan) to apply to --model before training.")
_DATASET = flags.DEFINE_enum("dataset", "digits", sorted(nat_keras.data.DATASETS), "Dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Let TFDS download a dataset that is not prepared.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Image height and width (default: the dataset's).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size; the recipe scales its learning rate to it.")
_CUTOUT = flags.DEFINE_integer("cutout", 0, "Cutout square side in pixels (the paper: 16 on CIFAR).")
_PRESET = flags.DEFINE_enum("preset", "cpu", ["cpu", "gpu"], "Recipe.cpu() or the paper's Recipe.gpu().")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs (default: the preset's).")
_INIT = flags.DEFINE_enum("init", "scratch", list(INITS), "Fresh weights, or the model's own.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and of the data.")
_BN_EXAMPLES = flags.DEFINE_integer(
    "bn_calibration_examples", 0,
    "Re-estimate BN statistics on this many training images after the last epoch (0: Keras's "
    "moving averages); worth it after short fine-tunings (Recipe.bn_calibration_examples).",
    lower_bound=0,
)  # fmt: skip
_CHECKPOINT_DIR = flags.DEFINE_string(
    "checkpoint_dir", None, "Checkpoints; an interrupted run resumes there."
)
_OUTPUT = flags.DEFINE_string("output", os.path.join("runs", "retrain.json"), "Where to write the JSON.")
# The flags that say how the model is trained, recorded in the command; where
# files go (--data_dir, --checkpoint_dir, --output) is not a setting.
_SETTINGS = (
    _MODEL, _PLAN, _DATASET, _DOWNLOAD, _IMAGE_SIZE, _BATCH, _CUTOUT, _PRESET, _EPOCHS, _INIT, _SEED,
    _BN_EXAMPLES,
)  # fmt: skip

OUTPUT_FORMAT_VERSION = 1


def _is_keras_file(value: str) -> bool:
    return value.endswith(".keras")


flags.register_validator(
    "model",
    lambda value: (
        value in nat_keras.models.MODELS
        or value.startswith(nat_keras.models.APPLICATIONS_PREFIX)
        or (_is_keras_file(value) and os.path.isfile(value))
    ),
    message=(
        f"--model must be a reference network ({', '.join(sorted(nat_keras.models.MODELS))}), "
        "keras.applications:<Name>, or the path of an existing .keras file."
    ),
)
flags.register_validator(
    "plan",
    lambda value: value is None or os.path.isfile(value),
    message="--plan must be an existing plan.json.",
)
flags.register_validator(
    "epochs", lambda value: value is None or value >= 1, message="--epochs must be at least 1."
)


def load_model(spec: str, splits: nat_keras.data.NatSplits) -> keras.Model:
    """The --model network (`nat_keras.models.load_model`), for the data's images and classes.

    Raises:
      app.UsageError: an unknown model, or a loaded one that does not take
        the data's images or has no output per class.

    Example:
      >>> load_model("resnet20", splits).output_shape
      (None, 10)
    """
    try:
        return nat_keras.models.load_model(
            spec, input_shape=splits.image_shape, num_classes=splits.num_classes
        )
    except ConfigError as error:
        raise app.UsageError(f"--model={spec} with --dataset={_DATASET.value}: {error}") from error


def apply_plan_file(model: keras.Model, path: str, spec: str) -> keras.Model:
    """`model` rebuilt by the plan in `path`, after checking the plan was made for it.

    Raises:
      app.UsageError: the plan cannot be read, or was made for another model.

    Example:
      >>> apply_plan_file(model, "out/resnet20/plan.json", "resnet20").count_params()
    """
    try:
        plan = nat_keras.TransformPlan.load(path)
    except (OSError, ValueError) as error:
        raise app.UsageError(f"--plan={path} is no TransformPlan: {error}") from error
    graph = nat_keras.encode(model)
    if plan.fingerprint != graph.fingerprint():
        raise app.UsageError(
            f"--plan={path} was made for model {plan.graph_name!r} (graph fingerprint {plan.fingerprint}), "
            f"not for --model={spec} on --dataset={_DATASET.value} (fingerprint {graph.fingerprint()}). "
            "Use the plan made for this model and data (same --image_size), or drop --plan."
        )
    return nat_keras.apply_plan(model, plan, graph=graph)


def command() -> str:
    """This run's settings as a command: every setting off its default, and the seed.

    Example:
      >>> command()
      'python examples/retrain.py --epochs=1 --model=resnet20 --seed=0'
    """
    changed = [h for h in _SETTINGS if h.value != flags.FLAGS[h.name].default or h.name == _SEED.name]
    return "python examples/retrain.py " + " ".join(
        f"--{h.name}={h.value}" for h in sorted(changed, key=lambda h: h.name)
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}; every setting is a --flag.")
    logging.set_verbosity(logging.WARNING)
    splits = nat_keras.data.load_splits(
        _DATASET.value,
        batch_size=_BATCH.value,
        image_size=_IMAGE_SIZE.value,
        cutout=_CUTOUT.value,
        data_dir=_DATA_DIR.value,
        download=_DOWNLOAD.value,
        seed=_SEED.value,
    )
    keras.utils.set_random_seed(_SEED.value)  # the reference network's weights, for --init=inherited
    model = load_model(_MODEL.value, splits)
    if _PLAN.value is not None:
        model = apply_plan_file(model, _PLAN.value, _MODEL.value)
    changes = {"init": _INIT.value, "seed": _SEED.value, "bn_calibration_examples": _BN_EXAMPLES.value}
    if _EPOCHS.value is not None:
        changes["epochs"] = _EPOCHS.value
    recipe = Recipe.preset(_PRESET.value)
    # A preset's warm-up cannot be longer than a shortened run.
    changes["warmup_epochs"] = min(recipe.warmup_epochs, changes.get("epochs", recipe.epochs))
    recipe = recipe.replace(**changes)
    print(
        f"Training {model.name!r} on {_DATASET.value} ({splits.num_train_examples} training / "
        f"{splits.num_test_examples} test examples) for {recipe.epochs} epochs, init={recipe.init}."
    )
    result = train(model, splits, recipe, checkpoint_dir=_CHECKPOINT_DIR.value, verbose=2)
    summary = {
        "format_version": OUTPUT_FORMAT_VERSION,
        "command": command(),
        "model": _MODEL.value,
        "plan": _PLAN.value,
        "dataset": _DATASET.value,
        **result.to_dict(),
    }
    directory = os.path.dirname(_OUTPUT.value)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(
        f"Test accuracy {result.test_accuracy:.4f}, {result.cost.params:,} params, "
        f"{result.cost.macs:,} MACs, {result.wall_time:.0f} s; wrote {_OUTPUT.value}."
    )


if __name__ == "__main__":
    app.run(main)
