"""How one genotype entry runs inside the cell supernet: two switches, and only the chosen op runs.

Per node, one switch of identities picks both slots' input states
(`pick_inputs`); each slot then runs one switch over (stride group, op)
(`run_slot`, a functional Case op: `compat.functional_switch_case`), so a
new arch needs no retrace. The chosen edge's weights come out of its packed
layer (`packed_weights._NodeOps`) by a one-hot product, and the op bodies
are the shared traces of `cell_kernels.OpBodies`.

Example:
  >>> picked = pick_inputs(spec.groups(node), states, sources)
  >>> y = run_slot(layers, bodies, op_list, spec.channels, picked[0], sources[0], op, zeros_shape, False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from nat_keras import compat
from nat_keras.cells.operations import SKIP_CONNECT
from nat_keras.supernet.cell_kernels import OpBodies
from nat_keras.supernet.cell_layout import StrideGroup
from nat_keras.supernet.packed_weights import _NodeOps


def _select(first: Any, second: Any) -> Callable[[], tuple[Any, Any]]:
    return lambda: (first, second)


def pick_inputs(groups: Sequence[StrideGroup], states: list[Any], sources: list[Any]) -> list[list[Any]]:
    """Per slot and stride group: (input tensor, row, one-hot row) of the slot's source.

    One switch per group picks both slots' inputs at once (identities:
    free at run time). Its gradient fills every state it did not pick
    with zeros, so two per-slot switches would write twice as many
    zero tensors, a tenth of a step in the paper's supernet.

    Example:
      >>> picked = pick_inputs(spec.groups(node), states, [source0, source1])
    """
    picked: list[list[Any]] = [[], []]
    for group in groups:
        members = states[group.start : group.start + group.count]
        rows = [tf.clip_by_value(source - group.start, 0, group.count - 1) for source in sources]
        if group.count == 1:
            inputs = [members[0], members[0]]
        else:
            pairs = [
                _select(members[a], members[b]) for a in range(group.count) for b in range(group.count)
            ]
            inputs = list(tf.switch_case(rows[0] * group.count + rows[1], pairs))
        for slot in range(2):
            onehot = tf.one_hot(rows[slot], group.count, dtype=inputs[slot].dtype)
            picked[slot].append((inputs[slot], rows[slot], onehot))
    return picked


def run_slot(
    layers: Sequence[_NodeOps],
    bodies: OpBodies,
    op_list: Sequence[str],
    channels: int,
    picked: list[Any],
    source: Any,
    op: Any,
    zeros_shape: Any,
    training: bool,
) -> Any:
    """One genotype entry: op `op` on state `source`, and only that op runs.

    `picked` holds, per stride group, the input and the edge's row
    (`pick_inputs`). A one-hot product takes the edge's weights; one switch
    over (group, op) runs the op. In training, each branch also returns its
    BN batch statistics, and the picked edge's moving statistics move after
    the switch (so the op bodies stay pure and shareable).

    Args:
      layers: the packed op layers of the node's stride groups.
      bodies: the shared op bodies.
      op_list: the supernet's cell ops (`op` indexes it).
      channels: the cell's channels.
      picked: `pick_inputs(...)[slot]`.
      source: the entry's input index (a scalar tensor).
      op: the entry's op index (a scalar tensor).
      zeros_shape: the shape of a null op's output (batch, height, width, channels).
      training: whether BNs use batch statistics (and move the chosen edge's).

    Example:
      >>> y = run_slot(layers, bodies, op_list, 16, picked[0], sources[0], op, zeros_shape, False)
    """
    num_ops = len(op_list)
    rows = [layer.rows(onehot, training) for layer, (_, _, onehot) in zip(layers, picked)]
    in_group = tf.cast(source >= 2, tf.int32) if len(layers) > 1 else 0
    tracked = [g for g, layer in enumerate(layers) if training and layer.stats]

    def branch(g: int, k: int) -> Callable[[], Any]:
        layer, op_name, x = layers[g], op_list[k], picked[g][0]

        def run() -> Any:
            stats = None
            if layer.has_op(op_name):
                segments = layer.segments(op_name, rows[g])
                y, stats = bodies(op_name, channels, layer.strides, training, x, *segments)
            elif op_name == SKIP_CONNECT:  # stride 1
                y = x
            else:
                y = tf.zeros(zeros_shape, x.dtype)
            moved = []
            for h in tracked:
                moved += layers[h].padded_stats(op_name, stats if h == g else None, x.dtype)
            return (y, *moved)

        return run

    outputs = compat.functional_switch_case(
        in_group * num_ops + op, [branch(g, k) for g in range(len(layers)) for k in range(num_ops)]
    )
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    for i, h in enumerate(tracked):
        columns = tf.gather(layers[h].stats_columns(), op)
        if len(layers) > 1:
            columns = tf.logical_and(columns, tf.equal(in_group, h))
        layers[h].update_stats(columns, picked[h][2], outputs[1 + 2 * i], outputs[2 + 2 * i])
    return outputs[0]


__all__ = ["pick_inputs", "run_slot"]
