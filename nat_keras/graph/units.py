"""Step 1 of encoding: the layer calls grouped into op units, the edges of NAT's DAG.

Each call gets a role (`role`): a primary op (Conv, DepthwiseConv,
SeparableConv, pooling, Dense), an attachment (normalization, activation,
dropout), padding, a node (merge layers and other multi-input or
multi-output layers) or "other". `group_units` then forms the units:

1. each primary op takes the attachments that follow it through
   single-consumer links (post-activation: ResNet, MobileNetV2), then the
   padding and attachments that lead into it (pre-activation: ResNetV2,
   DenseNet);
2. attachments right after a node (the ReLU after a residual sum) belong to
   the node;
3. leftover single-input layers form opaque "other" units, chained while
   the links are single-consumer.

Example:
  >>> traced = trace(nat_keras.models.resnet20())
  >>> roles = {call.name: role(call) for call in traced.calls}
  >>> units, node_post = group_units(traced, CallLinks(traced), roles)
  >>> [unit.id for unit in units][:2]
  ['stem_conv', 'stage1_block0_conv1']
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from nat_keras.graph.arch_graph import MERGE_CONCAT, MERGE_MULTIPLY, MERGE_OTHER, MERGE_SUM
from nat_keras.graph.trace import LayerCall, TracedModel

_PRIMARY = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.Dense,
)
# Layers that ride along with a primary op and keep the tensor's shape.
_ATTACHMENTS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
)
_PADDING = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D)
MERGES = {
    "Add": MERGE_SUM,
    "Concatenate": MERGE_CONCAT,
    "Multiply": MERGE_MULTIPLY,
}

# Call roles.
PRIMARY_ROLE, ATTACH_ROLE, PAD_ROLE, OTHER_ROLE, NODE_ROLE = (
    "primary",
    "attach",
    "pad",
    "other",
    "node",
)


@dataclasses.dataclass
class Unit:
    """Consecutive layer calls that form one edge; `primary` is its op (None: opaque)."""

    calls: list[LayerCall]
    primary: LayerCall | None

    @property
    def input_key(self) -> int:
        return self.calls[0].inputs[0]

    @property
    def output_key(self) -> int:
        return self.calls[-1].outputs[0]

    @property
    def id(self) -> str:
        return (self.primary or self.calls[0]).name


def role(call: LayerCall) -> str:
    """The role of a call in grouping: primary, attach, pad, other or node.

    Example:
      >>> role(traced.calls[0])
      'primary'
    """
    layer = call.layer
    if len(call.outputs) != 1 or not call.record.has_single_positional_input():
        return NODE_ROLE
    if type(layer).__name__ in MERGES:
        return NODE_ROLE
    if isinstance(layer, _PRIMARY) and _data_format_ok(layer):
        return PRIMARY_ROLE
    if isinstance(layer, _ATTACHMENTS):
        return ATTACH_ROLE
    if isinstance(layer, _PADDING):
        return PAD_ROLE
    return OTHER_ROLE


def _data_format_ok(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def merge_of(call: LayerCall) -> str:
    """How the node of a node call merges its inputs (sum, concat, multiply or other).

    Example:
      >>> merge_of(add_call)
      'sum'
    """
    return MERGES.get(type(call.layer).__name__, MERGE_OTHER)


class CallLinks:
    """Who produces and who consumes each tensor of a traced model.

    Example:
      >>> links = CallLinks(traced)
      >>> links.single(traced.inputs[0]).name   # the one call reading the input (ResNet-20)
      'stem_conv'
    """

    def __init__(self, traced: TracedModel):
        self.producer = traced.producer()
        self.consumers = traced.consumers()
        self.output_keys = set(traced.outputs)

    def single(self, key: int) -> LayerCall | None:
        """The one call consuming tensor `key`, if it is consumed exactly once."""
        found = self.consumers.get(key, [])
        if len(found) != 1 or key in self.output_keys or found[0].inputs.count(key) != 1:
            return None
        return found[0]


def group_units(
    traced: TracedModel, links: CallLinks, roles: dict[str, str]
) -> tuple[list[Unit], dict[str, list[LayerCall]]]:
    """The op units of `traced`, in call order, and the calls each node takes after it.

    Args:
      traced: the flattened model.
      links: its `CallLinks`.
      roles: call name -> `role(call)`.

    Returns:
      (units, node_post): node_post maps a node's call name to the
      shape-keeping calls that follow it (see the module docstring).

    Example:
      >>> units, node_post = group_units(traced, CallLinks(traced), roles)
    """
    owner: dict[str, Unit | None] = {}  # None: the call belongs to a node
    units: list[Unit] = []
    for call in traced.calls:
        if roles[call.name] == PRIMARY_ROLE:
            unit = Unit([call], call)
            units.append(unit)
            owner[call.name] = unit
    # Post-activation first: BN / activation after a primary belong to it.
    for unit in units:
        while True:
            nxt = links.single(unit.output_key)
            if nxt is None or roles[nxt.name] != ATTACH_ROLE or nxt.name in owner:
                break
            unit.calls.append(nxt)
            owner[nxt.name] = unit
    # Then pre-activation and padding in front of a primary.
    for unit in units:
        while True:
            prev = links.producer.get(unit.input_key)
            if (
                prev is None
                or roles[prev.name] not in (ATTACH_ROLE, PAD_ROLE)
                or prev.name in owner
                or links.single(unit.input_key) is not unit.calls[0]
            ):
                break
            unit.calls.insert(0, prev)
            owner[prev.name] = unit
    # Shape-keeping layers right after a merge (the ReLU after a residual
    # sum) belong to the merge node.
    node_post: dict[str, list[LayerCall]] = {}
    for call in traced.calls:
        if roles[call.name] != NODE_ROLE:
            continue
        post = node_post.setdefault(call.name, [])
        key = call.outputs[0]
        while len(call.outputs) == 1:
            nxt = links.single(key)
            if nxt is None or roles[nxt.name] != ATTACH_ROLE or nxt.name in owner:
                break
            post.append(nxt)
            owner[nxt.name] = None
            key = nxt.outputs[0]
    # Whatever single-input layer is left forms opaque units, chained while
    # the links are single-consumer.
    for call in traced.calls:
        if call.name in owner or roles[call.name] == NODE_ROLE:
            continue
        prev = links.producer.get(call.inputs[0])
        prev_unit = owner.get(prev.name) if prev is not None else None
        if (
            prev_unit is not None
            and prev_unit.primary is None
            and prev_unit.calls[-1] is prev
            and links.single(call.inputs[0]) is call
        ):
            prev_unit.calls.append(call)
            owner[call.name] = prev_unit
        else:
            unit = Unit([call], None)
            units.append(unit)
            owner[call.name] = unit
    order = {call.name: i for i, call in enumerate(traced.calls)}
    units.sort(key=lambda u: order[u.calls[0].name])
    return units, node_post


__all__ = [
    "ATTACH_ROLE",
    "MERGES",
    "NODE_ROLE",
    "OTHER_ROLE",
    "PAD_ROLE",
    "PRIMARY_ROLE",
    "CallLinks",
    "Unit",
    "group_units",
    "merge_of",
    "role",
]
