"""BN recalibration (nat_keras.supernet.batchnorm) and the rewards measured with it.

The supernets share BN moving statistics across every architecture they
train; rewards recalibrate them per architecture. These tests pin what the
calibration writes (exact batch statistics), what it leaves alone (frozen
BNs, the momentum of later training steps, the shared statistics after
`calibrated`), and that a calibrated supernet measures what the extracted
model measures after the same calibration.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import colour_data, randomize, tiny_resnet  # tests/ is on sys.path

import nat_keras
from nat_keras.search import SupernetEnvironment
from nat_keras.supernet import CellSupernet, ModelSupernet
from nat_keras.supernet.batchnorm import (
    BatchNormCalibration,
    calibration_images,
    recalibrate,
    statistics_layers,
)


def conv_bn_model() -> keras.Model:
    inputs = keras.Input((6, 6, 2), name="image")
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2D(4, 1, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    return keras.Model(inputs, x, name="conv_bn")


@pytest.fixture()
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = conv_bn_model()
    randomize(model.weights, seed=1)
    return model


def images(n: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.0, 2.0, (n, 6, 6, 2)).astype("float32")


def bn_input(model: keras.Model, name: str, x: np.ndarray) -> np.ndarray:
    layer = model.get_layer(name)
    return keras.Model(model.inputs, layer.input)(x, training=False).numpy()


def test_recalibrate_writes_the_exact_batch_statistics(model):
    x = images()
    first = bn_input(model, "bn", x)
    assert recalibrate(model, x) is model
    # bn2 saw bn normalise with the batch's statistics, which bn now holds.
    second = bn_input(model, "bn2", x)
    for name, features in (("bn", first), ("bn2", second)):
        layer = model.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), features.mean(axis=(0, 1, 2)), atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), features.var(axis=(0, 1, 2)), rtol=1e-4)
        assert layer.momentum == 0.99  # restored


def test_inference_after_recalibration_normalises_the_calibration_batch(model):
    x = images()
    recalibrate(model, x)
    out = model(x, training=False).numpy()
    gamma, beta = model.get_layer("bn2").gamma.numpy(), model.get_layer("bn2").beta.numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), beta, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), np.abs(gamma), rtol=1e-2)


def test_frozen_batch_norms_keep_their_statistics(model):
    model.get_layer("bn").trainable = False
    frozen = [
        v.numpy().copy() for v in (model.get_layer("bn").moving_mean, model.get_layer("bn").moving_variance)
    ]
    before = model.get_layer("bn2").moving_mean.numpy().copy()
    recalibrate(model, images())
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), frozen[0])
    np.testing.assert_array_equal(model.get_layer("bn").moving_variance.numpy(), frozen[1])
    assert not np.allclose(model.get_layer("bn2").moving_mean.numpy(), before)


def test_training_steps_keep_their_momentum(model):
    """The calibration step is traced at momentum 0; a training step traced
    before or after it must still move statistics by 1 - momentum."""
    train_step = tf.function(lambda x: model(x, training=True))
    train_step(images(seed=1))  # traced before the calibration
    calibration = BatchNormCalibration(model)
    calibration.calibrate(images(seed=2))
    bn = model.get_layer("bn")
    calibrated = bn.moving_mean.numpy().copy()
    x = images(seed=3)
    batch_mean = bn_input(model, "bn", x).mean(axis=(0, 1, 2))
    train_step(x)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.99 * calibrated + 0.01 * batch_mean, atol=1e-5)
    calibration.calibrate(images(seed=4))  # the calibration function again: still momentum 0
    expected = bn_input(model, "bn", images(seed=4)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected, atol=1e-5)


def test_calibrated_restores_the_shared_statistics(model):
    calibration = BatchNormCalibration(model)
    saved = [v.numpy().copy() for v in calibration.variables]
    x = images()
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    recalibrate(reference, x)
    with calibration.calibrated(x):
        np.testing.assert_allclose(model(x, training=False), reference(x, training=False), atol=1e-5)
    for variable, value in zip(calibration.variables, saved):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_statistics_layers_find_nested_and_packed_batch_norms(model):
    outer = keras.Sequential([keras.Input((6, 6, 2)), model, keras.layers.BatchNormalization(name="top")])
    assert sorted(layer.name for layer in statistics_layers(outer)) == ["bn", "bn2", "top"]
    cells = CellSupernet(num_cells=3, channels=4, num_nodes=2, input_shape=(8, 8, 3), num_classes=3)
    kinds = {type(layer).__name__ for layer in statistics_layers(cells)}
    assert kinds == {"BatchNormalization", "_NodeOps"}


def test_calibration_images_takes_the_first_examples():
    x = np.arange(10, dtype="float32").reshape(10, 1)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(10))).batch(3)
    np.testing.assert_array_equal(calibration_images(dataset, 7), x[:7])
    np.testing.assert_array_equal(calibration_images(dataset, 50), x)
    with pytest.raises(ValueError, match="no examples"):
        calibration_images(dataset.take(0))


def test_unbuilt_batch_norms_are_skipped():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    holder = keras.Sequential([model])
    holder.unbuilt = keras.layers.BatchNormalization()  # tracked, never called
    assert statistics_layers(holder) == []
    BatchNormCalibration(holder).calibrate(np.ones((2, 4), "float32"))  # nothing to do, no error


# -- supernets -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def supernet_and_data():
    keras.utils.set_random_seed(0)
    source = tiny_resnet()
    randomize(source.weights, seed=2)
    supernet = ModelSupernet(source, change_prob=0.5)
    return supernet, colour_data(64, seed=4), colour_data(48, seed=5)


def test_a_calibrated_supernet_measures_what_the_calibrated_extract_measures(supernet_and_data):
    supernet, (calibration, _), (x, y) = supernet_and_data
    shared = [v.numpy().copy() for v in supernet.batch_norm_calibration.variables]
    for seed in range(3):
        arch = supernet.sample_arch(seed)
        extracted = recalibrate(supernet.extract(arch), calibration)
        with supernet.batch_norm_calibration.calibrated(calibration, arch=tf.constant(arch)):
            logits = supernet(x, arch=tf.constant(arch), training=False).numpy()
        np.testing.assert_allclose(logits, extracted(x, training=False).numpy(), atol=1e-4)
        expected = float(np.mean(logits.argmax(-1) == y))
        assert supernet.accuracy(arch, (x, y), calibration=calibration) == pytest.approx(expected)
    for variable, value in zip(supernet.batch_norm_calibration.variables, shared):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_a_calibrated_cell_supernet_matches_its_calibrated_extract():
    keras.utils.set_random_seed(0)
    supernet = CellSupernet(num_cells=3, channels=4, num_nodes=2, input_shape=(8, 8, 3), num_classes=3)
    calibration, _ = colour_data(256, seed=6)
    x, _ = colour_data(16, seed=7)
    arch = supernet.sample_arch(3)
    extracted = recalibrate(supernet.extract(arch), calibration)
    with supernet.batch_norm_calibration.calibrated(calibration, arch=tf.constant(arch)):
        logits = supernet(x, arch=tf.constant(arch), training=False).numpy()
    # The cell supernet's BNs keep the unbiased batch variance (as PyTorch's
    # do), Keras' the biased one: n / (n - 1) apart, n = 256 * 2 * 2 after two reductions.
    np.testing.assert_allclose(logits, extracted(x, training=False).numpy(), atol=5e-3)


def test_environment_rewards_use_calibration(supernet_and_data):
    supernet, (x, y), (held_x, held_y) = supernet_and_data
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    held_out = tf.data.Dataset.from_tensor_slices((held_x, held_y)).batch(48)
    graph = supernet.graph
    plan = nat_keras.sample_random_plan(graph, 0, change_prob=0.5)
    calibrated = SupernetEnvironment(supernet, weights_data=data, reward_data=held_out, calibration_size=40)
    shared = SupernetEnvironment(supernet, weights_data=data, reward_data=held_out, calibration_size=0)
    np.testing.assert_array_equal(calibrated.calibration, x[:40])
    assert shared.calibration is None
    arch = supernet.plan_to_arch(plan)
    assert calibrated.score(graph, plan) == pytest.approx(
        supernet.accuracy(arch, (held_x, held_y), calibration=x[:40])
    )
    assert shared.score(graph, plan) == pytest.approx(supernet.accuracy(arch, (held_x, held_y)))
