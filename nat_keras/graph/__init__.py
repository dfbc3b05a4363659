"""The first stage of the data flow: a Keras model as NAT's DAG, and what it costs.

- `trace`: the functional graph flattened into layer calls (nested models inlined).
- `encode`: layer calls grouped into op units (the edges) between feature maps
  (the nodes), with each edge's legal actions; it uses `units` (which layers
  form one op unit), `layer_facts` (a layer call's shapes, params and MACs)
  and `legality` (which actions an edge may take).
- `arch_graph`: `ArchGraph`, `Node`, `Edge`: plain, JSON-ready data.
- `costs`: params / MACs of ops, edges and graphs; `Budget`.

Modules inside this package import each other directly (never this
`__init__`), so the package can re-export them without import circles.

Example:
  >>> graph = nat_keras.graph.encode(model)
  >>> nat_keras.graph.cost(model) == nat_keras.graph.cost(graph)
  True
"""

from __future__ import annotations

from typing import Any

from nat_keras.graph.arch_graph import ArchGraph, Edge, Node
from nat_keras.graph.costs import Budget, Cost, graph_cost
from nat_keras.graph.encode import encode


def cost(model_or_graph: Any) -> Cost:
    """Params and MACs of a Keras model or an ArchGraph.

    Args:
      model_or_graph: a Keras 3 functional / Sequential model, or an ArchGraph.

    Returns:
      A Cost; `params` equals `model.count_params()`.

    Example:
      >>> nat_keras.cost(nat_keras.models.resnet20()).params  # == count_params()
      274042
    """
    graph = model_or_graph if isinstance(model_or_graph, ArchGraph) else encode(model_or_graph)
    return graph_cost(graph)


__all__ = ["ArchGraph", "Budget", "Cost", "Edge", "Node", "cost", "encode", "graph_cost"]
