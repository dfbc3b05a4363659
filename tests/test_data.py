"""Tests of nat_keras.data: digits offline, TFDS through tfds.testing.mock_data, fail-fast."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import nat_keras
from nat_keras import data

BATCH = 32


def _collect(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of one epoch, concatenated."""
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def _fingerprints(images: np.ndarray) -> set[bytes]:
    """One key per image; equal images give equal keys."""
    return {image.tobytes() for image in images}


@pytest.fixture(scope="module")
def digits_plain() -> data.NatSplits:
    """Digits without augmentation, so that an example looks the same in every part."""
    return data.load_splits("digits", batch_size=BATCH, augment=False)


# ---------------------------------------------------------------- digits


def test_digits_batches_have_the_pipeline_shape(digits_plain):
    assert digits_plain.image_shape == (32, 32, 3)
    assert digits_plain.num_classes == 10
    for part in (digits_plain.weights, digits_plain.policy, digits_plain.test, digits_plain.train):
        images, labels = next(iter(part))
        assert images.shape == (BATCH, 32, 32, 3)
        assert images.dtype == tf.float32
        assert labels.shape == (BATCH,)
        assert labels.dtype == tf.int32


def test_digits_labels_cover_all_ten_classes(digits_plain):
    _, labels = _collect(digits_plain.train)
    assert sorted(set(labels.tolist())) == list(range(10))


def test_digits_weight_and_policy_partition_the_train_split(digits_plain):
    weights, _ = _collect(digits_plain.weights)
    policy, _ = _collect(digits_plain.policy)
    train, _ = _collect(digits_plain.train)
    test, _ = _collect(digits_plain.test)
    num_train = len(train)
    assert (len(weights), len(policy), len(test)) == (
        digits_plain.num_weights_examples,
        digits_plain.num_policy_examples,
        digits_plain.num_test_examples,
    )
    assert abs(len(weights) - 0.4 * num_train) <= 1
    assert abs(len(policy) - 0.6 * num_train) <= 1
    assert num_train + len(test) == 1797
    # scikit-learn's 1,797 digits are all different images, so sets identify examples.
    assert not _fingerprints(weights) & _fingerprints(policy)
    assert _fingerprints(weights) | _fingerprints(policy) == _fingerprints(train)
    assert not _fingerprints(test) & _fingerprints(train)


def test_digits_are_deterministic_for_a_seed_and_differ_across_seeds():
    first = data.load_splits("digits", batch_size=BATCH, seed=3)
    again = data.load_splits("digits", batch_size=BATCH, seed=3)
    other = data.load_splits("digits", batch_size=BATCH, seed=4)
    for part in ("weights", "policy"):
        images_a, labels_a = next(iter(getattr(first, part)))
        images_b, labels_b = next(iter(getattr(again, part)))
        np.testing.assert_array_equal(images_a, images_b)
        np.testing.assert_array_equal(labels_a, labels_b)
    policy_3 = _fingerprints(_collect(data.load_splits("digits", seed=3, augment=False).policy)[0])
    policy_4 = _fingerprints(_collect(data.load_splits("digits", seed=4, augment=False).policy)[0])
    assert policy_3 != policy_4
    assert first.num_weights_examples == other.num_weights_examples


def test_batches_do_not_depend_on_a_global_seed_set_earlier_in_the_process():
    # A benchmark process sets the global seed whenever it trains; the data of
    # a row must not depend on which row ran before it.
    def first_batches(global_seed: int | None) -> list[np.ndarray]:
        if global_seed is not None:
            tf.random.set_seed(global_seed)
        splits = data.load_splits("digits", batch_size=BATCH, seed=3)
        return [x.numpy() for part in (splits.train, splits.weights) for x, _ in part.take(1)]

    fresh, after_1, after_2 = first_batches(None), first_batches(1), first_batches(2)
    for batches in (after_1, after_2):
        for expected, actual in zip(fresh, batches):
            np.testing.assert_array_equal(expected, actual)


