"""Benchmark: one supernet training step against one step of the standalone model.

For each of a few sampled architectures, a training step of the weight-sharing
supernet (the architecture an int32 tensor input, only the chosen op of each
edge running) is timed against a training step of `supernet.extract(arch)`, the
plain Keras model of that architecture. Both steps are the same tf.function
body with SupernetTrainer's settings (SGD with momentum, coupled weight decay,
global-norm clipping), on the same batch, in this process; tracing and warm-up
steps are not timed, and the timed steps alternate between the two so that
both see the same machine load. The figure that matters is the ratio
supernet / standalone (goal <= 1.3). For the model space the table also
shows what the supernet computes that the standalone model does not: "dead"
ops (the chosen op of an edge whose output only feeds removed edges still
runs in the supernet) and the MACs it runs relative to the standalone model.

  python benchmarks/supernet_step.py --archs=5 --repeats=20
  python benchmarks/supernet_step.py --spaces=model --spaces=cell

Spaces: "model" is `ModelSupernet(nat_keras.models.resnet20())`; "cell" is
NAT's cell-space supernet (`CellSupernet`, the paper's 8 cells with C = 20 by
default), measured only where this nat_keras has it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import nat_keras  # first: prepares the two Kerases

# isort: split
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from nat_keras.graph.costs import edge_cost_after
from nat_keras.plan import is_active, resolve
from nat_keras.supernet import ModelSupernet, Supernet
from nat_keras.supernet.trainer import SupernetConfig

_SPACES = flags.DEFINE_multi_enum(
    "spaces", ["model"], ["model", "cell"], "Supernets to measure (repeat the flag for several)."
)
_ARCHS = flags.DEFINE_integer("archs", 5, "Sampled architectures per space.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps per architecture and model (after tracing).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed steps per architecture and model (median reported).")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size.")
_ACTION_SPACE = flags.DEFINE_enum("action_space", "nat++", ["nat", "nat++"], "ModelSupernet action space.")
_CELLS = flags.DEFINE_integer("cell_cells", 8, "Cells of the cell-space supernet.")
_CHANNELS = flags.DEFINE_integer("cell_channels", 20, "C of the cell-space supernet.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the sampled architectures and the batch.")

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Row:
    """One architecture's figures (times in milliseconds)."""

    space: str
    arch: int
    changed_edges: int | None  # edges whose action is not keep (ModelSupernet only)
    dead_units: int | None  # ops the supernet runs whose output reaches no output (ModelSupernet only)
    macs_ratio: float | None  # MACs the supernet runs / MACs of the standalone model (ModelSupernet only)
    supernet_ms: float
    standalone_ms: float
    standalone_trace_s: float

    @property
    def ratio(self) -> float:
        return self.supernet_ms / self.standalone_ms


