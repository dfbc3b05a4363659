"""Property-based tests: random small Keras models through encode / plan / rebuild.

A hypothesis strategy draws a *model spec* (plain frozen dataclasses, so a
failing example prints readably and shrinks), `build_model` turns it into a
Keras 3 functional model, and the properties below must hold for every model
and every legal plan:

* encode works, is deterministic and survives a JSON round trip;
* the keep-all plan rebuilds a model with the very same predictions;
* random legal plans (`sample_random_plan` over "nat" and "nat++", and a plan
  drawn action by action by hypothesis then `repair`ed) rebuild a runnable
  model with the source's output shape, whose cost `plan_cost` predicts
  exactly and which the default Budget allows;
* the source model's weights never change.

The run is derandomized and database-less, so CI sees the same examples each
time.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

import nat_keras
from nat_keras import ops
from nat_keras.errors import PlanError
from nat_keras.graph.arch_graph import ArchGraph
from nat_keras.graph.costs import minimum_cost
from nat_keras.plan import fit_to_budget, repair, resolve

# NAT_PROPERTY_EXAMPLES=500 runs a longer bug hunt locally.
MAX_EXAMPLES = int(os.environ.get("NAT_PROPERTY_EXAMPLES", "15"))
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
BATCH = 3

# How often the hypothesis-drawn plan was still illegal after `repair` (the
# example is then skipped with `assume`); reported at the end of the module.
REPAIR_STATS: collections.Counter = collections.Counter()


# ---------------------------------------------------------------------------
# Model specs.


@dataclasses.dataclass(frozen=True)
class Op:
    """One primary op, optionally followed by BatchNormalization and ReLU.

    kind: conv, sep_conv, depthwise, max_pool, avg_pool. Pools of kernel 3
    use 'same' padding and `stride`; pools of kernel 2 are 2x2 / stride 2.
    """

    kind: str
    kernel: int
    stride: int
    filters: int = 4
    bn: bool = False
    relu: bool = False


@dataclasses.dataclass(frozen=True)
class Residual:
    """Add(main(x), shortcut(x)); a 1x1 projection fixes the shortcut's shape."""

    main: tuple[Op, ...]
    shortcut: tuple[Op, ...]  # () is the identity


@dataclasses.dataclass(frozen=True)
class Concat:
    """Concatenate(branch(x) for each branch); () is an identity branch."""

    branches: tuple[tuple[Op, ...], ...]


@dataclasses.dataclass(frozen=True)
class Fork:
    """Remember the current tensor: the next block and a later Join both use it."""


