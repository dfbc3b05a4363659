"""TransformReport outlives the session: JSON keeps every field, and bad files say what they are."""

from __future__ import annotations

import json

import pytest
from conftest import small_resnet

import nat_keras
from nat_keras.errors import NatKerasError
from nat_keras.report import TransformReport


def _report() -> TransformReport:
    graph = nat_keras.encode(small_resnet())
    keep = nat_keras.TransformPlan.keep_all(graph)
    changed = nat_keras.sample_random_plan(graph, 1)
    assert changed.actions
    return TransformReport(
        graph.name,
        changed,
        graph,
        nat_keras.cost(graph),
        nat_keras.plan_cost(graph, changed),
        candidates=((changed, 0.75), (keep, 0.5)),
        accuracy_before=0.5,
        accuracy_after=0.75,
        rewards=(-0.1, 0.25),
        history={"reward": (-0.1, 0.25), "baseline": (0.0, 0.05), "entropy": (1.5, 1.25)},
        message="changed 3 edges",
    )


def test_every_field_survives_json(tmp_path):
    report = _report()
    again = TransformReport.from_json(report.to_json())
    assert again == report
    assert again.graph.fingerprint() == report.graph.fingerprint() == report.plan.fingerprint
    report.save(tmp_path / "report.json")
    assert TransformReport.load(tmp_path / "report.json") == report
    assert str(again) == str(report)


def test_a_file_of_another_kind_is_a_clear_error():
    data = _report().to_dict()
    with pytest.raises(NatKerasError, match="format 7 is not supported"):
        TransformReport.from_dict({**data, "format_version": 7})
    del data["graph"]
    with pytest.raises(NatKerasError, match="lacks the field 'graph'"):
        TransformReport.from_json(json.dumps(data))
