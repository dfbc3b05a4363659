"""Pictures of what NAT did: the architecture before and after a plan, and the search's history.

`plot_plan` draws an ArchGraph as the paper draws its cells: feature maps are
nodes (top to bottom in the order the network computes them), operations are
edges. The left panel is the source; the right one the plan's result, its
edges coloured by action (kept, skip, removed, replaced, added). An edge
between consecutive nodes runs straight down; a longer one (a shortcut, a
skip NAT added) takes a lane to the right, chosen so that lanes never overlap
along their span. Graphs with more nodes than `max_nodes` are paged: one PNG
per page, edges from earlier pages entering at the top with their source's
name.

`plot_history` draws the policy's mean reward, its baseline and its entropy
per search epoch.

Only matplotlib is needed (imported on first use, with the file-only Agg
backend, so no display is ever required).

Example:
  >>> new_model = nat_keras.transform(model)
  >>> report = new_model.nat_report
  >>> nat_keras.plot_plan(report.graph, report.plan, "out/plan.png")
  [PosixPath('out/plan.png')]
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from nat_keras import ops
from nat_keras.errors import NatKerasError
from nat_keras.graph import cost
from nat_keras.graph.arch_graph import PLACEHOLDER, ArchGraph, Edge
from nat_keras.plan import TransformPlan, plan_cost, resolve

KEPT, SKIPPED, REMOVED, REPLACED, ADDED = "kept", "skip", "removed", "replaced", "added"
# Colour-blind-safe (Okabe-Ito) colours, one per action, as the legend shows them.
COLOURS = {
    KEPT: "#555555",
    SKIPPED: "#009E73",
    REMOVED: "#D55E00",
    REPLACED: "#0072B2",
    ADDED: "#E69F00",
}
_LEGEND = {
    KEPT: "kept",
    SKIPPED: "became a skip",
    REMOVED: "removed (or dead)",
    REPLACED: "replaced by a cheaper op",
    ADDED: "added skip (null -> skip)",
}
# Short op names keep edge labels narrow enough for the lanes.
_SHORT_OPS = {
    "skip_connect": "skip",
    "identity": "id",
    "max_pool_3x3": "max3",
    "avg_pool_3x3": "avg3",
}
_INCH_PER_NODE = 0.3
_INCH_PER_LANE = 0.75


@dataclasses.dataclass(frozen=True)
class _Drawn:
    """One edge as a panel draws it."""

    edge: Edge
    status: str  # KEPT, SKIPPED, REMOVED, REPLACED or ADDED
    label: str
    lane: int = 0


def _short(op: str) -> str:
    if op in _SHORT_OPS:
        return _SHORT_OPS[op]
    return op.replace("sep_conv_", "sep").replace("dil_conv_", "dil").replace("conv_", "conv")


def edge_status(edge: Edge, action: str, live: bool) -> str | None:
    """How `plot_plan` shows `edge` after `action`; None: not drawn (a null edge NAT left null).

    Example:
      >>> edge_status(graph.edge("stage1_block0_conv1"), "skip", live=True)
      'skip'
    """
    if edge.kind == PLACEHOLDER:
        return ADDED if action == ops.SKIP and live else None
    if action == ops.NONE or not live:
        return REMOVED
    if action == ops.KEEP:
        return KEPT
    if action == ops.SKIP:
        return SKIPPED
    return REPLACED


def _assign_lanes(drawn: list[_Drawn], rank: Mapping[str, int]) -> list[_Drawn]:
    """Lane 0 for the first edge between consecutive nodes; the others get the lowest free lane >= 1."""
    placed: list[_Drawn] = []
    busy: dict[int, list[tuple[int, int]]] = {}
    straight: set[tuple[int, int]] = set()
    order = sorted(drawn, key=lambda d: (rank[d.edge.dst] - rank[d.edge.src], rank[d.edge.src]))
    for item in order:
        start, end = rank[item.edge.src], rank[item.edge.dst]
        if end - start == 1 and (start, end) not in straight:
            straight.add((start, end))
            placed.append(dataclasses.replace(item, lane=0))
            continue
        lane = 1
        while any(start < b and a < end for a, b in busy.get(lane, ())):
            lane += 1
        busy.setdefault(lane, []).append((start, end))
        placed.append(dataclasses.replace(item, lane=lane))
    return placed


def _panels(graph: ArchGraph, plan: TransformPlan) -> tuple[list[_Drawn], list[_Drawn]]:
    resolution = resolve(graph, plan)
    before, after = [], []
    for edge in graph.edges:
        if edge.kind != PLACEHOLDER:
            before.append(_Drawn(edge, KEPT, _short(edge.op)))
        action = resolution.actions[edge.id]
        status = edge_status(edge, action, edge.id in resolution.live_edges)
        if status is None:
            continue
        label = _short(edge.op)
        if status == REPLACED:
            label = f"{label}->{_short(action)}"
        elif status in (SKIPPED, ADDED):
            label = "skip"
        after.append(_Drawn(edge, status, label))
    return before, after


def _draw_panel(
    axes: Any, drawn: list[_Drawn], graph: ArchGraph, rank: Mapping[str, int], page: range
) -> None:
    first, last = page.start, page.stop - 1
    for node in graph.nodes:
        r = rank[node.id]
        if first <= r <= last:
            axes.plot([0], [-r], "o", color="black", markersize=3, zorder=3)
            axes.text(-0.12, -r, node.id, ha="right", va="center", fontsize=6)
    for item in drawn:
        start, end = rank[item.edge.src], rank[item.edge.dst]
        if not first <= end <= last:
            continue
        colour = COLOURS[item.status]
        style = "--" if item.status == REMOVED else "-"
        width = 1.6 if item.status in (SKIPPED, REPLACED, ADDED) else 1.0
        top = -max(start, first - 0.6)
        x = item.lane * _INCH_PER_LANE
        if item.lane == 0:
            xs, ys = [0, 0], [top, -end]
        else:
            xs, ys = [0 if start >= first else x, x, x, 0], [top, top, -end, -end]
        axes.plot(xs, ys, style, color=colour, linewidth=width, zorder=2, solid_capstyle="round")
        label = item.label if start >= first else f"{item.label} (from {item.edge.src})"
        if item.lane == 0:  # left of the spine, between two node names: the lanes stay clear
            axes.text(-0.12, (top - end) / 2, label, fontsize=5.5, color=colour, va="center", ha="right")
        else:
            axes.text(x + 0.05, (top - end) / 2, label, fontsize=5.5, color=colour, va="center", ha="left")


def _pages(count: int, max_nodes: int) -> list[range]:
    pages = math.ceil(count / max_nodes)
    size = math.ceil(count / pages)  # equal pages rather than a short last one
    return [range(i, min(i + size, count)) for i in range(0, count, size)]


def _page_path(path: pathlib.Path, index: int, pages: int) -> pathlib.Path:
    return path if pages == 1 else path.with_name(f"{path.stem}_page{index + 1}{path.suffix}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as pyplot

    return pyplot


def plot_plan(
    graph: ArchGraph,
    plan: TransformPlan,
    path: str | os.PathLike,
    *,
    max_nodes: int = 60,
    title: str | None = None,
    dpi: int = 150,
) -> list[pathlib.Path]:
    """Draws `graph` before and after `plan` as PNG, its edges coloured by action.

    Args:
      graph: the source architecture (`nat_keras.encode(model)`, or a report's
        `graph`).
      plan: a plan for `graph` (checked against it).
      path: where the PNG goes; paged graphs write `<stem>_page<i>.png` beside it.
      max_nodes: nodes per page (the page's height grows with them).
      title: a heading; default: the graph's name and what the plan changes.
      dpi: resolution of the PNG.

    Returns:
      The paths written, one per page.

    Raises:
      PlanError: `plan` was not made for `graph`.
      NatKerasError: `max_nodes` is below 2.

    Example:
      >>> nat_keras.plot_plan(nat_keras.encode(model), plan, "out/resnet20_plan.png")
      [PosixPath('out/resnet20_plan.png')]
    """
    if max_nodes < 2:
        raise NatKerasError(f"plot_plan(max_nodes={max_nodes}): a page needs at least 2 nodes.")
    pyplot = _pyplot()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rank = {node.id: i for i, node in enumerate(graph.nodes)}
    before, after = (_assign_lanes(panel, rank) for panel in _panels(graph, plan))
    if title is None:
        old, new = cost(graph), plan_cost(graph, plan)
        ratio = new.ratio(old)
        title = (
            f"{graph.name}: {len(plan.actions)} of {len(graph.transformable_edges())} transformable edges "
            f"change; params {ratio['params']:.1%}, MACs {ratio['macs']:.1%} of the source"
        )
    pages = _pages(len(graph.nodes), max_nodes)
    lanes = max([d.lane for d in before + after] + [0])
    written = []
    for index, page in enumerate(pages):
        width = 2 * (1.8 + (lanes + 2) * _INCH_PER_LANE)
        height = 1.4 + _INCH_PER_NODE * len(page)
        figure, panels = pyplot.subplots(1, 2, figsize=(width, height), sharey=True)
        for axes, drawn, heading in ((panels[0], before, "before"), (panels[1], after, "after")):
            _draw_panel(axes, drawn, graph, rank, page)
            axes.set_title(heading, fontsize=9)
            axes.set_xlim(-1.8, (lanes + 2) * _INCH_PER_LANE)
            axes.set_ylim(-(page.stop - 1) - 0.7, -page.start + 0.7)
            axes.axis("off")
        handles = [
            pyplot.Line2D([], [], color=COLOURS[s], linestyle="--" if s == REMOVED else "-", label=_LEGEND[s])
            for s in COLOURS
        ]
        figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
        heading = title if len(pages) == 1 else f"{title} (page {index + 1} of {len(pages)})"
        figure.suptitle(heading, fontsize=9)
        figure.tight_layout(rect=(0, 0.3 / height, 1, 1 - 0.35 / height))
        target = _page_path(path, index, len(pages))
        figure.savefig(target, dpi=dpi)
        pyplot.close(figure)
        written.append(target)
    return written


def _ticker() -> Any:
    import matplotlib.ticker

    return matplotlib.ticker


def _history_series(history: Any) -> dict[str, Sequence[float]]:
    """The per-epoch series of a TransformReport, a SearchHistory or a mapping."""
    if hasattr(history, "history") and isinstance(history.history, Mapping):  # a TransformReport
        history = history.history
    if not isinstance(history, Mapping):
        history = {name: getattr(history, name, ()) for name in ("reward", "baseline", "entropy")}
    return {name: list(history.get(name, ())) for name in ("reward", "baseline", "entropy")}


def plot_history(
    history: Any, path: str | os.PathLike, *, title: str = "NAT search", dpi: int = 150
) -> pathlib.Path:
    """Draws the search's mean reward, baseline and entropy per epoch as PNG.

    Args:
      history: a `TransformReport` (its `history`), a `nat_keras.search`
        `SearchHistory`, or a mapping with `reward`, `baseline` and `entropy`
        lists.
      path: where the PNG goes.
      title: the figure's heading.
      dpi: resolution of the PNG.

    Returns:
      `path`.

    Raises:
      NatKerasError: the history has no epochs (e.g. a transform without data).

    Example:
      >>> nat_keras.plot_history(new_model.nat_report, "out/search.png")
      PosixPath('out/search.png')
    """
    series = _history_series(history)
    if not series["reward"]:
        raise NatKerasError(
            "plot_history: the history has no search epochs (a transform without data searches "
            "nothing); pass the report of a transform(model, data=...)."
        )
    pyplot = _pyplot()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = range(1, len(series["reward"]) + 1)
    figure, (rewards, entropy) = pyplot.subplots(2, 1, figsize=(6, 5), sharex=True)
    rewards.plot(epochs, series["reward"], marker="o", markersize=3, label="mean reward")
    if series["baseline"]:
        rewards.plot(epochs, series["baseline"], linestyle="--", label="baseline")
    rewards.axhline(0.0, color="grey", linewidth=0.6)
    rewards.set_ylabel("acc(new) - acc(source)")
    rewards.legend(fontsize=8)
    if series["entropy"]:
        entropy.plot(epochs, series["entropy"], color="#CC79A7", marker="o", markersize=3)
    entropy.set_ylabel("policy entropy")
    entropy.set_xlabel("search epoch")
    entropy.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    pyplot.close(figure)
    return path
