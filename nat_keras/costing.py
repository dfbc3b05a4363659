"""What a network costs: parameters and multiply-adds (MACs), and budgets.

Params are counted as Keras `count_params()` counts them (BatchNormalization's
moving statistics included). MACs count conv and dense ops:
H_out * W_out * k * k * C_in * C_out / groups for a conv, in * out for a dense
layer (times the positions it is applied at). Element-wise additions of sums
are counted apart, in `adds`, as DESIGN.md asks.

Example:
  >>> before = nat_keras.cost(model)
  >>> after = nat_keras.cost(new_model)
  >>> nat_keras.Budget().allows(after, before)
  True
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from nat_keras import ops
from nat_keras.errors import BudgetError

if TYPE_CHECKING:
    from nat_keras.graph import ArchGraph, Edge
    from nat_keras.plan import TransformPlan

BN_PARAMS_PER_CHANNEL = 4  # gamma, beta, moving mean, moving variance


@dataclasses.dataclass(frozen=True)
class Cost:
    """Parameters, multiply-adds and additions of a network (or a part)."""

    params: int
    macs: int
    adds: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs, self.adds + other.adds)

    def ratio(self, reference: Cost) -> dict[str, float]:
        """This cost relative to `reference`, per field (1.0 = equal)."""
        return {
            "params": self.params / max(reference.params, 1),
            "macs": self.macs / max(reference.macs, 1),
        }

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Budget:
    """The cost constraint c(alpha) <= c(beta) of NAT, made explicit.

    Attributes:
      params_ratio: params(new) may be at most this times params(source).
      macs_eps: MACs(new) may be at most (1 + macs_eps) times MACs(source).

    Example:
      >>> Budget(macs_eps=0.0).allows(Cost(10, 100), Cost(10, 99))
      False
    """

    params_ratio: float = 1.0
    macs_eps: float = 0.01

    def __post_init__(self):
        if self.params_ratio <= 0 or self.macs_eps < 0:
            raise ValueError(
                f"Budget needs params_ratio > 0 and macs_eps >= 0, got {self.params_ratio}, {self.macs_eps}."
            )

    def limits(self, reference: Cost) -> Cost:
        """The largest allowed cost for a network whose source costs `reference`."""
        return Cost(
            params=math.floor(reference.params * self.params_ratio),
            macs=math.floor(reference.macs * (1.0 + self.macs_eps)),
        )

    def allows(self, candidate: Cost, reference: Cost) -> bool:
        limit = self.limits(reference)
        return candidate.params <= limit.params and candidate.macs <= limit.macs

    def check(self, candidate: Cost, reference: Cost, *, what: str = "the plan") -> None:
        """Raise BudgetError, saying by how much, if `candidate` is over budget."""
        if not self.allows(candidate, reference):
            limit = self.limits(reference)
            raise BudgetError(
                f"{what} costs {candidate.params:,} params / {candidate.macs:,} MACs; the "
                f"budget allows {limit.params:,} params / {limit.macs:,} MACs (source: "
                f"{reference.params:,} / {reference.macs:,}). Choose a cheaper plan or "
                "loosen the Budget (params_ratio, macs_eps)."
            )

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Budget:
        return cls(**data)


# ---------------------------------------------------------------------------
# Op-level costs, used by the encoder (legality) and the plan cost.


def spatial_positions(shape: tuple[int | None, ...]) -> int:
    """Number of positions of a channels-last feature map (None counts as 1)."""
    size = 1
    for dim in shape[:-1]:
        size *= 1 if dim is None else int(dim)
    return size


def replacement_primary_cost(edge: Edge, target: str) -> Cost | None:
    """Cost of the primary op that NAT++ would emit for `target` on `edge`.

    Returns None when the target cannot produce the edge's output shape.
    Replacements use 'same' padding, the edge's stride and channels-last data.
    """
    parsed = ops.parse_op(target)
    if parsed is None or len(edge.input_shape) != 3 or len(edge.output_shape) != 3:
        return None
    family, kernel = parsed
    c_in, c_out = edge.input_shape[-1], edge.output_shape[-1]
    if c_in is None or c_out is None:
        return None
    for size_in, size_out in zip(edge.input_shape[:-1], edge.output_shape[:-1]):
        if size_in is None or size_out is None or -(-size_in // edge.stride) != size_out:
            return None
    if family == "dil_conv" and edge.stride != 1:
        return None  # Keras forbids dilation > 1 together with strides > 1.
    positions = spatial_positions(edge.output_shape)
    bias = c_out if edge.bias else 0
    if family == "conv":
        return Cost(kernel * kernel * c_in * c_out + bias, positions * kernel * kernel * c_in * c_out)
    if family in ("sep_conv", "dil_conv"):
        depthwise, pointwise = kernel * kernel * c_in, c_in * c_out
        return Cost(depthwise + pointwise + bias, positions * (depthwise + pointwise))
    if family in ("max_pool", "avg_pool"):
        return Cost(0, 0) if c_in == c_out else None
    return None


def projection_cost(edge: Edge) -> Cost | None:
    """Cost of a skip on a shape-changing edge, or None if no projection fits.

    Stride 2: a FactorizedReduce (two strided 1x1 convs of C_out/2, concat,
    BN) as in DARTS / NAT. Stride 1 with a channel change: a 1x1 conv and BN.
    Identity skips (same shapes) cost nothing: see `skip_cost`.
    """
    if len(edge.input_shape) != 3 or len(edge.output_shape) != 3:
        return None
    c_in, c_out = edge.input_shape[-1], edge.output_shape[-1]
    if c_in is None or c_out is None or edge.stride not in (1, 2):
        return None
    for size_in, size_out in zip(edge.input_shape[:-1], edge.output_shape[:-1]):
        if size_in is None or size_out is None or -(-size_in // edge.stride) != size_out:
            return None
    if edge.stride == 2 and c_out % 2:
        return None
    positions = spatial_positions(edge.output_shape)
    return Cost(c_in * c_out + BN_PARAMS_PER_CHANNEL * c_out, positions * c_in * c_out)


def skip_cost(edge: Edge) -> Cost | None:
    """Cost of turning `edge` into a skip connection (None if impossible)."""
    if edge.input_shape == edge.output_shape:
        return Cost(0, 0)
    return projection_cost(edge)


def edge_cost_after(edge: Edge, action: str) -> Cost | None:
    """The edge's cost once `action` is applied (None if it cannot be)."""
    if action == ops.KEEP:
        return Cost(edge.params, edge.macs)
    if action == ops.NONE:
        return Cost(0, 0)
    if edge.library == "darts":
        return _darts_cost_after(edge, action)
    if action == ops.SKIP:
        return skip_cost(edge)
    primary = replacement_primary_cost(edge, action)
    if primary is None:
        return None
    return Cost(edge.params - edge.primary_params + primary.params, primary.macs)


