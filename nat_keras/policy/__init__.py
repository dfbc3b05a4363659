"""NAT's policy: a GNN over an ArchGraph's GraphTensor, choosing one action per edge.

This package is the only place in nat_keras that imports `tensorflow_gnn`
(which needs `TF_USE_LEGACY_KERAS=1` set before TensorFlow is first imported;
see docs/design.md, section 5). `graph_tensor` converts an ArchGraph to a
`tfgnn.GraphTensor` under the GraphSchema stored in `schema.pbtxt`, and back.
"""

from nat_keras.policy.graph_tensor import (
    GRAPH_SCHEMA_PATH,
    OP_VOCAB,
    from_graph_tensor,
    graph_schema,
    graph_spec,
    op_index,
    to_graph_tensor,
)
from nat_keras.policy.policy import Policy, default_policy
from nat_keras.policy.reinforce import Reinforce, ReinforceConfig

__all__ = [
    "GRAPH_SCHEMA_PATH",
    "OP_VOCAB",
    "Policy",
    "Reinforce",
    "ReinforceConfig",
    "default_policy",
    "from_graph_tensor",
    "graph_schema",
    "graph_spec",
    "op_index",
    "to_graph_tensor",
]
