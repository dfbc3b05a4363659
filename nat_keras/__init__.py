"""nat_keras: Neural Architecture Transformer (NAT, Guo et al. 2019) for Keras 3.

Data flows one way, and the subpackages follow it (docs/design.md, "Data
flow"):

  keras.Model --graph.encode--> ArchGraph --policy--> TransformPlan
      --rebuild.apply_plan--> keras.Model --> train / rebuild.export

with `cells` (the paper's cell space), `supernet` (weight-sharing rewards),
`policy` (the TF-GNN policy) and `search` (the alternating loop) producing
the plan, and `data` feeding them.

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
import importlib
from typing import Any

# `train` is eager, and cheap: a model trained by the recipe is saved with the
# recipe's optimizer (a registered nat_keras class), so `import nat_keras`
# alone must let `keras.saving.load_model` read it back in a fresh process.
from nat_keras import data, models, train
from nat_keras._version import __version__
from nat_keras.errors import (
    BudgetError,
    NatKerasError,
    PlanError,
    UnsupportedModelError,
)
from nat_keras.graph import ArchGraph, Budget, Cost, Edge, Node, cost, encode
from nat_keras.plan import TransformPlan, plan_cost, sample_random_plan
from nat_keras.plots import plot_history, plot_plan
from nat_keras.rebuild import ExportResult, apply_plan, export, layers
from nat_keras.report import TransformReport, format_graph, format_plan
from nat_keras.train import Recipe, TrainResult
from nat_keras.transform import transform

# Names whose modules pull in TF-GNN or the supernets: imported on first use,
# so that `import nat_keras` stays fast.
_LAZY = {
    "Policy": ("nat_keras.policy.policy", "Policy"),
    "SearchConfig": ("nat_keras.search.loop", "SearchConfig"),
    "SupernetConfig": ("nat_keras.supernet.trainer", "SupernetConfig"),
    "recalibrate": ("nat_keras.supernet.batchnorm", "recalibrate"),
    "batchnorm": ("nat_keras.supernet.batchnorm", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'nat_keras' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "Policy",
    "Recipe",
    "SearchConfig",
    "SupernetConfig",
    "TrainResult",
    "TransformPlan",
    "TransformReport",
    "UnsupportedModelError",
    "__version__",
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
    "plot_history",
    "plot_plan",
    "recalibrate",
    "sample_random_plan",
    "train",
    "transform",
]
