"""nat_keras end to end on one reference network, offline.

Encodes a model as NAT's DAG and prints it (one row per edge: op, shapes,
params, MACs, legal actions), draws a legal transformation plan, rebuilds the
model with inherited weights, checks its cost against the budget, exports it
as a SavedModel with plan.json and cost.json, and serves it back.

  python examples/demo.py --model=resnet20 --seed=0 --export_dir=out/demo
"""

from __future__ import annotations

import nat_keras  # first: prepares the two Kerases (DESIGN.md section 4)

# isort: split
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

_MODEL = flags.DEFINE_enum("model", "resnet20", sorted(nat_keras.models.MODELS), "Reference network.")
_SPACE = flags.DEFINE_enum("space", "nat++", ["nat", "nat++"], "Action space of the plan.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random legal plan.")
_CHANGE_PROB = flags.DEFINE_float("change_prob", 0.3, "Chance that an edge changes in the plan.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", "out/demo", "Where to write the SavedModel.")
_PLACEHOLDERS = flags.DEFINE_bool("show_placeholders", False, "List placeholder null edges too.")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # TF's SavedModel writer is chatty at INFO
    model = nat_keras.models.get_model(_MODEL.value)
    graph = nat_keras.encode(model)
    print(nat_keras.format_graph(graph, placeholders=_PLACEHOLDERS.value), end="\n\n")

    plan = nat_keras.sample_random_plan(
        graph, _SEED.value, space=_SPACE.value, change_prob=_CHANGE_PROB.value
    )
    print(nat_keras.format_plan(graph, plan), end="\n\n")

    budget = nat_keras.Budget()
    new_model = nat_keras.apply_plan(model, plan, graph=graph, budget=budget)
    before, after = nat_keras.cost(model), nat_keras.cost(new_model)
    assert after == nat_keras.plan_cost(graph, plan), "the rebuilt model costs what the plan said"
    print(
        f"Rebuilt {new_model.name!r}: {after.params:,} params (Keras count_params: "
        f"{new_model.count_params():,}), {after.macs:,} MACs; within budget: "
        f"{budget.allows(after, before)}."
    )

    result = nat_keras.export(new_model, _EXPORT_DIR.value, plan=plan, source=model, overwrite=True)
    images = np.random.default_rng(0).uniform(size=(4, *model.input_shape[1:])).astype("float32")
    loaded = tf.saved_model.load(str(result.export_dir))  # keep a reference: it owns the variables
    served = loaded.serve(images)
    gap = float(np.max(np.abs(np.asarray(served) - np.asarray(new_model(images)))))
    print(f"Exported to {result.export_dir} (plan: {result.plan_path.name}, cost: {result.cost_path.name}).")
    print(f"SavedModel `serve` matches the Keras model: max |difference| = {gap:.2e}.")


if __name__ == "__main__":
    app.run(main)
