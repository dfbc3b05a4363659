"""Train a NAT policy on the paper's cell space, offline.

NAT's search (docs/design.md, section 2) on the cell space: a CellSupernet
with affine-free BN learns shared weights on 40% of the data while the GNN
policy learns, by REINFORCE, to transform sampled input cells (beta) into
better ones (alpha), rewarded by acc(alpha) - acc(beta) on the other 60%.

The policy and its training.json go to --output_dir (default `runs/policy`,
in the current directory); use it with
`nat_keras.transform(model, policy=Policy.load("runs/policy"))`. Nothing is
written into the installed package unless you ask: --ship_as_default writes
the policy into `nat_keras/assets/default_policy`, where
`nat_keras.policy.default_policy()` (and `transform` without a policy) load it.

  python examples/train_policy.py --epochs=30 --weight_steps=80 --policy_steps=10 --samples=8 \
      --learning_rate=0.0001 --entropy_weight=0.0003 --seed=0            # -> runs/policy
  python examples/train_policy.py ... --ship_as_default                 # -> the package's default policy
"""

from __future__ import annotations

import json
import os
import sys
import time

import nat_keras  # first: prepares the two Kerases (docs/design.md, section 5)

# isort: split
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from nat_keras.policy import Policy, ReinforceConfig
from nat_keras.policy.policy import DEFAULT_POLICY_DIR
from nat_keras.search import NATSearch, SearchConfig, SupernetEnvironment
from nat_keras.supernet import CellSupernet
from nat_keras.supernet.trainer import SupernetConfig, SupernetTrainer

