"""Tests for the CIFAR reference networks in `nat_keras.models`."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nat_keras.models import (
    MODELS,
    get_model,
    mobilenet_v2,
    resnet,
    resnet8,
    resnet20,
    resnet56,
    vgg16,
)

NAMES = ("vgg16", "resnet8", "resnet20", "resnet56", "mobilenet_v2")

# count_params() for 10 classes on (32, 32, 3): includes the non-trainable
# BatchNormalization moving statistics.
EXPECTED_PARAMS = {
    "vgg16": 14_732_490,
    "resnet8": 78_714,
    "resnet20": 274_042,
    "resnet56": 860_026,
    "mobilenet_v2": 2_270_794,
}
# Trainable parameters for 10 classes.
EXPECTED_TRAINABLE = {
    "vgg16": 14_724_042,
    "resnet8": 78_042,
    "resnet20": 272_474,
    "resnet56": 855_770,
    "mobilenet_v2": 2_236_682,
}
# The rough sizes quoted for these networks.
NOMINAL_PARAMS = {
    "vgg16": 14.7e6,
    "resnet8": 0.078e6,
    "resnet20": 0.27e6,
    "resnet56": 0.85e6,
    "mobilenet_v2": 2.2e6,
}


def _trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module", params=NAMES)
def named_model(request: pytest.FixtureRequest) -> tuple[str, keras.Model]:
    """Each default model, built once for the module."""
    return request.param, get_model(request.param)


def test_registry() -> None:
    assert set(MODELS) == set(NAMES)
    assert MODELS["vgg16"] is vgg16
    assert MODELS["resnet8"] is resnet8
    assert MODELS["resnet20"] is resnet20
    assert MODELS["resnet56"] is resnet56
    assert MODELS["mobilenet_v2"] is mobilenet_v2


def test_builds_with_cifar_shapes(named_model: tuple[str, keras.Model]) -> None:
    name, model = named_model
    assert isinstance(model, keras.Model)
    assert model.name == name
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)


def test_forward_pass_gives_finite_logits(
    named_model: tuple[str, keras.Model],
) -> None:
    _, model = named_model
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    logits = keras.ops.convert_to_numpy(model(images, training=False))
    assert logits.shape == (2, 10)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


def test_parameter_counts(named_model: tuple[str, keras.Model]) -> None:
    name, model = named_model
    assert model.count_params() == EXPECTED_PARAMS[name]
    trainable = _trainable_count(model)
    assert trainable == EXPECTED_TRAINABLE[name]
    assert abs(trainable - NOMINAL_PARAMS[name]) <= 0.1 * NOMINAL_PARAMS[name]


def test_layer_names_unique_and_standard(
    named_model: tuple[str, keras.Model],
) -> None:
    _, model = named_model
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    assert all(type(layer).__module__.startswith("keras.src.layers") for layer in model.layers)
    assert names[-1] == "logits"
    assert model.layers[-1].get_config()["activation"] == "linear"


def test_all_weights_float32(named_model: tuple[str, keras.Model]) -> None:
    _, model = named_model
    assert {w.dtype for w in model.weights} == {"float32"}


def test_convs_before_batchnorm_have_no_bias(
    named_model: tuple[str, keras.Model],
) -> None:
    _, model = named_model
    convs = [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]
    assert convs
    assert not any(layer.use_bias for layer in convs)


@pytest.mark.parametrize("name", NAMES)
def test_num_classes_and_input_shape_options(name: str) -> None:
    model = get_model(name, input_shape=(64, 64, 1), num_classes=100, name=f"custom_{name}")
    assert model.name == f"custom_{name}"
    assert model.input_shape == (None, 64, 64, 1)
    assert model.output_shape == (None, 100)


@pytest.mark.parametrize("name", NAMES)
def test_weight_decay_regularizes_kernels(name: str) -> None:
    model = get_model(name, weight_decay=5e-4)
    kernels = [
        layer
        for layer in model.layers
        if isinstance(
            layer,
            (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense),
        )
    ]
    assert len(model.losses) == len(kernels)
    assert all(float(keras.ops.convert_to_numpy(loss)) > 0 for loss in model.losses)


def test_no_weight_decay_by_default(named_model: tuple[str, keras.Model]) -> None:
    _, model = named_model
    assert model.losses == []


def test_layer_names_are_deterministic() -> None:
    first = [layer.name for layer in resnet20().layers]
    second = [layer.name for layer in resnet20().layers]
    assert first == second
    assert {
        "stem_conv",
        "stage1_block0_conv1",
        "stage1_block0_bn1",
        "stage1_block0_relu1",
        "stage1_block0_add",
        "stage2_block0_shortcut_conv",
        "stage2_block0_shortcut_bn",
        "stage3_block2_relu2",
        "avg_pool",
        "logits",
    } <= set(first)
    assert "stage1_block0_shortcut_conv" not in first


def test_resnet_shortcuts_and_residual_adds() -> None:
    model = resnet20()
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    projections = [layer for layer in model.layers if "shortcut_conv" in layer.name]
    assert len(adds) == 9
    assert [layer.name for layer in projections] == [
        "stage2_block0_shortcut_conv",
        "stage3_block0_shortcut_conv",
    ]
    assert all(layer.strides == (2, 2) for layer in projections)


def test_mobilenet_v2_residual_blocks() -> None:
    model = mobilenet_v2()
    names = {layer.name for layer in model.layers}
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    # Stride-1 blocks of unchanged width: stages 2 to 6 have 1 + 2 + 3 + 2 + 2.
    assert len(adds) == 10
    assert "stage1_block0_expand_conv" not in names
    assert "stage2_block0_expand_conv" in names
    assert model.get_layer("stage1_block0_dw_relu").max_value == 6.0
    assert model.get_layer("head_conv").filters == 1280


def test_vgg16_has_thirteen_convs() -> None:
    model = vgg16()
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    expected_filters = [64, 64, 128, 128, 256, 256, 256] + [512] * 6
    assert [layer.filters for layer in convs] == expected_filters
    assert len(pools) == 5


@pytest.mark.parametrize("depth", [20, 56])
def test_resnet_depth_matches_named_factories(depth: int) -> None:
    named = {20: resnet20, 56: resnet56}[depth]()
    generic = resnet(depth=depth)
    assert generic.name == f"resnet{depth}"
    assert generic.count_params() == named.count_params()
    assert [layer.name for layer in generic.layers] == [layer.name for layer in named.layers]


def test_resnet_other_depth() -> None:
    model = resnet(depth=8, num_classes=5)
    assert model.name == "resnet8"
    assert model.output_shape == (None, 5)
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 3


@pytest.mark.parametrize("depth", [0, 2, 7, 19, 21, 57, -4, 20.0])
def test_resnet_rejects_invalid_depth(depth: int) -> None:
    with pytest.raises(ValueError, match="6n \\+ 2"):
        resnet(depth=depth)


def test_get_model_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="resnet18") as info:
        get_model("resnet18")
    for name in NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_options_are_keyword_only(name: str) -> None:
    with pytest.raises(TypeError):
        MODELS[name]((32, 32, 3))


# Filters of the first convolution and of the last one before the classifier, at width 0.5.
HALF_WIDTH_FILTERS = {
    "vgg16": ("block1_conv1", 32, "block5_conv3", 256),
    "resnet8": ("stem_conv", 8, "stage3_block0_conv2", 32),
    "resnet20": ("stem_conv", 8, "stage3_block2_conv2", 32),
    "resnet56": ("stem_conv", 8, "stage3_block8_conv2", 32),
    # MobileNetV2 keeps its 1280-channel head below width 1, as keras.applications does.
    "mobilenet_v2": ("stem_conv", 16, "head_conv", 1280),
}


@pytest.mark.parametrize("name", NAMES)
def test_width_scales_the_filters(name: str) -> None:
    first, first_filters, last, last_filters = HALF_WIDTH_FILTERS[name]
    model = get_model(name, width=0.5)
    assert model.get_layer(first).filters == first_filters
    assert model.get_layer(last).filters == last_filters
    assert model.output_shape == (None, 10)
    assert model.count_params() < 0.5 * EXPECTED_PARAMS[name]
    assert get_model(name, width=1.0).count_params() == EXPECTED_PARAMS[name]


def test_width_rounds_channels_to_multiples_of_eight() -> None:
    model = mobilenet_v2(width=0.5)  # 24 * 0.5 = 12 rounds up to 16, not down to 8
    assert model.get_layer("stage2_block0_project_conv").filters == 16
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.filters % 8 == 0 for layer in convs)
    assert resnet20(width=0.1).get_layer("stem_conv").filters == 8  # never below 8


@pytest.mark.parametrize("width", [0, -0.5, "half", True])
def test_width_must_be_positive(width: object) -> None:
    with pytest.raises(ValueError, match="vgg16: width must be a positive number"):
        vgg16(width=width)
