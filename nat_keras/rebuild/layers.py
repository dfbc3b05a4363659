"""Layers nat_keras emits besides Keras' own, registered for `.keras` files.

Example:
  >>> zeros = nat_keras.layers.ZerosLike(shape=(8, 8, 16))(x)  # x: any batch
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="nat_keras")
class ZerosLike(keras.layers.Layer):
    """Zeros of a fixed per-example shape, batched like its input.

    Stands in for a removed edge into a concatenation, so the concat keeps its
    channel layout (NAT's "null" op is a zero tensor).

    Args:
      shape: the per-example shape of the zeros (no batch dimension).
    """

    def __init__(self, shape: tuple[int, ...], **kwargs: Any):
        super().__init__(**kwargs)
        self.shape = tuple(int(d) for d in shape)

    def call(self, inputs: Any) -> Any:
        batch = keras.ops.shape(inputs)[0]
        return keras.ops.zeros((batch, *self.shape), dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], *self.shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": list(self.shape)}
