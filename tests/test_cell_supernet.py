"""CellSupernet: NAT's cell-space supernet (docs/design.md sections 2-3, "Supernet").

The supernets here are tiny (3 cells, C=4, 8x8 inputs): the first trace of a
supernet step compiles every switch branch. Equality with the extracted
networks runs eagerly, where a switch runs only its chosen branch, so it
needs no trace at all.
"""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import nat_keras
from nat_keras import ops
from nat_keras.cells import (
    DARTS_OPS,
    NATPP_OPS,
    PUBLISHED,
    Genotype,
    GenotypeError,
    apply_plan_to_genotype,
    genotype_to_arch_graph,
    sample_genotype,
)
from nat_keras.errors import PlanError
from nat_keras.search.baselines import edge_magnitudes
from nat_keras.supernet import CellSupernet
from nat_keras.supernet.trainer import SupernetConfig, SupernetTrainer

NUM_CLASSES = 3  # the label is the brightest colour channel
IMAGE_SHAPE = (8, 8, 3)
SMALL = {"num_cells": 3, "channels": 4, "input_shape": IMAGE_SHAPE, "num_classes": NUM_CLASSES}


def randomize(variables: list, seed: int) -> None:
    """Non-trivial values everywhere, BN statistics included.

    Fresh affine-free BNs are identities in inference (mean 0, variance 1):
    statistics copied to the wrong place would go unnoticed.
    """
    rng = np.random.default_rng(seed)
    for variable in variables:
        shape, name = tuple(variable.shape), variable.name
        if name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif name in ("moving_mean", "beta", "bias"):
            value = rng.normal(0.0, 0.2, shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        else:  # kernels, packed or not: keep their scale
            value = np.asarray(variable.numpy()) * rng.uniform(0.5, 1.5, shape)
        variable.assign(value.astype(variable.dtype))


def colour_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    images = rng.uniform(0.0, 1.0, (n, *IMAGE_SHAPE)).astype("float32")
    images[np.arange(n), :, :, labels] += 0.5
    return images, images.mean(axis=(1, 2)).argmax(axis=-1).astype("int64")


def built(**options) -> CellSupernet:
    keras.utils.set_random_seed(0)
    supernet = CellSupernet(**{**SMALL, **options})
    randomize(supernet.weights, seed=1)
    return supernet


@pytest.fixture(scope="module")
def darts() -> CellSupernet:
    """B=4, DARTS ops, fully-concat: the paper's cell space, shrunk."""
    return built(num_nodes=4)


@pytest.fixture(scope="module")
def small() -> CellSupernet:
    """B=2: what the traced tests use (tracing grows with the number of slots)."""
    return built(num_nodes=2)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return colour_data(6, seed=3)[0]


def assert_extract_matches(supernet: CellSupernet, arch: np.ndarray, images: np.ndarray) -> np.ndarray:
    expected = supernet(images, arch=arch, training=False).numpy()
    model = supernet.extract(arch)
    np.testing.assert_allclose(model(images, training=False).numpy(), expected, atol=1e-5)
    return expected


# -- extraction ------------------------------------------------------------------


def test_extract_matches_supernet_on_sampled_archs(darts, images):
    outputs = [assert_extract_matches(darts, darts.sample_arch(seed), images) for seed in range(4)]
    assert not all(np.allclose(outputs[0], o) for o in outputs[1:])  # the arch does change the network


def test_extract_matches_supernet_on_published_darts(darts, images):
    arch = darts.genotype_to_arch(PUBLISHED["DARTS"])
    assert darts.arch_to_genotype(arch) == PUBLISHED["DARTS"]
    assert_extract_matches(darts, arch, images)
    model = darts.extract(arch)
    reference = nat_keras.cells.build_network(
        PUBLISHED["DARTS"], channels=4, num_cells=3, input_shape=IMAGE_SHAPE, num_classes=3, affine=False
    )
    # The same network as build_network's, but for the BN after each pool.
    pools = [layer for layer in model.layers if "max_pool" in layer.name]
    assert pools and all(layer.batch_norm and not layer.affine for layer in pools)
    assert model.count_params() == reference.count_params() + sum(layer.count_params() for layer in pools)


def test_extract_matches_supernet_in_training_mode(darts, images):
    """Batch statistics: the maths of every op is the standalone layer's."""
    arch = darts.sample_arch(7)
    model = darts.extract(arch)
    np.testing.assert_allclose(
        model(images, training=True).numpy(), darts(images, arch=arch, training=True).numpy(), atol=1e-4
    )


def test_null_entries_and_zero_nodes(darts, images):
    """Null entries, a c_{k-2} read only by null entries, and a node of nulls only."""
    vgg = PUBLISHED["VGG"]  # null entries from c_{k-2}, loose-end concat (5,)
    loose = built(num_nodes=4, concat="loose_end")
    assert_extract_matches(loose, loose.genotype_to_arch(vgg), images)
    plan = {"normal/node1_edge0": "none", "normal/node1_edge1": "none", "reduce/node0_edge0": "none"}
    zeroed = apply_plan_to_genotype(PUBLISHED["DARTS"], plan)
    assert zeroed.normal[2][0] == zeroed.normal[3][0] == "null"
    assert_extract_matches(darts, darts.genotype_to_arch(zeroed), images)


def test_loose_end_concat(images):
    """ENAS: loose-end cells; the extracted network is narrower, same outputs."""
    enas = built(op_list="enas", num_nodes=5, concat="loose_end")
    arch = enas.genotype_to_arch(PUBLISHED["ENAS"])
    assert enas.arch_to_genotype(arch) == PUBLISHED["ENAS"]
    assert_extract_matches(enas, arch, images)
    # Cell 1 reduces (8 channels per node) and concatenates 3 of its 5 nodes;
    # the supernet keeps all 5 (zero-filled), the extracted network reads 3.
    model = enas.extract(arch)
    assert model.get_layer("cell2_preprocess1").conv.kernel.shape[2] == 3 * 8
    assert enas.preprocess[5].conv.kernel.shape[2] == 5 * 8
    for seed in range(2):
        assert_extract_matches(enas, enas.sample_arch(seed), images)


def test_extract_is_independent_of_the_supernet(darts, images):
    arch = darts.sample_arch(1)
    model = darts.extract(arch)
    before = model(images, training=False).numpy()
    supernet_weights = [v.numpy() for v in darts.weights]
    kernel = model.get_layer("stem_conv").kernel
    kernel.assign(kernel * 2.0)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(supernet_weights, darts.weights))
    kernel.assign(kernel / 2.0)
    np.testing.assert_allclose(model(images, training=False).numpy(), before, atol=1e-6)


