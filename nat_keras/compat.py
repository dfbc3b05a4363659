"""The one place where nat_keras touches private Keras / TensorFlow internals.

Keras 3 has no public API that lists a functional model's layer calls with
their argument structure, so the graph walk reads `Functional._nodes_by_depth`
and each node's `arguments` here. If a Keras release moves these, only this
module changes. `tests/test_compat.py` pins the behaviour we rely on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import keras

LEGACY_KERAS_VAR = "TF_USE_LEGACY_KERAS"
_TRUE_VALUES = ("true", "True", "1")


def tf_keras_resolved_to() -> str | None:
    """Which Keras `tf.keras` already resolved to, without resolving it.

    Returns:
      None if TensorFlow is not imported or `tf.keras` was never touched,
      "tf_keras" for Keras 2 (what TF-GNN needs), or another string (for
      example "keras_3") when `tf.keras` is bound to Keras 3 for this process.
    """
    tf_module = sys.modules.get("tensorflow")
    if tf_module is None:
        return None
    loader = tf_module.__dict__.get("keras")
    if loader is None:
        return None
    if getattr(loader, "_tfll_initialized", None) is False:
        return None
    version = getattr(loader, "_tfll_keras_version", None)
    if version is not None:
        return version
    module_name = getattr(loader, "__name__", "")
    return "tf_keras" if module_name.startswith("tf_keras") else "keras_3"


def legacy_keras_requested() -> bool:
    """Whether TF_USE_LEGACY_KERAS asks `tf.keras` to be Keras 2."""
    return os.environ.get(LEGACY_KERAS_VAR) in _TRUE_VALUES


def is_tf_keras_object(obj: Any) -> bool:
    """True for models and layers built with `tf.keras` / `tf_keras` (Keras 2)."""
    module = type(obj).__module__ or ""
    return module.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras"))


# ---------------------------------------------------------------------------
# Functional graph access.


def inner_functional(model: keras.Model) -> keras.Model | None:
    """The Functional graph behind a Functional or built Sequential model."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def is_functional_like(layer: Any) -> bool:
    """True for layers that are themselves Functional or Sequential models."""
    return isinstance(layer, keras.Model) and inner_functional(layer) is not None


class CallRecord:
    """One call of an operation in a functional graph.

    Attributes:
      operation: the Keras layer or op that was called.
      arguments: the call's symbolic arguments (KerasTensors inside).
      inputs: the KerasTensors the call consumed, in argument order.
      outputs: the KerasTensors it produced.
    """

    __slots__ = ("arguments", "inputs", "operation", "outputs")

    def __init__(self, node: Any):
        self.operation = node.operation
        self.arguments = node.arguments
        self.inputs = list(node.input_tensors)
        self.outputs = list(node.outputs)

    def fill_in(self, values: dict[int, Any]) -> tuple[tuple, dict]:
        """The call's (args, kwargs) with each KerasTensor `t` -> values[id(t)]."""
        return self.arguments.fill_in(values)

    def has_single_positional_input(self) -> bool:
        args, kwargs = self.arguments.args, self.arguments.kwargs
        return (
            len(self.inputs) == 1
            and len(args) == 1
            and args[0] is self.inputs[0]
            and not any(isinstance(v, keras.KerasTensor) for v in keras.tree.flatten(kwargs))
        )


def call_records(model: keras.Model) -> list[CallRecord]:
    """The layer calls of a functional model in a topological order."""
    functional = inner_functional(model)
    nodes_by_depth = functional._nodes_by_depth  # private: see module docstring
    records = []
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            records.append(CallRecord(node))
    return records


def model_inputs(model: keras.Model) -> list[keras.KerasTensor]:
    return list(inner_functional(model).inputs)


def model_outputs(model: keras.Model) -> list[keras.KerasTensor]:
    return list(inner_functional(model).outputs)


def outputs_structure(model: keras.Model) -> Any:
    """The nested structure of the model's outputs (list, dict or tensor)."""
    return inner_functional(model)._outputs_struct  # private


def inputs_structure(model: keras.Model) -> Any:
    return inner_functional(model)._inputs_struct  # private


def pack_like(structure: Any, flat: list[Any]) -> Any:
    return keras.tree.pack_sequence_as(structure, flat)


