"""The last stage of the data flow: a TransformPlan made into a Keras model.

- `interpreter`: evaluates an ArchGraph over Keras values with one rule for
  merges, placeholders and multi-output layers; `apply` (a fixed action per
  edge) and the model-space supernet (a switch per edge) both run on it.
- `emit`: the new layers a NAT action emits (skips, projections, NAT++ ops).
- `layers`: nat_keras' own registered layers (`ZerosLike`).
- `apply`: `apply_plan`, the rebuilt model with the source's weights.
- `export`: SavedModel + plan.json + cost.json.

Example:
  >>> new_model = nat_keras.rebuild.apply_plan(model, plan)
"""

from nat_keras.rebuild.apply import apply_plan
from nat_keras.rebuild.export import ExportResult, export

__all__ = ["ExportResult", "apply_plan", "export"]