# -- architectures ------------------------------------------------------------------


def test_arch_encoding(darts):
    genotype = sample_genotype(5, ops=DARTS_OPS, num_nodes=4)
    arch = darts.genotype_to_arch(genotype)
    assert darts.arch_size == 32 and arch.shape == (32,) and arch.dtype == np.int32
    pairs = [(index, DARTS_OPS.index(op)) for op, index in genotype.normal + genotype.reduce]
    assert [tuple(p) for p in arch.reshape(-1, 2)] == pairs  # (input, op) per entry, normal first
    assert darts.arch_to_genotype(arch) == genotype


@pytest.mark.parametrize("seed", range(5))
def test_genotype_arch_round_trip(darts, seed):
    genotype = darts.sample_genotype(seed)
    assert genotype.uses_only(DARTS_OPS) and "null" not in genotype.ops_used()
    assert darts.arch_to_genotype(darts.genotype_to_arch(genotype)) == genotype
    arch = darts.sample_arch((seed, 3))
    np.testing.assert_array_equal(darts.genotype_to_arch(darts.arch_to_genotype(arch)), arch)
    np.testing.assert_array_equal(arch, darts.sample_arch((seed, 3)))


def test_sampled_archs_are_the_papers_inputs(darts):
    archs = np.stack([darts.sample_arch(seed) for seed in range(50)])
    ops_used = archs[:, 1::2]
    assert DARTS_OPS.index("null") not in ops_used  # beta is drawn without null
    assert len({a.tobytes() for a in archs}) == 50
    inputs = archs[:, 0::2].reshape(50, 2, 4, 2)
    assert np.any(inputs[..., 0] == inputs[..., 1])  # both entries of a node may read one input


def _is_nat_plan_of(genotype: Genotype, source: Genotype) -> bool:
    """Whether `genotype` is `source` with some ops made skip or null (NAT's actions), inputs kept."""
    return all(
        new_input == old_input and (new_op == old_op or new_op in ("skip_connect", "null"))
        for which in ("normal", "reduce")
        for (new_op, new_input), (old_op, old_input) in zip(genotype.cell(which)[0], source.cell(which)[0])
    )