def make_train_step(forward: Callable[..., Any], variables: list, config: SupernetConfig) -> Callable:
    """A tf.function SGD step as SupernetTrainer takes it (one replica).

    Args:
      forward: (images, arch) -> logits in training mode.
      variables: the trainable variables (None gradients are skipped).
      config: learning rate, momentum, weight decay and clipping.
    """
    optimizer = keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum)
    optimizer.build(variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(images: tf.Tensor, labels: tf.Tensor, arch: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, forward(images, arch))
        grads = tape.gradient(loss, variables)
        pairs = [(g + config.weight_decay * v, v) for g, v in zip(grads, variables) if g is not None]
        if config.clip_norm is not None:
            clipped, _ = tf.clip_by_global_norm([g for g, _ in pairs], config.clip_norm)
            pairs = list(zip(clipped, [v for _, v in pairs]))
        optimizer.apply_gradients(pairs)
        return loss

    return step


def model_space_work(supernet: ModelSupernet, arch: np.ndarray) -> tuple[int, float]:
    """What the supernet computes beyond the standalone model, for one arch.

    The supernet runs the chosen op of every edge, including ops whose output
    only feeds edges set to "none" (dead in the standalone model).

    Returns:
      (dead units run, MACs run by the supernet / MACs of the standalone model).
    """
    plan = supernet.arch_to_plan(arch)
    resolution = resolve(supernet.graph, plan)
    dead, macs = 0, 0
    for edge in supernet.graph.edges:
        action = resolution.actions[edge.id]
        if not is_active(edge.kind, action):
            continue
        macs += edge_cost_after(edge, action).macs
        dead += edge.kind == "unit" and edge.id not in resolution.live_edges
    return dead, macs / max(nat_keras.plan_cost(supernet.graph, plan).macs, 1)


def _timed(step: Callable[..., tf.Tensor], *args: tf.Tensor) -> float:
    start = time.perf_counter()
    step(*args).numpy()  # wait for the step's result
    return time.perf_counter() - start


def measure(space: str, supernet: Supernet, archs: list[np.ndarray], batch: tuple) -> list[Row]:
    """Times the supernet against each arch's standalone model."""
    config = SupernetConfig()
    images, labels = batch
    supernet_step = make_train_step(
        lambda x, a: supernet(x, arch=a, training=True), supernet.trainable_variables, config
    )
    start = time.perf_counter()
    supernet_step(images, labels, tf.constant(archs[0])).numpy()  # one trace serves every arch
    print(f"[{space}] supernet first step (trace): {time.perf_counter() - start:.1f} s", flush=True)
    rows = []
    for index, arch in enumerate(archs):
        arch_tensor = tf.constant(arch)
        standalone = supernet.extract(arch)
        standalone_step = make_train_step(
            lambda x, a, m=standalone: m(x, training=True), standalone.trainable_variables, config
        )
        start = time.perf_counter()
        standalone_step(images, labels, arch_tensor).numpy()
        trace = time.perf_counter() - start
        for _ in range(_WARMUP.value):
            supernet_step(images, labels, arch_tensor)
            standalone_step(images, labels, arch_tensor).numpy()
        ours, theirs = [], []
        for _ in range(_REPEATS.value):  # alternate, so that both see the same load
            ours.append(_timed(supernet_step, images, labels, arch_tensor))
            theirs.append(_timed(standalone_step, images, labels, arch_tensor))
        work = model_space_work(supernet, arch) if isinstance(supernet, ModelSupernet) else (None, None)
        row = Row(
            space,
            index,
            int(np.count_nonzero(arch)) if isinstance(supernet, ModelSupernet) else None,
            *work,
            1e3 * statistics.median(ours),
            1e3 * statistics.median(theirs),
            trace,
        )
        print(
            f"[{space}] arch {index}: supernet {row.supernet_ms:.1f} ms, "
            f"standalone {row.standalone_ms:.1f} ms, ratio {row.ratio:.2f}",
            flush=True,
        )
        rows.append(row)
    if supernet_step.experimental_get_tracing_count() != 1:
        print(
            f"[{space}] WARNING: the supernet step traced {supernet_step.experimental_get_tracing_count()}x"
        )
    return rows


def _cell_supernet_class() -> type | None:
    """nat_keras.supernet.CellSupernet, where this nat_keras has it."""
    return getattr(nat_keras.supernet, "CellSupernet", None)


def build_supernet(space: str) -> Supernet | None:
    if space == "model":
        return ModelSupernet(nat_keras.models.resnet20(), space=_ACTION_SPACE.value)
    # ---- cell space -----------------------------------------------------------
    # NAT's cell-space supernet (docs/design.md section 6: 8 cells, C = 20).
    cls = _cell_supernet_class()
    if cls is None:
        print("[cell] CellSupernet is not available in this nat_keras; skipped.")
        return None
    return cls(
        num_cells=_CELLS.value,
        channels=_CHANNELS.value,
        input_shape=IMAGE_SHAPE,
        num_classes=NUM_CLASSES,
    )


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'space':<7}{'arch':>5}{'changed':>9}{'dead':>6}{'MACs run':>10}{'supernet ms':>13}"
        f"{'standalone ms':>15}{'ratio':>8}{'standalone trace s':>20}"
    )
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        changed = "-" if row.changed_edges is None else str(row.changed_edges)
        dead = "-" if row.dead_units is None else str(row.dead_units)
        macs = "-" if row.macs_ratio is None else f"{row.macs_ratio:.2f}x"
        print(
            f"{row.space:<7}{row.arch:>5}{changed:>9}{dead:>6}{macs:>10}{row.supernet_ms:>13.1f}"
            f"{row.standalone_ms:>15.1f}{row.ratio:>7.2f}x{row.standalone_trace_s:>20.1f}"
        )
    for space in dict.fromkeys(row.space for row in rows):
        ratios = [row.ratio for row in rows if row.space == space]
        print(f"{space:<7} median ratio supernet / standalone: {statistics.median(ratios):.2f}x")


def main(argv: list[str]) -> None:
    del argv
    rng = np.random.default_rng(_SEED.value)
    batch = (
        tf.constant(rng.uniform(0.0, 1.0, (_BATCH.value, *IMAGE_SHAPE)).astype("float32")),
        tf.constant(rng.integers(0, NUM_CLASSES, _BATCH.value), dtype=tf.int64),
    )
    print(f"batch {_BATCH.value} x {'x'.join(map(str, IMAGE_SHAPE))}, {NUM_CLASSES} classes; ", end="")
    print(f"{_WARMUP.value} warm-up and {_REPEATS.value} timed steps per arch; TF {tf.__version__}")
    rows: list[Row] = []
    for space in _SPACES.value:
        keras.utils.set_random_seed(_SEED.value)
        start = time.perf_counter()
        supernet = build_supernet(space)
        if supernet is None:
            continue
        print(f"[{space}] built {supernet.name} in {time.perf_counter() - start:.1f} s", flush=True)
        archs = [supernet.sample_arch(seed=(_SEED.value, i)) for i in range(_ARCHS.value)]
        rows += measure(space, supernet, archs, batch)
    if rows:
        print_table(rows)


if __name__ == "__main__":
    app.run(main)
