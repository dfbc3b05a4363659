"""Replay a saved plan.json on its source model: the plan is the replayable record of a decision.

`examples/transform.py` writes the plan NAT chose to `<output_dir>/plan.json`.
This app applies it again to the source model, after checking that the
source's graph fingerprint is the one the plan was made for, and writes the
rebuilt model (kept layers carry the source's weights, new layers fresh ones)
as `.keras` and, with --export_dir, as a SavedModel with plan.json and
cost.json. It draws the plan too (--picture).

  python examples/apply_plan.py --model=my_model.keras --plan=out/nat/plan.json --output=out/replayed.keras
  python examples/apply_plan.py --model=resnet20 --dataset=fashion_mnist --plan=out/nat/plan.json \\
      --export_dir=out/replayed
"""

from __future__ import annotations

import os

import nat_keras  # first: prepares the two Kerases (docs/design.md section 5)

# isort: split
from absl import app, flags

from nat_keras.errors import ConfigError, PlanError

_MODEL = flags.DEFINE_string(
    "model",
    None,
    "The source: a reference network, keras.applications:<Name> (built for --dataset), or a .keras file.",
    required=True,
)
_PLAN = flags.DEFINE_string("plan", None, "The plan.json to replay.", required=True)
_DATASET = flags.DEFINE_enum(
    "dataset", "digits", sorted(nat_keras.data.DATASETS), "Whose image shape and classes a built model takes."
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Image height and width (default: the dataset's).")
_OUTPUT = flags.DEFINE_string("output", "out/replayed.keras", "Where the rebuilt model goes (.keras).")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Also export a SavedModel (with plan.json, cost.json).")
_PICTURE = flags.DEFINE_string("picture", None, "Also draw the plan (before / after) as this PNG.")

flags.register_validator("plan", os.path.isfile, message="--plan must be an existing plan.json.")
flags.register_validator(
    "output", lambda value: value.endswith(".keras"), message="--output must end in .keras."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    spec = nat_keras.data.get_spec(_DATASET.value)
    size = _IMAGE_SIZE.value or spec.image_size
    # A file is the model itself; a name is built for the data's images and classes.
    is_file = _MODEL.value.endswith(".keras")
    data = {} if is_file else {"input_shape": (size, size, spec.channels), "num_classes": spec.num_classes}
    try:
        model = nat_keras.models.load_model(_MODEL.value, **data)
        plan = nat_keras.TransformPlan.load(_PLAN.value)
    except (ConfigError, PlanError, OSError, ValueError) as error:
        raise app.UsageError(f"--model={_MODEL.value} --plan={_PLAN.value}: {error}") from error
    graph = nat_keras.encode(model)
    try:
        new_model = nat_keras.apply_plan(model, plan, graph=graph)
    except PlanError as error:  # the fingerprint check: this plan was made for another model
        raise app.UsageError(f"--plan={_PLAN.value} does not fit --model={_MODEL.value}: {error}") from error
    print(nat_keras.format_plan(graph, plan))
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    new_model.save(_OUTPUT.value)
    written = [_OUTPUT.value]
    if _EXPORT_DIR.value:
        nat_keras.export(new_model, _EXPORT_DIR.value, plan=plan, source=model, overwrite=True)
        written.append(_EXPORT_DIR.value)
    if _PICTURE.value:
        written += [str(p) for p in nat_keras.plot_plan(graph, plan, _PICTURE.value)]
    print("Wrote " + ", ".join(written) + ".")


if __name__ == "__main__":
    app.run(main)