def test_anchored_sampling_draws_plans_of_the_anchors():
    # Loose-end cells with nulls, like the hand-made inputs a random-cell
    # supernet scored at chance: anchor_prob=1 draws only NAT plans of them.
    anchors = [PUBLISHED["ResBlock"], PUBLISHED["VGG"], PUBLISHED["Mobilenetv2"]]
    supernet = CellSupernet(**SMALL, op_list="natpp", concat="loose_end", anchors=anchors, anchor_prob=1.0)
    drawn = [supernet.sample_genotype((0, step)) for step in range(60)]
    for genotype in drawn:
        assert any(_is_nat_plan_of(genotype, anchor) for anchor in anchors), genotype
        # Each is a valid input itself: a skip from c_{k-2} into a node cut
        # off from the output made a graph whose keep-all plan failed resolve.
        graph = supernet.graph_of(genotype)
        nat_keras.plan.resolve(graph, nat_keras.TransformPlan.keep_all(graph, space="nat"))
    assert len({g.to_json() for g in drawn}) > 10  # plans of them, not the anchors alone
    assert supernet.sample_genotype((0, 3)) == drawn[3]  # the same seed, the same draw
    # input_graphs (the policy's inputs) draws from the same mixture.
    for graph in supernet.input_graphs(np.random.default_rng(0), 4):
        assert any(_is_nat_plan_of(supernet.genotype_of(graph), anchor) for anchor in anchors)


def test_anchor_prob_zero_samples_as_the_paper_and_bad_anchors_are_refused(darts):
    anchored = CellSupernet(**SMALL, num_nodes=4, anchors=[PUBLISHED["DARTS"]], anchor_prob=0.0)
    for seed in range(5):
        assert anchored.sample_genotype(seed) == darts.sample_genotype(seed)
    with pytest.raises(ValueError, match="anchor_prob"):
        CellSupernet(**SMALL, anchor_prob=0.5)  # no anchors
    with pytest.raises(GenotypeError, match="concat"):
        CellSupernet(**SMALL, anchors=[PUBLISHED["VGG"]], anchor_prob=0.5)  # a loose-end anchor, full concat


def test_a_compact_budget_trains_plans_of_the_anchors_within_it(darts):
    # budget_prob=1: every training arch is a plan of the anchor within half its MACs.
    anchor = PUBLISHED["DARTS"]
    budget = nat_keras.Budget(macs_ratio=0.5)
    supernet = CellSupernet(**SMALL, num_nodes=4, anchors=[anchor], budget=budget, budget_prob=1.0)
    limit = budget.limits(nat_keras.cost(supernet.graph_of(anchor)))
    drawn = [supernet.arch_to_genotype(supernet.sample_arch((0, step))) for step in range(20)]
    for genotype in drawn:
        assert _is_nat_plan_of(genotype, anchor), genotype
        assert nat_keras.cost(supernet.graph_of(genotype)).macs <= limit.macs
    assert len({g.to_json() for g in drawn}) > 5
    # The policy's inputs are drawn as without a budget (uniform cells here).
    assert supernet.sample_genotype(3) == darts.sample_genotype(3)
    # budget_prob=0, or a budget the anchors meet: the draws of the paper's trainer.
    for unchanged in (
        CellSupernet(**SMALL, num_nodes=4, anchors=[anchor], budget=budget, budget_prob=0.0),
        CellSupernet(**SMALL, num_nodes=4, anchors=[anchor], budget=nat_keras.Budget()),
    ):
        for seed in range(5):
            np.testing.assert_array_equal(unchanged.sample_arch(seed), darts.sample_arch(seed))
    with pytest.raises(ValueError, match="needs anchors"):
        CellSupernet(**SMALL, budget=budget)
    with pytest.raises(ValueError, match="budget_prob"):
        CellSupernet(**SMALL, anchors=[anchor], budget=budget, budget_prob=1.5)


def test_genotypes_the_supernet_cannot_run_are_refused(darts):
    with pytest.raises(GenotypeError, match="nodes"):
        darts.genotype_to_arch(PUBLISHED["ENAS"])  # B=5
    conv5 = PUBLISHED["DARTS"].replace_cell("normal", [("conv_5x5", 0), *PUBLISHED["DARTS"].normal[1:]])
    with pytest.raises(GenotypeError, match="conv_5x5"):
        darts.genotype_to_arch(conv5)
    with pytest.raises(GenotypeError, match="concat"):
        darts.genotype_to_arch(PUBLISHED["VGG"])  # loose-end concat (5,)


