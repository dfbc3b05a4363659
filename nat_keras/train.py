"""`nat_keras.train`: one recipe to train a source or a transformed model.

NAT's claim is judged by training the source and the transformed network with
the same recipe (docs/design.md section 8, "Same recipe"). The paper retrains
the transformed network from scratch (section 2, "Inference"); `transform`
instead fine-tunes from inherited weights (section 2, difference 5). `train`
does both, with one `Recipe`:

- SGD with Nesterov momentum and L2 weight decay coupled to the gradient (as
  PyTorch's SGD, which the paper's numbers come from: `CoupledWeightDecaySGD`);
- a linear warm-up to the peak learning rate, then cosine decay to 0 over the
  rest of the run (`keras.optimizers.schedules.CosineDecay`);
- label smoothing applied to the model's own loss (`nat_keras.objective`: its
  compiled loss, else the one its output activation implies);
- the augmentation of the data (`NatSplits.train` is augmented and shuffled);
- `init="scratch"` (a clone with freshly initialised weights) or
  `"inherited"` (a clone that keeps the weights); the given model is never
  changed;
- checkpoints and resumption through `keras.callbacks.BackupAndRestore`;
- mixed precision and XLA only where they pay ("auto": on a GPU).

Example:
  >>> splits = nat_keras.data.load_splits("digits")
  >>> model = nat_keras.models.resnet20(input_shape=splits.image_shape)
  >>> result = nat_keras.train.train(model, splits, nat_keras.Recipe.cpu())
  >>> result.test_accuracy, result.cost.params, result.history["learning_rate"][-1]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from nat_keras.errors import ConfigError, UnsupportedModelError
from nat_keras.graph import cost
from nat_keras.graph.costs import Cost
from nat_keras.graph.encode import encode
from nat_keras.graph.trace import trace
from nat_keras.objective import BINARY, CATEGORICAL, ClassificationCrossentropy, Objective, objective_of
from nat_keras.supernet.batchnorm import calibration_images, recalibrate

SCRATCH = "scratch"
INHERITED = "inherited"
INITS = (SCRATCH, INHERITED)
AUTO = "auto"
RUN_FORMAT_VERSION = 1

# Files `train` keeps in its checkpoint directory.
_BACKUP_SUBDIR = "backup"  # BackupAndRestore's own files (weights, optimizer, epoch)
_RUN_FILE = "run.json"  # what run the checkpoints belong to
_HISTORY_FILE = "history.json"  # per-epoch logs, so a resumed run reports every epoch

# Keras loss functions (what `compile(loss="...")` strings resolve to) and the
# Loss class with the same computation that can smooth labels.
_SMOOTHABLE_FUNCTIONS = {
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
    "categorical_focal_crossentropy": keras.losses.CategoricalFocalCrossentropy,
    "binary_focal_crossentropy": keras.losses.BinaryFocalCrossentropy,
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a model is trained: optimiser, schedule, regularisation, init, seed.

    The recipe holds no batch size: that belongs to the data
    (`DataConfig.batch_size`). `learning_rate` is the peak for
    `reference_batch_size` examples per step and is scaled linearly to the
    data's batch size (Goyal et al., 2017), so one recipe reads right for any
    batch size; `reference_batch_size=None` uses `learning_rate` as it is.

    The defaults are `Recipe.cpu()`. The two presets:

    - `cpu()`: 10 epochs, peak 0.05 at batch 64, 1 warm-up epoch; minutes on
      digits with two cores. A warm-up epoch because a freshly initialised
      network's BN statistics are far off at first, and a short run has no
      time to recover from early large steps.
    - `gpu()`: the paper's retraining, which follows DARTS's protocol: 600
      epochs of cosine decay, peak 0.025 at batch 96, no warm-up, gradients
      clipped to global norm 5. The paper also uses cutout (pass `cutout=16`
      to `load_splits`), drop path and an auxiliary head; the last two are
      parts of its cell networks, not of a training recipe for any Keras
      model, and are left out. Hand-made ResNets are often trained at 0.1
      for batch 128 with weight decay 5e-4: `Recipe.gpu().replace(
      learning_rate=0.1, reference_batch_size=128, weight_decay=5e-4)`.

    Attributes:
      epochs: passes over the training data.
      learning_rate: peak learning rate, reached after the warm-up, for
        `reference_batch_size` examples per step.
      reference_batch_size: the batch size `learning_rate` is meant for; the
        peak is `learning_rate * batch_size / reference_batch_size`. None: no
        scaling.
      warmup_epochs: epochs (fractions allowed) of linear warm-up from 0 to
        the peak; then cosine decay to 0 at the end of the last epoch.
      momentum: SGD momentum.
      nesterov: Nesterov momentum.
      weight_decay: L2 coefficient added to the gradient of every trainable
        weight (BN scales and biases too), as PyTorch's SGD and the paper's
        code do. 3e-4 is the paper's (DARTS's) value for both presets, so a
        comparison under either uses the same regularisation. Keras's own
        `weight_decay` option is decoupled (AdamW-style) and, with momentum
        0.9, about ten times weaker at the same number; hence our optimizer.
        L2 regularizers of the model's layers add to it.
      label_smoothing: in [0, 1); applied to the model's loss (see
        `smoothed_loss`).
      grad_clip: clip the gradients to this global norm before the weight
        decay (as PyTorch's `clip_grad_norm_` before `SGD.step`); None: no
        clipping. `gpu()` clips at 5, the paper's retraining value; a
        fine-tuning of a plan that rescales a residual stream (blocks made
        identities: x + x) can diverge without it.
      bn_calibration_examples: > 0: after the last epoch, set every BN
        layer's moving statistics to the batch statistics of this many
        training examples ("precise BN"), so the test sees the final
        weights' statistics and not an average lagging behind them. With
        Keras's momentum 0.99 that lag decided short fine-tunings: one
        transformed ResNet-20 tested 0.7734 after 2 epochs and 0.8642 once
        recalibrated on 512 images (2026-12-07). 0: keep the moving averages.
      init: "scratch" (fresh weights, the paper's protocol) or "inherited"
        (the model's weights, NAT's fine-tuning protocol).
      seed: `keras.utils.set_random_seed(seed)` before the weights are made:
        it seeds Python, NumPy, TensorFlow and Keras globally, for the whole
        process (the data has its own seed, `DataConfig.seed`).
      mixed_precision: True, False or "auto" (on only when TensorFlow sees a
        GPU): float16 compute with float32 weights; the layers that produce
        the model's outputs stay float32 for a stable loss.
      jit_compile: True, False or "auto" (Keras's choice: XLA on GPUs, not
        on CPU-only machines), passed to `Model.compile`.

    Example:
      >>> Recipe.gpu().epochs, Recipe.preset("cpu") == Recipe()
      (600, True)
      >>> Recipe.cpu().replace(epochs=2, init="inherited").to_dict()["epochs"]
      2
    """

    epochs: int = 10
    learning_rate: float = 0.05
    reference_batch_size: int | None = 64
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-4
    label_smoothing: float = 0.1
    grad_clip: float | None = None
    bn_calibration_examples: int = 0
    init: str = SCRATCH
    seed: int = 0
    mixed_precision: bool | str = AUTO
    jit_compile: bool | str = AUTO

    def __post_init__(self) -> None:
        if not _is_int(self.epochs) or self.epochs < 1:
            raise ConfigError(f"Recipe.epochs must be a positive int; got {self.epochs!r}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"Recipe.learning_rate must be > 0; got {self.learning_rate!r}.")
        if self.reference_batch_size is not None and (
            not _is_int(self.reference_batch_size) or self.reference_batch_size < 1
        ):
            raise ConfigError(
                "Recipe.reference_batch_size must be a positive int (the batch size learning_rate is "
                f"meant for) or None (no scaling); got {self.reference_batch_size!r}."
            )
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(
                f"Recipe.warmup_epochs must be in [0, epochs={self.epochs}]; got {self.warmup_epochs!r}."
            )
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"Recipe.momentum must be in [0, 1); got {self.momentum!r}.")
        if self.nesterov and not self.momentum:
            raise ConfigError("Recipe.nesterov=True needs momentum > 0; set nesterov=False or a momentum.")
        if not self.weight_decay >= 0:
            raise ConfigError(f"Recipe.weight_decay must be >= 0; got {self.weight_decay!r}.")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"Recipe.label_smoothing must be in [0, 1); got {self.label_smoothing!r}.")
        if not _is_int(self.bn_calibration_examples) or self.bn_calibration_examples < 0:
            raise ConfigError(
                "Recipe.bn_calibration_examples must be an int >= 0 (0: keep Keras's moving averages); "
                f"got {self.bn_calibration_examples!r}."
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"Recipe.grad_clip must be > 0 or None (no clipping); got {self.grad_clip!r}.")
        if self.init not in INITS:
            raise ConfigError(f"Recipe.init must be one of {list(INITS)}; got {self.init!r}.")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"Recipe.seed must be a non-negative int; got {self.seed!r}.")
        for field in ("mixed_precision", "jit_compile"):
            value = getattr(self, field)
            if not isinstance(value, bool) and value != AUTO:
                raise ConfigError(f"Recipe.{field} must be True, False or 'auto'; got {value!r}.")

    # -- presets ------------------------------------------------------------

    @classmethod
    def cpu(cls, **changes: Any) -> Recipe:
        """A run for a CPU and small data (the defaults; see the class docstring).

        Example:
          >>> Recipe.cpu(epochs=2).epochs
          2
        """
        return cls(**changes)

    @classmethod
    def gpu(cls, **changes: Any) -> Recipe:
        """The paper's retraining: 600 epochs, cosine, peak 0.025 at batch 96, gradients clipped at 5.

        Example:
          >>> Recipe.gpu().learning_rate
          0.025
        """
        paper = {
            "epochs": 600, "learning_rate": 0.025, "reference_batch_size": 96, "warmup_epochs": 0.0,
            "grad_clip": 5.0,
        }  # fmt: skip
        return cls(**{**paper, **changes})

    @classmethod
    def preset(cls, name: str, **changes: Any) -> Recipe:
        """`Recipe.cpu()` or `Recipe.gpu()` by name ("cpu", "gpu").

        Example:
          >>> Recipe.preset("gpu", epochs=300).epochs
          300
        """
        presets = {"cpu": cls.cpu, "gpu": cls.gpu}
        if name not in presets:
            raise ConfigError(f"Unknown recipe preset {name!r}; presets are {sorted(presets)}.")
        return presets[name](**changes)

    # -- values derived from the recipe ---------------------------------------

    def replace(self, **changes: Any) -> Recipe:
        """A copy with `changes` (validated again)."""
        return dataclasses.replace(self, **changes)

    def peak_learning_rate(self, batch_size: int | None) -> float:
        """`learning_rate` scaled to `batch_size` examples per step.

        Example:
          >>> Recipe(learning_rate=0.05, reference_batch_size=64).peak_learning_rate(128)
          0.1
        """
        if self.reference_batch_size is None or batch_size is None:
            return float(self.learning_rate)
        return float(self.learning_rate) * batch_size / self.reference_batch_size

    def uses_mixed_precision(self) -> bool:
        """Whether training runs in mixed precision ("auto": when a GPU is visible)."""
        if self.mixed_precision == AUTO:
            return bool(tf.config.list_physical_devices("GPU"))
        return bool(self.mixed_precision)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Recipe has no fields {unknown}; its fields are {sorted(known)}.")
        return cls(**data)


