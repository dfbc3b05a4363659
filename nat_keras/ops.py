"""NAT's vocabulary: operation types, actions, and the NAT++ transition table.

Everything here is data plus small pure functions, shared by the encoder (to
compute legal actions), the rebuild (to emit layers) and the policy (to embed
ops). Facts from docs/design.md section 2 (Guo et al. 2019 and the NATv2 code).

Example:
  >>> from nat_keras import ops
  >>> ops.cheaper_targets("conv_5x5")[:3]
  ('conv_1x1', 'conv_3x3', 'sep_conv_3x3')
"""

from __future__ import annotations

import re

from nat_keras.errors import ActionSpaceError

# Actions a plan may assign to an edge. The first three are NAT's (keep the op,
# make it an identity / skip connection, remove it); the rest are NAT++'s
# replacements by a cheaper operation. The order is fixed: it indexes masks.
KEEP, SKIP, NONE = "keep", "skip", "none"
REPLACEMENT_OPS = (
    "conv_1x1",
    "conv_3x3",
    "conv_5x5",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "max_pool_3x3",
    "avg_pool_3x3",
)
ACTIONS = (KEEP, SKIP, NONE, *REPLACEMENT_OPS)
NAT_ACTIONS = (KEEP, SKIP, NONE)
ACTION_SPACES = {"nat": NAT_ACTIONS, "nat++": ACTIONS}

# Op types an edge can carry. conv/sep_conv/dil_conv/depthwise/pool carry their
# kernel size in the name (conv_7x7 is legal even though no action targets it).
OTHER, DENSE, IDENTITY, NULL = "other", "dense", "skip", "null"
OP_FAMILIES = ("conv", "sep_conv", "dil_conv", "depthwise", "max_pool", "avg_pool")

# Cheapness rank by type (docs/design.md section 2: conv -> sep_conv -> dil_conv -> pooling).
# A depthwise conv sits with dil_conv: one kernel per channel, no mixing.
_TYPE_RANK = {"conv": 0, "sep_conv": 1, "dil_conv": 2, "depthwise": 2, "max_pool": 3, "avg_pool": 3}
_OP_RE = re.compile(r"^(conv|sep_conv|dil_conv|depthwise|max_pool|avg_pool)_(\d+)x(\d+)$")


def op_name(family: str, kernel: int) -> str:
    """The vocabulary name of an op, e.g. op_name("conv", 3) == "conv_3x3"."""
    return f"{family}_{kernel}x{kernel}"


def parse_op(op: str) -> tuple[str, int] | None:
    """(family, kernel) for a sized op name, None for skip/dense/other/null."""
    match = _OP_RE.match(op)
    if match is None or match.group(2) != match.group(3):
        return None
    return match.group(1), int(match.group(2))


def cheaper_targets(op: str) -> tuple[str, ...]:
    """NAT++'s replacement targets for `op`, in ACTIONS order.

    A target is allowed when it is cheaper by type (conv -> sep_conv ->
    dil_conv -> pooling) without a larger kernel, cheaper by kernel within the
    same type, or the other kind of pooling (max <-> avg). Whether a target is
    legal for a given edge also depends on shapes and cost: see `encode`.
    """
    source = parse_op(op)
    if source is None:
        return ()
    family, kernel = source
    targets = []
    for target in REPLACEMENT_OPS:
        t_family, t_kernel = parse_op(target)
        if t_family == family and t_kernel == kernel:
            continue
        is_pool = t_family in ("max_pool", "avg_pool")
        if family in ("max_pool", "avg_pool"):
            allowed = is_pool and t_family != family and t_kernel == kernel
        elif is_pool:
            allowed = True
        elif _TYPE_RANK[t_family] > _TYPE_RANK[family]:
            allowed = t_kernel <= kernel
        elif t_family == family:
            allowed = t_kernel < kernel
        else:
            allowed = False
        if allowed:
            targets.append(target)
    return tuple(targets)


def action_mask(legal: tuple[str, ...] | list[str], space: str = "nat++") -> list[bool]:
    """A boolean mask over ACTIONS of the legal actions within `space`."""
    allowed = set(ACTION_SPACES[space])
    return [a in legal and a in allowed for a in ACTIONS]


def check_space(space: str, *, where: str = "") -> str:
    """`space` if it names an action space, else an ActionSpaceError.

    Args:
      space: "nat" (keep / skip / none) or "nat++" (also the cheaper ops).
      where: who asks, for the message (e.g. "Policy", "ModelSupernet 'x'").

    Example:
      >>> check_space("nat++")
      'nat++'
    """
    if space not in ACTION_SPACES:
        prefix = f"{where}: " if where else ""
        raise ActionSpaceError(
            f"{prefix}unknown action space {space!r}; use one of {list(ACTION_SPACES)} "
            '("nat": keep / skip / none; "nat++": also the cheaper ops).'
        )
    return space