@pytest.mark.parametrize("position, value", [(0, 2), (1, len(DARTS_OPS)), (6, 3), (7, -1), (31, 99)], ids=str)
def test_out_of_range_archs_are_refused(darts, position, value):
    arch = darts.sample_arch(0)
    arch[position] = value
    with pytest.raises(ValueError, match="input must be in"):
        darts.check_arch(arch)
    with pytest.raises(ValueError, match="arch of shape"):
        darts.arch_to_genotype(arch[:-2])


def test_a_supernet_call_needs_an_arch(darts, images):
    with pytest.raises(ValueError, match="needs an architecture"):
        darts(images)


# -- graphs and plans -----------------------------------------------------------------


def test_input_graphs_and_arch_of(darts):
    graphs = darts.input_graphs(np.random.default_rng(0), 3)
    assert len({g.fingerprint() for g in graphs}) == 3
    for graph in graphs:
        genotype = darts.genotype_of(graph)
        keep = nat_keras.TransformPlan.keep_all(graph, space="nat")
        np.testing.assert_array_equal(darts.arch_of(graph, keep), darts.genotype_to_arch(genotype))
        # Every offered action is NAT's and makes an op of the op list.
        for edge in graph.edges:
            assert set(edge.actions) <= set(ops.NAT_ACTIONS)
    graph = graphs[0]
    genotype = darts.genotype_of(graph)
    skip = {"normal/node1_edge0": "skip", "reduce/node0_edge1": "none"}
    arch = darts.arch_of(graph, nat_keras.TransformPlan(graph.name, graph.fingerprint(), skip, "nat"))
    pairs, before = arch.reshape(-1, 2), darts.genotype_to_arch(genotype).reshape(-1, 2)
    changed = {2: DARTS_OPS.index("skip_connect"), 8 + 1: DARTS_OPS.index("null")}
    for entry in range(16):
        assert pairs[entry][0] == before[entry][0]  # inputs never change
        assert pairs[entry][1] == changed.get(entry, before[entry][1])
    np.testing.assert_array_equal(arch, darts.arch_of(graph, skip))  # a plain mapping works too
    expected = apply_plan_to_genotype(genotype, skip, **darts.arch_codec.graph_kwargs)
    assert darts.arch_to_genotype(arch) == expected


def test_input_graphs_survive_json(darts):
    graph = darts.input_graphs(1, 1)[0]
    again = nat_keras.ArchGraph.from_json(graph.to_json())
    plan = {"normal/node0_edge0": "none"}
    np.testing.assert_array_equal(darts.arch_of(again, plan), darts.arch_of(graph, plan))


def test_graph_of_a_published_genotype(darts):
    graph = darts.graph_of(PUBLISHED["DARTS"])
    plan = nat_keras.TransformPlan.from_actions(graph, {"normal/node1_edge0": "skip"}, space="nat")
    assert darts.arch_to_genotype(darts.arch_of(graph, plan)).normal[2] == ("skip_connect", 0)


def test_nat_plus_plus_offers_only_ops_of_the_list():
    natpp = CellSupernet(**SMALL, op_list="natpp", space="nat++", num_nodes=2)
    darts_pp = CellSupernet(**SMALL, op_list="darts", space="nat++", num_nodes=2)
    genotype = Genotype(
        [("conv_5x5", 0), ("sep_conv_5x5", 1), ("conv_3x3", 2), ("max_pool_3x3", 1)],
        (2, 3),
        [("sep_conv_3x3", 0), ("conv_3x3", 1), ("dil_conv_5x5", 2), ("avg_pool_3x3", 0)],
        (2, 3),
    )
    graph = natpp.graph_of(genotype)
    assert "conv_1x1" in graph.edge("normal/node0_edge0").actions
    arch = natpp.arch_of(graph, {"normal/node0_edge0": "conv_1x1", "reduce/node1_edge0": "dil_conv_3x3"})
    changed = natpp.arch_to_genotype(arch)
    assert changed.normal[0] == ("conv_1x1", 0) and changed.reduce[2] == ("dil_conv_3x3", 2)
    darts_genotype = genotype.replace_cell("normal", [("conv_3x3", 0), *genotype.normal[1:]])
    offered = {a for e in darts_pp.graph_of(darts_genotype).edges for a in e.actions}
    assert "sep_conv_3x3" in offered and not offered & {"conv_1x1", "conv_5x5"}
    with pytest.raises(GenotypeError, match="conv_1x1"):  # a plan past the graph's offer
        darts_pp.arch_of(darts_pp.graph_of(darts_genotype), {"normal/node0_edge0": "conv_1x1"})
    assert natpp.op_list == NATPP_OPS


