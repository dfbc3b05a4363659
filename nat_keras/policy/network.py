"""The policy's graph neural network: ArchGraph features in, per-edge logits out.

TF-GNN's graph ops (broadcast node states to edges, pool edge messages to
nodes) run inside Keras 3 layers that take the GraphTensor as a keyword
argument, which is what works with Keras 3 beside TF-GNN's Keras 2 (docs/design.md
section 5); TF-GNN's own Keras layers are not used.

Unlike the authors' graph convolution, whose adjacency had no self-loops, each
edge keeps its own hidden state (op type, shapes, cost) through every round of
message passing, and the action head reads it: an edge's decision depends on
its own op as well as on its neighbourhood.

Example:
  >>> net = PolicyNetwork(hidden=64, rounds=2)
  >>> logits = net(graph=to_graph_tensor(graph))   # [num_edges, len(ops.ACTIONS)]
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
import tensorflow_gnn as tfgnn

from nat_keras import ops
from nat_keras.graph.arch_graph import MERGES
from nat_keras.policy.graph_tensor import EDGE_KINDS, EDGE_SET, NODE_SET, OP_VOCAB

# A logit that makes an action's probability exactly zero after softmax in
# float32 (exp(-1e9 - max) underflows to 0), without the NaNs of -inf.
MASKED_LOGIT = -1e9
# Raw logits are bounded to +-LOGIT_BOUND (a scaled tanh): rows whose actions
# are all masked but one get no gradient, and Adam's normalised steps would
# otherwise let their logits drift without limit (past MASKED_LOGIT).
LOGIT_BOUND = 10.0


def _mlp(hidden: int, name: str) -> keras.Sequential:
    return keras.Sequential(
        [keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(hidden, activation="relu")],
        name=name,
    )


@keras.saving.register_keras_serializable(package="nat_keras")
class PolicyNetwork(keras.Model):
    """Edge-centric message passing over an ArchGraph's GraphTensor.

    Args:
      hidden: width of node and edge states.
      rounds: rounds of message passing.
      num_actions: outputs per edge (len(ops.ACTIONS)).
    """

    def __init__(self, hidden: int = 64, rounds: int = 2, num_actions: int = len(ops.ACTIONS), **kwargs: Any):
        super().__init__(**kwargs)
        self.hidden = hidden
        self.rounds = rounds
        self.num_actions = num_actions
        self.op_embedding = keras.layers.Embedding(len(OP_VOCAB), hidden, name="op_embedding")
        self.kind_embedding = keras.layers.Embedding(len(EDGE_KINDS), hidden, name="kind_embedding")
        self.merge_embedding = keras.layers.Embedding(len(MERGES), hidden, name="merge_embedding")
        self.edge_in = keras.layers.Dense(hidden, activation="relu", name="edge_in")
        self.node_in = keras.layers.Dense(hidden, activation="relu", name="node_in")
        self.edge_updates = [_mlp(hidden, f"edge_update_{i}") for i in range(rounds)]
        self.node_updates = [_mlp(hidden, f"node_update_{i}") for i in range(rounds)]
        self.head = _mlp(hidden, "action_head")
        self.logits = keras.layers.Dense(num_actions, name="action_logits")

    def call(self, inputs: Any = None, *, graph: tfgnn.GraphTensor) -> tf.Tensor:
        """Per-edge action logits, illegal actions masked to MASKED_LOGIT.

        Args:
          inputs: unused (Keras 3 needs a positional slot; the GraphTensor
            must come as the `graph` keyword).
          graph: a GraphTensor from `to_graph_tensor` / `to_graph_tensor_batch`.
        """
        del inputs
        edges, nodes = graph.edge_sets[EDGE_SET], graph.node_sets[NODE_SET]
        # Numeric features scaled to about [0, 2]: raw log-costs reach ~20, and
        # inputs that large make small weight updates swing the logits (the
        # policy then collapses to one plan within a few steps).
        numeric_edge = tf.stack(
            [
                edges["log_params"] / 10.0,
                edges["log_macs"] / 10.0,
                tf.cast(edges["stride"], tf.float32) / 2.0,
                tf.cast(edges["kernel"], tf.float32) / 5.0,
                tf.cast(edges["protected"], tf.float32),
            ],
            axis=-1,
        )
        legal = tf.cast(edges["action_mask"], tf.float32)
        edge_state = self.edge_in(
            tf.concat(
                [
                    self.op_embedding(edges["op_index"]),
                    self.kind_embedding(edges["kind_index"]),
                    numeric_edge,
                    legal,
                ],
                axis=-1,
            )
        )
        numeric_node = tf.stack(
            [nodes["log_size"] / 10.0, tf.math.log1p(tf.cast(nodes["channels"], tf.float32)) / 5.0], axis=-1
        )
        node_state = self.node_in(
            tf.concat([self.merge_embedding(nodes["merge_index"]), numeric_node], axis=-1)
        )
        for edge_update, node_update in zip(self.edge_updates, self.node_updates):
            at_source = tfgnn.broadcast_node_to_edges(graph, EDGE_SET, tfgnn.SOURCE, feature_value=node_state)
            at_target = tfgnn.broadcast_node_to_edges(graph, EDGE_SET, tfgnn.TARGET, feature_value=node_state)
            # Residual: the edge's own state (its op) stays in every round.
            edge_state = edge_state + edge_update(tf.concat([edge_state, at_source, at_target], axis=-1))
            incoming = tfgnn.pool_edges_to_node(
                graph, EDGE_SET, tfgnn.TARGET, "mean", feature_value=edge_state
            )
            outgoing = tfgnn.pool_edges_to_node(
                graph, EDGE_SET, tfgnn.SOURCE, "mean", feature_value=edge_state
            )
            node_state = node_state + node_update(tf.concat([node_state, incoming, outgoing], axis=-1))
        at_source = tfgnn.broadcast_node_to_edges(graph, EDGE_SET, tfgnn.SOURCE, feature_value=node_state)
        at_target = tfgnn.broadcast_node_to_edges(graph, EDGE_SET, tfgnn.TARGET, feature_value=node_state)
        logits = self.logits(self.head(tf.concat([edge_state, at_source, at_target], axis=-1)))
        logits = LOGIT_BOUND * tf.tanh(logits / LOGIT_BOUND)
        return tf.where(legal > 0, logits, MASKED_LOGIT)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hidden": self.hidden,
            "rounds": self.rounds,
            "num_actions": self.num_actions,
        }
