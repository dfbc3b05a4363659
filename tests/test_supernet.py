"""ModelSupernet and SupernetTrainer on tiny models (docs/design.md section 6).

The models here are tiny (8x8x3 inputs, 8 channels) on purpose: the first
trace of a supernet step compiles every switch branch, which takes seconds on
real networks. One model is a plain residual chain, the other adds a concat
node; both get placeholder (null) edges from the encoder.

One documented deviation from the authors' code is pinned by a strict xfail
test at the end: SGD momentum still moves ops an architecture did not run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
from collections.abc import Callable, Iterator

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (  # tests/ is on sys.path
    TINY_IMAGE_SHAPE,
    TINY_NUM_CLASSES,
    colour_data,
    randomize,
    tiny_concat,
    tiny_resnet,
)

import nat_keras
from nat_keras import ops
from nat_keras.supernet import ModelSupernet
from nat_keras.supernet.trainer import SupernetConfig, SupernetTrainer

# One class per colour channel: the label is the brightest channel.
NUM_CLASSES, IMAGE_SHAPE = TINY_NUM_CLASSES, TINY_IMAGE_SHAPE


# -- model factories -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """A model factory and a hand-picked plan that exercises none / skip / NAT++ ops.

    `Built.plan` adds a skip on the first placeholder edge (an identity skip).
    """

    factory: Callable[[], keras.Model]
    changes: dict[str, str]
    learner: str  # a NAT++ layer that the plan picks (its gradient must be non-zero)
    projected_skip: str  # an edge whose skip needs layers (FactorizedReduce or 1x1 conv + BN)


CASES = {
    "residual": Case(
        tiny_resnet,
        {"block0_b_conv": "none", "block1_a_conv": "sep_conv_3x3", "down_conv": "conv_1x1"},
        "block1_a_conv_nat_sep_conv_3x3",
        "down_conv",  # stride 2: FactorizedReduce
    ),
    "concat": Case(
        tiny_concat,
        {
            "block0_b_conv": "none",
            "cat_left": "none",  # zero-filled concat input
            "cat_right": "dil_conv_3x3",
            "post_cat_conv": "sep_conv_3x3",
            "down_conv": "conv_1x1",
        },
        "post_cat_conv_nat_sep_conv_3x3",
        "cat_right",  # 8 -> 4 channels: 1x1 conv + BN
    ),
}


def colour_dataset(n: int = 256, batch: int = 32, seed: int = 0) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(colour_data(n, seed)).batch(batch, drop_remainder=True)


def snapshot(variables: list) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


@contextlib.contextmanager
def preserved(model: keras.Model) -> Iterator[None]:
    """Restores every weight of `model` (BN statistics included) on exit."""
    saved = snapshot(model.weights)
    try:
        yield
    finally:
        for variable, value in zip(model.weights, saved):
            variable.assign(value)


@dataclasses.dataclass
class Built:
    model: keras.Model
    graph: nat_keras.ArchGraph
    supernet: ModelSupernet
    case: Case
    forward: Callable  # one tf.function(images, arch) -> logits, shared by the tests
    traces: list  # one entry per trace of `forward`

    def plan(self, changes: dict[str, str]) -> nat_keras.TransformPlan:
        placeholder = next(e.id for e in self.graph.edges if e.kind == "placeholder")
        return nat_keras.TransformPlan.from_actions(self.graph, {**changes, placeholder: "skip"})


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request) -> Built:
    """A source model with random weights and a supernet over it.

    The supernet's own branches (NAT++ ops, projected skips) get random
    weights too; the clones of the source layers keep the source's.
    """
    case = CASES[request.param]
    keras.utils.set_random_seed(0)
    model = case.factory()
    randomize(model.weights, seed=1)
    supernet = ModelSupernet(model)
    source_layers = {layer.name for layer in model.layers}
    source_ids = {id(v) for v in model.weights}
    randomize(
        [
            v
            for v in supernet.weights
            if id(v) not in source_ids and v.path.split("/")[0] not in source_layers
        ],
        seed=2,
    )
    traces: list[int] = []

    @tf.function
    def forward(images, arch):
        traces.append(1)  # a Python side effect runs once per trace, never per call
        return supernet(images, arch=arch, training=False)

    return Built(model, supernet.graph, supernet, case, forward, traces)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return colour_data(16, seed=3)[0]


def _archs(supernet: ModelSupernet, count: int = 10) -> list[np.ndarray]:
    archs = [supernet.sample_arch(seed=seed) for seed in range(count)]
    assert len({a.tobytes() for a in archs}) > count // 2  # really different architectures
    return archs


# -- (a) the all-keep architecture is the source model ---------------------------


def test_keep_all_is_the_source_model(built, images):
    expected = built.model(images, training=False).numpy()
    supernet = built.supernet
    np.testing.assert_array_equal(supernet(images, training=False).numpy(), expected)
    keep_all = supernet.plan_to_arch(nat_keras.TransformPlan.keep_all(built.graph))
    np.testing.assert_array_equal(keep_all, np.zeros(supernet.arch_size, np.int32))
    np.testing.assert_array_equal(supernet(images, arch=keep_all, training=False).numpy(), expected)
    np.testing.assert_array_equal(built.forward(images, tf.constant(keep_all)).numpy(), expected)


# -- (b) extract == the supernet's own forward pass, and costs what plan_cost says --


def test_extract_matches_supernet_and_plan_cost(built, images):
    supernet = built.supernet
    archs = _archs(supernet)
    used = {ops.ACTIONS[a] for arch in archs for a in arch}
    assert {"skip", "none"} <= used and used & set(ops.REPLACEMENT_OPS)  # NAT and NAT++ actions
    for arch in archs:
        standalone = supernet.extract(arch)
        np.testing.assert_allclose(
            standalone(images, training=False).numpy(),
            built.forward(images, tf.constant(arch)).numpy(),
            atol=1e-5,
            err_msg=f"arch {arch.tolist()}",
        )
        plan = supernet.arch_to_plan(arch)
        assert standalone.count_params() == nat_keras.plan_cost(built.graph, plan).params, plan


# -- (c) arch <-> plan ------------------------------------------------------------


def test_plan_arch_round_trip(built):
    graph, supernet = built.graph, built.supernet
    for arch in _archs(supernet):
        plan = supernet.arch_to_plan(arch)
        np.testing.assert_array_equal(supernet.plan_to_arch(plan), arch)
    for seed in range(5):
        plan = nat_keras.sample_random_plan(graph, seed)
        assert supernet.arch_to_plan(supernet.plan_to_arch(plan)) == plan
    plan = built.plan(built.case.changes)
    arch = supernet.plan_to_arch(plan)
    ids = [e.id for e in graph.edges]
    assert {ids[i]: ops.ACTIONS[a] for i, a in enumerate(arch) if a} == plan.actions
    assert supernet.arch_to_plan(arch) == plan


def test_illegal_and_misshapen_archs_are_refused(built):
    graph, supernet = built.graph, built.supernet
    ids = [e.id for e in graph.edges]
    stem_skip = np.zeros(supernet.arch_size, np.int32)
    stem_skip[ids.index("stem_conv")] = ops.ACTIONS.index("skip")  # the stem is protected
    with pytest.raises(nat_keras.PlanError, match="stem_conv"):
        supernet.arch_to_plan(stem_skip)
    no_input = np.zeros(supernet.arch_size, np.int32)
    for edge in graph.in_edges("block0_add"):  # every input of a sum removed
        no_input[ids.index(edge.id)] = ops.ACTIONS.index("none")
    with pytest.raises(nat_keras.PlanError, match="block0_add"):
        supernet.arch_to_plan(no_input)
    with pytest.raises(nat_keras.PlanError):
        supernet.extract(no_input)
    for bad in (np.zeros(supernet.arch_size - 1, np.int32), np.zeros((1, supernet.arch_size), np.int32)):
        with pytest.raises(ValueError, match="arch of shape"):
            supernet.arch_to_plan(bad)
        with pytest.raises(ValueError, match="arch of shape"):
            supernet.accuracy(bad, colour_data(4, seed=0))


# -- (d) one trace for every architecture ------------------------------------------


def test_changing_arch_does_not_retrace(built, images):
    outputs = [built.forward(images, tf.constant(a)).numpy() for a in _archs(built.supernet, 5)]
    assert len(built.traces) == 1  # over this test and every other one that used `forward`
    assert not all(np.array_equal(outputs[0], o) for o in outputs[1:])  # the arch did change the net


# -- (e) only the chosen op runs ----------------------------------------------------


def test_only_the_chosen_branch_runs(built, images):
    supernet = built.supernet
    plan = built.plan(built.case.changes)
    arch = supernet.plan_to_arch(plan)
    np.testing.assert_allclose(
        built.forward(images, tf.constant(arch)).numpy(),
        supernet.extract(arch)(images, training=False).numpy(),
        atol=1e-5,
    )
    chosen = {(e.id, plan.action(e.id)) for e in built.graph.edges}
    # The layers of each (edge, action) branch: the supernet's own bookkeeping.
    branches = supernet._branch_layers

    def variables(keys: list) -> set[int]:
        return {id(v) for key in keys for layer in branches[key] for v in layer.weights}

    unchosen = variables([key for key in branches if key not in chosen])
    taken = variables([key for key in branches if key in chosen])
    unchosen_stats = [v for v in supernet.non_trainable_variables if id(v) in unchosen]
    taken_stats = [v for v in supernet.non_trainable_variables if id(v) in taken]
    assert unchosen_stats and taken_stats  # BN moving statistics, of branches not taken / taken

    @tf.function
    def gradients(x, a):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(supernet(x, arch=a, training=True)))
        return tape.gradient(loss, supernet.trainable_variables)

    with preserved(supernet):
        before_unchosen, before_taken = snapshot(unchosen_stats), snapshot(taken_stats)
        grads = gradients(images, tf.constant(arch))
        after_unchosen, after_taken = snapshot(unchosen_stats), snapshot(taken_stats)
    checked = 0
    for variable, grad in zip(supernet.trainable_variables, grads):
        if id(variable) in unchosen:
            checked += 1
            assert grad is None or not np.any(grad.numpy()), variable.path
    assert checked > 10
    grad_of = {id(v): g for v, g in zip(supernet.trainable_variables, grads)}
    learner = supernet.get_layer(built.case.learner)
    assert all(np.any(grad_of[id(v)].numpy()) for v in learner.trainable_weights)  # the chosen op learns
    # A training-mode pass updates BN statistics (the stem's at least), but never those of ops not taken.
    assert any(not np.array_equal(old, new) for old, new in zip(before_taken, after_taken))
    for variable, old, new in zip(unchosen_stats, before_unchosen, after_unchosen):
        np.testing.assert_array_equal(old, new, err_msg=variable.path)


def _training_mode_gap(
    built: Built, plan: nat_keras.TransformPlan, images: np.ndarray, traced: bool
) -> float:
    """Largest difference of supernet and extracted model, both in training mode (batch statistics)."""
    supernet = built.supernet
    arch = supernet.plan_to_arch(plan)
    standalone = supernet.extract(arch)
    forward = lambda x, a: supernet(x, arch=a, training=True)  # noqa: E731
    with preserved(supernet):
        ours = (tf.function(forward) if traced else forward)(images, tf.constant(arch)).numpy()
    return float(np.abs(ours - standalone(images, training=True).numpy()).max())


def test_training_mode_matches_extract(built, images):
    assert _training_mode_gap(built, built.plan(built.case.changes), images, traced=False) < 1e-4


def test_traced_training_mode_matches_extract(built, images):
    assert _training_mode_gap(built, built.plan(built.case.changes), images, traced=True) < 1e-4


def test_training_mode_matches_extract_with_a_projected_skip(built, images):
    plan = nat_keras.TransformPlan.from_actions(built.graph, {built.case.projected_skip: "skip"})
    assert _training_mode_gap(built, plan, images, traced=False) < 1e-4


# -- (f) accuracy ---------------------------------------------------------------------


def test_accuracy_matches_extracted_model(built):
    supernet = built.supernet
    x, y = colour_data(40, seed=5)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # the last batch is short
    archs = [supernet.plan_to_arch(built.plan(built.case.changes)), *_archs(supernet, 3)[1:]]
    for arch in archs:
        predicted = supernet.extract(arch)(x, training=False).numpy().argmax(-1)
        expected = float(np.mean(predicted == y))
        assert supernet.accuracy(arch, (x, y)) == pytest.approx(expected)
        assert supernet.accuracy(arch, dataset) == pytest.approx(expected)


# -- (g) + (h) SupernetTrainer: learns, logs, checkpoints, resumes; the source stays --


def _event_tags(directory: str) -> set[str]:
    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    return tags


def _without_prefix(path: str) -> str:
    return path.split("/", 1)[-1]  # optimizer variables are named after the optimizer ("sgd_3/...")


@dataclasses.dataclass
class Run:
    """One SupernetTrainer run of 20 steps (10 + 1 + 9), shared by the trainer tests."""

    model: keras.Model
    trainer: SupernetTrainer
    directory: str
    source_weights: list[np.ndarray]  # the source model's, before the supernet existed
    source_config: dict
    initial: list[np.ndarray]  # the supernet's trainable weights before training
    first: dict[str, float]  # steps 1-10
    second: dict[str, float]  # steps 12-20
    moved_unrun: list[str]  # weights of ops that step 11 did not run, which step 11 changed


SETTINGS = SupernetConfig(learning_rate=0.05, checkpoint_every=10, log_every=5)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    directory = str(tmp_path_factory.mktemp("supernet_run"))
    keras.utils.set_random_seed(0)
    model = tiny_resnet()
    source_weights, source_config = snapshot(model.weights), model.get_config()
    supernet = ModelSupernet(model)
    initial = snapshot(supernet.trainable_variables)
    trainer = SupernetTrainer(supernet, config=SETTINGS, directory=directory)
    assert trainer.resumed_from is None
    data = colour_dataset(256, 32, seed=0)
    first = trainer.train(data, steps=10, verbose=0)
    # One step on its own, to see what it does to the ops its architecture does not run.
    plan = supernet.arch_to_plan(trainer.arch_for_step(10))
    taken = {(e.id, plan.action(e.id)) for e in supernet.graph.edges}
    unrun = [
        v
        for key, layers in supernet._branch_layers.items()
        if key not in taken
        for layer in layers
        for v in layer.trainable_weights
    ]
    before = snapshot(unrun)
    trainer.train(data, steps=11, verbose=0)
    moved = [v.path for v, old in zip(unrun, before) if not np.array_equal(v.numpy(), old)]
    second = trainer.train(data, steps=20, verbose=0)
    return Run(model, trainer, directory, source_weights, source_config, initial, first, second, moved)


def test_trainer_lowers_the_loss(run):
    assert run.first["steps_run"] == 10 and run.second["steps_run"] == 9
    assert run.second["loss"] < run.first["loss"], (run.first, run.second)
    assert int(run.trainer.step.numpy()) == 20
    assert int(run.trainer.optimizer.iterations.numpy()) == 20
    trained = snapshot(run.trainer.supernet.trainable_variables)
    assert any(not np.array_equal(a, b) for a, b in zip(run.initial, trained))


def test_training_leaves_the_source_model_untouched(run):
    assert run.model.get_config() == run.source_config
    for variable, old in zip(run.model.weights, run.source_weights):
        np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)


def test_trainer_writes_tensorboard_and_checkpoints(run):
    board = os.path.join(run.directory, "tensorboard")
    assert glob.glob(os.path.join(board, "events.out.tfevents.*"))
    assert {"supernet/loss", "supernet/accuracy"} <= _event_tags(board)
    checkpoints = tf.train.get_checkpoint_state(os.path.join(run.directory, "checkpoints"))
    assert checkpoints is not None
    # Every checkpoint_every steps, and where a train() call ends.
    assert [p.rsplit("-", 1)[1] for p in checkpoints.all_model_checkpoint_paths] == ["10", "11", "20"]


def _resume(run: Run) -> SupernetTrainer:
    return SupernetTrainer(ModelSupernet(run.model), config=SETTINGS, directory=run.directory)


def test_trainer_resumes_step_optimizer_and_weights(run):
    resumed = _resume(run)
    assert resumed.resumed_from.endswith("ckpt-20")
    assert int(resumed.step.numpy()) == 20
    assert int(resumed.optimizer.iterations.numpy()) == 20
    old_optimizer, new_optimizer = run.trainer.optimizer.variables, resumed.optimizer.variables
    momentums = [v for v in old_optimizer if "momentum" in v.path]
    assert momentums and any(np.any(v.numpy()) for v in momentums)
    assert len(new_optimizer) == len(old_optimizer)
    for old, new in zip(old_optimizer, new_optimizer):
        assert _without_prefix(old.path) == _without_prefix(new.path)
        np.testing.assert_array_equal(old.numpy(), new.numpy(), err_msg=old.path)
    for old, new in zip(run.trainer.supernet.trainable_variables, resumed.supernet.trainable_variables):
        assert old.path == new.path
        np.testing.assert_array_equal(old.numpy(), new.numpy(), err_msg=old.path)
    # Resuming to a step already reached runs nothing.
    assert resumed.train(colour_dataset(), steps=20, verbose=0)["steps_run"] == 0


# -- known bugs -------------------------------------------------------------------------


def test_resume_restores_batchnorm_statistics(run):
    resumed = _resume(run)
    for old, new in zip(
        run.trainer.supernet.non_trainable_variables, resumed.supernet.non_trainable_variables
    ):
        assert old.path == new.path
        np.testing.assert_array_equal(old.numpy(), new.numpy(), err_msg=old.path)


@pytest.mark.xfail(
    strict=True,
    reason="In a traced step the gradient of an op the arch did not run is zero, not None; SupernetTrainer "
    "adds weight decay to it and SGD's momentum carries on, so every step moves the weights of ops it did "
    "not run (the authors' PyTorch code leaves them alone: no grad, no update).",
)
def test_a_step_leaves_the_ops_it_did_not_run_alone(run):
    assert run.moved_unrun == []


def test_supernet_does_not_own_the_source_weights():
    model = tiny_resnet()
    supernet = ModelSupernet(model)
    assert not {id(v) for v in model.weights} & {id(v) for v in supernet.weights}


def test_a_compact_budget_trains_plans_within_it_half_of_the_time():
    model = tiny_resnet()
    near = ModelSupernet(model, space="nat")
    half = nat_keras.Budget(macs_ratio=0.5)
    compact = ModelSupernet(model, space="nat", budget=half)
    graph, source = compact.graph, nat_keras.cost(compact.graph)
    plans = [compact.arch_to_plan(compact.sample_arch((0, step))) for step in range(60)]
    within = sum(half.allows(nat_keras.plan_cost(graph, p), source) for p in plans)
    assert 15 <= within <= 45  # budget_prob 0.5
    never = [near.arch_to_plan(near.sample_arch((0, step))) for step in range(60)]
    assert sum(half.allows(nat_keras.plan_cost(graph, p), source) for p in never) < within
    # A budget the source meets changes nothing: the same draws as without one.
    equal = ModelSupernet(model, space="nat", budget=nat_keras.Budget())
    assert all(np.array_equal(equal.sample_arch((0, s)), near.sample_arch((0, s))) for s in range(10))
    with pytest.raises(ValueError, match="budget_prob"):
        ModelSupernet(model, budget=half, budget_prob=1.5)


@pytest.mark.parametrize("value", [len(ops.ACTIONS), -1])
def test_out_of_range_action_index_is_a_plan_error(built, value):
    arch = np.zeros(built.supernet.arch_size, np.int32)
    arch[[e.id for e in built.graph.edges].index("block0_a_conv")] = value
    with pytest.raises(nat_keras.PlanError):
        built.supernet.arch_to_plan(arch)


# -- layer names are the user's: "__" and other odd characters ---------------------------


def odd_names_model() -> keras.Model:
    """A residual block whose layer names use "__" (the supernet's own marker once) and
    other characters Keras allows in names (".", "-", ":", " ", "ä")."""
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem__conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem__bn")(x)
    x = keras.layers.ReLU(name="stem.relu")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="block__a-conv")(x)
    y = keras.layers.BatchNormalization(name="block__a:bn")(y)
    y = keras.layers.ReLU(name="block a relu")(y)
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="block__b_cönv")(y)
    y = keras.layers.BatchNormalization(name="block__b.bn")(y)
    x = keras.layers.ReLU(name="block__out")(keras.layers.Add(name="block__add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D(name="gap__pool")(x)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, name="head__logits")(x), name="odd__names")


def test_extract_carries_the_weights_of_layers_with_odd_names(images):
    keras.utils.set_random_seed(0)
    supernet = ModelSupernet(odd_names_model())
    randomize(supernet.weights, seed=4)  # the clones of the source layers too: extract must copy them
    graph = supernet.graph
    changed = nat_keras.TransformPlan.from_actions(
        graph, {"block__a-conv": "sep_conv_3x3", "block__b_cönv": "skip"}
    )
    archs = [np.zeros(supernet.arch_size, np.int32), supernet.plan_to_arch(changed)]
    archs += [supernet.sample_arch(seed=seed) for seed in range(3)]
    for arch in archs:
        np.testing.assert_allclose(
            supernet.extract(arch)(images, training=False).numpy(),
            supernet(images, arch=tf.constant(arch), training=False).numpy(),
            atol=1e-5,
            err_msg=f"arch {arch.tolist()}",
        )
