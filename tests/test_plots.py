"""nat_keras.plots: every action drawn in its colour, lanes that never overlap, pages, and the history."""

from __future__ import annotations

import itertools

import pytest
from conftest import small_resnet

import nat_keras
from nat_keras import ops
from nat_keras.errors import NatKerasError, PlanError
from nat_keras.plots import ADDED, KEPT, REMOVED, REPLACED, SKIPPED, _assign_lanes, _panels, edge_status

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def resnet20_graph():
    return nat_keras.encode(nat_keras.models.resnet20())


def test_each_action_has_its_status(resnet20_graph):
    graph = resnet20_graph
    unit = graph.edge("stage1_block0_conv1")
    placeholder = next(e for e in graph.edges if e.kind == "placeholder")
    assert edge_status(unit, ops.KEEP, live=True) == KEPT
    assert edge_status(unit, ops.SKIP, live=True) == SKIPPED
    assert edge_status(unit, ops.NONE, live=False) == REMOVED
    assert edge_status(unit, ops.KEEP, live=False) == REMOVED  # dead: nothing downstream uses it
    assert edge_status(unit, "sep_conv_3x3", live=True) == REPLACED
    assert edge_status(placeholder, ops.SKIP, live=True) == ADDED
    assert edge_status(placeholder, ops.KEEP, live=True) is None  # a null edge left null is not drawn


def test_the_after_panel_shows_what_the_plan_did(resnet20_graph):
    graph = resnet20_graph
    placeholder = next(e for e in graph.edges if e.kind == "placeholder" and ops.SKIP in e.actions)
    plan = nat_keras.TransformPlan.from_actions(
        graph, {"stage1_block0_conv1": "sep_conv_3x3", "stage2_block1_conv1": "skip", placeholder.id: "skip"}
    )
    before, after = _panels(graph, plan)
    statuses = {d.edge.id: d.status for d in after}
    assert statuses["stage1_block0_conv1"] == REPLACED and statuses["stage2_block1_conv1"] == SKIPPED
    assert statuses[placeholder.id] == ADDED
    assert placeholder.id not in {d.edge.id for d in before}
    assert {d.status for d in before} == {KEPT}
    labels = {d.edge.id: d.label for d in after}
    assert labels["stage1_block0_conv1"] == "conv3x3->sep3x3"


def test_lanes_never_overlap_along_their_span(resnet20_graph):
    graph = resnet20_graph
    rank = {node.id: i for i, node in enumerate(graph.nodes)}
    for seed in range(5):
        plan = nat_keras.sample_random_plan(graph, seed)
        for panel in _panels(graph, plan):
            placed = _assign_lanes(panel, rank)
            assert len(placed) == len(panel)
            straight = [(rank[d.edge.src], rank[d.edge.dst]) for d in placed if d.lane == 0]
            assert all(b - a == 1 for a, b in straight)  # straight down between consecutive nodes
            assert len(set(straight)) == len(straight)  # one straight edge per pair of nodes
            for lane in {d.lane for d in placed} - {0}:
                spans = sorted((rank[d.edge.src], rank[d.edge.dst]) for d in placed if d.lane == lane)
                assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))


def test_plot_plan_writes_pngs_and_pages_long_graphs(resnet20_graph, tmp_path):
    plan = nat_keras.sample_random_plan(resnet20_graph, 3)
    [single] = nat_keras.plot_plan(resnet20_graph, plan, tmp_path / "plan.png")
    assert single.read_bytes().startswith(PNG_MAGIC)
    pages = nat_keras.plot_plan(resnet20_graph, plan, tmp_path / "paged.png", max_nodes=10)
    assert [p.name for p in pages] == ["paged_page1.png", "paged_page2.png", "paged_page3.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in pages)


def test_bad_plots_are_clear_errors(resnet20_graph, tmp_path):
    other = nat_keras.encode(small_resnet())
    with pytest.raises(PlanError):
        nat_keras.plot_plan(resnet20_graph, nat_keras.sample_random_plan(other, 0), tmp_path / "x.png")
    with pytest.raises(NatKerasError, match="at least 2 nodes"):
        keep = nat_keras.TransformPlan.keep_all(resnet20_graph)
        nat_keras.plot_plan(resnet20_graph, keep, tmp_path / "x.png", max_nodes=1)
    with pytest.raises(NatKerasError, match="no search epochs"):
        nat_keras.plot_history({"reward": []}, tmp_path / "h.png")


def test_plot_history_draws_a_report_or_a_mapping(tmp_path):
    history = {"reward": [-0.5, -0.1, 0.02], "baseline": [-0.3, -0.2, -0.05], "entropy": [1.2, 1.0, 0.9]}
    path = nat_keras.plot_history(history, tmp_path / "search.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