def test_train_examples_takes_a_seeded_subset_and_leaves_the_test_split_whole():
    full = data.load_splits("digits", augment=False)
    small = data.load_splits("digits", augment=False, train_examples=300)
    assert (small.num_weights_examples, small.num_policy_examples) == (120, 180)
    train = _fingerprints(_collect(small.train)[0])
    assert len(train) == 300 and train < _fingerprints(_collect(full.train)[0])
    weights, policy = (_fingerprints(_collect(getattr(small, p))[0]) for p in ("weights", "policy"))
    assert not weights & policy and weights | policy == train
    assert small.num_test_examples == full.num_test_examples
    again = data.load_splits("digits", augment=False, train_examples=300)
    other = data.load_splits("digits", augment=False, train_examples=300, seed=1)
    assert _fingerprints(_collect(again.train)[0]) == train != _fingerprints(_collect(other.train)[0])


def test_tfds_train_examples_takes_the_first_examples():
    with mocked_tfds():
        splits = data.load_splits("cifar10", batch_size=4, augment=False, train_examples=10)
        train, _ = _collect(splits.train)
    assert len(train) == 10 and splits.num_weights_examples + splits.num_policy_examples == 10


def test_digits_test_split_does_not_depend_on_the_seed():
    test_a, _ = _collect(data.load_splits("digits", seed=0).test)
    test_b, _ = _collect(data.load_splits("digits", seed=7).test)
    np.testing.assert_array_equal(test_a, test_b)


def test_digits_normalisation_gives_zero_mean_unit_std_on_train(digits_plain):
    images, _ = _collect(digits_plain.train)
    assert abs(images.mean()) < 1e-3
    assert abs(images.std() - 1.0) < 1e-3
    unnormalised, _ = _collect(data.load_splits("digits", augment=False, normalize=False).train)
    assert unnormalised.min() >= 0.0 and unnormalised.max() <= 1.0


def test_augmentation_changes_images_but_not_shapes_or_order():
    # Fresh loads: each pass over a shuffled dataset is a new epoch, in a new order.
    plain = data.load_splits("digits", batch_size=BATCH, augment=False)
    augmented = data.load_splits("digits", batch_size=BATCH)
    plain_images, plain_labels = next(iter(plain.weights))
    images, labels = next(iter(augmented.weights))
    assert images.shape == plain_images.shape
    # Shuffling does not depend on augmentation: the same examples, changed.
    np.testing.assert_array_equal(labels, plain_labels)
    changed = np.any(images.numpy() != plain_images.numpy(), axis=(1, 2, 3))
    assert changed.mean() > 0.5


def test_policy_and_test_parts_are_not_augmented():
    def first_images(part: str, **options) -> np.ndarray:
        return next(iter(getattr(data.load_splits("digits", batch_size=BATCH, **options), part)))[0].numpy()

    for part in ("policy", "test"):
        np.testing.assert_array_equal(first_images(part), first_images(part, augment=False))
    assert np.any(first_images("policy", augment_policy=True) != first_images("policy"))


def test_augmentation_epochs_differ():
    splits = data.load_splits("digits", batch_size=BATCH, shuffle_buffer=1)  # Same order each epoch.
    epoch_1 = next(iter(splits.weights))[0]
    epoch_2 = next(iter(splits.weights))[0]
    assert np.any(epoch_1.numpy() != epoch_2.numpy())


