"""REINFORCE for the NAT policy: moving-average baseline, entropy bonus, Adam.

loss = -mean_ij[(R_ij - b) * log pi(alpha_ij | beta_i)] - entropy_weight * H(pi(. | beta)),
with R = acc(alpha; w) - acc(beta; w) on the same held-out batch (docs/design.md,
section 2). Adam uses the paper's settings (3e-4, betas (0.5, 0.999)) with
L2 weight decay added to the gradient, as PyTorch's Adam does.

Baseline updates:
- "standard" (default): b <- decay * b + (1 - decay) * mean(R), starting
  from the first mean reward.
- "authors": as in the authors' code (nat_learner.py), the moving average
  tracks the advantage, b <- decay * b + (1 - decay) * (mean(R) - b), and the
  advantage is R itself while b is still 0.
- "leave_one_out": each plan's baseline is the mean reward of the other
  plans sampled for the same input in the same step (Kool et al., 2019,
  "Buy 4 REINFORCE samples, get a baseline for free"); needs
  `num_samples` >= 2. The moving average is still kept, for reporting.
  Why: a supernet keeps training between policy steps, so rewards drift
  (in the cell searches of docs/design.md section 6 the mean per epoch fell
  from about 0 to -0.3). A moving average lags a drift, every advantage
  then has the same sign for tens of steps, and that common push drove
  the policy to one plan with saturated logits (entropy 8e-8), from which
  no gradient brings it back. Rewards of the same step share the
  supernet's weights, so their differences carry no drift.

Example:
  >>> learner = Reinforce(policy, ReinforceConfig())
  >>> stats = learner.update([graph], [[plan_a, plan_b]], np.array([[0.01, -0.02]]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nat_keras import compat
from nat_keras.graph.arch_graph import ArchGraph
from nat_keras.plan import TransformPlan
from nat_keras.policy.policy import Policy

BASELINE_UPDATES = ("standard", "authors", "leave_one_out")


@dataclasses.dataclass(frozen=True)
class ReinforceConfig:
    """The paper's policy-update settings.

    Attributes:
      learning_rate / beta_1 / beta_2: Adam's settings.
      weight_decay: L2 on the policy weights, added to the gradient.
      entropy_weight: weight of the entropy bonus.
      baseline_decay: decay of the moving-average baseline.
      baseline_update: "standard", "authors" or "leave_one_out" (see the
        module docstring).
      clip_norm: global gradient-norm clip (the authors clip at 5); None: off.
      num_inputs: m, input architectures per policy step.
      num_samples: n, plans sampled per input architecture.
    """

    learning_rate: float = 3e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    weight_decay: float = 5e-4
    entropy_weight: float = 0.003
    baseline_decay: float = 0.99
    baseline_update: str = "standard"
    clip_norm: float | None = 5.0
    num_inputs: int = 1
    num_samples: int = 1

    def __post_init__(self):
        if self.baseline_update not in BASELINE_UPDATES:
            raise ValueError(
                f"baseline_update must be one of {BASELINE_UPDATES}, got {self.baseline_update!r}."
            )
        if self.num_inputs < 1 or self.num_samples < 1:
            raise ValueError("num_inputs and num_samples must be at least 1.")
        if self.baseline_update == "leave_one_out" and self.num_samples < 2:
            raise ValueError(
                "baseline_update='leave_one_out' compares plans of the same input: "
                f"num_samples must be at least 2, got {self.num_samples}."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReinforceConfig:
        return cls(**data)


class Reinforce:
    """Policy-gradient updates of a Policy (its optimizer and baseline too)."""

    def __init__(self, policy: Policy, config: ReinforceConfig | None = None):
        self.policy = policy
        self.config = config or ReinforceConfig()
        self.optimizer = keras.optimizers.Adam(
            learning_rate=self.config.learning_rate, beta_1=self.config.beta_1, beta_2=self.config.beta_2
        )
        self.optimizer.build(policy.trainable_variables)
        self.baseline = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="reward_baseline")
        # The standard baseline starts at the first mean reward: from 0, every
        # early advantage would be positive and reinforce whatever was sampled.
        self.baseline_ready = tf.Variable(False, trainable=False, name="reward_baseline_ready")

    def checkpoint_objects(self) -> dict[str, Any]:
        """What a tf.train.Checkpoint needs to resume the policy's learning."""
        return {
            "policy": compat.checkpointable_variables(self.policy.network),
            "policy_optimizer": self.optimizer,
            "baseline": self.baseline,
            "baseline_ready": self.baseline_ready,
        }

    def update(
        self,
        graphs: Sequence[ArchGraph],
        plans: Sequence[Sequence[TransformPlan]],
        rewards: np.ndarray,
    ) -> dict[str, float]:
        """One policy-gradient step on rewards[i][j] of plans[i][j] for graphs[i].

        Returns:
          reward (mean), advantage (mean), baseline (after the update),
          entropy (mean over graphs) and loss.
        """
        rewards = np.asarray(rewards, dtype=np.float32)
        authors = self.config.baseline_update == "authors"
        if not authors and not bool(self.baseline_ready.numpy()):
            self.baseline.assign(float(rewards.mean()))
            self.baseline_ready.assign(True)
        baseline = float(self.baseline.numpy())
        if self.config.baseline_update == "leave_one_out":
            if rewards.shape[-1] < 2:
                raise ValueError(
                    "baseline_update='leave_one_out' needs at least 2 plans per input, "
                    f"got rewards of shape {rewards.shape}."
                )
            others = (rewards.sum(axis=-1, keepdims=True) - rewards) / (rewards.shape[-1] - 1)
            advantages = rewards - others
        elif authors and not baseline:  # the authors subtract the baseline only once it is non-zero
            advantages = rewards
        else:
            advantages = rewards - baseline
        variables = self.policy.trainable_variables
        with tf.GradientTape() as tape:
            log_probs = tf.stack([lp for row in self.policy.log_probs(graphs, plans) for lp in row])
            weights = tf.constant([a for row in advantages for a in row], dtype=tf.float32)
            entropy = self.policy.entropy(graphs)
            loss = -tf.reduce_mean(weights * log_probs) - self.config.entropy_weight * entropy
        grads = tape.gradient(loss, variables)
        grads = [g + self.config.weight_decay * v for g, v in zip(grads, variables)]
        if self.config.clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.config.clip_norm)
        self.optimizer.apply_gradients(zip(grads, variables))
        mean_reward = float(rewards.mean())
        decay = self.config.baseline_decay
        target = float(advantages.mean()) if authors else mean_reward
        self.baseline.assign(decay * baseline + (1.0 - decay) * target)
        return {
            "reward": mean_reward,
            "advantage": float(advantages.mean()),
            "baseline": float(self.baseline.numpy()),
            "entropy": float(entropy),
            "loss": float(loss),
        }
