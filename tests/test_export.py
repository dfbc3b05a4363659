"""Tests for `nat_keras.rebuild.export`: SavedModel + plan.json + cost.json in one directory."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import conv_chain

import nat_keras
from nat_keras.errors import NatKerasError, PlanError
from nat_keras.plan import TransformPlan, sample_random_plan
from nat_keras.rebuild.apply import apply_plan
from nat_keras.rebuild.export import COST_FILE, PLAN_FILE, ExportResult, export

PLAN_SEED = 3


@pytest.fixture(scope="module")
def source() -> keras.Model:
    return nat_keras.models.resnet20()


@pytest.fixture(scope="module")
def plan(source: keras.Model) -> TransformPlan:
    plan = sample_random_plan(nat_keras.encode(source), PLAN_SEED)
    assert plan.actions, "the seed should give a plan that changes something"
    return plan


@pytest.fixture(scope="module")
def transformed(source: keras.Model, plan: TransformPlan) -> keras.Model:
    return apply_plan(source, plan)


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
    transformed: keras.Model,
    plan: TransformPlan,
    source: keras.Model,
) -> ExportResult:
    """One full export (the slow part), shared by the tests that only read it."""
    return export(transformed, tmp_path_factory.mktemp("export") / "resnet20", plan=plan, source=source)


def test_saved_model_serves_like_the_model(exported: ExportResult, transformed: keras.Model) -> None:
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    loaded = tf.saved_model.load(str(exported.export_dir))  # keep it alive: serve() reads its variables
    served = loaded.serve(tf.constant(images))
    np.testing.assert_allclose(served.numpy(), keras.ops.convert_to_numpy(transformed(images)), atol=1e-5)


def test_plan_json_round_trips(exported: ExportResult, plan: TransformPlan) -> None:
    assert exported.plan_path == exported.export_dir / PLAN_FILE
    assert TransformPlan.load(exported.plan_path) == plan


def test_cost_json(exported: ExportResult, transformed: keras.Model, source: keras.Model) -> None:
    assert exported.cost_path == exported.export_dir / COST_FILE
    record = json.loads(exported.cost_path.read_text(encoding="utf-8"))
    assert record["cost"]["params"] == transformed.count_params()
    assert record["cost"] == exported.cost.to_dict() == nat_keras.cost(transformed).to_dict()
    assert record["model"] == transformed.name
    assert record["nat_keras_version"] == nat_keras.__version__
    assert record["plan"] == PLAN_FILE
    assert record["source"] == {"model": source.name, "cost": nat_keras.cost(source).to_dict()}
    assert exported.source_cost == nat_keras.cost(source)
    assert record["ratio"] == pytest.approx(exported.cost.ratio(exported.source_cost))
    assert record["ratio"] == pytest.approx(exported.ratio)
    # sample_random_plan only draws actions that cost no more than the source.
    assert record["ratio"]["params"] <= 1.0 and record["ratio"]["macs"] <= 1.0


def test_without_plan_or_source(tmp_path: pathlib.Path) -> None:
    model = conv_chain("small")
    result = export(model, tmp_path / "out")
    assert result.plan_path is None and result.source_cost is None and result.ratio is None
    assert not (tmp_path / "out" / PLAN_FILE).exists()
    record = json.loads(result.cost_path.read_text(encoding="utf-8"))
    assert record["cost"]["params"] == model.count_params()
    assert record["source"] is None and record["ratio"] is None and record["plan"] is None
    assert (tmp_path / "out" / "saved_model.pb").is_file()


def test_empty_existing_dir_is_used(tmp_path: pathlib.Path) -> None:
    (tmp_path / "out").mkdir()
    export(conv_chain("small"), tmp_path / "out")
    assert (tmp_path / "out" / "saved_model.pb").is_file()


def test_refuses_to_overwrite(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(NatKerasError, match=r"(?s)out.*overwrite=True.*another path"):
        export(conv_chain("small"), target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    # No staging directory is left behind either.
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_refuses_a_file(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "out"
    target.write_text("not a directory", encoding="utf-8")
    with pytest.raises(NatKerasError, match="not a directory"):
        export(conv_chain("small"), target, overwrite=True)
    assert target.read_text(encoding="utf-8") == "not a directory"


def test_refuses_the_working_directory(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "work" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "sub")
    for target in (".", "..", tmp_path / "work"):
        with pytest.raises(NatKerasError, match="current working directory"):
            export(conv_chain("small"), target, overwrite=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub", "work"]


def test_overwrite_replaces_everything(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "out"
    first = conv_chain("first")
    graph = nat_keras.encode(first)
    export(first, target, plan=TransformPlan.keep_all(graph), source=first)
    (target / "stale.txt").write_text("old", encoding="utf-8")

    second = conv_chain("second")
    result = export(second, target, overwrite=True)
    names = {p.name for p in target.iterdir()}
    # The old export's files are gone (no stale plan.json describing another model).
    assert "stale.txt" not in names and PLAN_FILE not in names
    assert {COST_FILE, "saved_model.pb"} <= names
    assert json.loads(result.cost_path.read_text(encoding="utf-8"))["model"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    images = np.ones((1, 8, 8, 3), "float32")
    loaded = tf.saved_model.load(str(target))  # keep it alive: serve() reads its variables
    served = loaded.serve(tf.constant(images))
    np.testing.assert_allclose(served.numpy(), keras.ops.convert_to_numpy(second(images)), atol=1e-5)


def test_plan_for_another_model_is_refused(tmp_path: pathlib.Path, plan: TransformPlan) -> None:
    model = conv_chain("small")
    with pytest.raises(PlanError, match="made for model"):
        export(model, tmp_path / "out", plan=plan, source=model)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_the_old_one(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out"
    export(conv_chain("first"), target)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    def broken_export(self: keras.Model, *args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(keras.Model, "export", broken_export)
    with pytest.raises(RuntimeError, match="disk full"):
        export(conv_chain("second"), target, overwrite=True)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert json.loads((target / COST_FILE).read_text(encoding="utf-8"))["model"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_transformed_model_exports_its_own_report(tmp_path: pathlib.Path) -> None:
    from conftest import policy_off_keep, small_resnet

    from nat_keras.rebuild.export import REPORT_FILE
    from nat_keras.report import TransformReport

    source = small_resnet()
    new = nat_keras.transform(source, policy=policy_off_keep(), verbose=0)
    report = new.nat_report
    assert report.plan.actions, "the stand-in policy changes edges"
    result = export(new, tmp_path / "out")  # neither plan nor source passed
    assert TransformPlan.load(result.plan_path) == report.plan
    record = json.loads(result.cost_path.read_text(encoding="utf-8"))
    assert record["source"] == {"model": source.name, "cost": report.cost_before.to_dict()}
    assert record["ratio"] == report.cost_after.ratio(report.cost_before)
    assert result.report_path == tmp_path / "out" / REPORT_FILE
    assert TransformReport.load(result.report_path) == report
