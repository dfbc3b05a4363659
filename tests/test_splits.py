"""nat_keras.data.split: a user's dataset split per example by content, stable under reshuffling."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import nat_keras
from nat_keras.errors import ConfigError

NUM_EXAMPLES = 120


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    images = np.zeros((NUM_EXAMPLES, 4, 4, 1), "float32")
    images[:, 0, 0, 0] = np.arange(NUM_EXAMPLES)
    return images, np.arange(NUM_EXAMPLES) % 3


def _tagged(batch_size: int | None = 8, *, one_hot: bool = False) -> tf.data.Dataset:
    """(image, label) examples whose image carries the example's id in pixel (0, 0), reshuffled each epoch."""
    images, labels = _arrays()
    if one_hot:
        labels = np.eye(3, dtype="float32")[labels]
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    data = data.shuffle(NUM_EXAMPLES, seed=1, reshuffle_each_iteration=True)
    return data if batch_size is None else data.batch(batch_size)


def _ids(dataset: tf.data.Dataset) -> list[int]:
    found = []
    for images, _ in dataset:
        found.extend(np.asarray(images)[..., 0, 0, 0].reshape(-1).astype(int).tolist())
    return found


def _epochs(parts: nat_keras.data.NatSplits, count: int = 3) -> tuple[list[list[int]], list[list[int]]]:
    return [_ids(parts.weights) for _ in range(count)], [_ids(parts.policy) for _ in range(count)]


def test_each_example_is_in_exactly_one_part_in_every_epoch():
    data = _tagged()
    # The dataset itself reshuffles: its order differs between epochs.
    assert _ids(data) != _ids(data)
    weights, policy = _epochs(nat_keras.data.split(data, seed=0))
    for epoch_weights, epoch_policy in zip(weights, policy):
        assert not set(epoch_weights) & set(epoch_policy)
        assert sorted(epoch_weights + epoch_policy) == list(range(NUM_EXAMPLES))  # every id once
    seen_in_weights = set().union(*weights)
    seen_in_policy = set().union(*policy)
    assert not seen_in_weights & seen_in_policy  # across epochs too
    assert 0.2 < len(seen_in_weights) / NUM_EXAMPLES < 0.6  # about weights_fraction=0.4


def test_the_assignment_depends_on_the_seed_only():
    first = set(_ids(nat_keras.data.split(_tagged(), seed=0).weights))
    again = set(_ids(nat_keras.data.split(_tagged(), seed=0).weights))
    other = set(_ids(nat_keras.data.split(_tagged(), seed=1).weights))
    assert first == again
    assert first != other


def test_batches_are_rebatched_with_their_size_and_examples_stay_examples():
    batched = nat_keras.data.split(_tagged(8), seed=0)
    sizes = [int(images.shape[0]) for images, _ in batched.weights]
    assert max(sizes) == 8 and all(size == 8 for size in sizes[:-1])
    static = nat_keras.data.split(
        tf.data.Dataset.from_tensor_slices(_arrays()).batch(8, drop_remainder=True), seed=0
    )
    assert static.weights.element_spec[0].shape[0] == 8  # a static batch size stays static
    examples = nat_keras.data.split(_tagged(None), seed=0)
    assert examples.weights.element_spec[0].shape == (4, 4, 1)
    assert set(_ids(examples.weights.batch(16))) == set(_ids(batched.weights))


def test_unknown_fields_are_none_and_known_ones_are_read_from_the_spec():
    parts = nat_keras.data.split(_tagged(one_hot=True), seed=0)
    assert parts.test is None and parts.num_weights_examples is None and parts.num_train_examples is None
    assert parts.mean is None and parts.config is None
    assert parts.num_classes == 3 and parts.image_shape == (4, 4, 1)
    assert _ids(parts.train) != [] and len(_ids(parts.train)) == NUM_EXAMPLES


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ConfigError, match=r"tf\.data\.Dataset"):
        nat_keras.data.split(np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="weights_fraction"):
        nat_keras.data.split(_tagged(), weights_fraction=1.0)


def test_transform_splits_a_plain_dataset_by_content():
    """transform's weight and reward parts of a reshuffling dataset never share an example."""
    from nat_keras.transform import _split

    weights, rewards, train = _split(_tagged(), seed=0)
    seen_weights = set().union(*(_ids(weights) for _ in range(3)))
    seen_rewards = set().union(*(_ids(rewards) for _ in range(3)))
    assert not seen_weights & seen_rewards
    assert seen_weights | seen_rewards == set(range(NUM_EXAMPLES))
    assert len(_ids(train)) == NUM_EXAMPLES
