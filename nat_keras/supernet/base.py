"""What every weight-sharing supernet offers the trainer and the policy.

A supernet is a Keras 3 model whose architecture is an input: `arch` is an
int32 vector with one entry per switchable edge, and only the chosen op of
each edge runs (`keras.ops.switch`, i.e. `tf.switch_case`). Changing the
architecture between batches needs no rebuild and no retrace.

Example:
  >>> arch = supernet.sample_arch(seed=0)
  >>> logits = supernet(images, arch=arch, training=False)
  >>> supernet.accuracy(arch, (images, labels))
  0.11
  >>> supernet.accuracy(arch, (images, labels), calibration=train_images[:256])
  0.87
  >>> supernet.objective.description   # the loss and accuracy it trains and scores with
  'crossentropy on logits'
  >>> standalone = supernet.extract(arch)   # same predictions, plain Keras layers
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras.objective import Objective, logits_objective, objective_of
from nat_keras.supernet.batchnorm import BatchNormCalibration

# How often a compact budget's plans train a supernet (`ModelSupernet(budget=...)`,
# `CellSupernet(budget=...)`): half, as the anchored cell supernet's inputs
# (docs/design.md section 6).
BUDGET_PROB = 0.5


class Supernet(keras.Model, abc.ABC):
    """Base class: subclasses define the edges, `call`, sampling and extraction."""

    @property
    @abc.abstractmethod
    def arch_size(self) -> int:
        """Length of the `arch` vector."""

    @abc.abstractmethod
    def sample_arch(self, seed: Any = None) -> np.ndarray:
        """An input architecture drawn as the paper's trainer draws them."""

    @abc.abstractmethod
    def extract(self, arch: Any) -> keras.Model:
        """A standalone Keras model of `arch` carrying this supernet's weights."""

    def check_arch(self, arch: Any) -> np.ndarray:
        """`arch` as an int32 vector of the right length (ValueError otherwise)."""
        arch = np.asarray(arch, dtype=np.int32)
        if arch.shape != (self.arch_size,):
            raise ValueError(
                f"Supernet {self.name!r} takes an arch of shape ({self.arch_size},), got {arch.shape}."
            )
        return arch

    @property
    def objective(self) -> Objective:
        """The loss and accuracy this supernet is trained and scored with.

        By default the source model's (`nat_keras.objective.objective_of`:
        its compiled loss, else the one its output activation implies) for a
        supernet built from a model, crossentropy on logits otherwise (the
        cell space's classifier). Assign to override.
        """
        found = getattr(self, "_objective", None)
        if found is None:
            # ModelSupernet keeps its source model at `_source.model` (model_space.py).
            source = getattr(self, "_source", None)
            found = objective_of(source.model) if source is not None else logits_objective()
            self._objective = found
        return found

    @objective.setter
    def objective(self, value: Objective) -> None:
        if not isinstance(value, Objective):
            raise TypeError(f"objective must be a nat_keras.objective.Objective, got {type(value).__name__}.")
        self._objective = value

    @tf.function(reduce_retracing=True)
    def _predict(self, images: tf.Tensor, arch: tf.Tensor) -> tf.Tensor:
        return self(images, arch=arch, training=False)

    @property
    def batch_norm_calibration(self) -> BatchNormCalibration:
        """Sets the BN statistics for one architecture (see `nat_keras.supernet.batchnorm`)."""
        if getattr(self, "_calibration", None) is None:
            self._calibration = BatchNormCalibration(self)
        return self._calibration

    def accuracy(
        self, arch: Any, data: Any, *, calibration: Any = None, objective: Objective | None = None
    ) -> float:
        """Top-1 accuracy of `arch` in inference mode, for NAT's rewards.

        The BN moving statistics are shared by every architecture the
        supernet trains, so they fit none of them well; pass `calibration`
        images (a few hundred from the weight split) to measure `arch` with
        its own statistics. The shared ones are restored afterwards.

        Args:
          arch: the architecture (see `arch_size`).
          data: one `(images, labels)` batch, or a tf.data.Dataset of them.
          calibration: images whose batch statistics under `arch` the BNs
            take while measuring; None measures with the shared statistics.
          objective: how a prediction is judged right (sparse or one-hot
            labels, argmax or binary threshold); default: `self.objective`.

        Returns:
          The fraction of examples classified correctly.
        """
        arch = tf.constant(self.check_arch(arch))
        objective = objective or self.objective
        batches = [data] if isinstance(data, (tuple, list)) else data
        correct, total = 0.0, 0
        calibrated = (
            contextlib.nullcontext()
            if calibration is None
            else self.batch_norm_calibration.calibrated(calibration, arch=arch)
        )
        with calibrated:
            for images, labels in batches:
                images = keras.tree.map_structure(tf.convert_to_tensor, images)  # multi-input models
                # Judged eagerly: the labels' rank (ids or one-hot) must be known.
                correct += float(objective.correct(tf.convert_to_tensor(labels), self._predict(images, arch)))
                total += int(np.shape(labels)[0])
        if total == 0:
            raise ValueError(f"Supernet {self.name!r}: accuracy() got no examples.")
        return correct / total
