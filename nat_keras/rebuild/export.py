"""Export a (transformed) model: a SavedModel plus the plan and the cost beside it.

One directory holds everything needed to serve and to audit a NAT result:

  export_dir/
    saved_model.pb, variables/, ...   the SavedModel (endpoint `serve`)
    plan.json                          the TransformPlan (if one is given)
    cost.json                          params / MACs / adds of the model,
                                       and of the source model with ratios
    report.json                        the TransformReport (models from `transform`)

The SavedModel is written by Keras 3 `model.export(..., format="tf_saved_model")`
and loads without nat_keras: `tf.saved_model.load(export_dir).serve(x)`.

Example:
  >>> plan = nat_keras.sample_random_plan(nat_keras.encode(model), 0)
  >>> new_model = nat_keras.apply_plan(model, plan)
  >>> result = nat_keras.export(new_model, "out/resnet20", plan=plan, source=model)
  >>> result.cost.params == new_model.count_params()
  True
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import keras

from nat_keras._version import __version__
from nat_keras.errors import NatKerasError
from nat_keras.graph import cost, encode
from nat_keras.graph.costs import Cost
from nat_keras.plan import TransformPlan
from nat_keras.report import TransformReport

PLAN_FILE = "plan.json"
COST_FILE = "cost.json"
REPORT_FILE = "report.json"
COST_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export` wrote, and what the exported model costs.

    Attributes:
      export_dir: the directory holding the SavedModel, plan.json and cost.json.
      plan_path: path of plan.json, or None when no plan was given.
      cost_path: path of cost.json.
      cost: params / MACs / adds of the exported model.
      source_cost: the same for the source model, or None when no source was given.
      report_path: path of report.json, or None when the model has no `nat_report`.
    """

    export_dir: pathlib.Path
    plan_path: pathlib.Path | None
    cost_path: pathlib.Path
    cost: Cost
    source_cost: Cost | None = None
    report_path: pathlib.Path | None = None

    @property
    def ratio(self) -> dict[str, float] | None:
        """The exported model's cost relative to the source's (None without a source)."""
        return None if self.source_cost is None else self.cost.ratio(self.source_cost)


def export(
    model: keras.Model,
    export_dir: str | os.PathLike,
    *,
    plan: TransformPlan | None = None,
    source: keras.Model | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write `model` as a SavedModel, with its plan and cost, to `export_dir`.

    Everything is first written to a new directory beside `export_dir` and
    moved into place only once complete, so a failed export leaves an earlier
    export at that path untouched.

    Args:
      model: the Keras 3 model to export (typically `apply_plan`'s result).
      export_dir: the directory to create. It may exist only if it is empty,
        unless `overwrite` is True.
      plan: the TransformPlan that made `model`; saved as plan.json. When
        `source` is given too, the plan is checked against the source model.
        None: the plan of the model's `nat_report` (what `transform` attaches),
        if it has one.
      source: the model the plan was applied to; its cost and the ratios
        exported / source go into cost.json. None: the source's cost from the
        model's `nat_report`, if it has one.
      overwrite: replace a non-empty `export_dir` (all of its content).

    Returns:
      An ExportResult with the paths written and the costs.

    Raises:
      NatKerasError: `export_dir` is a file, or a non-empty directory and
        `overwrite` is False.
      UnsupportedModelError: `model` or `source` cannot be encoded (for example
        a tf.keras / Keras 2 model), so its cost is unknown.
      PlanError: `plan` was not made for `source`.

    A model returned by `transform` also gets its whole `TransformReport` as
    report.json (`TransformReport.load` reads it back).

    Example:
      >>> result = nat_keras.export(new_model, "out/resnet20")   # plan and source cost from its report
      >>> served = tf.saved_model.load("out/resnet20").serve(images)
    """
    export_dir = pathlib.Path(export_dir)
    _check_target(export_dir, overwrite)
    report = getattr(model, "nat_report", None)
    if not isinstance(report, TransformReport):
        report = None
    if plan is None and report is not None:
        plan = report.plan

    # Cost and plan checks come first: a model that cannot be costed, or a plan
    # that does not belong to the source, fails before anything is written.
    model_cost = cost(model)
    source_name, source_cost = None, None
    if source is not None:
        source_graph = encode(source)
        source_name, source_cost = source.name, cost(source_graph)
        if plan is not None:
            plan.validate(source_graph)
    elif report is not None:
        source_name, source_cost = report.model_name, report.cost_before

    # Absolute, so that "." or "out/.." still have a real name and parent to
    # stage beside and rename.
    target = pathlib.Path(os.path.abspath(export_dir))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.export(str(staging), format="tf_saved_model", verbose=False)
        if plan is not None:
            (staging / PLAN_FILE).write_text(plan.to_json(indent=2) + "\n", encoding="utf-8")
        record = _cost_record(model, model_cost, source_name, source_cost, plan)
        (staging / COST_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if report is not None:
            report.save(staging / REPORT_FILE)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(
        export_dir=export_dir,
        plan_path=export_dir / PLAN_FILE if plan is not None else None,
        cost_path=export_dir / COST_FILE,
        cost=model_cost,
        source_cost=source_cost,
        report_path=export_dir / REPORT_FILE if report is not None else None,
    )


def _check_target(export_dir: pathlib.Path, overwrite: bool) -> None:
    """Refuse paths whose content an export would destroy without being asked to."""
    if export_dir.exists() and not export_dir.is_dir():
        raise NatKerasError(
            f"Cannot export to {str(export_dir)!r}: it exists and is not a directory. Choose another path."
        )
    if export_dir.is_dir():
        target, cwd = os.path.realpath(export_dir), os.path.realpath(os.getcwd())
        if os.path.commonpath([target, cwd]) == target:
            raise NatKerasError(
                f"Cannot export to {str(export_dir)!r}: it is or contains the current working "
                "directory, which an export would replace. Choose another path."
            )
    if export_dir.is_dir() and any(export_dir.iterdir()) and not overwrite:
        raise NatKerasError(
            f"Export directory {str(export_dir)!r} already exists and is not empty. Pass "
            "overwrite=True to replace its content, or choose another path."
        )


def _move_into_place(staging: pathlib.Path, export_dir: pathlib.Path) -> None:
    """Put the finished export at `export_dir`, replacing what is there.

    The old directory is renamed aside before the new one moves in and is
    deleted only after that succeeded, so one of the two exports is on disk
    at every moment, and a failed move puts the old one back.
    """
    old = None
    if export_dir.exists():
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.old.", dir=export_dir.parent))
        old.rmdir()  # only the unique name is wanted; rename needs it free
        export_dir.rename(old)
    try:
        staging.rename(export_dir)
    except BaseException:
        if old is not None:
            old.rename(export_dir)
        raise
    if old is not None:
        if old.is_symlink():  # a link to the old export: drop the link, not its target
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)


def _cost_record(
    model: keras.Model,
    model_cost: Cost,
    source_name: str | None,
    source_cost: Cost | None,
    plan: TransformPlan | None,
) -> dict[str, Any]:
    """The content of cost.json (plain JSON types only)."""
    record: dict[str, Any] = {
        "format_version": COST_FORMAT_VERSION,
        "nat_keras_version": __version__,
        "model": model.name,
        "cost": model_cost.to_dict(),
        "source": None,
        "ratio": None,
        "plan": PLAN_FILE if plan is not None else None,
    }
    if source_cost is not None:
        record["source"] = {"model": source_name, "cost": source_cost.to_dict()}
        record["ratio"] = model_cost.ratio(source_cost)
    return record
