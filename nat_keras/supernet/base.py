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
  >>> standalone = supernet.extract(arch)   # same predictions, plain Keras layers
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras.supernet.batchnorm import BatchNormCalibration


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

    @tf.function(reduce_retracing=True)
    def _count_correct(self, images: tf.Tensor, labels: tf.Tensor, arch: tf.Tensor) -> tf.Tensor:
        logits = self(images, arch=arch, training=False)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int64)), tf.int64))

    @property
    def batch_norm_calibration(self) -> BatchNormCalibration:
        """Sets the BN statistics for one architecture (see `nat_keras.supernet.batchnorm`)."""
        if getattr(self, "_calibration", None) is None:
            self._calibration = BatchNormCalibration(self)
        return self._calibration

    def accuracy(self, arch: Any, data: Any, *, calibration: Any = None) -> float:
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

        Returns:
          The fraction of examples classified correctly.
        """
        arch = tf.constant(self.check_arch(arch))
        batches = [data] if isinstance(data, (tuple, list)) else data
        correct = total = 0
        calibrated = (
            contextlib.nullcontext()
            if calibration is None
            else self.batch_norm_calibration.calibrated(calibration, arch=arch)
        )
        with calibrated:
            for images, labels in batches:
                images = keras.tree.map_structure(tf.convert_to_tensor, images)  # multi-input models
                correct += int(self._count_correct(images, tf.convert_to_tensor(labels), arch))
                total += int(np.shape(labels)[0])
        if total == 0:
            raise ValueError(f"Supernet {self.name!r}: accuracy() got no examples.")
        return correct / total