@dataclasses.dataclass(frozen=True)
class Join:
    """Merge the oldest remembered tensor (projected if needed) into the current one."""

    merge: str  # "add" or "concat"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Input size and channels, blocks, number of classes; `stem`: a Conv-BN-ReLU first.

    Without a stem the first blocks read the input directly (so their edges are
    protected stem edges, and identity shortcuts may start at the input).
    """

    size: int
    channels: int
    blocks: tuple
    classes: int
    stem: bool = True


_CONV_KINDS = ("conv", "sep_conv", "depthwise")


@st.composite
def op_specs(draw: st.DrawFn, *, stride: int | None = None) -> Op:
    """One op; `stride` forces its stride (None: draw 1 or 2)."""
    kinds = ["conv", "sep_conv", "depthwise", "max_pool", "avg_pool"]
    kind = draw(st.sampled_from(kinds))
    if kind in _CONV_KINDS:
        kernel = draw(st.sampled_from((1, 3, 5)))
    else:
        # A 2x2 pool always has stride 2.
        kernel = 3 if stride == 1 else draw(st.sampled_from((2, 3)))
    if kind in ("max_pool", "avg_pool") and kernel == 2:
        op_stride = 2
    else:
        op_stride = stride if stride is not None else draw(st.sampled_from((1, 2)))
    filters = draw(st.sampled_from((4, 8))) if kind in ("conv", "sep_conv") else 4
    post = kind in _CONV_KINDS
    bn = draw(st.booleans()) if post else False
    relu = draw(st.booleans()) if post else False
    return Op(kind, kernel, op_stride, filters, bn, relu)


@st.composite
def chains(draw: st.DrawFn, *, min_size: int, max_size: int, stride: int | None) -> tuple[Op, ...]:
    """A chain of ops; the first takes `stride`, the rest keep the size if a stride is forced."""
    length = draw(st.integers(min_size, max_size))
    if length == 0:
        return ()
    first = draw(op_specs(stride=stride))
    rest = [draw(op_specs(stride=1 if stride is not None else None)) for _ in range(length - 1)]
    return (first, *rest)


@st.composite
def residual_blocks(draw: st.DrawFn) -> Residual:
    main = draw(chains(min_size=1, max_size=2, stride=None))
    shortcut = draw(chains(min_size=0, max_size=1, stride=1))
    return Residual(main, shortcut)


@st.composite
def concat_blocks(draw: st.DrawFn) -> Concat:
    stride = draw(st.sampled_from((1, 2)))
    count = draw(st.integers(2, 3))
    # Identity branches only when the block keeps the spatial size.
    min_size = 0 if stride == 1 else 1
    branches = [draw(chains(min_size=min_size, max_size=2, stride=stride)) for _ in range(count)]
    if not any(branches):  # Concatenate([x, x]) alone has no op to transform
        branches[0] = (draw(op_specs(stride=stride)),)
    return Concat(tuple(branches))


blocks = st.one_of(
    op_specs(),
    op_specs(),
    residual_blocks(),
    concat_blocks(),
    st.just(Fork()),
    st.builds(Join, st.sampled_from(("add", "concat"))),
)

model_specs = st.builds(
    ModelSpec,
    size=st.sampled_from((8, 16)),
    channels=st.integers(3, 8),
    blocks=st.lists(blocks, min_size=2, max_size=6).map(tuple),
    classes=st.sampled_from((2, 5)),
    stem=st.sampled_from((True, False)),
)


# ---------------------------------------------------------------------------
# Building.


class _Builder:
    """Turns a ModelSpec into a functional model with unique, stable layer names."""

    def __init__(self) -> None:
        self.counter = collections.Counter()

    def name(self, base: str) -> str:
        self.counter[base] += 1
        return f"{base}{self.counter[base]}"

    def op(self, spec: Op, x: keras.KerasTensor) -> keras.KerasTensor:
        kind = spec.kind
        if kind == "conv":
            x = keras.layers.Conv2D(
                spec.filters, spec.kernel, strides=spec.stride, padding="same", name=self.name("conv")
            )(x)
        elif kind == "sep_conv":
            x = keras.layers.SeparableConv2D(
                spec.filters, spec.kernel, strides=spec.stride, padding="same", name=self.name("sep")
            )(x)
        elif kind == "depthwise":
            x = keras.layers.DepthwiseConv2D(
                spec.kernel, strides=spec.stride, padding="same", name=self.name("dw")
            )(x)
        else:
            pool = keras.layers.MaxPooling2D if kind == "max_pool" else keras.layers.AveragePooling2D
            # 2x2 'valid' pooling needs at least 2 pixels; sizes here are powers of 2.
            padding = "same" if spec.kernel == 3 or x.shape[1] < 2 else "valid"
            x = pool(spec.kernel, strides=spec.stride, padding=padding, name=self.name(kind))(x)
        if spec.bn:
            x = keras.layers.BatchNormalization(name=self.name("bn"))(x)
        if spec.relu:
            x = keras.layers.ReLU(name=self.name("relu"))(x)
        return x

    def chain(self, specs: tuple[Op, ...], x: keras.KerasTensor) -> keras.KerasTensor:
        for spec in specs:
            x = self.op(spec, x)
        return x

    def project(self, x: keras.KerasTensor, like: keras.KerasTensor, *, channels: bool) -> keras.KerasTensor:
        """A 1x1 conv making `x` the spatial size (and, if `channels`, the depth) of `like`."""
        stride = x.shape[1] // like.shape[1]
        filters = like.shape[-1] if channels else x.shape[-1]
        if stride == 1 and filters == x.shape[-1]:
            return x
        return keras.layers.Conv2D(filters, 1, strides=stride, padding="same", name=self.name("proj"))(x)

    def merge(self, kind: str, tensors: list[keras.KerasTensor]) -> keras.KerasTensor:
        if kind == "add":
            return keras.layers.Add(name=self.name("add"))(tensors)
        return keras.layers.Concatenate(name=self.name("cat"))(tensors)

    def build(self, spec: ModelSpec) -> keras.Model:
        inputs = keras.Input((spec.size, spec.size, spec.channels), name="image")
        x = inputs
        if spec.stem:
            x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(x)
            x = keras.layers.BatchNormalization(name="stem_bn")(x)
            x = keras.layers.ReLU(name="stem_relu")(x)
        pending: list[keras.KerasTensor] = []
        for block in spec.blocks:
            if isinstance(block, Op):
                x = self.op(block, x)
            elif isinstance(block, Residual):
                main = self.chain(block.main, x)
                shortcut = self.project(self.chain(block.shortcut, x), main, channels=True)
                x = self.merge("add", [main, shortcut])
            elif isinstance(block, Concat):
                x = self.merge("concat", [self.chain(b, x) for b in block.branches])
            elif isinstance(block, Fork):
                pending.append(x)
            elif isinstance(block, Join) and pending and pending[0] is not x:
                x = self.join(block.merge, pending.pop(0), x)
        for old in pending:
            if old is not x:
                x = self.join("add", old, x)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        outputs = keras.layers.Dense(spec.classes, name="logits")(x)
        return keras.Model(inputs, outputs, name="random_net")

    def join(self, kind: str, old: keras.KerasTensor, x: keras.KerasTensor) -> keras.KerasTensor:
        return self.merge(kind, [x, self.project(old, x, channels=kind == "add")])


def build_model(spec: ModelSpec) -> keras.Model:
    """The spec's model, with seeded weights and non-trivial BatchNorm statistics."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    model = _Builder().build(spec)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    rng.normal(0, 0.1, beta.shape).astype("float32"),
                    rng.normal(0, 0.1, mean.shape).astype("float32"),
                    rng.uniform(0.5, 1.5, var.shape).astype("float32"),
                ]
            )
    return model