def _darts_cost_after(edge: Edge, action: str) -> Cost:
    """A cell edge's cost with a whole DARTS op in place (its own BN included).

    Costs are those of the standalone network, whose BN is affine.
    """
    from nat_keras.search_space.operations import from_vocab, op_cost

    if action == ops.SKIP and edge.stride == 1:
        return Cost(0, 0)
    channels, spatial = edge.input_shape[-1], tuple(edge.input_shape[:2])
    op = "skip_connect" if action == ops.SKIP else from_vocab(action)  # stride 2: FactorizedReduce
    return op_cost(op, channels, strides=edge.stride, spatial=spatial)


# ---------------------------------------------------------------------------
# Whole networks.


def cost(model_or_graph: Any) -> Cost:
    """Params and MACs of a Keras model or an ArchGraph.

    Args:
      model_or_graph: a Keras 3 functional / Sequential model, or an ArchGraph.

    Returns:
      A Cost; `params` equals `model.count_params()`.

    Example:
      >>> nat_keras.cost(nat_keras.models.resnet20()).params  # == count_params()
      274042
    """
    from nat_keras.graph import ArchGraph

    if isinstance(model_or_graph, ArchGraph):
        graph = model_or_graph
    else:
        from nat_keras.encode import encode

        graph = encode(model_or_graph)
    return Cost(graph.params, graph.macs, _adds(graph, {e.id: ops.KEEP for e in graph.edges}))


def plan_cost(graph: ArchGraph, plan: TransformPlan) -> Cost:
    """The cost of the network that `apply_plan(model, plan)` would build.

    Computed on the graph alone (no Keras model is built); only the parts that
    still reach an output count, as in the rebuilt model.
    """
    from nat_keras.plan import resolve

    resolution = resolve(graph, plan)
    total = Cost(0, 0)
    for edge in graph.edges:
        if edge.id in resolution.live_edges:
            total = total + edge_cost_after(edge, resolution.actions[edge.id])
    node_params = sum(graph.node(n).params for n in resolution.live_nodes)
    return Cost(total.params + node_params, total.macs, _adds(graph, resolution.actions, resolution))


def _adds(graph: ArchGraph, actions: dict[str, str], resolution: Any = None) -> int:
    """Element-wise additions done by sum nodes (inputs - 1 per output element)."""
    adds = 0
    for node in graph.nodes:
        if resolution is not None and node.id not in resolution.live_nodes:
            continue
        live_inputs = [
            e
            for e in graph.in_edges(node.id)
            if actions[e.id] != ops.NONE and not (e.kind == "placeholder" and actions[e.id] == ops.KEEP)
        ]
        summed = len(live_inputs) if node.merge in ("sum", "none") else 1
        if summed > 1:
            adds += (summed - 1) * spatial_positions(node.shape) * (node.shape[-1] or 1)
    return adds
