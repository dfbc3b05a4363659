"""The user's loss and labels: compiled losses, softmax / sigmoid outputs, sparse or one-hot labels."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import nat_keras
from nat_keras.objective import objective_of
from nat_keras.policy import Policy, ReinforceConfig
from nat_keras.search import SearchConfig
from nat_keras.supernet import ModelSupernet
from nat_keras.supernet.trainer import SupernetConfig, SupernetTrainer

TINY_SEARCH = SearchConfig(epochs=1, weight_steps=2, policy_steps=1, reinforce=ReinforceConfig(num_samples=2))
CLASSES = 3


def _classifier(activation: str | None, *, units: int = CLASSES, name: str = "classifier") -> keras.Model:
    """A small conv net without BN (so a training-mode step changes no statistics)."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation, name="head")(x), name=name)


def _examples(count: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(count, 8, 8, 3)).astype("float32"), rng.integers(0, CLASSES, count)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(CLASSES, dtype="float32")[labels]


def test_a_compiled_softmax_model_with_one_hot_labels_is_transformed():
    """The Keras tutorial model: softmax, categorical_crossentropy, one-hot labels."""
    model = _classifier("softmax", name="tutorial")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    images, labels = _examples()
    data = tf.data.Dataset.from_tensor_slices((images, _one_hot(labels))).batch(16)
    new = nat_keras.transform(
        model, data=data, policy=Policy(seed=0), search_config=TINY_SEARCH, num_candidates=2,
        fine_tune_epochs=1, verbose=0,
    )  # fmt: skip
    assert new.nat_report.accuracy_before is not None
    assert new(images[:4]).shape == (4, CLASSES)
    # Fine-tuned with the source's loss and a fresh optimizer of its class and settings.
    assert new.loss is keras.losses.get("categorical_crossentropy")
    assert isinstance(new.optimizer, keras.optimizers.Adam) and new.optimizer is not model.optimizer
    assert float(new.optimizer.learning_rate) == pytest.approx(1e-3)


def test_an_uncompiled_softmax_model_is_trained_on_probabilities():
    model = _classifier("softmax")
    supernet = ModelSupernet(model)
    trainer = SupernetTrainer(supernet, config=SupernetConfig(learning_rate=0.0, weight_decay=0.0))
    assert trainer.objective.from_logits is False and "probabilities" in trainer.objective.description
    images, labels = _examples(16)
    # A numpy copy: plain probabilities, without the logits Keras attaches to a softmax's output.
    probabilities = np.asarray(supernet(images, arch=trainer.arch_for_step(0), training=True))
    expected = -np.log(probabilities[np.arange(len(labels)), labels])
    np.testing.assert_allclose(trainer.objective.per_example_loss(labels, probabilities), expected, rtol=1e-5)
    result = trainer.train(tf.data.Dataset.from_tensors((images, labels)), steps=1, verbose=0)
    assert result["loss"] == pytest.approx(float(np.mean(expected)), rel=1e-4)


def test_sparse_and_one_hot_labels_score_the_same():
    supernet = ModelSupernet(_classifier(None))
    arch = supernet.sample_arch(seed=0)
    images, labels = _examples()
    sparse = supernet.accuracy(arch, (images, labels))
    assert supernet.accuracy(arch, (images, labels[:, None])) == sparse
    assert supernet.accuracy(arch, (images, _one_hot(labels))) == sparse
    predicted = np.argmax(supernet(images, arch=arch, training=False), axis=-1)
    assert sparse == pytest.approx(float(np.mean(predicted == labels)))
    objective = supernet.objective
    outputs = supernet(images, arch=arch, training=False)
    np.testing.assert_allclose(
        objective.per_example_loss(labels, outputs),
        objective.per_example_loss(_one_hot(labels), outputs),
        rtol=1e-6,
    )


def test_a_sigmoid_unit_scores_by_threshold_with_either_label_shape():
    model = _classifier("sigmoid", units=1, name="binary")
    objective = objective_of(model)
    assert objective.task == "binary" and objective.from_logits is False
    probabilities = tf.constant([[0.9], [0.2], [0.6], [0.4]])
    labels = np.array([1, 0, 0, 0])
    assert float(objective.correct(labels, probabilities)) == 3.0
    assert float(objective.correct(labels[:, None], probabilities)) == 3.0
    expected = keras.losses.binary_crossentropy(labels[:, None].astype("float32"), probabilities)
    np.testing.assert_allclose(objective.per_example_loss(labels, probabilities), expected, rtol=1e-6)


def test_a_compiled_sparse_loss_takes_one_hot_labels_too():
    model = _classifier(None)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    objective = objective_of(model)
    assert objective.compiled and objective.from_logits
    logits = tf.constant([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])
    labels = np.array([0, 1])
    np.testing.assert_allclose(
        objective.per_example_loss(_one_hot(labels), logits),
        objective.per_example_loss(labels, logits),
        rtol=1e-6,
    )
    assert float(objective.correct(_one_hot(labels), logits)) == 1.0


def test_a_regression_model_is_a_clear_error_naming_it():
    model = _classifier(None, units=1, name="house_prices")
    images, _ = _examples(16)
    data = tf.data.Dataset.from_tensor_slices((images, np.zeros(16, "float32"))).batch(8)
    with pytest.raises(
        nat_keras.UnsupportedModelError, match=r"'house_prices'.*Compile the model with its loss"
    ):
        nat_keras.transform(model, data=data, policy=Policy(seed=0), search_config=TINY_SEARCH, verbose=0)


def test_an_output_that_is_no_classifier_is_a_clear_error():
    inputs = keras.Input((8, 8, 3))
    dense_map = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="per_pixel")(inputs), name="segmenter")
    with pytest.raises(nat_keras.UnsupportedModelError, match=r"'segmenter'.*not a classifier"):
        objective_of(dense_map)
