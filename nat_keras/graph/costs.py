"""What a network costs: parameters and multiply-adds (MACs), and budgets.

Params are counted as Keras `count_params()` counts them (BatchNormalization's
moving statistics included). MACs count conv and dense ops:
H_out * W_out * k * k * C_in * C_out / groups for a conv, in * out for a dense
layer (times the positions it is applied at). Element-wise additions of sums
are counted apart, in `adds`, as docs/design.md section 4 explains.

Example:
  >>> before = nat_keras.cost(model)
  >>> after = nat_keras.cost(new_model)
  >>> nat_keras.Budget().allows(after, before)
  True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nat_keras import ops
from nat_keras.errors import BudgetError, ConfigError

if TYPE_CHECKING:
    from nat_keras.graph.arch_graph import ArchGraph, Edge

BN_PARAMS_PER_CHANNEL = 4  # gamma, beta, moving mean, moving variance
BN_STATISTICS_PER_CHANNEL = 2  # moving mean and variance only (affine-free BN)


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
    """The cost constraint c(alpha) <= c(beta) of NAT, made explicit; or a compact target.

    By default a plan may cost no more than its source (params) and 1% more
    MACs: NAT's "at no extra cost". Ratios below 1 ask for a cheaper network:
    `Budget(macs_ratio=0.5)` at most half the source's MACs,
    `Budget(params_ratio=0.75)` at most three quarters of its params.

    Attributes:
      params_ratio: params(new) may be at most this times params(source).
      macs_eps: MACs(new) may be at most (1 + macs_eps) times MACs(source);
        used when `macs_ratio` is None.
      macs_ratio: MACs(new) may be at most this times MACs(source); replaces
        `macs_eps` (pass one of the two).

    Example:
      >>> Budget(macs_eps=0.0).allows(Cost(10, 100), Cost(10, 99))
      False
      >>> Budget(macs_ratio=0.5).limits(Cost(10, 100)).macs
      50
    """

    params_ratio: float = 1.0
    macs_eps: float = 0.01
    macs_ratio: float | None = None

    def __post_init__(self):
        if not self.params_ratio > 0 or not self.macs_eps >= 0:
            raise ConfigError(
                f"Budget needs params_ratio > 0 and macs_eps >= 0, got {self.params_ratio}, {self.macs_eps}."
            )
        if self.macs_ratio is not None:
            if not self.macs_ratio > 0:
                raise ConfigError(
                    f"Budget needs macs_ratio > 0 (a fraction of the source's MACs), got {self.macs_ratio}."
                )
            if self.macs_eps != Budget.macs_eps:
                raise ConfigError(
                    f"Budget(macs_ratio={self.macs_ratio}, macs_eps={self.macs_eps}): both bound the MACs; "
                    "pass one of them."
                )

    @property
    def is_compact(self) -> bool:
        """Whether the budget asks for less than the source costs."""
        return self.params_ratio < 1.0 or (self.macs_ratio is not None and self.macs_ratio < 1.0)

    def limits(self, reference: Cost) -> Cost:
        """The largest allowed cost for a network whose source costs `reference`."""
        macs_factor = (1.0 + self.macs_eps) if self.macs_ratio is None else self.macs_ratio
        return Cost(
            params=math.floor(reference.params * self.params_ratio),
            macs=math.floor(reference.macs * macs_factor),
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
                "loosen the Budget (params_ratio, macs_eps or macs_ratio)."
            )

    def check_reachable(self, floor: Cost, reference: Cost, *, what: str) -> None:
        """Raise BudgetError if even the cheapest network of the plan space (`floor`) is over budget.

        Args:
          floor: the cost with every transformable edge at its cheapest legal
            action (`minimum_cost`): what the protected edges and the nodes
            cost alone.
          reference: the source's cost.
          what: names the model or graph in the message.
        """
        if not self.allows(floor, reference):
            limit = self.limits(reference)
            raise BudgetError(
                f"{what}: the budget allows {limit.params:,} params / {limit.macs:,} MACs, but the "
                f"protected edges (stem, head, shared or opaque layers) and the nodes alone cost "
                f"{floor.params:,} / {floor.macs:,} (source: {reference.params:,} / {reference.macs:,}). "
                "No plan can meet it: raise params_ratio / macs_ratio."
            )

    def within_reach(self, floor: Cost, reference: Cost) -> Budget:
        """This budget, or for a source that cannot meet it, one loosened to its cheapest network.

        A search that learns a compact budget over many input architectures
        (random cells) meets some that even their cheapest plan (`floor`,
        `minimum_cost`) keeps over the target; on those it learns "as cheap
        as it goes" instead of failing (`check_reachable` is for the one
        model a user transforms).

        Example:
          >>> Budget(macs_ratio=0.5).within_reach(Cost(10, 70), Cost(10, 100)).limits(Cost(10, 100)).macs
          70
        """
        if self.allows(floor, reference):
            return self
        # (x + 0.5) / total: the ratio whose floor() in `limits` gives back x.
        params_ratio = max(self.params_ratio, (floor.params + 0.5) / max(reference.params, 1))
        if self.macs_ratio is None:
            macs_eps = max(self.macs_eps, (floor.macs + 0.5) / max(reference.macs, 1) - 1.0)
            return Budget(params_ratio=params_ratio, macs_eps=macs_eps)
        macs_ratio = max(self.macs_ratio, (floor.macs + 0.5) / max(reference.macs, 1))
        return Budget(params_ratio=params_ratio, macs_ratio=macs_ratio)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Budget:
        return cls(**data)


# ---------------------------------------------------------------------------
# Op-level costs, used by the encoder (legality) and the plan cost.


def conv_macs(positions: int, kernel: int | tuple[int, ...], c_in: int, c_out: int, groups: int = 1) -> int:
    """Multiply-adds of a conv: positions * k_h * k_w * C_in * C_out / groups.

    The one MAC formula of nat_keras: a dense layer is a 1x1 conv over its
    positions, a depthwise conv has groups = C_in, a separable conv is a
    depthwise conv plus a 1x1 conv. `kernel` is a side (square kernel) or
    the kernel's full size, e.g. (3, 1) or (5,) for a 1-D conv.

    Example:
      >>> conv_macs(32 * 32, 3, 16, 16)
      2359296
    """
    taps = math.prod(kernel) if isinstance(kernel, tuple) else kernel * kernel
    return positions * taps * c_in * c_out // groups


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
        return Cost(kernel * kernel * c_in * c_out + bias, conv_macs(positions, kernel, c_in, c_out))
    if family in ("sep_conv", "dil_conv"):
        depthwise, pointwise = kernel * kernel * c_in, c_in * c_out
        macs = conv_macs(positions, kernel, c_in, c_in, groups=c_in) + conv_macs(positions, 1, c_in, c_out)
        return Cost(depthwise + pointwise + bias, macs)
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
    params = c_in * c_out + BN_PARAMS_PER_CHANNEL * c_out
    if edge.stride == 2:  # two 1x1 convs of C_out / 2
        return Cost(params, 2 * conv_macs(positions, 1, c_in, c_out // 2))
    return Cost(params, conv_macs(positions, 1, c_in, c_out))


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

    Costs are those of the standalone network, whose BN is affine, summed
    over the edge's copies in the network (`Edge.copies`).
    """
    op = ops.IDENTITY if action == ops.SKIP else action  # stride 2: FactorizedReduce
    if not edge.copies:
        channels, spatial = edge.input_shape[-1], tuple(edge.input_shape[:2])
        return cell_op_cost(op, channels, strides=edge.stride, spatial=spatial)
    return cell_op_cost_over(op, edge.copies, strides=edge.stride)