@keras.saving.register_keras_serializable(package="nat_keras")
class CoupledWeightDecaySGD(keras.optimizers.SGD):
    """SGD whose weight decay is an L2 term in the gradient, as PyTorch's SGD.

    Each step uses `gradient + l2 * weight` before momentum, which is what
    the paper's `weight_decay` means. Keras's `weight_decay` argument instead
    shrinks weights by `learning_rate * weight_decay` outside the momentum
    (decoupled), a different and, with momentum 0.9, roughly ten times
    weaker regularisation at the same coefficient.

    Args:
      l2: the coefficient; 0 is plain SGD.
      **kwargs: as for `keras.optimizers.SGD` (without `weight_decay`).

    Example:
      >>> optimizer = CoupledWeightDecaySGD(learning_rate=0.1, momentum=0.9, nesterov=True, l2=3e-4)
    """

    def __init__(self, *, l2: float = 0.0, **kwargs: Any):
        if kwargs.get("weight_decay"):
            raise ConfigError(
                "CoupledWeightDecaySGD takes its weight decay as l2=...; weight_decay (Keras's decoupled "
                "decay) would decay the weights twice."
            )
        kwargs.pop("weight_decay", None)
        super().__init__(**kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self.l2:
            gradient = keras.ops.add(
                keras.ops.cast(gradient, variable.dtype), keras.ops.multiply(variable, self.l2)
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "l2": self.l2}


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` returns.

    Attributes:
      model: the trained model (a clone: the model given to `train` is
        unchanged).
      recipe: the recipe it was trained with.
      history: per-epoch values, one entry per epoch of the whole run (a
        resumed run includes the epochs before the interruption): "loss"
        (the smoothed training loss, plus the model's own regularizer
        losses if it has any; the recipe's weight decay acts on the
        gradients and is not in it), "accuracy" (on the augmented training
        batches) and "learning_rate" (the rate of the epoch's last step).
      epochs: epochs the model has been trained for (`recipe.epochs`).
      initial_epoch: the epoch this call started at: 0, or where a run in
        `checkpoint_dir` was interrupted.
      test_accuracy / test_loss: on the test split (None without one).
      cost: params and MACs of the trained model (`nat_keras.graph.cost`).
      wall_time: seconds this call took, data and evaluation included.
      steps_per_epoch: optimizer steps per epoch.
      batch_size: examples per step the peak learning rate was scaled to
        (None when the recipe does not scale it).
      peak_learning_rate: the learning rate after warm-up.
      objective: which loss the model was trained with, in words.
      mixed_precision: whether training ran in mixed precision.
    """

    model: keras.Model
    recipe: Recipe
    history: dict[str, tuple[float, ...]]
    epochs: int
    initial_epoch: int
    test_accuracy: float | None
    test_loss: float | None
    cost: Cost
    wall_time: float
    steps_per_epoch: int
    batch_size: int | None
    peak_learning_rate: float
    objective: str
    mixed_precision: bool

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, JSON-ready.

        Example:
          >>> json.dumps(result.to_dict())
        """
        return {
            "model_name": self.model.name,
            "recipe": self.recipe.to_dict(),
            "history": {key: list(values) for key, values in self.history.items()},
            "epochs": self.epochs,
            "initial_epoch": self.initial_epoch,
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "params": self.cost.params,
            "macs": self.cost.macs,
            "wall_time": self.wall_time,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.batch_size,
            "peak_learning_rate": self.peak_learning_rate,
            "objective": self.objective,
            "mixed_precision": self.mixed_precision,
        }


# -- the pieces of a run ---------------------------------------------------------


def learning_rate_schedule(
    recipe: Recipe, *, steps_per_epoch: int, batch_size: int | None = None
) -> keras.optimizers.schedules.LearningRateSchedule:
    """The recipe's schedule: linear warm-up from 0 to the peak, then cosine to 0.

    Step s (0-based) of a run of T = epochs * steps_per_epoch steps with
    W = round(warmup_epochs * steps_per_epoch) warm-up steps has the rate
    `peak * s / W` for s < W, then `peak * (1 + cos(pi * (s - W) / (T - W))) / 2`.

    Args:
      recipe: the Recipe.
      steps_per_epoch: optimizer steps per epoch.
      batch_size: examples per step, to scale the peak
        (`Recipe.peak_learning_rate`).

    Example:
      >>> schedule = learning_rate_schedule(Recipe(epochs=2, warmup_epochs=1), steps_per_epoch=10)
      >>> float(schedule(5)), float(schedule(10))   # half way up, the peak
      (0.025, 0.05)
    """
    if not _is_int(steps_per_epoch) or steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch must be a positive int; got {steps_per_epoch!r}.")
    peak = recipe.peak_learning_rate(batch_size)
    total = recipe.epochs * steps_per_epoch
    warmup = min(round(recipe.warmup_epochs * steps_per_epoch), total)
    decay = max(total - warmup, 1)  # Keras divides by it; a run of warm-up only never decays
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=decay, alpha=0.0)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=decay, alpha=0.0, warmup_target=peak, warmup_steps=warmup
    )


def smoothed_loss(objective: Objective, label_smoothing: float, *, model_name: str = "model") -> Any:
    """The objective's loss, with `label_smoothing` (for `Model.compile`).

    The model's loss is honoured: a compiled CategoricalCrossentropy stays
    one, with `label_smoothing` (replacing any it had), and so on. Keras's
    SparseCategoricalCrossentropy cannot smooth; it becomes a
    `ClassificationCrossentropy` with the same `from_logits`, which takes
    sparse and one-hot labels and smooths the one-hot form of either.

    Args:
      objective: `nat_keras.objective.objective_of(model)`.
      label_smoothing: in [0, 1); 0 returns `objective.keras_loss` as it is.
      model_name: names the model in errors.

    Returns:
      A loss for `compile`.

    Raises:
      ConfigError: `label_smoothing` > 0 and the compiled loss has no
        label smoothing (hinge, KL divergence, a custom loss) or ignores a
        class.

    Example:
      >>> model.compile(loss="sparse_categorical_crossentropy")
      >>> smoothed_loss(objective_of(model), 0.1).label_smoothing
      0.1
    """
    loss = objective.keras_loss
    if not label_smoothing:
        return loss
    if isinstance(loss, ClassificationCrossentropy):
        return ClassificationCrossentropy.from_config(
            {**loss.get_config(), "label_smoothing": label_smoothing}
        )
    name = (
        type(loss).__name__ if isinstance(loss, keras.losses.Loss) else getattr(loss, "__name__", repr(loss))
    )
    if (
        isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
        or name == "sparse_categorical_crossentropy"
    ):
        if getattr(loss, "ignore_class", None) is not None:
            raise ConfigError(
                f"Model {model_name!r} is compiled with SparseCategoricalCrossentropy(ignore_class="
                f"{loss.ignore_class}), which label smoothing cannot keep; train it with "
                "Recipe(label_smoothing=0.0), or compile it without ignore_class."
            )
        return ClassificationCrossentropy(
            task=CATEGORICAL, from_logits=objective.from_logits, label_smoothing=label_smoothing
        )
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        if "label_smoothing" in config:
            return type(loss).from_config({**config, "label_smoothing": label_smoothing})
    elif name in _SMOOTHABLE_FUNCTIONS:
        # Keras's loss functions read probabilities, as the objective says.
        return _SMOOTHABLE_FUNCTIONS[name](from_logits=objective.from_logits, label_smoothing=label_smoothing)
    raise ConfigError(
        f"Recipe.label_smoothing={label_smoothing} cannot be applied to the loss model {model_name!r} is "
        f"compiled with ({name}): it has no label smoothing. Train it with Recipe(label_smoothing=0.0), "
        "or compile it with a crossentropy loss."
    )


def initial_model(model: keras.Model, recipe: Recipe) -> keras.Model:
    """The model `train` starts from: a clone, freshly initialised or with the weights.

    Call it after `keras.utils.set_random_seed` for reproducible weights
    (`train` does). With mixed precision, every layer computes in float16
    except those producing the model's outputs.

    Args:
      model: a Keras 3 functional or Sequential model; it is not changed.
      recipe: its `init` ("scratch" or "inherited") and mixed precision.

    Returns:
      A new, uncompiled model of the same architecture.

    Raises:
      UnsupportedModelError: the model cannot be cloned (a subclassed model).

    Example:
      >>> fresh = initial_model(model, Recipe(init="scratch"))
      >>> same = initial_model(model, Recipe(init="inherited"))
    """
    mixed = recipe.uses_mixed_precision()
    output_layers = _output_layers(model) if mixed else []

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if mixed and not any(layer is output for output in output_layers):
            config["dtype"] = "mixed_float16"
        return type(layer).from_config(config)

    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except (ValueError, TypeError, NotImplementedError) as error:
        raise UnsupportedModelError(
            f"nat_keras.train cannot clone model {model.name!r} ({error}); it trains a clone so that the "
            "model you pass is never changed. Pass a functional or Sequential Keras 3 model."
        ) from error
    if recipe.init == INHERITED:
        clone.set_weights(model.get_weights())
    return clone


# -- train ------------------------------------------------------------------------


def train(
    model: keras.Model,
    data: Any,
    recipe: Recipe | None = None,
    *,
    test_data: tf.data.Dataset | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    strategy: tf.distribute.Strategy | None = None,
    verbose: int | str = "auto",
) -> TrainResult:
    """Trains a clone of `model` with `recipe`; the model itself is never changed.

    Calls `keras.utils.set_random_seed(recipe.seed)`, which seeds the whole
    process (Python, NumPy, TensorFlow, Keras), so that the initial weights
    of `init="scratch"` are reproducible.

    Args:
      model: a Keras 3 functional or Sequential classifier with one output.
        Compiled: its compiled loss is used (with label smoothing); not
        compiled: the loss its output activation implies
        (`nat_keras.objective`).
      data: a `nat_keras.data.NatSplits` (its `train` part is trained on,
        augmented and shuffled, and its `test` part scores the result) or a
        `tf.data.Dataset` of `(inputs, labels)` batches.
      recipe: the Recipe; default `Recipe()` (`Recipe.cpu()`).
      test_data: batches to score the result on; default `data.test` for
        NatSplits, none for a dataset.
      checkpoint_dir: where to keep checkpoints (each epoch) and the
        per-epoch history. A run interrupted there resumes at the epoch it
        had finished, with the optimizer's state; a finished run returns
        its model at once. A directory holding the checkpoints of another
        model, recipe or dataset size is refused.
      callbacks: more Keras callbacks, run after `train`'s own.
      strategy: a `tf.distribute` strategy to build and train in.
      verbose: passed to `Model.fit` and `evaluate` (0 silent).

    Returns:
      A TrainResult: the trained model, the per-epoch history, test
      accuracy, params and MACs, wall time.

    Raises:
      UnsupportedModelError: the model is not a single-output classifier or
        cannot be cloned.
      ConfigError: bad data, a label smoothing the loss cannot take, or a
        checkpoint directory of another run.

    Example:
      >>> splits = nat_keras.data.load_splits("digits")
      >>> result = train(new_model, splits, Recipe.cpu(init="inherited"), checkpoint_dir="runs/retrain")
      >>> print(f"{result.test_accuracy:.3f} at {result.cost.macs:,} MACs")
    """
    start = time.perf_counter()
    recipe = recipe or Recipe()
    if not isinstance(recipe, Recipe):
        raise ConfigError(f"train(): recipe must be a nat_keras.train.Recipe, got {type(recipe).__name__}.")
    objective = objective_of(model)  # a model that is no classifier fails here, before any work
    loss = smoothed_loss(objective, recipe.label_smoothing, model_name=model.name)
    train_data, test_data = _parts(data, test_data, model.name)
    steps_per_epoch = _steps_per_epoch(train_data, data, model.name)
    batch_size = _batch_size(train_data, data) if recipe.reference_batch_size is not None else None
    schedule = learning_rate_schedule(recipe, steps_per_epoch=steps_per_epoch, batch_size=batch_size)
    mixed = recipe.uses_mixed_precision()

    restored: list[dict[str, float]] = []
    directory = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
    if directory is not None:
        restored = _claim_directory(directory, model, recipe, steps_per_epoch)

    keras.utils.set_random_seed(recipe.seed)
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        trained = initial_model(model, recipe)
        optimizer = CoupledWeightDecaySGD(
            learning_rate=schedule,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            l2=recipe.weight_decay,
            global_clipnorm=recipe.grad_clip,
        )
        trained.compile(
            optimizer=optimizer, loss=loss, metrics=[_accuracy(objective)], jit_compile=recipe.jit_compile
        )
    epoch_log = _EpochLog(
        None if directory is None else os.path.join(directory, _HISTORY_FILE), restored, schedule
    )
    # The log first: it adds the learning rate to the logs the History and the
    # user's callbacks see, and writes the history before BackupAndRestore
    # saves, so the history never lags the checkpoint (it is cut on resume).
    own: list[keras.callbacks.Callback] = [epoch_log]
    if directory is not None:
        own.append(
            keras.callbacks.BackupAndRestore(os.path.join(directory, _BACKUP_SUBDIR), delete_checkpoint=False)
        )
    trained.fit(
        train_data, epochs=recipe.epochs, callbacks=[*own, *callbacks], verbose=verbose, shuffle=False
    )  # the data shuffles itself
    if recipe.bn_calibration_examples:
        with strategy.scope():  # the BN variables may be mirrored
            recalibrate(trained, calibration_images(train_data, recipe.bn_calibration_examples))
    test_loss = test_accuracy = None
    if test_data is not None:
        scores = trained.evaluate(test_data, verbose=verbose, return_dict=True)
        test_loss, test_accuracy = float(scores["loss"]), float(scores["accuracy"])
    initial_epoch = recipe.epochs if epoch_log.first_epoch is None else epoch_log.first_epoch
    return TrainResult(
        model=trained,
        recipe=recipe,
        history=epoch_log.history(),
        epochs=recipe.epochs,
        initial_epoch=initial_epoch,
        test_accuracy=test_accuracy,
        test_loss=test_loss,
        cost=cost(trained),
        wall_time=time.perf_counter() - start,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        peak_learning_rate=recipe.peak_learning_rate(batch_size),
        objective=_describe(objective, recipe),
        mixed_precision=mixed,
    )


class _EpochLog(keras.callbacks.Callback):
    """Adds the learning rate to each epoch's logs and keeps (and saves) every epoch's values.

    The first epoch a fit runs is where it started: 0, or the epoch
    BackupAndRestore resumed at; the restored history is cut there.
    """

    def __init__(self, path: str | None, restored: list[dict[str, float]], schedule: Any):
        super().__init__()
        self.path = path
        self.schedule = schedule
        self.epochs = list(restored)
        self.first_epoch: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch
            del self.epochs[epoch:]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            # The rate the epoch's last step used (the optimizer's own property
            # would give the next step's).
            last_step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.schedule(max(last_step, 0))))
        self.epochs.append({key: float(value) for key, value in (logs or {}).items()})
        if self.path is not None:
            _write_json(self.path, {"format_version": RUN_FORMAT_VERSION, "epochs": self.epochs})

    def history(self) -> dict[str, tuple[float, ...]]:
        keys = dict.fromkeys(key for epoch in self.epochs for key in epoch)
        return {key: tuple(epoch.get(key, math.nan) for epoch in self.epochs) for key in keys}


def _claim_directory(
    directory: str, model: keras.Model, recipe: Recipe, steps_per_epoch: int
) -> list[dict[str, float]]:
    """Records which run `directory` holds, or checks it is this one; returns its history."""
    run = {
        "format_version": RUN_FORMAT_VERSION,
        "model_name": model.name,
        "fingerprint": encode(model).fingerprint(),
        "recipe": recipe.to_dict(),
        "steps_per_epoch": steps_per_epoch,
    }
    run_path = os.path.join(directory, _RUN_FILE)
    if os.path.exists(run_path):
        with open(run_path, encoding="utf-8") as f:
            previous = json.load(f)
        if isinstance(previous.get("recipe"), dict) and set(previous["recipe"]) <= set(run["recipe"]):
            # A run recorded before a Recipe field existed had that field's default.
            previous["recipe"] = Recipe.from_dict(previous["recipe"]).to_dict()
        if previous != run:
            different = sorted(key for key in run if previous.get(key) != run[key])
            raise ConfigError(
                f"Checkpoint directory {directory!r} holds a run that differs from this one in "
                f"{different} (model {previous.get('model_name')!r}); resuming it would mix two runs. "
                "Pass another checkpoint_dir, or delete that directory to start over."
            )
    else:
        os.makedirs(directory, exist_ok=True)
        _write_json(run_path, run)
    history_path = os.path.join(directory, _HISTORY_FILE)
    if not os.path.exists(history_path):
        return []
    with open(history_path, encoding="utf-8") as f:
        return list(json.load(f)["epochs"])


def _write_json(path: str, data: Any) -> None:
    # Write then rename, so an interruption never leaves half a file.
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(temporary, path)


def _parts(data: Any, test_data: Any, name: str) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    from nat_keras.data import NatSplits

    if isinstance(data, NatSplits):
        return data.train, data.test if test_data is None else test_data
    if isinstance(data, tf.data.Dataset):
        return data, test_data
    raise ConfigError(
        f"train({name!r}): data must be a nat_keras.data.NatSplits or a tf.data.Dataset of (inputs, labels) "
        f"batches, got {type(data).__name__}."
    )


def _steps_per_epoch(train_data: tf.data.Dataset, data: Any, name: str) -> int:
    """Batches per pass over `train_data`: known, computed from the split sizes, or counted."""
    from nat_keras.data import NatSplits

    cardinality = int(train_data.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ConfigError(
            f"train({name!r}): the training data repeats forever, so an epoch has no end; pass one pass of "
            "the data (without .repeat()), e.g. dataset.take(steps_per_epoch)."
        )
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        if isinstance(data, NatSplits) and data.num_train_examples and data.config is not None:
            batches = data.num_train_examples / data.config.batch_size
            cardinality = math.floor(batches) if data.config.drop_remainder else math.ceil(batches)
        else:  # e.g. a filtered dataset: one pass to count its batches
            cardinality = int(train_data.reduce(0, lambda count, _: count + 1))
    if cardinality < 1:
        raise ConfigError(f"train({name!r}): the training data is empty.")
    return cardinality


def _batch_size(train_data: tf.data.Dataset, data: Any) -> int:
    """Examples per step: the data config's batch size, else the first batch's."""
    from nat_keras.data import NatSplits

    if isinstance(data, NatSplits) and data.config is not None:
        return int(data.config.batch_size)
    for batch in train_data.take(1):
        return int(tf.shape(tf.nest.flatten(batch)[0])[0])
    raise ConfigError("train(): the training data is empty.")


def _accuracy(objective: Objective) -> Any:
    """Top-1 accuracy as the objective scores it, named "accuracy" in the logs."""
    if objective.task == BINARY:
        return keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if objective.from_logits else 0.5)
    return "accuracy"  # Keras picks sparse or categorical accuracy from the labels' shape


def _output_layers(model: keras.Model) -> list[keras.layers.Layer]:
    traced = trace(model)
    producers = traced.producer()
    return [producers[output].layer for output in traced.outputs if output in producers]


def _describe(objective: Objective, recipe: Recipe) -> str:
    smoothing = f", label smoothing {recipe.label_smoothing}" if recipe.label_smoothing else ""
    return objective.description + smoothing


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
