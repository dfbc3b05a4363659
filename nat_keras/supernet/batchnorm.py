"""Batch-norm statistics that belong to the architecture being measured.

A weight-sharing supernet has one set of BN moving statistics for all the
architectures it trains, so after a few hundred steps they describe a blend
of random architectures, not the one being scored: in inference mode even
the source model then scores near chance. The same holds for a rebuilt
model whose kept BNs follow an op that changed.

`BatchNormCalibration` fixes that the way one-shot NAS does (SPOS's "BN
recalibration"): it sets every BN's moving statistics to the batch
statistics of a calibration batch run through the model in training mode,
so the model can then be measured in inference mode. For a supernet it runs
under `calibrated(...)`, which restores the shared statistics afterwards, so
measuring never changes the supernet's weights or statistics (a dropout or
drop-path layer's random state does advance).

How: a Keras BN (and the cell supernet's packed BNs) moves its statistics
by `m * moving + (1 - m) * batch`, with its `momentum` m read when the call
runs eagerly or is traced. The calibration step (its own `tf.function`, or an
eager call) always traces and runs with every momentum set to 0, so it
writes the batch statistics exactly, however often a shared BN runs; a
training step, traced at the layers' own momentum, never sees the 0. BNs
whose layer is frozen (`trainable=False`) run in inference mode in Keras
and keep their statistics.

Example:
  >>> calibration = BatchNormCalibration(supernet)
  >>> with calibration.calibrated(images[:256], arch=arch):
  ...     logits = supernet(images, arch=arch, training=False)
  >>> recalibrate(rebuilt_model, images[:256])   # in place, for good
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from nat_keras import compat
from nat_keras.errors import ConfigError


def statistics_layers(model: keras.Model) -> list[Any]:
    """The layers of `model` (nested ones included) that keep BN moving statistics.

    Keras BatchNormalization layers, and any layer with the same contract
    (`momentum`, `moving_mean`, `moving_variance`), such as the cell
    supernet's packed op weights. Unbuilt layers (no statistics yet) and BNs
    with batch renormalization (more state than mean and variance) are left
    out.

    Example:
      >>> [layer.name for layer in statistics_layers(nat_keras.models.resnet20())][:2]
      ['stem_bn', 'stage1_block0_bn1']
    """
    return [
        layer
        for layer in compat.all_layers(model)
        if hasattr(layer, "momentum")
        and getattr(layer, "moving_mean", None) is not None
        and getattr(layer, "moving_variance", None) is not None
        and not getattr(layer, "renorm", False)
    ]


class BatchNormCalibration:
    """Sets a model's BN moving statistics to those of one calibration batch.

    Args:
      model: a Keras model (or supernet) whose BN statistics to calibrate.
        Calling it with `training=True` must run its BNs on their batch.
      traced: run the calibration step as a `tf.function` (worth it when it
        runs many times, as for rewards); False runs it eagerly.
    """

    def __init__(self, model: keras.Model, *, traced: bool = True):
        self.model = model
        self.layers = statistics_layers(model)
        self.variables = [v for layer in self.layers for v in (layer.moving_mean, layer.moving_variance)]
        self.traced = traced
        self._step = None

    def calibrate(self, images: Any, **call_kwargs: Any) -> None:
        """Run `model(images, training=True, **call_kwargs)` once with BN momentum 0.

        Every BN that runs ends up with the statistics of `images` under the
        call; BNs that do not run keep theirs.

        Args:
          images: one batch of inputs, structured as the model takes them.
          **call_kwargs: further arguments of the model call, e.g. a
            supernet's `arch=`.
        """
        if not self.layers:
            return
        if self._step is None:
            self._step = tf.function(self._forward, reduce_retracing=True) if self.traced else self._forward
        with _momentum(self.layers, 0.0):
            self._step(keras.tree.map_structure(tf.convert_to_tensor, images), call_kwargs)

    def _forward(self, images: Any, call_kwargs: dict[str, Any]) -> None:
        self.model(images, training=True, **call_kwargs)

    @contextlib.contextmanager
    def calibrated(self, images: Any, **call_kwargs: Any) -> Iterator[None]:
        """Calibrate on `images` for the duration of the block, then restore.

        Args:
          images: one batch of inputs, structured as the model takes them.
          **call_kwargs: further arguments of the model call (`arch=`).
        """
        saved = [tf.identity(v) for v in self.variables]
        try:
            self.calibrate(images, **call_kwargs)
            yield
        finally:
            for variable, value in zip(self.variables, saved):
                variable.assign(value)


def calibration_images(dataset: tf.data.Dataset, count: int = 256) -> Any:
    """The inputs of the first `count` examples of a dataset of (inputs, labels) batches.

    Args:
      dataset: batches of (inputs, labels), as for `fit`.
      count: how many examples to take (all of them if the dataset has fewer).

    Returns:
      One batch of inputs, structured as the dataset's.

    Raises:
      ValueError: the dataset is empty.

    Example:
      >>> images = calibration_images(splits.weights)   # 256 training images
    """
    examples = dataset.unbatch().take(count).batch(count)
    for inputs, _ in examples:
        return inputs
    raise ConfigError("calibration_images: the dataset has no examples to calibrate BN statistics on.")


def recalibrate(model: keras.Model, images: Any) -> keras.Model:
    """Set `model`'s BN moving statistics to the batch statistics of `images`.

    Use it after a rebuild changed what feeds kept BNs and before measuring
    the model in inference mode. A few hundred training images are enough.

    Args:
      model: the model to update in place (frozen BNs are left alone).
      images: one batch of inputs, as the model takes them.

    Returns:
      `model`, for chaining.

    Example:
      >>> new_model = nat_keras.supernet.batchnorm.recalibrate(new_model, x_train[:256])
    """
    # Eager: a one-off call, and a fresh tf.function per call would retrace.
    BatchNormCalibration(model, traced=False).calibrate(images)
    return model


@contextlib.contextmanager
def _momentum(layers: list[Any], value: float) -> Iterator[None]:
    original = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = value
    try:
        yield
    finally:
        for layer, momentum in zip(layers, original):
            layer.momentum = momentum
