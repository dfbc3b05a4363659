"""Benchmark: a CellSupernet training step against the standalone network's.

For each sampled architecture, one SGD step (momentum, weight decay, gradient
clipping: the SupernetTrainer's update) of the supernet running that
architecture, and the same step of `supernet.extract(arch)` (the plain
`build_network` model with the supernet's weights), on the same batch. Both
run in this process; the figure that matters is the ratio (supernet /
standalone), goal <= 1.3. First-call times (trace + graph set-up) are
reported apart: the supernet pays them once for every architecture, the
standalone network once per architecture.

  python benchmarks/cell_supernet_step.py --num_cells=8 --channels=20 --batch=64 --archs=2
"""

from __future__ import annotations

import statistics
import time

# isort: split
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from nat_keras.supernet import CellSupernet

_CELLS = flags.DEFINE_integer("num_cells", 8, "Cells (the paper's supernet: 8).")
_CHANNELS = flags.DEFINE_integer("channels", 20, "C (the paper's supernet: 20).")
_NODES = flags.DEFINE_integer("num_nodes", 4, "B, nodes per cell.")
_OPS = flags.DEFINE_string("op_list", "darts", "darts, enas or natpp.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size.")
_SIZE = flags.DEFINE_integer("size", 32, "Image height and width.")
_ARCHS = flags.DEFINE_integer("archs", 3, "Sampled architectures to time.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed steps per measurement (the fastest reported).")


def _make_step(call, variables, loss_fn):
    """One SGD step as SupernetTrainer takes it (weight decay 3e-4, clip 5)."""
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    optimizer.build(variables)

    @tf.function
    def step(images, labels, *args):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(labels, call(images, *args)))
        grads = tape.gradient(loss, variables)
        grads = [g + 3e-4 * v if g is not None else None for g, v in zip(grads, variables)]
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        clipped, _ = tf.clip_by_global_norm([g for g, _ in pairs], 5.0)
        optimizer.apply_gradients(zip(clipped, [v for _, v in pairs]))
        return loss

    return step


def _time_pair(first_fn, second_fn, repeats: int) -> tuple[float, float, float, float]:
    """First-call times, then the fastest of `repeats` calls of each, interleaved.

    Interleaving makes both sides see the same machine load, and the fastest
    call is the one least slowed by other processes (on a shared machine step
    times vary by tens of percent over a minute).
    """
    firsts = []
    for fn in (first_fn, second_fn):
        start = time.perf_counter()
        fn()
        firsts.append(time.perf_counter() - start)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in zip((first_fn, second_fn), times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return firsts[0], firsts[1], min(times[0]), min(times[1])


def main(argv: list[str]) -> None:
    del argv
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    supernet = CellSupernet(
        op_list=_OPS.value,
        num_nodes=_NODES.value,
        num_cells=_CELLS.value,
        channels=_CHANNELS.value,
        input_shape=(_SIZE.value, _SIZE.value, 3),
    )
    build = time.perf_counter() - start
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(size=(_BATCH.value, _SIZE.value, _SIZE.value, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, 10, _BATCH.value))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    supernet_step = _make_step(
        lambda x, a: supernet(x, arch=a, training=True), supernet.trainable_variables, loss_fn
    )
    print(
        f"CellSupernet: {_CELLS.value} cells, C={_CHANNELS.value}, B={_NODES.value}, {_OPS.value} ops, "
        f"batch {_BATCH.value}x{_SIZE.value}x{_SIZE.value}x3; built in {build:.1f}s, "
        f"{len(supernet.trainable_variables)} trainable variables"
    )
    print(f"{'arch':<6}{'supernet s':>12}{'standalone s':>14}{'ratio':>8}{'first (super / alone) s':>26}")
    ratios = []
    for index in range(_ARCHS.value):
        arch = supernet.sample_arch(seed=index)
        model = supernet.extract(arch)
        alone_step = _make_step(lambda x, m=model: m(x, training=True), model.trainable_variables, loss_fn)
        arch_tensor = tf.constant(arch)
        super_first, alone_first, super_step, alone = _time_pair(
            lambda a=arch_tensor: supernet_step(images, labels, a).numpy(),
            lambda s=alone_step: s(images, labels).numpy(),
            _REPEATS.value,
        )
        ratios.append(super_step / alone)
        print(
            f"{index:<6}{super_step:>12.3f}{alone:>14.3f}{ratios[-1]:>7.2f}x"
            f"{super_first:>15.1f} / {alone_first:.1f}"
        )
    print(f"median ratio {statistics.median(ratios):.2f}x (goal <= 1.3)")


if __name__ == "__main__":
    app.run(main)
