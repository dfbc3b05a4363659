"""Plans on genotypes: the NAT actions between two genotypes, and a plan applied to one.

A plan names edges of `genotype_to_arch_graph` (ids "node{i}_edge{j}",
prefixed "normal/" / "reduce/" for both cells at once). `genotype_actions`
reads the actions that turn one genotype into another (e.g. DARTS into
NAT_DARTS); `apply_plan_to_genotype` makes the genotype a plan gives.

Example:
  >>> plan = genotype_actions(PUBLISHED["DARTS"], PUBLISHED["NAT_DARTS"])
  >>> apply_plan_to_genotype(PUBLISHED["DARTS"], plan) == PUBLISHED["NAT_DARTS"]
  True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nat_keras import ops
from nat_keras.cells.cell_graph import EDGE_ID, genotype_to_arch_graph
from nat_keras.cells.genotype import CELLS, Entry, Genotype, GenotypeError
from nat_keras.cells.operations import NULL, SKIP_CONNECT, from_vocab, to_vocab
from nat_keras.errors import PlanError
from nat_keras.plan import TransformPlan


def genotype_actions(source: Genotype, target: Genotype, *, cell: str = "both") -> dict[str, str]:
    """The NAT actions that turn `source` into `target`, by edge id.

    Edge ids are those of `genotype_to_arch_graph(source, cell=cell)`; only
    changed entries are named. A change to `null` is "none", to
    `skip_connect` is "skip", a null turned into anything else is "skip"
    only (NAT's N -> S), and any other change names the target op.

    Raises:
      GenotypeError: the genotypes differ in inputs or concat, which no NAT
        action changes.

    Example:
      >>> genotype_actions(PUBLISHED["DARTS"], PUBLISHED["NAT_DARTS"])["normal/node1_edge0"]
      'skip'
    """
    actions: dict[str, str] = {}
    for which in CELLS if cell == "both" else (cell,):
        (old, old_concat), (new, new_concat) = source.cell(which), target.cell(which)
        if [i for _, i in old] != [i for _, i in new] or old_concat != new_concat:
            raise GenotypeError(
                f"The {which} cells differ in their inputs or concat; NAT actions only change ops."
            )
        prefix = f"{which}/" if cell == "both" else ""
        for position, ((op, _), (new_op, _)) in enumerate(zip(old, new)):
            if op == new_op:
                continue
            if new_op == NULL:
                action = ops.NONE
            elif new_op == SKIP_CONNECT:
                action = ops.SKIP
            elif op == NULL:
                raise GenotypeError(
                    f"{which} entry {position}: a null edge can only become a skip, not {new_op!r}."
                )
            else:
                action = to_vocab(new_op)
            actions[f"{prefix}node{position // 2}_edge{position % 2}"] = action
    return actions


def _apply_actions(entries: Sequence[Entry], actions: Mapping[int, str]) -> list[Entry]:
    result = []
    for position, (op, index) in enumerate(entries):
        action = actions.get(position, ops.KEEP)
        if action == ops.KEEP:
            new = op
        elif action == ops.SKIP:
            new = SKIP_CONNECT
        elif action == ops.NONE:
            new = NULL
        else:
            new = from_vocab(action)
        result.append((new, index))
    return result


def apply_plan_to_genotype(
    genotype: Genotype,
    plan: Any,
    *,
    cell: str = "both",
    channels: int = 16,
    spatial: int = 32,
    affine: bool = True,
    only_cheaper: bool = False,
    num_cells: int | None = None,
    stem_multiplier: int = 3,
    name: str = "genotype",
) -> Genotype:
    """The genotype that `plan` makes of `genotype`.

    The plan is checked against the graph `genotype_to_arch_graph(genotype,
    cell=..., channels=..., ...)` (same keyword arguments): fingerprint,
    action space and each edge's legal actions. Unlike `TransformPlan.
    validate`, a node may end up with only null inputs (a zero node, as in
    the authors' NAT_R2) and c_{k-2} may feed nothing but null edges (the
    hand-made cells).

    Args:
      genotype: the source cells.
      plan: a `nat_keras.TransformPlan`, or a mapping edge id -> action (an
        action of `nat_keras.ops.ACTIONS`).
      cell / channels / spatial / affine / only_cheaper / num_cells /
        stem_multiplier / name: as for `genotype_to_arch_graph`.

    Returns:
      The transformed genotype: keep leaves the op, skip makes it
      skip_connect, none makes it null, a NAT++ target replaces it.

    Raises:
      PlanError: the plan was made for another graph, or an action is not
        legal on its edge.

    Example:
      >>> darts = PUBLISHED["DARTS"]
      >>> apply_plan_to_genotype(darts, {"normal/node1_edge0": "skip"}).normal[2]
      ('skip_connect', 0)
    """
    graph = genotype_to_arch_graph(
        genotype,
        cell=cell,
        channels=channels,
        spatial=spatial,
        affine=affine,
        only_cheaper=only_cheaper,
        num_cells=num_cells,
        stem_multiplier=stem_multiplier,
        name=name,
    )
    if isinstance(plan, TransformPlan):
        if plan.fingerprint != graph.fingerprint():
            raise PlanError(
                f"This plan was made for graph {plan.graph_name!r} ({plan.fingerprint}), not for this "
                f"genotype's {cell!r} graph ({graph.fingerprint()}); use the same genotype and "
                "genotype_to_arch_graph arguments."
            )
        actions, allowed = dict(plan.actions), set(ops.ACTION_SPACES[plan.space])
    else:
        actions, allowed = dict(plan), set(ops.ACTIONS)
    per_cell: dict[str, dict[int, str]] = {c: {} for c in CELLS}
    for edge_id, action in actions.items():
        if not graph.has_edge(edge_id):
            raise PlanError(f"Plan names edge {edge_id!r}, which the {cell!r} cell graph does not have.")
        edge = graph.edge(edge_id)
        if action not in allowed or action not in edge.actions:
            raise PlanError(
                f"Edge {edge_id!r} (op {edge.op}) cannot take action {action!r}; its legal actions are "
                f"{[a for a in edge.actions if a in allowed]}."
            )
        match = EDGE_ID.match(edge_id)
        if match is None:
            raise PlanError(f"Edge {edge_id!r} is not a genotype entry; it cannot change.")
        which = match.group(1) or cell
        per_cell[which][2 * int(match.group(2)) + int(match.group(3))] = action
    result = genotype
    for which in CELLS:
        if per_cell[which]:
            entries, _ = genotype.cell(which)
            result = result.replace_cell(which, _apply_actions(entries, per_cell[which]))
    return result


__all__ = ["apply_plan_to_genotype", "genotype_actions"]
