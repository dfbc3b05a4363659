"""What a model is trained and scored on: its loss, its labels, its accuracy.

NAT trains the supernet's shared weights with a classification loss and
rewards plans by top-1 accuracy. Which loss depends on the user's model:

- a compiled model keeps its own compiled loss (`model.loss`: a string, a
  function or a `keras.losses.Loss`, resolved with `keras.losses.get`);
- an uncompiled one gets the loss its output layer's activation implies:
  softmax -> categorical crossentropy on probabilities, sigmoid -> binary
  crossentropy on probabilities, anything else -> crossentropy on logits.

Labels may be sparse (int class ids, shape [B] or [B, 1]) or one-hot
([B, C]); both the loss and the accuracy convert them per batch, by the label
rank against the output rank. Accuracy is the top-1 argmax match (the argmax
of a one-hot label), or for binary objectives the per-unit match with a
threshold of 0.5 on probabilities, 0 on logits.

Example:
  >>> objective = objective_of(model)        # softmax output, not compiled
  >>> objective.from_logits, objective.task
  (False, 'categorical')
  >>> per_example = objective.per_example_loss(labels, model(images))
  >>> objective.correct(labels, model(images))   # how many are right
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf

from nat_keras import compat
from nat_keras.errors import UnsupportedModelError
from nat_keras.graph.trace import trace

CATEGORICAL = "categorical"  # one class per example: top-1 argmax accuracy
BINARY = "binary"  # independent yes/no per output unit: threshold accuracy

# The label format a compiled loss expects; labels are converted to it.
SPARSE_LABELS = "sparse"  # class ids, [B]
DENSE_LABELS = "dense"  # one-hot (or soft) rows, [B, C]
BINARY_LABELS = "binary"  # 0/1 per output unit, the output's shape
AS_GIVEN = "as_given"  # a loss we do not know: labels are passed unchanged

# Keras losses by function and class name: (label format, task).
_KNOWN_LOSSES = {
    "sparse_categorical_crossentropy": (SPARSE_LABELS, CATEGORICAL),
    "SparseCategoricalCrossentropy": (SPARSE_LABELS, CATEGORICAL),
    "categorical_crossentropy": (DENSE_LABELS, CATEGORICAL),
    "CategoricalCrossentropy": (DENSE_LABELS, CATEGORICAL),
    "categorical_focal_crossentropy": (DENSE_LABELS, CATEGORICAL),
    "CategoricalFocalCrossentropy": (DENSE_LABELS, CATEGORICAL),
    "categorical_hinge": (DENSE_LABELS, CATEGORICAL),
    "CategoricalHinge": (DENSE_LABELS, CATEGORICAL),
    "kl_divergence": (DENSE_LABELS, CATEGORICAL),
    "KLDivergence": (DENSE_LABELS, CATEGORICAL),
    "binary_crossentropy": (BINARY_LABELS, BINARY),
    "BinaryCrossentropy": (BINARY_LABELS, BINARY),
    "binary_focal_crossentropy": (BINARY_LABELS, BINARY),
    "BinaryFocalCrossentropy": (BINARY_LABELS, BINARY),
}


@keras.saving.register_keras_serializable(package="nat_keras")
class ClassificationCrossentropy(keras.losses.Loss):
    """Crossentropy that takes sparse or one-hot labels, decided per batch.

    The loss of objectives inferred from an uncompiled model's output, for
    the supernet and for `compile` of the transformed model alike.

    Args:
      task: "categorical" (softmax crossentropy over the classes) or
        "binary" (sigmoid crossentropy per output unit).
      from_logits: whether the outputs are logits (else probabilities).
      label_smoothing: in [0, 1); labels become `y * (1 - s) + s / C` over
        the C classes (categorical) or `y * (1 - s) + s / 2` (binary), as
        Keras's CategoricalCrossentropy / BinaryCrossentropy smooth them.
        Sparse labels are made one-hot first, which Keras's
        SparseCategoricalCrossentropy cannot smooth at all.
      reduction, name, dtype: as for any `keras.losses.Loss`.

    Example:
      >>> loss = ClassificationCrossentropy(task="categorical", from_logits=True)
      >>> loss([2, 0], logits) == loss([[0, 0, 1], [1, 0, 0]], logits)
      >>> smooth = ClassificationCrossentropy(from_logits=True, label_smoothing=0.1)
    """

    def __init__(
        self,
        task: str = CATEGORICAL,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
        label_smoothing: float = 0.0,
    ):
        if task not in (CATEGORICAL, BINARY):
            raise ValueError(f"task must be {CATEGORICAL!r} or {BINARY!r}, got {task!r}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        super().__init__(
            name=name or f"{task}_crossentropy{'_from_logits' if from_logits else ''}",
            reduction=reduction,
            dtype=dtype,
        )
        self.task = task
        self.from_logits = from_logits
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        y_pred = tf.convert_to_tensor(y_pred)
        smoothing = self.label_smoothing
        if self.task == BINARY:
            return keras.losses.binary_crossentropy(
                binary_labels(y_true, y_pred), y_pred, from_logits=self.from_logits, label_smoothing=smoothing
            )
        y_true = tf.convert_to_tensor(y_true)
        if _is_sparse(y_true, y_pred) and not smoothing:
            return keras.losses.sparse_categorical_crossentropy(
                sparse_labels(y_true, y_pred), y_pred, from_logits=self.from_logits
            )
        return keras.losses.categorical_crossentropy(
            dense_labels(y_true, y_pred), y_pred, from_logits=self.from_logits, label_smoothing=smoothing
        )

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "task": self.task, "from_logits": self.from_logits}
        if self.label_smoothing:  # configs saved before label smoothing existed stay as they were
            config["label_smoothing"] = self.label_smoothing
        return config


@dataclasses.dataclass(frozen=True)
class Objective:
    """How one model is trained and scored (see the module docstring).

    Hashable, so a `tf.function` can take it as a Python argument (one trace
    per objective).

    Attributes:
      loss: the loss: a `keras.losses.Loss` (its `call` gives per-example
        values) or a Keras loss function `fn(y_true, y_pred)`.
      labels: the label format `loss` expects ("sparse", "dense", "binary";
        "as_given" for a loss we do not know, which gets the labels as they
        are). Labels in the other format are converted per batch.
      task: "categorical" (top-1 argmax accuracy) or "binary" (per-unit
        threshold accuracy).
      from_logits: whether the model's outputs are logits.
      description: one line for reports, e.g. "compiled loss
        categorical_crossentropy (probabilities)".
      compiled: whether `loss` is the model's own compiled loss.
    """

    loss: Any
    labels: str
    task: str
    from_logits: bool
    description: str
    compiled: bool = False

    def per_example_loss(self, labels: Any, outputs: Any) -> tf.Tensor:
        """The loss of each example, shape [B] (no reduction over the batch).

        Example:
          >>> per_example = objective.per_example_loss(labels, logits)
          >>> loss = tf.reduce_sum(per_example) / global_batch_size
        """
        outputs = tf.cast(tf.convert_to_tensor(outputs), tf.float32)
        labels = tf.convert_to_tensor(labels)
        if self.labels == SPARSE_LABELS:
            labels = sparse_labels(labels, outputs)
        elif self.labels == DENSE_LABELS:
            labels = dense_labels(labels, outputs)
        elif self.labels == BINARY_LABELS:
            labels = binary_labels(labels, outputs)
        elif labels.dtype.is_integer or labels.dtype.is_bool:
            labels = tf.cast(labels, tf.float32)  # as Loss.__call__ would
        call = self.loss.call if isinstance(self.loss, keras.losses.Loss) else self.loss
        values = tf.convert_to_tensor(call(labels, outputs))
        if values.shape.rank is not None and values.shape.rank > 1:
            values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
        return tf.cast(values, tf.float32)

    def correct(self, labels: Any, outputs: Any) -> tf.Tensor:
        """How many examples of the batch are classified right (float32 scalar).

        Binary objectives count each example as the fraction of its output
        units on the right side of the threshold (one unit: 0 or 1).

        Example:
          >>> accuracy = objective.correct(labels, outputs) / batch_size
        """
        outputs = tf.convert_to_tensor(outputs)
        labels = tf.convert_to_tensor(labels)
        if self.task == BINARY:
            threshold = 0.0 if self.from_logits else 0.5
            predicted = tf.cast(outputs, tf.float32) > threshold
            truth = binary_labels(labels, outputs) > 0.5
            per_example = tf.reduce_mean(tf.cast(tf.equal(predicted, truth), tf.float32), axis=-1)
        else:
            predicted = tf.argmax(outputs, axis=-1, output_type=tf.int64)
            truth = tf.cast(sparse_labels(labels, outputs), tf.int64)
            per_example = tf.cast(tf.equal(predicted, truth), tf.float32)
        return tf.reduce_sum(per_example)

    @property
    def keras_loss(self) -> Any:
        """A loss for `keras.Model.compile`: the compiled loss itself, or a
        `ClassificationCrossentropy` that takes sparse and one-hot labels.

        Example:
          >>> new_model.compile(optimizer="sgd", loss=objective.keras_loss, metrics=["accuracy"])
        """
        return self.loss


def logits_objective(description: str = "crossentropy on logits") -> Objective:
    """Crossentropy from logits, for sparse or one-hot labels (e.g. CellSupernet).

    Example:
      >>> logits_objective().from_logits
      True
    """
    loss = ClassificationCrossentropy(task=CATEGORICAL, from_logits=True)
    return Objective(loss, AS_GIVEN, CATEGORICAL, True, description)


def objective_of(model: keras.Model) -> Objective:
    """The objective `model` is trained and scored on (see the module docstring).

    Args:
      model: a Keras 3 model with one output of shape [batch, classes].

    Returns:
      The model's Objective: its compiled loss if it is compiled, else the
      loss its output activation implies.

    Raises:
      UnsupportedModelError: the model is not compiled and its output is no
        classifier (not of rank 2, or 1 unit without a sigmoid), or its
        compiled loss is not one for a single output.

    Example:
      >>> model.compile(optimizer="adam", loss="categorical_crossentropy")
      >>> objective_of(model).description
      'compiled loss categorical_crossentropy (probabilities)'
    """
    name = getattr(model, "name", type(model).__name__)
    units, rank, activation = _output_signature(model)
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        return _compiled_objective(model, name, units, rank, activation)
    if activation is None or rank != 2:
        shape = "unknown" if rank is None else f"of rank {rank}"
        raise UnsupportedModelError(
            f"Model {name!r} is not compiled and its output ({shape}) is not a classifier's "
            "[batch, classes], so nat_keras cannot tell which loss to train it with. Compile the "
            "model with its loss first (model.compile(loss=...)); NAT scores plans by accuracy, so "
            "the model must classify."
        )
    if activation == "softmax":
        if units == 1:
            raise _one_unit_error(name, "a softmax over 1 unit (always 1.0)")
        return _inferred(CATEGORICAL, False, "softmax output: categorical crossentropy on probabilities")
    if activation == "sigmoid":
        return _inferred(BINARY, False, "sigmoid output: binary crossentropy on probabilities")
    if units == 1:
        raise _one_unit_error(name, f"1 output unit with a {activation!r} activation (a regression output)")
    return _inferred(CATEGORICAL, True, f"{activation} output: crossentropy on logits")


def sparse_labels(labels: Any, outputs: Any) -> tf.Tensor:
    """Class ids [B] from sparse ([B] / [B, 1]) or one-hot ([B, C]) labels."""
    labels = tf.convert_to_tensor(labels)
    if not _is_sparse(labels, tf.convert_to_tensor(outputs)):
        return tf.argmax(labels, axis=-1, output_type=tf.int64)
    if not (labels.dtype.is_integer or labels.dtype.is_bool):
        labels = tf.cast(tf.round(labels), tf.int64)  # Loss.__call__ hands labels over as floats
    return tf.reshape(labels, [-1])


def dense_labels(labels: Any, outputs: Any) -> tf.Tensor:
    """One-hot (or soft) rows [B, C] from sparse or one-hot labels, as float32."""
    labels = tf.convert_to_tensor(labels)
    outputs = tf.convert_to_tensor(outputs)
    if _is_sparse(labels, outputs):
        return tf.one_hot(sparse_labels(labels, outputs), _num_units(outputs), dtype=tf.float32)
    return tf.cast(labels, tf.float32)


def binary_labels(labels: Any, outputs: Any) -> tf.Tensor:
    """0/1 labels of the outputs' shape, as float32.

    One output unit: [B] or [B, 1] labels become [B, 1], and one-hot
    [B, 2] labels their positive column. Several units: labels of the
    outputs' rank are multi-hot rows as they are; class ids become one-hot
    rows (one class against the rest).
    """
    labels = tf.convert_to_tensor(labels)
    outputs = tf.convert_to_tensor(outputs)
    units = outputs.shape[-1]
    if labels.shape.rank == outputs.shape.rank:
        if units == 1 and labels.shape[-1] == 2:
            labels = labels[..., 1:]
        return tf.cast(labels, tf.float32)
    if units == 1:
        return tf.reshape(tf.cast(labels, tf.float32), [-1, 1])
    return tf.one_hot(tf.reshape(tf.cast(labels, tf.int64), [-1]), _num_units(outputs), dtype=tf.float32)


def _is_sparse(labels: tf.Tensor, outputs: tf.Tensor) -> bool:
    """Whether `labels` are class ids rather than rows over the classes."""
    if labels.shape.rank is None or outputs.shape.rank is None:
        raise ValueError("nat_keras needs the rank of labels and outputs to be known.")
    if labels.shape.rank < outputs.shape.rank:
        return True
    # [B, 1] ids for C > 1 classes; with one output unit, a [B, 1] label is the unit's own.
    return labels.shape[-1] == 1 and outputs.shape[-1] != 1


def _num_units(outputs: tf.Tensor) -> Any:
    units = outputs.shape[-1]
    return units if units is not None else tf.shape(outputs)[-1]


def _inferred(task: str, from_logits: bool, description: str) -> Objective:
    loss = ClassificationCrossentropy(task=task, from_logits=from_logits)
    return Objective(loss, AS_GIVEN, task, from_logits, description)


def _one_unit_error(name: str, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"Model {name!r} is not compiled and its output is {what}, not a classifier, so nat_keras "
        "cannot tell which loss to train it with. Compile the model with its loss first "
        "(model.compile(loss=...)); NAT scores plans by accuracy, so the model must classify "
        "(e.g. a sigmoid unit with loss='binary_crossentropy')."
    )


def _compiled_objective(
    model: keras.Model, name: str, units: int | None, rank: int | None, activation: str | None
) -> Objective:
    loss = _single_loss(model.loss, name)
    try:
        loss = keras.losses.get(loss)
    except (ValueError, TypeError) as error:
        raise UnsupportedModelError(
            f"Model {name!r} is compiled with loss {model.loss!r}, which keras.losses.get cannot "
            f"resolve ({error}). Compile it with a Keras loss name, function or Loss object."
        ) from error
    loss_name = type(loss).__name__ if isinstance(loss, keras.losses.Loss) else getattr(loss, "__name__", "")
    if isinstance(loss, ClassificationCrossentropy):
        labels, task = AS_GIVEN, loss.task
    else:
        labels, task = _KNOWN_LOSSES.get(loss_name, (AS_GIVEN, None))
    if rank is not None and rank != 2:
        raise UnsupportedModelError(
            f"Model {name!r} has an output of rank {rank}; NAT trains with the compiled loss "
            f"{loss_name or loss!r} but scores plans by top-1 accuracy, which needs a classifier's "
            "[batch, classes] output."
        )
    if task is None:  # a loss we do not know: score as the output looks
        if units == 1 and activation != "sigmoid":
            raise UnsupportedModelError(
                f"Model {name!r} is compiled with loss {loss_name or loss!r} on 1 output unit with "
                f"a {activation!r} activation, which looks like regression; NAT scores plans by "
                "classification accuracy. Use a classifier (e.g. a sigmoid unit with "
                "loss='binary_crossentropy')."
            )
        task = BINARY if units == 1 or activation == "sigmoid" else CATEGORICAL
    if task == CATEGORICAL and units == 1:
        raise UnsupportedModelError(
            f"Model {name!r} is compiled with loss {loss_name!r}, a loss over classes, but has 1 output "
            "unit. Give it one unit per class, or use a binary loss for a single unit."
        )
    from_logits = _from_logits(loss, activation)
    kind = "logits" if from_logits else "probabilities"
    return Objective(loss, labels, task, from_logits, f"compiled loss {loss_name or loss} ({kind})", True)


def _single_loss(loss: Any, name: str) -> Any:
    """The one loss of a single-output model compiled with a loss, a list or a dict."""
    if isinstance(loss, dict):
        loss = list(loss.values())
    if isinstance(loss, (list, tuple)):
        if len(loss) != 1:
            raise UnsupportedModelError(
                f"Model {name!r} is compiled with {len(loss)} losses; NAT trains a single-output "
                "classifier with one loss. Compile it with the loss of its one output."
            )
        loss = loss[0]
    return loss


def _from_logits(loss: Any, activation: str | None) -> bool:
    """Whether the compiled loss reads the outputs as logits."""
    if isinstance(loss, keras.losses.Loss):
        if hasattr(loss, "from_logits"):
            return bool(loss.from_logits)
        try:
            config = loss.get_config()
        except (NotImplementedError, TypeError):
            config = {}
        if "from_logits" in config:
            return bool(config["from_logits"])
    elif getattr(loss, "__name__", "") in _KNOWN_LOSSES:
        return False  # Keras's loss functions default to probabilities
    return activation not in ("softmax", "sigmoid")


def _output_signature(model: Any) -> tuple[int | None, int | None, str | None]:
    """(units, rank, activation name) of the model's one output; None where unknown.

    A model whose graph cannot be read (subclassed) has all three unknown.
    A model with several outputs is refused by `transform` before this.
    """
    functional = compat.inner_functional(model) if isinstance(model, keras.Model) else None
    if functional is None:
        return None, None, None
    outputs = compat.model_outputs(model)
    if len(outputs) != 1:
        raise UnsupportedModelError(
            f"Model {model.name!r} has {len(outputs)} outputs; NAT trains and scores one "
            "classifier output. Search on a model with that single output."
        )
    shape = outputs[0].shape
    return shape[-1] if len(shape) else None, len(shape), _output_activation(model)


def _output_activation(model: keras.Model) -> str:
    """The activation applied last to the output ("linear" when none is)."""
    traced = trace(model)
    call = traced.producer().get(traced.outputs[0])
    if call is None:  # the output is an input, passed through
        return "linear"
    layer = call.layer
    if compat.is_functional_like(layer):  # a nested model called more than once
        return _output_activation(layer)
    activation = getattr(layer, "activation", None)
    if callable(activation):
        return getattr(activation, "__name__", type(activation).__name__).lower()
    kind = type(layer).__name__.lower()
    return kind if kind in ("softmax", "sigmoid") else "linear"
