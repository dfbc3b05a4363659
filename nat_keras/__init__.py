"""nat_keras: Neural Architecture Transformer (NAT, Guo et al. 2019) for Keras 3.

Data flows one way (DESIGN.md section 3):

  keras.Model --encode--> ArchGraph --(policy)--> TransformPlan
      --apply_plan--> keras.Model --> fit / export

Example:
  >>> import keras, nat_keras
  >>> model = nat_keras.models.resnet20()
  >>> graph = nat_keras.encode(model)
  >>> plan = nat_keras.TransformPlan.keep_all(graph)
  >>> new_model = nat_keras.apply_plan(model, plan)
"""

from nat_keras import _keras_env

_keras_env.prepare()

# The public API, flat. Imported after the environment is prepared.
from nat_keras import (
    batchnorm,
    data,
    layers,
    models,
)
from nat_keras.batchnorm import recalibrate
from nat_keras.costing import Budget, Cost, cost, plan_cost
from nat_keras.encode import encode
from nat_keras.errors import (
    BudgetError,
    NatKerasError,
    PlanError,
    UnsupportedModelError,
)
from nat_keras.export import ExportResult, export
from nat_keras.graph import ArchGraph, Edge, Node
from nat_keras.plan import TransformPlan, sample_random_plan
from nat_keras.rebuild import apply_plan
from nat_keras.report import format_graph, format_plan
from nat_keras.transform import TransformReport, transform

__version__ = "0.1.0"

__all__ = [
    "ArchGraph",
    "Budget",
    "BudgetError",
    "Cost",
    "Edge",
    "ExportResult",
    "NatKerasError",
    "Node",
    "PlanError",
    "TransformPlan",
    "TransformReport",
    "UnsupportedModelError",
    "apply_plan",
    "batchnorm",
    "cost",
    "data",
    "encode",
    "export",
    "format_graph",
    "format_plan",
    "layers",
    "models",
    "plan_cost",
    "recalibrate",
    "sample_random_plan",
    "transform",
]