def cell_op_cost_over(
    op: str, copies: Sequence[tuple[int, int]], *, strides: int = 1, affine: bool = True
) -> Cost:
    """`cell_op_cost` summed over copies of one cell edge, each (channels, input height).

    Example:
      >>> cell_op_cost_over("conv_3x3", [(16, 8), (32, 4)]).macs == 147456 * 2
      True
    """
    total = Cost(0, 0)
    for channels, height in copies:
        total = total + cell_op_cost(op, channels, strides=strides, spatial=height, affine=affine)
    return total


def cell_preprocess_cost(
    in_channels: int, channels: int, spatial: int | tuple[int, int], *, factorized: bool, affine: bool = True
) -> Cost:
    """Params and MACs of a cell's input preprocessing (`nat_keras.cells.network`).

    A 1x1 ReLUConvBN from `in_channels` to C at the input's size, or, for
    c_{k-2} after a reduction cell (`factorized`), a FactorizedReduce: two
    stride-2 1x1 convs to C/2 each, then BN, so the same weights at a quarter
    of the positions.

    Args:
      in_channels: channels of the raw input (the output of an earlier cell or the stem).
      channels: C, the channels the cell works at.
      spatial: the raw input's height (and width), or (height, width).
      factorized: a FactorizedReduce instead of the ReLUConvBN.
      affine: the BN has gamma and beta.

    Example:
      >>> cell_preprocess_cost(48, 16, 32, factorized=False)
      Cost(params=832, macs=786432, adds=0)
    """
    bn = (BN_PARAMS_PER_CHANNEL if affine else BN_STATISTICS_PER_CHANNEL) * channels
    height, width = (spatial, spatial) if isinstance(spatial, int) else spatial
    stride = 2 if factorized else 1
    positions = -(-height // stride) * -(-width // stride)
    return Cost(in_channels * channels + bn, conv_macs(positions, 1, in_channels, channels))


def cell_op_cost(
    op: str,
    channels: int,
    *,
    strides: int = 1,
    spatial: int | tuple[int, int] = 32,
    affine: bool = True,
    pool_bn: bool = False,
) -> Cost:
    """Params (as Keras counts them) and MACs of one of the paper's cell ops.

    The ops are those of `nat_keras.cells.operations`, named in the
    `nat_keras.ops` vocabulary: sized ops (`conv_3x3`, `sep_conv_5x5`,
    `dil_conv_3x3`, `max_pool_3x3`, ...), `ops.IDENTITY` (skip_connect: an
    identity, or a FactorizedReduce at stride 2) and `ops.NULL`. They keep
    the channel count C. sep_conv_k is (ReLU, depthwise k, 1x1, BN) twice,
    dil_conv_k once with dilation 2, conv_k is ReLU, conv, BN.

    Args:
      op: the op's vocabulary name.
      channels: C (input and output channels).
      strides: the edge's stride.
      spatial: the input's height (and width), or (height, width).
      affine: BNs have gamma and beta (the standalone network) or not (the
        supernet, as in the paper).
      pool_bn: pools are followed by a BN (the authors' search-time ops).

    Example:
      >>> cell_op_cost("conv_3x3", 16, spatial=8)
      Cost(params=2368, macs=147456, adds=0)
    """
    height, width = (spatial, spatial) if isinstance(spatial, int) else spatial
    positions = -(-height // strides) * -(-width // strides)
    c = channels
    bn = (BN_PARAMS_PER_CHANNEL if affine else BN_STATISTICS_PER_CHANNEL) * c
    if op == ops.NULL or (op == ops.IDENTITY and strides == 1):
        return Cost(0, 0)
    if op == ops.IDENTITY:  # FactorizedReduce, as c_{k-2}'s after a reduction cell
        return cell_preprocess_cost(c, c, (height, width), factorized=True, affine=affine)
    parsed = ops.parse_op(op)
    if parsed is None:
        raise ConfigError(f"{op!r} is not a cell op of the nat_keras.ops vocabulary.")
    family, k = parsed
    if family == "conv":
        return Cost(k * k * c * c + bn, conv_macs(positions, k, c, c))
    separable = conv_macs(positions, k, c, c, groups=c) + conv_macs(positions, 1, c, c)
    if family == "sep_conv":
        return Cost(2 * (k * k * c + c * c + bn), 2 * separable)
    if family == "dil_conv":
        return Cost(k * k * c + c * c + bn, separable)
    return Cost(bn if pool_bn else 0, 0)


# ---------------------------------------------------------------------------
# Whole networks (see also `nat_keras.cost` and `nat_keras.plan.plan_cost`).


def minimum_cost(graph: ArchGraph, space: str = "nat++") -> Cost:
    """A lower bound on what any plan for `graph` in `space` costs: every edge at its cheapest.

    Protected edges and the layers of the nodes in use keep their cost (a node
    fed to placeholders only may stay unused); each transformable
    edge counts its cheapest legal action, params and MACs apart (so the
    bound holds for both at once). A budget below it cannot be met.

    Example:
      >>> floor = minimum_cost(nat_keras.encode(model))
      >>> floor.params <= nat_keras.cost(model).params
      True
    """
    allowed = set(ops.ACTION_SPACES[space])
    in_use = [node for node in graph.nodes if graph.in_use(node.id)]
    params = sum(node.params for node in in_use)
    macs = sum(node.macs for node in in_use)
    for edge in graph.edges:
        actions = [a for a in edge.actions if a in allowed] if edge.transformable else [ops.KEEP]
        costs = [c for c in (edge_cost_after(edge, a) for a in actions or [ops.KEEP]) if c is not None]
        params += min(c.params for c in costs)
        macs += min(c.macs for c in costs)
    return Cost(params, macs)


def graph_cost(graph: ArchGraph) -> Cost:
    """Params, MACs and adds of the network an ArchGraph encodes.

    Example:
      >>> graph_cost(nat_keras.encode(model)).params == model.count_params()
      True
    """
    return Cost(graph.params, graph.macs, adds(graph, {e.id: ops.KEEP for e in graph.edges}))


def adds(graph: ArchGraph, actions: dict[str, str], live_nodes: Any = None) -> int:
    """Element-wise additions done by sum nodes (inputs - 1 per output element).

    Args:
      graph: the network.
      actions: the action of every edge (placeholders count when not kept).
      live_nodes: the nodes that still reach an output (default: all).
    """
    total = 0
    for node in graph.nodes:
        if live_nodes is not None and node.id not in live_nodes:
            continue
        live_inputs = [
            e
            for e in graph.in_edges(node.id)
            if actions[e.id] != ops.NONE and not (e.kind == "placeholder" and actions[e.id] == ops.KEEP)
        ]
        summed = len(live_inputs) if node.merge in ("sum", "none") else 1
        if summed > 1:
            total += (summed - 1) * spatial_positions(node.shape) * (node.shape[-1] or 1)
    return total