def _zero_box(image: np.ndarray) -> tuple[int, int]:
    """Height and width of the zeroed square; asserts zeros fill exactly that box."""
    zero = np.all(image == 0.0, axis=-1)
    rows, cols = np.nonzero(zero)
    assert rows.size, "no zeroed pixel"
    box = zero[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert box.all() and zero.sum() == box.size, "the zeros are not one filled rectangle"
    return box.shape


@pytest.mark.parametrize("seed", [(0, 0), (1, 2), (5, 9), (123, 4)])
def test_cutout_zeroes_one_clipped_square(seed):
    out = data.cutout(tf.ones([32, 32, 3]), length=16, seed=tf.constant(seed)).numpy()
    height, width = _zero_box(out)
    assert 8 <= height <= 16 and 8 <= width <= 16
    np.testing.assert_array_equal(data.cutout(tf.ones([8, 8, 3]), length=0, seed=tf.constant(seed)), 1.0)


def test_cutout_in_the_pipeline():
    images, _ = next(iter(data.load_splits("digits", batch_size=8, cutout=16).weights))
    for image in images.numpy():
        height, width = _zero_box(image)
        assert 8 <= height <= 16 and 8 <= width <= 16
    plain, _ = next(iter(data.load_splits("digits", batch_size=8).weights))
    assert not np.any(np.all(plain.numpy() == 0.0, axis=-1))


def test_pad_and_random_crop_shifts_content():
    image = tf.reshape(tf.range(8 * 8 * 3, dtype=tf.float32) + 1.0, [8, 8, 3])
    shifted = [data.pad_and_random_crop(image, padding=4, seed=tf.constant([s, 0])) for s in range(8)]
    assert all(out.shape == (8, 8, 3) for out in shifted)
    assert any(np.any(out.numpy() != image.numpy()) for out in shifted)
    assert data.pad_and_random_crop(image, padding=0, seed=tf.constant([0, 0])) is image


def test_digits_images_resize_to_the_configured_size():
    splits = data.load_splits("digits", image_size=16, batch_size=4)
    assert splits.image_shape == (16, 16, 3)
    assert next(iter(splits.weights))[0].shape == (4, 16, 16, 3)


def test_digits_can_stay_grey():
    splits = data.load_splits("digits", channels=1, batch_size=4, augment=False)
    images, _ = next(iter(splits.weights))
    assert splits.image_shape == (32, 32, 1) and images.shape == (4, 32, 32, 1)
    assert len(splits.mean) == len(splits.std) == 1


def test_digits_feed_resnet20():
    images, _ = next(iter(data.load_splits("digits", batch_size=4).weights))
    model = nat_keras.models.resnet20(num_classes=10)
    assert tuple(model(images).shape) == (4, 10)


# ---------------------------------------------------------------- config and names


def test_datasets_lists_the_supported_names_with_their_defaults():
    assert set(data.DATASETS) == {"digits", "cifar10", "cifar100", "fashion_mnist", "imagenet2012"}
    assert data.DATASETS["cifar100"].num_classes == 100
    assert data.DATASETS["imagenet2012"].image_shape == (224, 224, 3)
    assert data.DATASETS["digits"].flip is False and data.DATASETS["cifar10"].flip is True
    assert data.DATASETS["fashion_mnist"].flip is True  # Mirrored clothes are still clothes.
    assert data.DATASETS["fashion_mnist"].image_shape == (32, 32, 3)


def test_unknown_dataset_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"mnist.*cifar10, cifar100, digits, fashion_mnist, imagenet2012"):
        data.load_splits("mnist")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match=r"batchsize.*batch_size"):
        data.load_splits("digits", batchsize=3)


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"weight_fraction": 1.0},
        {"weight_fraction": 0.0},
        {"cutout": -1},
        {"image_size": 0},
        {"train_examples": 0},
        {"channels": 2},
        {"channels": True},
        {"channels": 1, "name": "cifar10"},
    ],
)
def test_invalid_option_values_are_rejected(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        data.DataConfig(**options)


def test_config_round_trips_through_json():
    config = data.DataConfig(name="cifar100", data_dir="/tmp/tfds", cutout=16, seed=5, flip=False)
    assert data.DataConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    grey = data.DataConfig(name="fashion_mnist", image_size=28, channels=1)
    assert data.DataConfig.from_dict(json.loads(json.dumps(grey.to_dict()))) == grey
    # A dict saved before `channels` existed still loads, with the dataset's default.
    old = {key: value for key, value in config.to_dict().items() if key != "channels"}
    assert data.DataConfig.from_dict(old).resolved_channels == 3


def test_config_resolves_dataset_defaults():
    assert data.DataConfig(name="digits").resolved_flip is False
    assert data.DataConfig(name="cifar10").resolved_flip is True
    assert data.DataConfig(name="digits", flip=True).resolved_flip is True
    assert data.DataConfig(name="imagenet2012").resolved_image_size == 224
    assert data.DataConfig(name="imagenet2012").resolved_cache is False


def test_options_override_a_config():
    config = data.DataConfig(batch_size=16, seed=2)
    splits = data.load_splits(config=config, batch_size=8)
    assert splits.config == data.DataConfig(batch_size=8, seed=2)


@pytest.mark.parametrize("num_examples", [2, 10, 1437, 50_000])
@pytest.mark.parametrize("fraction", [0.1, 0.4, 0.9])
def test_weight_mask_sizes(num_examples, fraction):
    mask = data.weight_mask(num_examples, weight_fraction=fraction, seed=0)
    assert abs(mask.sum() - fraction * num_examples) <= 1
    assert 1 <= mask.sum() <= num_examples - 1
    np.testing.assert_array_equal(mask, data.weight_mask(num_examples, weight_fraction=fraction, seed=0))


# ---------------------------------------------------------------- TFDS, mocked

NUM_MOCK_EXAMPLES = 20


@contextlib.contextmanager
def mocked_tfds(*, prepared: bool = True) -> Iterator[None]:
    """Fake TFDS data built from the dataset's code (no files, no network).

    mock_data serves `NUM_MOCK_EXAMPLES` random examples for every split and
    makes `download_and_prepare` a no-op; `prepared` also makes the builders
    say their files are there, as after `tfds build`.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE)
        )
        if prepared:
            stack.enter_context(mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True))
        yield


@pytest.mark.parametrize(("name", "num_classes"), [("cifar10", 10), ("cifar100", 100)])
def test_tfds_cifar_pipeline(name, num_classes):
    with mocked_tfds():
        splits = data.load_splits(name, batch_size=4, augment=False)
        weights, weight_labels = _collect(splits.weights)
        policy, policy_labels = _collect(splits.policy)
        train, _ = _collect(splits.train)
        test, test_labels = _collect(splits.test)
        batch_sizes = [int(labels.shape[0]) for _, labels in splits.weights]
    assert splits.num_classes == num_classes and splits.image_shape == (32, 32, 3)
    assert (splits.num_weights_examples, splits.num_policy_examples) == (8, 12)
    assert (len(weights), len(policy), len(train), len(test)) == (8, 12, 20, 20)
    assert batch_sizes == [4, 4]
    assert weights.dtype == np.float32 and weights.shape[1:] == (32, 32, 3)
    for labels in (weight_labels, policy_labels, test_labels):
        assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < num_classes
    assert not _fingerprints(weights) & _fingerprints(policy)
    assert _fingerprints(weights) | _fingerprints(policy) == _fingerprints(train)


def test_tfds_split_is_deterministic_and_seeded():
    def policy_fingerprints(seed: int) -> set[bytes]:
        with mocked_tfds():
            return _fingerprints(_collect(data.load_splits("cifar10", seed=seed, augment=False).policy)[0])

    assert policy_fingerprints(0) == policy_fingerprints(0)
    assert policy_fingerprints(0) != policy_fingerprints(1)


def test_tfds_augmented_cifar_with_cutout_and_static_batches():
    with mocked_tfds():
        splits = data.load_splits("cifar10", batch_size=4, cutout=16, drop_remainder=True)
        batches = list(splits.weights)
    assert [tuple(images.shape) for images, _ in batches] == [(4, 32, 32, 3)] * 2
    assert splits.weights.element_spec[0].shape == (4, 32, 32, 3)
    for image in batches[0][0].numpy():
        _zero_box(image)


def test_tfds_imagenet_pipeline():
    with mocked_tfds():
        splits = data.load_splits("imagenet2012", batch_size=4, image_size=64)
        weights, weight_labels = next(iter(splits.weights))
        test, test_labels = _collect(splits.test)
    assert splits.image_shape == (64, 64, 3)
    assert weights.shape == (4, 64, 64, 3) and weights.dtype == tf.float32
    assert test.shape == (20, 64, 64, 3)
    assert int(tf.reduce_min(weight_labels)) >= 0 and int(tf.reduce_max(weight_labels)) < 1000
    assert test_labels.max() < 1000


def test_download_true_prepares_through_tfds(tmp_path):
    with (
        mocked_tfds(prepared=False),
        mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare") as download_and_prepare,
    ):
        splits = data.load_splits("cifar10", data_dir=str(tmp_path), download=True, batch_size=4)
        next(iter(splits.weights))
    download_and_prepare.assert_called_once()


# ---------------------------------------------------------------- TFDS, real files


def _tiny_images(num_examples: int, *, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_examples, 32, 32, 3), dtype=np.uint8)


class NatKerasTestImages(tfds.core.GeneratorBasedBuilder):
    """A tiny CIFAR-like TFDS dataset generated locally, to read real TFRecord files."""

    VERSION = tfds.core.Version("1.0.0")
    NUM_TRAIN = 50
    NUM_TEST = 10

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(32, 32, 3)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(self.NUM_TRAIN, seed=0),
            "test": self._generate_examples(self.NUM_TEST, seed=1),
        }

    def _generate_examples(self, num_examples: int, seed: int):
        for index, image in enumerate(_tiny_images(num_examples, seed=seed)):
            yield index, {"image": image, "label": index % 10}


@pytest.fixture
def prepared_data_dir(tmp_path) -> Iterator[str]:
    """A data_dir with NatKerasTestImages prepared, registered as dataset "tiny" during the test."""
    data_dir = str(tmp_path)
    NatKerasTestImages(data_dir=data_dir).download_and_prepare()
    spec = data.DatasetSpec(
        name="tiny",
        source="tfds",
        num_classes=10,
        image_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        tfds_name="nat_keras_test_images",
    )
    with mock.patch.dict(data.DATASETS, {"tiny": spec}):
        yield data_dir


def test_prepared_tfds_files_are_read_split_and_decoded(prepared_data_dir, no_download):
    def load(**options) -> data.NatSplits:
        return data.load_splits("tiny", data_dir=prepared_data_dir, batch_size=8, augment=False, **options)

    splits = load(normalize=False)
    weights, _ = _collect(splits.weights)
    policy, _ = _collect(splits.policy)
    test, _ = _collect(splits.test)
    assert (len(weights), len(policy), len(test)) == (20, 30, 10)
    expected_train = _fingerprints(_tiny_images(NatKerasTestImages.NUM_TRAIN, seed=0).astype(np.float32))
    assert (
        _fingerprints(np.round(weights * 255.0)) | _fingerprints(np.round(policy * 255.0)) == expected_train
    )
    assert not _fingerprints(weights) & _fingerprints(policy)
    # The file order is fixed, so the same seed selects the same examples on every load.
    assert _fingerprints(_collect(load(normalize=False).policy)[0]) == _fingerprints(policy)
    normalised, _ = _collect(load().test)
    np.testing.assert_allclose(normalised, (test - 0.5) / 0.25, atol=1e-5)
    no_download.assert_not_called()


# ---------------------------------------------------------------- TFDS, not prepared


@pytest.fixture
def no_download():
    """Turns any download attempt into a test failure instead of minutes of retries."""
    with mock.patch.object(
        tfds.core.DatasetBuilder, "download_and_prepare", side_effect=AssertionError("tried to download")
    ) as download_and_prepare:
        yield download_and_prepare


def test_unprepared_cifar10_fails_fast_with_the_build_command(tmp_path, no_download):
    start = time.monotonic()
    with pytest.raises(data.DatasetNotPreparedError) as raised:
        data.load_splits("cifar10", data_dir=str(tmp_path))
    elapsed = time.monotonic() - start
    message = str(raised.value)
    assert elapsed < 10, f"took {elapsed:.1f} s"  # A guard against network retries (minutes).
    assert f"tfds build cifar10 --data_dir={tmp_path}" in message
    assert "download=True" in message and "digits" in message
    assert isinstance(raised.value, nat_keras.NatKerasError)
    no_download.assert_not_called()


def test_unprepared_imagenet_says_where_the_manual_files_go(tmp_path, no_download):
    with pytest.raises(data.DatasetNotPreparedError) as raised:
        data.load_splits("imagenet2012", data_dir=str(tmp_path))
    message = str(raised.value)
    manual_dir = str(tmp_path / "downloads" / "manual")
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert manual_dir in message
    assert f"tfds build imagenet2012 --data_dir={tmp_path} --manual_dir={manual_dir}" in message
    no_download.assert_not_called()


def test_imagenet_download_without_manual_files_fails_before_tfds(tmp_path, no_download):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    (manual_dir / "ILSVRC2012_img_train.tar").touch()
    with pytest.raises(data.DatasetNotPreparedError) as raised:
        data.load_splits("imagenet2012", data_dir=str(tmp_path), download=True, manual_dir=str(manual_dir))
    message = str(raised.value)
    assert "download=True cannot prepare it" in message
    assert f"manual directory {manual_dir}: ILSVRC2012_img_val.tar." in message
    assert "download=False" not in message
    no_download.assert_not_called()
