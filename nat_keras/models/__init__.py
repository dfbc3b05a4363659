"""Hand-made CIFAR reference networks of the NAT paper, as Keras 3 models.

Every factory takes keyword-only options (`input_shape`, `num_classes`,
`name`, `weight_decay`) and returns a functional `keras.Model` built from
standard `keras.layers` with explicit, unique layer names. The models output
raw logits (no softmax).

Example:
  >>> from nat_keras.models import get_model
  >>> model = get_model("resnet20", num_classes=100)
  >>> model.output_shape
  (None, 100)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from nat_keras.errors import ConfigError
from nat_keras.models.mobilenet_v2 import mobilenet_v2
from nat_keras.models.resnet import resnet, resnet20, resnet56
from nat_keras.models.vgg import vgg16

__all__ = [
    "MODELS",
    "get_model",
    "mobilenet_v2",
    "resnet",
    "resnet20",
    "resnet56",
    "vgg16",
]

MODELS: dict[str, Callable[..., keras.Model]] = {
    "vgg16": vgg16,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "mobilenet_v2": mobilenet_v2,
}


def get_model(name: str, /, **kwargs: Any) -> keras.Model:
    """Builds a reference network by name.

    Args:
      name: one of the keys of `MODELS` ("vgg16", "resnet20", "resnet56",
        "mobilenet_v2"); positional-only, so that `name=` in `kwargs` names
        the model.
      **kwargs: keyword options passed on to the factory (`input_shape`,
        `num_classes`, `name`, `weight_decay`).

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