def test_foreign_graphs_and_plans_are_refused(darts):
    foreign = genotype_to_arch_graph(PUBLISHED["DARTS"], cell="both", channels=16)
    with pytest.raises(ValueError, match="not made by supernet"):
        darts.arch_of(foreign, {})
    graph = darts.graph_of(PUBLISHED["DARTS"])
    other = darts.graph_of(darts.sample_genotype(0))
    with pytest.raises(PlanError):
        darts.arch_of(graph, nat_keras.TransformPlan.keep_all(other))


# -- one trace, chosen ops only -----------------------------------------------------------


def test_changing_arch_does_not_retrace(small, images):
    traces = []

    @tf.function
    def forward(x, arch):
        traces.append(1)  # runs once per trace, never per call
        return small(x, arch=arch, training=False)

    archs = [small.sample_arch(seed) for seed in range(4)]
    outputs = [forward(images, tf.constant(a)).numpy() for a in archs]
    assert len(traces) == 1
    for arch, output in zip(archs, outputs):
        np.testing.assert_allclose(output, small(images, arch=arch, training=False).numpy(), atol=1e-5)
    assert not all(np.allclose(outputs[0], o) for o in outputs[1:])


def test_loose_end_cells_in_a_traced_call(images):
    loose = built(op_list="enas", num_nodes=3, concat="loose_end")
    forward = tf.function(lambda x, arch: loose(x, arch=arch, training=False))
    for seed in range(2):
        arch = loose.sample_arch(seed)
        np.testing.assert_allclose(
            forward(images, tf.constant(arch)).numpy(),
            loose.extract(arch)(images, training=False).numpy(),
            atol=1e-5,
        )


def _row_pieces(supernet: CellSupernet, arch: np.ndarray) -> set[tuple[str, int, str]]:
    """(layer, row, op) of every edge op the arch runs."""
    chosen = set()
    genotype = supernet.arch_to_genotype(arch)
    for spec in supernet.cell_specs:
        entries, _ = genotype.cell("reduce" if spec.reduction else "normal")
        for position, (op, source) in enumerate(entries):
            node = position // 2
            for g, group in enumerate(spec.groups(node)):
                if group.start <= source < group.start + group.count:
                    layer = supernet.node_ops(spec.index, node, g)
                    chosen.add((layer.name, source - group.start, op))
    return chosen


def test_only_the_chosen_ops_learn_and_move_statistics(darts, images):
    """Eager step: gradients and BN statistics touch the chosen (edge, op) weights only."""
    arch = darts.sample_arch(3)
    chosen = _row_pieces(darts, arch)
    layers = darts.op_layers
    stats_before = {layer.name: layer.moving_mean.numpy().copy() for layer in layers if layer.stats}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(darts(images, arch=arch, training=True)))
    kernels = [layer.kernels for layer in layers if layer.width]
    # None: no chosen op of that layer has weights (eagerly, only the chosen branch exists).
    grads = {
        k.path: np.zeros(k.shape) if g is None else g.numpy()
        for k, g in zip(kernels, tape.gradient(loss, kernels))
    }
    learners = 0
    for layer in layers:
        for op, (pieces, bn_pieces) in layer._layout.entries.items():
            for row in range(layer.count):
                runs = (layer.name, row, op) in chosen
                for piece in pieces:
                    grad = grads[layer.kernels.path][row, piece.offset : piece.offset + piece.size]
                    assert bool(np.any(grad)) == runs, (layer.name, row, op, piece.key)
                    learners += runs
                for piece in bn_pieces:
                    span = slice(piece.offset, piece.offset + piece.size)
                    moved = layer.moving_mean.numpy()[row, span] != stats_before[layer.name][row, span]
                    assert bool(np.all(moved)) == runs and bool(np.any(moved)) == runs
    assert learners > 10
    # Put the statistics back for the other tests (a training pass moved them).
    for layer in layers:
        if layer.stats:
            layer.moving_mean.assign(stats_before[layer.name])


