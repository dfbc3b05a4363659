"""Flatten a Keras functional model into a list of layer calls.

This is the Keras side of encoding, shared by `encode` (which reads it) and
`rebuild` (which replays it): nested Functional / Sequential sub-models are
inlined, every layer call gets a deterministic name, and tensors get keys that
are the same inside and outside a nested model.

Example:
  >>> calls = trace(model)
  >>> [c.name for c in calls.calls][:3]
  ['conv1', 'bn1', 'relu1']
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import keras

from nat_keras import compat
from nat_keras.errors import UnsupportedModelError


@dataclasses.dataclass(eq=False)
class LayerCall:
    """One call of a Keras layer (or op) in the flattened graph.

    Attributes:
      name: unique, deterministic name: the layer's name, prefixed by the
        nested models it sits in ("block/conv"), suffixed "@k" for the k-th
        (k >= 1) call of a layer called more than once.
      layer: the Keras layer or op object.
      record: the call's arguments, to replay it on other tensors.
      inputs / outputs: keys of the consumed / produced tensors.
      shared: the layer is called more than once in the graph.
      first_call: this is the layer's first call (its params count here).
    """

    name: str
    layer: Any
    record: compat.CallRecord
    inputs: list[int]
    outputs: list[int]
    shared: bool = False
    first_call: bool = True

    def replay(self, layer: Any, values: dict[int, Any]) -> list[Any]:
        """Call `layer` on this call's arguments with tensors taken from `values`."""
        by_id = {id(t): values[k] for t, k in zip(self.record.inputs, self.inputs)}
        args, kwargs = self.record.fill_in(by_id)
        return keras.tree.flatten(layer(*args, **kwargs))


@dataclasses.dataclass(eq=False)
class TracedModel:
    """A functional model as a flat list of calls over keyed tensors."""

    model: keras.Model
    calls: list[LayerCall]
    inputs: list[int]
    outputs: list[int]
    input_names: list[str]
    shapes: dict[int, tuple[int | None, ...]]

    def producer(self) -> dict[int, LayerCall]:
        return {k: c for c in self.calls for k in c.outputs}

    def consumers(self) -> dict[int, list[LayerCall]]:
        found: dict[int, list[LayerCall]] = collections.defaultdict(list)
        for call in self.calls:
            for key in call.inputs:
                found[key].append(call)
        return found


def check_model(model: Any) -> None:
    """Raise an UnsupportedModelError if `model` cannot be walked as a graph."""
    if compat.is_tf_keras_object(model):
        raise UnsupportedModelError(
            f"Model {getattr(model, 'name', model)!r} was built with tf.keras / tf_keras "
            "(Keras 2). nat_keras transforms Keras 3 models: build it with `import keras` "
            "(not `tf.keras`). nat_keras sets TF_USE_LEGACY_KERAS=1 for TF-GNN, which "
            "makes `tf.keras` mean Keras 2 in this process."
        )
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"Expected a keras.Model, got {type(model).__name__}. Pass a Keras 3 functional "
            "or Sequential model."
        )
    if isinstance(model, keras.Sequential) and compat.inner_functional(model) is None:
        raise UnsupportedModelError(
            f"Sequential model {model.name!r} is not built, so it has no graph yet. Give it an "
            "input first: start it with `keras.Input(shape=...)` or call "
            "`model.build((None, ...))`."
        )
    if compat.inner_functional(model) is None:
        raise UnsupportedModelError(
            f"Model {model.name!r} is a subclassed keras.Model ({type(model).__name__}); its "
            "graph lives in Python code that nat_keras cannot read. Rebuild it with the "
            "functional API (keras.Input(...) and layer calls) or as a keras.Sequential."
        )


def trace(model: keras.Model) -> TracedModel:
    """Flatten `model`'s functional graph (see module docstring)."""
    check_model(model)
    alias: dict[int, int] = {}
    shapes: dict[int, tuple[int | None, ...]] = {}
    calls: list[LayerCall] = []
    call_counts: collections.Counter = collections.Counter()
    total_calls = _count_calls(model)

    def key(tensor: Any) -> int:
        tensor_id = id(tensor)
        k = alias.get(tensor_id, tensor_id)
        shapes.setdefault(k, tuple(tensor.shape[1:]))
        return k

    def walk(functional: keras.Model, prefix: str) -> None:
        for record in compat.call_records(functional):
            layer = record.operation
            inlined = compat.is_functional_like(layer) and total_calls[id(layer)] == 1
            if inlined:
                inner = compat.inner_functional(layer)
                for inner_in, outer_in in zip(inner.inputs, record.inputs):
                    alias[id(inner_in)] = key(outer_in)
                walk(inner, f"{prefix}{layer.name}/")
                for outer_out, inner_out in zip(record.outputs, inner.outputs):
                    alias[id(outer_out)] = key(inner_out)
                continue
            index = call_counts[id(layer)]
            call_counts[id(layer)] += 1
            name = f"{prefix}{layer.name}" + (f"@{index}" if index else "")
            calls.append(
                LayerCall(
                    name=name,
                    layer=layer,
                    record=record,
                    inputs=[key(t) for t in record.inputs],
                    outputs=[key(t) for t in record.outputs],
                    shared=total_calls[id(layer)] > 1,
                    first_call=index == 0,
                )
            )

    inputs = compat.model_inputs(model)
    input_keys = [key(t) for t in inputs]
    walk(compat.inner_functional(model), "")
    return TracedModel(
        model=model,
        calls=calls,
        inputs=input_keys,
        outputs=[key(t) for t in compat.model_outputs(model)],
        input_names=[_input_name(t, i) for i, t in enumerate(inputs)],
        shapes=shapes,
    )


def _input_name(tensor: Any, index: int) -> str:
    return compat.input_layer_name(tensor) or f"input_{index}"


def _count_calls(model: keras.Model) -> collections.Counter:
    """How often each layer object is called, over the model and nested models."""
    counts: collections.Counter = collections.Counter()

    def walk(functional: keras.Model) -> None:
        for record in compat.call_records(functional):
            layer = record.operation
            counts[id(layer)] += 1
            if compat.is_functional_like(layer) and counts[id(layer)] == 1:
                walk(compat.inner_functional(layer))

    walk(compat.inner_functional(model))
    return counts