# ---------------------------------------------------------------------------
# Helpers.


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def _batch(model: keras.Model, seed: int = 0) -> np.ndarray:
    shape = (BATCH, *model.input_shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _check_plan(model: keras.Model, graph: ArchGraph, plan: nat_keras.TransformPlan, x: np.ndarray) -> None:
    """The properties every legal plan must have."""
    note(f"plan ({plan.space}): {dict(plan.actions)}")
    rebuilt = nat_keras.apply_plan(model, plan, graph=graph)
    assert rebuilt.output_shape == model.output_shape
    assert rebuilt.input_shape == model.input_shape

    predicted = nat_keras.plan_cost(graph, plan)
    assert predicted.params == rebuilt.count_params(), "plan_cost params != count_params()"
    assert predicted.macs == nat_keras.cost(rebuilt).macs, "plan_cost MACs != cost(rebuilt)"
    assert nat_keras.Budget().allows(predicted, nat_keras.cost(graph))

    y = _predict(rebuilt, x)
    assert y.shape == (x.shape[0], *model.output_shape[1:])
    assert np.all(np.isfinite(y))


def _drawn_plan(data: st.DataObject, graph: ArchGraph) -> nat_keras.TransformPlan:
    """A plan with one hypothesis-drawn action per transformable edge, then repaired."""
    space = data.draw(st.sampled_from(("nat", "nat++")), label="space")
    allowed = set(ops.ACTION_SPACES[space])
    actions = {}
    for edge in graph.transformable_edges():
        legal = [a for a in edge.actions if a in allowed]
        actions[edge.id] = data.draw(st.sampled_from(legal), label=edge.id)
    plan = nat_keras.TransformPlan(graph.name, graph.fingerprint(), actions, space)
    return repair(graph, plan)


# ---------------------------------------------------------------------------
# The property.


@SETTINGS
@given(spec=model_specs, seed=st.integers(0, 2**16), data=st.data())
def test_random_models_and_plans(spec: ModelSpec, seed: int, data: st.DataObject) -> None:
    model = build_model(spec)
    x = _batch(model, seed)
    weights_before = model.get_weights()
    try:
        graph = nat_keras.encode(model)
        # Deterministic, and the JSON round trip keeps everything.
        assert nat_keras.encode(model) == graph
        assert nat_keras.encode(build_model(spec)) == graph  # ids come from names, not objects
        assert ArchGraph.from_json(graph.to_json()) == graph
        assert graph.params == model.count_params()
        count = len(graph.transformable_edges())
        event(f"transformable edges: {count if count < 10 else '10+'}")

        # Keep-all: the same network, the same predictions.
        keep = nat_keras.TransformPlan.keep_all(graph)
        same = nat_keras.apply_plan(model, keep, graph=graph)
        np.testing.assert_allclose(_predict(same, x), _predict(model, x), atol=1e-6)
        assert nat_keras.plan_cost(graph, keep) == nat_keras.cost(graph)
        assert same.count_params() == model.count_params()

        for space in ("nat", "nat++"):
            plan = nat_keras.sample_random_plan(graph, seed, space=space)
            resolve(graph, plan)  # sample_random_plan promises a legal plan
            _check_plan(model, graph, plan, x)

        drawn = _drawn_plan(data, graph)
        try:
            resolve(graph, drawn)
        except PlanError as err:
            REPAIR_STATS["illegal after repair"] += 1
            event("drawn plan illegal after repair")
            note(f"illegal after repair: {err}")
            assume(False)
        REPAIR_STATS["legal after repair"] += 1
        _check_plan(model, graph, drawn, x)
    finally:
        # The source model is never changed.
        after = model.get_weights()
        assert len(after) == len(weights_before)
        for old, new in zip(weights_before, after):
            np.testing.assert_array_equal(old, new)
    keras.backend.clear_session()


@pytest.fixture(scope="module", autouse=True)
def _report_repair_stats(request: pytest.FixtureRequest):
    """After the module: one line saying how often a drawn plan was skipped as illegal."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if REPAIR_STATS and reporter is not None and capture is not None:
        total = sum(REPAIR_STATS.values())
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\ntest_property: hypothesis-drawn plans still illegal after repair (skipped): "
                f"{REPAIR_STATS['illegal after repair']} of {total}"
            )


# ---------------------------------------------------------------------------
# Deterministic anchors: the generator itself covers the block types.


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(8, 3, (Op("conv", 3, 1, 8, True, True),), 2),
        ModelSpec(
            16,
            5,
            (
                Op("conv", 3, 2, 8, True, True),
                Residual((Op("sep_conv", 5, 2, 4, True, False),), ()),
                Concat(((Op("max_pool", 3, 1),), (), (Op("depthwise", 3, 1, 4, False, True),))),
                Fork(),
                Op("avg_pool", 2, 2),
                Join("concat"),
            ),
            5,
        ),
    ],
    ids=["single-conv", "all-blocks"],
)
def test_builder_makes_runnable_models(spec: ModelSpec) -> None:
    model = build_model(spec)
    y = _predict(model, _batch(model))
    assert y.shape == (BATCH, spec.classes)
    assert np.all(np.isfinite(y))


# ---------------------------------------------------------------------------
# Shrunk counterexamples found by the property, kept as plain regression tests.


def test_skip_on_strided_edge_from_1x1_map() -> None:
    """A stride-2 edge from a 1x1 map that changes channels: 'skip' is legal, so it must rebuild."""
    inputs = keras.Input((2, 2, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="stem")(inputs)  # 1x1x4
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="down")(x)  # 1x1x8, stride 2
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x), name="tiny")
    graph = nat_keras.encode(model)
    assert "skip" in graph.edge("down").actions
    plan = nat_keras.TransformPlan.from_actions(graph, {"down": "skip"})
    rebuilt = nat_keras.apply_plan(model, plan, graph=graph)
    assert rebuilt.count_params() == nat_keras.plan_cost(graph, plan).params
    assert np.all(np.isfinite(_predict(rebuilt, _batch(model))))


@SETTINGS
@given(
    spec=model_specs,
    seed=st.integers(0, 2**16),
    params_ratio=st.sampled_from([0.3, 0.5, 0.75, 1.0]),
    macs_ratio=st.sampled_from([None, 0.3, 0.5, 0.8]),
    space=st.sampled_from(["nat", "nat++"]),
)
def test_compact_budgets_are_met_or_refused(
    spec: ModelSpec, seed: int, params_ratio: float, macs_ratio: float | None, space: str
) -> None:
    """Every plan `fit_to_budget` returns meets the budget; it refuses only what it cannot meet."""
    graph = nat_keras.encode(build_model(spec))
    budget = nat_keras.Budget(params_ratio=params_ratio, macs_ratio=macs_ratio)
    reference = nat_keras.cost(graph)
    start = nat_keras.sample_random_plan(graph, seed, space=space)
    try:
        plan = fit_to_budget(graph, start, budget)
    except nat_keras.BudgetError as error:
        event(f"refused: {str(error)[:40]}")
        if "No plan can meet it" in str(error):  # the floor itself is over: truly impossible
            assert not budget.allows(minimum_cost(graph, space), reference)
        return
    event("met")
    resolve(graph, plan)  # a valid network
    assert plan.space == space
    assert budget.allows(nat_keras.plan_cost(graph, plan), reference)
    if budget.allows(nat_keras.plan_cost(graph, start), reference):
        assert plan == start  # nothing to do: the plan is returned as it was