# -- accuracy, training, checkpoints --------------------------------------------------


def test_large_edge_measures_the_supernet_s_weights_of_each_cell_edge(darts):
    """LargeEdge in the cell space: each edge's op, read in every cell of the extracted network."""
    graph = darts.graph_of(PUBLISHED["DARTS"])
    keep = darts.arch_of(graph, nat_keras.TransformPlan.keep_all(graph, space="nat"))
    magnitudes = edge_magnitudes(darts.extract(keep), graph)
    assert set(magnitudes) == {e.id for e in graph.transformable_edges() if "conv" in e.op}
    assert len(set(magnitudes.values())) == len(magnitudes)  # each edge its own weights


def test_accuracy_matches_extracted_model(small):
    x, y = colour_data(40, seed=5)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # the last batch is short
    for seed in range(3):
        arch = small.sample_arch(seed)
        predicted = small.extract(arch)(x, training=False).numpy().argmax(-1)
        expected = float(np.mean(predicted == y))
        assert small.accuracy(arch, (x, y)) == pytest.approx(expected)
        assert small.accuracy(arch, dataset) == pytest.approx(expected)


def test_trainer_lowers_the_loss_under_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        supernet = CellSupernet(**SMALL, num_nodes=2)
    trainer = SupernetTrainer(supernet, strategy=strategy, config=SupernetConfig(learning_rate=0.02))
    x, y = colour_data(256, seed=0)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)
    held_out = colour_data(128, seed=9)
    archs = [supernet.sample_arch(1000 + i) for i in range(4)]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def held_out_loss() -> float:
        return float(np.mean([loss(held_out[1], supernet(held_out[0], arch=a)) for a in archs]))

    before = held_out_loss()
    first = trainer.train(data, steps=15, verbose=0)
    second = trainer.train(data, steps=30, verbose=0)
    assert first["steps_run"] == second["steps_run"] == 15
    assert second["loss"] < first["loss"], (first, second)
    assert held_out_loss() < before
    arch = archs[0]
    predicted = supernet.extract(arch)(held_out[0], training=False).numpy().argmax(-1)
    assert supernet.accuracy(arch, held_out) == pytest.approx(float(np.mean(predicted == held_out[1])))


_TWO_REPLICAS = """
import nat_keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from nat_keras.supernet import CellSupernet
from nat_keras.supernet.trainer import SupernetTrainer
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    supernet = CellSupernet(
        num_cells=3, channels=4, num_nodes=1, input_shape=(8, 8, 3), num_classes=3, op_list="enas"
    )
rng = np.random.default_rng(0)
data = tf.data.Dataset.from_tensor_slices(
    (rng.uniform(size=(64, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 64))
).batch(32)
result = SupernetTrainer(supernet, strategy=strategy).train(data, steps=2, verbose=0)
print("replicas", strategy.num_replicas_in_sync, "steps", result["steps_run"],
      "finite", np.isfinite(result["loss"]))
"""


def test_trainer_runs_on_two_replicas():
    """Two mirrored replicas need a fresh process (logical devices are set before TF starts)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS], capture_output=True, text=True, timeout=300, env=env
    )
    assert "replicas 2 steps 2 finite True" in done.stdout, done.stderr[-3000:]


def test_checkpoint_round_trip(small, images, tmp_path):
    path = tf.train.Checkpoint(supernet=small).write(str(tmp_path / "ckpt"))
    keras.utils.set_random_seed(5)
    fresh = CellSupernet(**SMALL, num_nodes=2)
    tf.train.Checkpoint(supernet=fresh).read(path).assert_existing_objects_matched()
    arch = small.sample_arch(2)
    np.testing.assert_allclose(
        fresh(images, arch=arch, training=False).numpy(),
        small(images, arch=arch, training=False).numpy(),
        atol=1e-6,
    )


def test_options_are_checked():
    with pytest.raises(ValueError, match="op list"):
        CellSupernet(op_list="nasnet")
    with pytest.raises(ValueError, match="concat"):
        CellSupernet(concat="loose")
    with pytest.raises(ValueError, match="even"):
        CellSupernet(channels=5)
    with pytest.raises(ValueError, match="needs 'null'"):
        CellSupernet(op_list=["sep_conv_3x3", "skip_connect"])
