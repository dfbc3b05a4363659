"""Hand-made CIFAR reference networks of the NAT paper, as Keras 3 models.

Every factory takes keyword-only options (`input_shape`, `num_classes`,
`name`, `weight_decay`, `width`) and returns a functional `keras.Model` built from
standard `keras.layers` with explicit, unique layer names. The models output
raw logits (no softmax).

Example:
  >>> from nat_keras.models import get_model
  >>> model = get_model("resnet20", num_classes=100)
  >>> model.output_shape
  (None, 100)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import keras

from nat_keras.errors import ConfigError, UnsupportedModelError
from nat_keras.models.mobilenet_v2 import mobilenet_v2
from nat_keras.models.resnet import resnet, resnet8, resnet20, resnet56
from nat_keras.models.vgg import vgg16

__all__ = [
    "APPLICATIONS_PREFIX",
    "MODELS",
    "get_model",
    "load_model",
    "mobilenet_v2",
    "resnet",
    "resnet8",
    "resnet20",
    "resnet56",
    "vgg16",
]

MODELS: dict[str, Callable[..., keras.Model]] = {
    "vgg16": vgg16,
    "resnet8": resnet8,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "mobilenet_v2": mobilenet_v2,
}


def get_model(name: str, /, **kwargs: Any) -> keras.Model:
    """Builds a reference network by name.

    Args:
      name: one of the keys of `MODELS` ("vgg16", "resnet8", "resnet20", "resnet56",
        "mobilenet_v2"); positional-only, so that `name=` in `kwargs` names
        the model.
      **kwargs: keyword options passed on to the factory (`input_shape`,
        `num_classes`, `name`, `weight_decay`, `width`).

    Returns:
      The functional `keras.Model`, which outputs raw logits.

    Raises:
      ValueError: if `name` is not a known model.

    Example:
      >>> get_model("vgg16", num_classes=100).output_shape
      (None, 100)
    """
    try:
        factory = MODELS[name]
    except KeyError:
        valid = ", ".join(sorted(MODELS))
        raise ConfigError(f"Unknown model {name!r}; valid names: {valid}.") from None
    return factory(**kwargs)



APPLICATIONS_PREFIX = "keras.applications:"


def load_model(
    spec: str, *, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None
) -> keras.Model:
    """The model a command line names: a reference network, a keras.applications one, or a file.

    Args:
      spec: a name of `MODELS` ("resnet20", ...), built for the data;
        `"keras.applications:<Name>"` (e.g. `keras.applications:MobileNetV2`),
        built untrained (`weights=None`) for the data, with its own classifier
        (softmax); or the path of a `.keras` file (the user's trained model),
        loaded with `safe_mode=True` and checked against the data.
      input_shape: the data's image shape, without the batch dimension;
        needed to build a network, checked against a loaded file when given.
      num_classes: the data's number of classes (the same).

    Returns:
      The Keras model.

    Raises:
      ConfigError: an unknown name or application, a missing file, or a file
        whose model does not take this data (the message says what differs).

    Example:
      >>> load_model("keras.applications:MobileNetV2", input_shape=(32, 32, 3), num_classes=10).name
      'mobilenetv2_1.00_32'
    """
    built = spec in MODELS or spec.startswith(APPLICATIONS_PREFIX)
    if built and (input_shape is None or num_classes is None):
        raise ConfigError(f"Building {spec!r} needs the data's input_shape and num_classes.")
    if spec in MODELS:
        return get_model(spec, input_shape=input_shape, num_classes=num_classes)
    if spec.startswith(APPLICATIONS_PREFIX):
        name = spec[len(APPLICATIONS_PREFIX) :]
        factory = getattr(keras.applications, name, None)
        if not callable(factory) or not name[:1].isupper():
            known = sorted(n for n in dir(keras.applications) if n[:1].isupper())
            raise ConfigError(f"Unknown model {spec!r}: keras.applications has {', '.join(known)}.")
        try:
            return factory(weights=None, input_shape=tuple(input_shape), classes=num_classes)
        except ValueError as error:  # e.g. an input too small for the network
            raise ConfigError(f"{spec} cannot be built for inputs {tuple(input_shape)}: {error}") from error
    if spec.endswith(".keras"):
        if not os.path.isfile(spec):
            raise ConfigError(f"Model file {spec!r} does not exist.")
        model = keras.saving.load_model(spec, safe_mode=True)
        if not isinstance(model, keras.Model):
            raise UnsupportedModelError(f"{spec!r} holds a {type(model).__name__}, not a Keras model.")
        wanted = None if input_shape is None else (None, *input_shape)
        if wanted is not None and tuple(model.input_shape) != wanted:
            raise ConfigError(
                f"Model {model.name!r} from {spec!r} takes inputs of shape {model.input_shape}, but the data "
                f"gives {wanted}; choose the data's image size to match, or a model made for this data."
            )
        if num_classes is not None and model.output_shape[-1] != num_classes:
            raise ConfigError(
                f"Model {model.name!r} from {spec!r} has {model.output_shape[-1]} outputs, but the data has "
                f"{num_classes} classes."
            )
        return model
    valid = ", ".join(sorted(MODELS))
    raise ConfigError(
        f"Unknown model {spec!r}: use a reference network ({valid}), {APPLICATIONS_PREFIX}<Name>, "
        "or the path of a .keras file."
    )