_DATASET = flags.DEFINE_enum("dataset", "digits", sorted(nat_keras.data.DATASETS), "Dataset.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 16, "Images are resized to this size (digits: from 8).")
_CELLS = flags.DEFINE_integer("num_cells", 5, "Cells in the supernet (the paper: 8).")
_CHANNELS = flags.DEFINE_integer("channels", 8, "Channels of the first cells (the paper: 20).")
_NODES = flags.DEFINE_integer("num_nodes", 4, "Intermediate nodes per cell (B).")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Search epochs (the paper: 100, 200 for NAT++).")
_WEIGHT_STEPS = flags.DEFINE_integer("weight_steps", 10, "Supernet weight steps per epoch.")
_POLICY_STEPS = flags.DEFINE_integer("policy_steps", 10, "Policy steps per epoch.")
_INPUTS = flags.DEFINE_integer("inputs", 2, "Input architectures per policy step (m).")
_SAMPLES = flags.DEFINE_integer("samples", 4, "Plans per input architecture (n).")
_LR = flags.DEFINE_float("learning_rate", 3e-4, "Policy learning rate (the paper: 3e-4).")
_ENTROPY = flags.DEFINE_float(
    "entropy_weight", 0.003, "Entropy bonus (the paper: 0.003); it is summed over edges, rewards are not."
)
_KEEP_PRIOR = flags.DEFINE_float(
    "keep_prior",
    0.9,
    "The policy's initial probability of keep per edge, in (0, 1) (Python's keep_prior=None, the "
    "paper's plain softmax, has no flag).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Checkpoints and TensorBoard logs (resumable).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir",
    os.path.join("runs", "policy"),
    "Where to save the policy (relative: to the current directory).",
)
_SHIP_AS_DEFAULT = flags.DEFINE_boolean(
    "ship_as_default",
    False,
    "Save the policy as nat_keras's default policy, in the package's assets directory (replacing the "
    "shipped one) instead of --output_dir.",
)
# Where files go, not how the policy is trained: left out of the recorded command.
_LOCATION_FLAGS = ("run_dir", "output_dir", "ship_as_default")


def output_directory(output_dir: str, ship_as_default: bool, *, output_dir_given: bool) -> str:
    """Where the policy goes: `output_dir`, or the package's default policy only when asked.

    Raises:
      app.UsageError: both --ship_as_default and --output_dir were given.

    Example:
      >>> output_directory("runs/policy", False, output_dir_given=False)
      'runs/policy'
    """
    if not ship_as_default:
        return output_dir
    if output_dir_given:
        raise app.UsageError(
            f"--ship_as_default writes to {DEFAULT_POLICY_DIR}; drop --output_dir={output_dir}, or drop "
            "--ship_as_default to write there instead."
        )
    return DEFAULT_POLICY_DIR


def main(argv: list[str]) -> None:
    del argv
    output_dir = output_directory(
        _OUTPUT_DIR.value, _SHIP_AS_DEFAULT.value, output_dir_given=flags.FLAGS[_OUTPUT_DIR.name].present
    )
    if _SHIP_AS_DEFAULT.value:
        print(f"--ship_as_default: the policy will replace nat_keras's default policy in {output_dir}.")
    logging.set_verbosity(logging.WARNING)
    keras.utils.set_random_seed(_SEED.value)
    start = time.perf_counter()
    splits = nat_keras.data.load_splits(
        _DATASET.value, batch_size=64, image_size=_IMAGE_SIZE.value, seed=_SEED.value
    )
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        supernet = CellSupernet(
            op_list="natpp",
            num_nodes=_NODES.value,
            num_cells=_CELLS.value,
            channels=_CHANNELS.value,
            num_classes=splits.num_classes,
            input_shape=splits.image_shape,
            space="nat++",
        )
    run_dir = _RUN_DIR.value
    trainer = SupernetTrainer(
        supernet,
        config=SupernetConfig(seed=_SEED.value),
        strategy=strategy,
        directory=None if run_dir is None else os.path.join(run_dir, "supernet"),
    )
    environment = SupernetEnvironment(
        supernet, weights_data=splits.weights, reward_data=splits.policy, trainer=trainer
    )
    policy = Policy(space="nat++", seed=_SEED.value, keep_prior=_KEEP_PRIOR.value)
    config = SearchConfig(
        epochs=_EPOCHS.value,
        weight_steps=_WEIGHT_STEPS.value,
        policy_steps=_POLICY_STEPS.value,
        reinforce=ReinforceConfig(
            learning_rate=_LR.value,
            num_inputs=_INPUTS.value,
            num_samples=_SAMPLES.value,
            entropy_weight=_ENTROPY.value,
        ),
        seed=_SEED.value,
    )
    search = NATSearch(
        environment,
        policy,
        config=config,
        directory=None if run_dir is None else os.path.join(run_dir, "search"),
    )
    history = search.run(verbose=1)
    policy.save(output_dir)
    seconds = time.perf_counter() - start
    final = float(np.mean(history.reward[-5:])) if history.reward else float("nan")
    # Every setting of this script that differs from its default (and the
    # seed), so the command reproduces the run; where files go is not a setting.
    # absl files a script's flags under sys.argv[0], an imported module's under its name.
    module = sys.argv[0] if __name__ == "__main__" else __name__
    settings = [
        flag
        for flag in flags.FLAGS.get_key_flags_for_module(module)
        if flag.name not in _LOCATION_FLAGS and (flag.value != flag.default or flag.name == _SEED.name)
    ]
    summary = {
        "command": "python examples/train_policy.py "
        + " ".join(f"--{flag.name}={flag.value}" for flag in sorted(settings, key=lambda f: f.name)),
        "seconds": round(seconds),
        "final_mean_reward": final,
        "reward_per_epoch": [round(r, 4) for r in history.reward],
        "supernet": {"num_cells": _CELLS.value, "channels": _CHANNELS.value, "image_size": _IMAGE_SIZE.value},
    }
    with open(os.path.join(output_dir, "training.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    shipped = " (nat_keras's default policy)" if _SHIP_AS_DEFAULT.value else ""
    print(f"Saved the policy to {output_dir}{shipped} after {seconds:.0f} s; mean reward of the last epochs "
          f"{final:+.4f}.")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
