"""Train a supernet's shared weights w on sampled architectures (NAT's w-step).

Each step draws an input architecture, runs one batch through the supernet
with only that architecture's ops, and updates the shared weights with SGD
(momentum, coupled weight decay as in the paper's PyTorch code, gradient
clipping as in DARTS). Gradients are summed over replicas before decay and
clipping; BN statistics are averaged over replicas after each step. Ops the
architecture did not run get no weight decay, but SGD momentum still moves
them (PyTorch would leave them alone; TF gives them zero gradients).

The step runs under the `tf.distribute` strategy the supernet was built in;
progress goes to a Keras Progbar and TensorBoard; state (weights, optimizer
slots, step) to a `tf.train.CheckpointManager`, so a killed run resumes where
its last checkpoint left it.

Example:
  >>> strategy = tf.distribute.MirroredStrategy()
  >>> with strategy.scope():
  ...     supernet = ModelSupernet(model)
  >>> trainer = SupernetTrainer(supernet, strategy=strategy, directory="runs/w")
  >>> trainer.train(splits.weights, steps=1000)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras import compat
from nat_keras.objective import Objective
from nat_keras.supernet.base import Supernet


@dataclasses.dataclass(frozen=True)
class SupernetConfig:
    """The paper's defaults for the supernet weight updates (docs/design.md section 2).

    Attributes:
      learning_rate: SGD learning rate.
      momentum: SGD momentum.
      weight_decay: L2 weight decay, added to the gradient (PyTorch style).
      clip_norm: global gradient-norm clip (DARTS uses 5); None to turn off.
      seed: seeds the architecture drawn at each step (arch of step s depends
        only on (seed, s), so a resumed run draws the same ones).
      checkpoint_every: steps between checkpoints.
      max_checkpoints: checkpoints kept on disk.
      log_every: steps between TensorBoard writes.
    """

    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 3e-4
    clip_norm: float | None = 5.0
    seed: int = 0
    checkpoint_every: int = 100
    max_checkpoints: int = 3
    log_every: int = 10

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupernetConfig:
        return cls(**data)


class SupernetTrainer:
    """Updates a supernet's shared weights on sampled architectures.

    Args:
      supernet: a Supernet built inside `strategy.scope()`.
      config: optimisation and bookkeeping settings.
      strategy: the tf.distribute strategy (default: the current one). For a
        TPU, build the supernet and this trainer under a `TPUStrategy` scope:
        the code path is the same.
      directory: where checkpoints and TensorBoard logs go; if it holds a
        checkpoint, training resumes from it. None keeps nothing on disk.
      objective: the loss and accuracy to train with (sparse or one-hot
        labels); default: `supernet.objective`, i.e. the source model's
        compiled loss or the one its output activation implies
        (`nat_keras.objective.objective_of`), crossentropy on logits for a
        CellSupernet.
    """

    def __init__(
        self,
        supernet: Supernet,
        *,
        config: SupernetConfig | None = None,
        strategy: tf.distribute.Strategy | None = None,
        directory: str | os.PathLike | None = None,
        objective: Objective | None = None,
    ):
        self.supernet = supernet
        self.objective = objective or supernet.objective
        self.config = config or SupernetConfig()
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            self.optimizer = keras.optimizers.SGD(
                learning_rate=self.config.learning_rate, momentum=self.config.momentum
            )
            # Keras 3 optimizers create their slots lazily; a distributed
            # custom loop needs them created here, inside the scope.
            self.optimizer.build(supernet.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="supernet_step")
        self.directory = None if directory is None else os.fspath(directory)
        self._checkpoint = tf.train.Checkpoint(
            supernet=compat.checkpointable_variables(supernet), optimizer=self.optimizer, step=self.step
        )
        self._manager = None
        self._writer = None
        if self.directory is not None:
            self._manager = tf.train.CheckpointManager(
                self._checkpoint, os.path.join(self.directory, "checkpoints"), self.config.max_checkpoints
            )
            if self._manager.latest_checkpoint:
                self._checkpoint.restore(self._manager.latest_checkpoint).assert_existing_objects_matched()
            self._writer = tf.summary.create_file_writer(os.path.join(self.directory, "tensorboard"))
        self._train_step = None

    @property
    def resumed_from(self) -> str | None:
        """The checkpoint this trainer restored, if any."""
        return self._manager.latest_checkpoint if self._manager is not None else None

    def _replica_step(self, images: tf.Tensor, labels: tf.Tensor, arch: tf.Tensor):
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        # The global batch across replicas and workers (the last batch may be short).
        global_batch = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.shape(labels)[0])
        variables = self.supernet.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.supernet(images, arch=arch, training=True)
            per_example = self.objective.per_example_loss(labels, outputs)
            loss = tf.reduce_sum(per_example) / tf.cast(global_batch, per_example.dtype)
        grads = tape.gradient(loss, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        # Sum over replicas first, so decay and clipping see the true gradient.
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        # Weight decay only on the ops this architecture ran (their gradient is
        # not exactly zero), as PyTorch skips parameters without a gradient.
        grads = [
            g + self.config.weight_decay * v * tf.cast(tf.reduce_any(g != 0), v.dtype)
            for g, v in zip(grads, variables)
        ]
        if self.config.clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.config.clip_norm)
        # The optimizer sums gradients over replicas again: hand it 1/N each.
        self.optimizer.apply_gradients([(g / replicas, v) for g, v in zip(grads, variables)])
        if replicas > 1:
            # Keras 3 BN statistics are per-replica variables: keep them equal.
            for variable in self.supernet.non_trainable_variables:
                variable.assign(context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(variable)))
        correct = self.objective.correct(labels, outputs)
        return loss, correct, tf.cast(global_batch, tf.float32)

    def _make_train_step(self):
        @tf.function
        def train_step(batch, arch):
            images, labels = batch
            loss, correct, seen = self.strategy.run(self._replica_step, args=(images, labels, arch))
            loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
            correct = self.strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None)
            seen = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, seen, axis=None)  # same on all replicas
            self.step.assign_add(1)
            return loss, correct, seen

        return train_step

    def arch_for_step(self, step: int) -> np.ndarray:
        """The input architecture drawn at global step `step` (deterministic)."""
        return self.supernet.sample_arch(seed=(self.config.seed, int(step)))

    def train(self, dataset: tf.data.Dataset, *, steps: int, verbose: int = 1) -> dict[str, float]:
        """Train until the global step reaches `steps` (resumed runs continue).

        Args:
          dataset: batches of (images, labels); repeated as needed. The
            global batch size is the dataset's batch size.
          steps: the global step to stop at.
          verbose: 1 shows a Keras Progbar, 0 is silent.

        Returns:
          Mean loss and accuracy over the steps run in this call.
        """
        if self._train_step is None:
            self._train_step = self._make_train_step()
        start = int(self.step.numpy())
        if start >= steps:
            return {"loss": float("nan"), "accuracy": float("nan"), "steps_run": 0}
        # Skip the batches a resumed run already saw, so the data order matches.
        data = dataset.repeat().skip(start)
        data = self.strategy.experimental_distribute_dataset(data)
        progbar = keras.utils.Progbar(steps, stateful_metrics=["loss", "accuracy"]) if verbose else None
        total_loss = total_correct = total_seen = 0.0
        iterator = iter(data)
        for step in range(start, steps):
            batch = next(iterator)
            arch = tf.constant(self.arch_for_step(step))
            loss, correct, seen = self._train_step(batch, arch)
            loss, correct, global_batch = float(loss), float(correct), int(seen)
            total_loss += loss
            total_correct += correct
            total_seen += global_batch
            done = step + 1
            if self._writer is not None and done % self.config.log_every == 0:
                with self._writer.as_default(step=done):
                    tf.summary.scalar("supernet/loss", loss)
                    tf.summary.scalar("supernet/accuracy", correct / global_batch)
            if self._manager is not None and (done % self.config.checkpoint_every == 0 or done == steps):
                self._manager.save(checkpoint_number=done)
            if progbar is not None:
                progbar.update(done, [("loss", loss), ("accuracy", correct / global_batch)])
        run = steps - start
        return {"loss": total_loss / run, "accuracy": total_correct / max(total_seen, 1), "steps_run": run}
