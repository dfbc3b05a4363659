"""Test set-up (nat_keras first, quiet TF logs) and the small models the test files share.

The model builders are plain functions: a test file imports them with
`from conftest import conv_chain, ...` (pytest puts tests/ on sys.path, with
or without xdist). Each builds a fresh, small Keras 3 model, so tests that
change weights or layers cannot leak into each other.
"""

import importlib
import os
import pathlib
import socket
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nat_keras  # must come before anything touches tf.keras

# isort: split
import keras
import numpy as np

# The supernet tests' image size and classes (one class per colour channel).
TINY_IMAGE_SHAPE = (8, 8, 3)
TINY_NUM_CLASSES = 3


# -- chains and residual nets --------------------------------------------------


def conv_chain(name: str = "chain") -> keras.Model:
    """input -> stem conv -> c1 -> c2 -> GAP -> dense: every node has one regular input."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    x = keras.layers.BatchNormalization(name="c1_bn")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x), name=name)


def residual_model(name: str = "residual") -> keras.Model:
    """A stem and one residual block with an identity shortcut."""
    inputs = keras.Input((8, 8, 3), name="image")
    stem = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="block_conv1")(stem)
    x = keras.layers.BatchNormalization(name="block_bn1")(x)
    x = keras.layers.ReLU(name="block_relu1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="block_conv2")(x)
    x = keras.layers.Add(name="block_add")([x, stem])
    x = keras.layers.ReLU(name="block_relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name=name)


def small_resnet(name: str | None = None) -> keras.Model:
    """nat_keras's ResNet-8 on 16 x 16 x 3 images (the digits' size)."""
    return nat_keras.models.resnet(depth=8, input_shape=(16, 16, 3), name=name)


def _conv_bn_relu(x, filters: int, name: str, *, strides: int = 1, relu: bool = True):
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(
        x
    )
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _residual_block(x, name: str):
    y = _conv_bn_relu(x, 8, f"{name}_a")
    y = _conv_bn_relu(y, 8, f"{name}_b", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([x, y])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def tiny_resnet() -> keras.Model:
    """Stem conv, two residual blocks of 8 channels, a stride-2 conv, GAP + Dense (8 x 8 x 3 in)."""
    inputs = keras.Input(TINY_IMAGE_SHAPE, name="image")
    x = _conv_bn_relu(inputs, 8, "stem")
    for block in range(2):
        x = _residual_block(x, f"block{block}")
    x = _conv_bn_relu(x, 16, "down", strides=2)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(TINY_NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_resnet")


def tiny_concat() -> keras.Model:
    """Stem, one residual block, a concat of a 1x1 and a 3x3 conv (4 channels
    each), a 3x3 conv, a stride-2 conv, GAP + Dense.

    The encoder adds a placeholder edge across the concat node (block output
    -> the conv after the concat), and the 3x3 conv into the concat can only
    skip through a projection (8 -> 4 channels).
    """
    inputs = keras.Input(TINY_IMAGE_SHAPE, name="image")
    x = _conv_bn_relu(inputs, 8, "stem")
    x = _residual_block(x, "block0")
    left = keras.layers.Conv2D(4, 1, name="cat_left")(x)
    right = keras.layers.Conv2D(4, 3, padding="same", name="cat_right")(x)
    x = keras.layers.Concatenate(name="cat")([left, right])
    x = _conv_bn_relu(x, 8, "post_cat")
    x = _conv_bn_relu(x, 16, "down", strides=2)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(TINY_NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_concat")


# -- nested models -------------------------------------------------------------


def nested_model() -> keras.Model:
    """A functional residual block and a Sequential block, each used once, inside a functional model."""
    block_in = keras.Input((8, 8, 8))
    y = keras.layers.Conv2D(8, 3, padding="same", name="res_conv1")(block_in)
    y = keras.layers.BatchNormalization(name="res_bn1")(y)
    y = keras.layers.ReLU(name="res_relu1")(y)
    y = keras.layers.Conv2D(8, 3, padding="same", name="res_conv2")(y)
    y = keras.layers.Add(name="res_add")([y, block_in])
    res_block = keras.Model(block_in, y, name="res_block")
    seq_block = keras.Sequential(
        [
            keras.Input((8, 8, 8)),
            keras.layers.SeparableConv2D(8, 5, padding="same", name="seq_sep"),
            keras.layers.BatchNormalization(name="seq_bn"),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", name="seq_conv"),
        ],
        name="seq_block",
    )
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = res_block(x)
    x = seq_block(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="after")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x), name="nested")


# -- several inputs / outputs --------------------------------------------------


def _two_io_body(image: keras.KerasTensor, aux: keras.KerasTensor) -> tuple[keras.KerasTensor, ...]:
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(image)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    x = keras.layers.BatchNormalization(name="c1_bn")(x)
    x = keras.layers.ReLU(name="c1_relu")(x)
    x = keras.layers.Conv2D(8, 5, padding="same", name="c2")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c3")(x)
    features = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    side = keras.layers.Dense(8, name="aux_dense")(aux)
    joint = keras.layers.Concatenate(name="joint")([features, side])
    return keras.layers.Dense(3, name="cls")(joint), keras.layers.Dense(1, name="reg")(features)


def two_io_dict_model() -> keras.Model:
    """Two inputs (an image and an aux vector, concatenated late) and two outputs, both as dicts."""
    image, aux = keras.Input((8, 8, 3), name="image"), keras.Input((5,), name="aux")
    cls, reg = _two_io_body(image, aux)
    return keras.Model({"image": image, "aux": aux}, {"cls": cls, "reg": reg}, name="two_io_dict")


def two_io_list_model() -> keras.Model:
    """The model of `two_io_dict_model` with its inputs and outputs as lists."""
    image, aux = keras.Input((8, 8, 3), name="image"), keras.Input((5,), name="aux")
    cls, reg = _two_io_body(image, aux)
    return keras.Model([image, aux], [cls, reg], name="two_io_list")


def two_input_classifier() -> keras.Model:
    """A dict of two inputs (image, aux), a residual sum, a concat, one output of 3 logits."""
    image, aux = keras.Input((8, 8, 3), name="image"), keras.Input((5,), name="aux")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(image)
    y = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    y = keras.layers.BatchNormalization(name="c1_bn")(y)
    y = keras.layers.Conv2D(8, 3, padding="same", name="c2")(y)
    x = keras.layers.Add(name="add")([x, y])
    features = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    joint = keras.layers.Concatenate(name="joint")([features, keras.layers.Dense(8, name="aux_dense")(aux)])
    return keras.Model({"image": image, "aux": aux}, keras.layers.Dense(3, name="cls")(joint), name="two_in")


# -- helpers -------------------------------------------------------------------


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of `model`, nested models opened (each nested model listed too)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(all_layers(layer))
    return found


def policy_off_keep(space: str = "nat++", seed: int = 0):
    """A fresh `Policy` whose greedy plan changes every edge that has another legal action.

    Its keep logit is pushed down (bias -5 on the network's "keep" output,
    no keep prior), so greedy decoding takes each edge's best other action:
    `transform(model, policy=...)` then really transforms (the shipped policy
    keeps every edge, and a random fresh one may too).
    """

    from nat_keras import ops
    from nat_keras.policy import Policy

    policy = Policy(space=space, seed=seed, keep_prior=None)
    bias = policy.network.logits.bias
    bias.assign(np.where(np.array(ops.ACTIONS) == ops.KEEP, -5.0, 0.0).astype("float32") + bias.numpy())
    return policy


# -- weights and data for the supernet tests -------------------------------------


def randomize(variables: list, seed: int) -> None:
    """Give every variable (BN statistics included) non-trivial values.

    Fresh BN layers are identities in inference mode (mean 0, variance 1,
    gamma 1, beta 0): weights copied to the wrong layer would go unnoticed.
    """
    rng = np.random.default_rng(seed)
    for variable in variables:
        shape = tuple(variable.shape)
        name = variable.name
        if name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "moving_mean", "bias"):
            value = rng.normal(0.0, 0.2, shape)
        else:  # kernels: keep the scale of their initialisation
            fan_in = int(np.prod(shape[:-1])) or 1
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        variable.assign(value.astype(variable.dtype))


def colour_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose label is the channel with the largest mean (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, TINY_NUM_CLASSES, n)
    images = rng.uniform(0.0, 1.0, (n, *TINY_IMAGE_SHAPE)).astype("float32")
    images[np.arange(n), :, :, labels] += 0.5
    labels = images.mean(axis=(1, 2)).argmax(axis=-1)
    return images, labels.astype("int64")


# -- processes on localhost ----------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now (for the workers of a test cluster)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# -- benchmark scripts ---------------------------------------------------------------

BENCHMARKS_DIR = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def import_benchmark(name: str):
    """A benchmark script imported for its functions, its absl flags removed again.

    Benchmarks are absl apps that define their flags on import, in the one
    global FlagValues; two of them in one pytest process would define
    `--preset` twice. Their tests call the functions and run the apps in
    subprocesses, so the flags are not needed here.
    """
    from absl import flags

    if str(BENCHMARKS_DIR) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS_DIR))
    before = set(flags.FLAGS)
    module = importlib.import_module(name)
    for flag_name in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, flag_name)
    return module