def input_layer_name(tensor: Any) -> str | None:
    """Name of the InputLayer that made a model input tensor (None if unknown)."""
    history = getattr(tensor, "_keras_history", None)  # private: see module docstring
    operation = getattr(history, "operation", None)
    return getattr(operation, "name", None)


def clone_layer(layer: keras.Layer) -> keras.Layer:
    """A fresh, unbuilt layer with the same config (no shared state).

    A Lambda layer is rebuilt around its live function: its config holds the
    function serialised, which Keras' safe mode refuses to load back.
    """
    if type(layer) is keras.layers.Lambda:
        return keras.layers.Lambda(
            layer.function,
            output_shape=layer._output_shape,  # private: see module docstring
            mask=layer.mask,
            arguments=dict(layer.arguments),
            name=layer.name,
            dtype=layer.dtype_policy,
        )
    return layer.__class__.from_config(layer.get_config())


def clone_operation(operation: Any) -> Any:
    """A fresh copy of a stateless Keras op (e.g. the `Add` behind `x + y`).

    Falls back to the op itself when it cannot be rebuilt from its config;
    calling it then only adds a node to that stateless op's history.
    """
    try:
        return type(operation).from_config(operation.get_config())
    except (NotImplementedError, TypeError, ValueError):
        return operation


def all_layers(model: keras.Model) -> list[Any]:
    """Every layer inside `model`, nested models' and subclassed models' included."""
    return list(model._flatten_layers(include_self=False, recursive=True))  # private: see module docstring


def map_structure(fn: Callable[[Any], Any], structure: Any) -> Any:
    return keras.tree.map_structure(fn, structure)


def checkpointable_variables(model: keras.Model) -> dict[str, Any]:
    """A model's variables as a dict `tf.train.Checkpoint` can track.

    Keras 3 models built from lists or dicts of layers (supernets, the policy
    GNN) expose no trackable children to `tf.train.Checkpoint`, which would
    then silently save none of their weights. Keys are positions, so a
    checkpoint restores into a model built the same way.
    """
    return {f"v{index:05d}": variable for index, variable in enumerate(model.weights)}


def functional_switch_case(index: Any, branches: Any) -> Any:
    """`tf.switch_case`, kept as a functional Case op (not lowered to Switch / Merge).

    Lowered, every branch of every switch is inlined into one graph, which
    makes the first trace of a cell supernet step several times slower. The
    flag is only reachable through TF's private cond_v2 (stable since TF 2.2);
    without it this falls back to `tf.switch_case`.
    """
    import tensorflow as tf

    try:
        from tensorflow.python.ops import cond_v2  # private: see module docstring
    except ImportError:  # pragma: no cover - a TF without it still works, traces slower
        cond_v2 = None
    if tf.executing_eagerly() or cond_v2 is None:
        return tf.switch_case(index, list(branches))
    return cond_v2.indexed_case(tf.convert_to_tensor(index), list(branches), lower_using_switch_merge=False)


@contextlib.contextmanager
def without_tf_global_seed() -> Iterator[None]:
    """Runs the block as if no TensorFlow global seed were set, then restores the process's.

    Seeded tf.data ops (`shuffle(seed=s)`, `Dataset.random(seed=s)`) draw from
    the pair (global seed, s), and any `keras.utils.set_random_seed` earlier in
    the process sets the global seed: the same `s` then shuffles and augments
    differently depending on what ran before (fine-tuning the same network
    with the same data seed gave 0.8527 in one benchmark process and 0.8711 in
    another). Inside this block the pair is (TensorFlow's default, s), as in
    a fresh process. TensorFlow has no public getter for the eager global
    seed, nor a setter that leaves the per-op seed sequence alone, so the
    saved seed and that sequence's generator are put back by hand.
    """
    from tensorflow.python.eager import context  # private: see module docstring

    eager = context.context()
    saved_seed, saved_generator = context.global_seed(), getattr(eager, "_rng", None)
    context.set_global_seed(None)
    try:
        yield
    finally:
        context.set_global_seed(saved_seed)
        if saved_generator is not None:  # absent until a seed is first set, and unused without one
            eager._rng = saved_generator  # the user's unseeded ops continue their sequence
