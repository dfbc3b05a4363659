"""ArchGraph: NAT's DAG encoding of a network, as plain Python data.

Nodes are feature maps (tensors); edges carry operations (op units: a primary
op fused with its BN / activation / padding, identity shortcuts, or the
placeholder null edges along which NAT may add a skip). A node combines its
incoming edges with its `merge` (sum, concat, multiply, other, or none for a
single input). The graph knows nothing of Keras objects: it is JSON-ready data
that the encoder produces, plans refer to, and the policy reads.

Example:
  >>> graph = nat_keras.encode(model)
  >>> graph.edge("stage1_block0_conv1").op
  'conv_3x3'
  >>> ArchGraph.from_json(graph.to_json()) == graph
  True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from nat_keras import ops
from nat_keras.errors import NatKerasError, UnknownNameError

SCHEMA_VERSION = 1

# Edge kinds.
UNIT = "unit"  # a chain of Keras layer calls around one primary op
IDENTITY = "identity"  # an existing shortcut: a tensor feeding a merge directly
PLACEHOLDER = "placeholder"  # a null edge where NAT may add a skip (N -> S)

# Node merges.
MERGE_INPUT, MERGE_NONE, MERGE_SUM = "input", "none", "sum"
MERGE_CONCAT, MERGE_MULTIPLY, MERGE_OTHER = "concat", "multiply", "other"
MERGES = (MERGE_INPUT, MERGE_NONE, MERGE_SUM, MERGE_CONCAT, MERGE_MULTIPLY, MERGE_OTHER)

Shape = tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class Node:
    """A feature map.

    Attributes:
      id: unique id, from the Keras layer that produces the tensor.
      shape: the tensor's shape without the batch dimension.
      merge: how incoming edges combine: input, none, sum, concat, multiply, other.
      layer: name of the Keras layer that produces the tensor (the merge layer
        for merge nodes, the last layer of the unit for unit outputs).
      post: names of shape-keeping layers applied after the merge (the ReLU
        after a residual sum); they are part of the node, not of any edge.
      params: parameters of the node's layers (0 for Add/Concatenate).
      macs: multiply-adds of the node's layers (0 in encoded models, whose
        node layers keep the shape; a cell input's preprocessing in a cell
        graph, `nat_keras.cells.genotype_to_arch_graph`). Like `params`,
        counted only while the node is in use (`ArchGraph.in_use`).
      is_output: whether the tensor is a model output.
      output_index: which output of `layer` the tensor is (0 but for the
        further outputs of a multi-output layer).
    """

    id: str
    shape: Shape
    merge: str
    layer: str
    post: tuple[str, ...] = ()
    params: int = 0
    macs: int = 0
    is_output: bool = False
    output_index: int = 0


@dataclasses.dataclass(frozen=True)
class Edge:
    """An operation between two feature maps.

    Attributes:
      id: unique id (the primary layer's name for units).
      src: id of the input node.
      dst: id of the output node.
      slot: position of this edge among `dst`'s merge inputs (-1 for
        placeholder edges, which add to the node after its merge).
      kind: unit, identity or placeholder.
      op: op type in NAT's vocabulary (conv_3x3, sep_conv_5x5, depthwise_3x3,
        max_pool_2x2, dense, skip, null, other, ...).
      layers: names of the Keras layers of the unit, in call order.
      primary: index in `layers` of the primary op, -1 if none.
      input_shape / output_shape: shapes without the batch dimension.
      stride: spatial stride of the op (1 for identity / dense).
      kernel: kernel size (0 when it has none).
      dilation: dilation rate of the primary op.
      groups: channel groups of a conv (C_in for a depthwise conv).
      bias: the primary op has a bias (a NAT++ replacement keeps one then).
      library: where the edge's ops come from: "keras" (an encoded model's
        layers; replacements are single Keras layers) or "darts" (the cell
        search space's ops, `nat_keras.cells`; replacements are whole
        DARTS ops, with their own cost).
      params: parameters, as Keras `count_params()` counts them.
      primary_params: the part of `params` in the primary op (what a NAT++
        replacement swaps out).
      macs: multiply-adds of the conv / dense ops of the unit.
      copies: for cell edges (library "darts"), the (channels, input height)
        of each copy of the edge in the network the graph stands for: a
        cell graph's edge is repeated in every cell of its type, and
        `params` / `macs` sum over the copies. Empty: one copy, the edge as
        its shapes say.
      protected: stem, head, shared or opaque edges are never transformed.
      actions: legal actions (names from `ops.ACTIONS`); always has "keep".
      note: why the edge is protected or restricted, for humans.
    """

    id: str
    src: str
    dst: str
    slot: int
    kind: str
    op: str
    layers: tuple[str, ...] = ()
    primary: int = -1
    input_shape: Shape = ()
    output_shape: Shape = ()
    stride: int = 1
    kernel: int = 0
    dilation: int = 1
    groups: int = 1
    bias: bool = False
    library: str = "keras"
    params: int = 0
    primary_params: int = 0
    macs: int = 0
    copies: tuple[tuple[int, int], ...] = ()
    protected: bool = False
    actions: tuple[str, ...] = (ops.KEEP,)
    note: str = ""

    @property
    def transformable(self) -> bool:
        return len(self.actions) > 1

    def mask(self, space: str = "nat++") -> list[bool]:
        """Legal-action mask over `ops.ACTIONS` within an action space."""
        return ops.action_mask(self.actions, space)


@dataclasses.dataclass(frozen=True)
class ArchGraph:
    """A network as NAT's DAG.

    Attributes:
      name: the source model's name.
      nodes: feature maps, in topological order.
      edges: operations, sorted so that every edge comes after the edges
        producing its source node.
      inputs / outputs: node ids of the model's inputs and outputs, in order.
    """

    name: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "_node_index", {n.id: n for n in self.nodes})
        object.__setattr__(self, "_edge_index", {e.id: e for e in self.edges})
        if len(self._node_index) != len(self.nodes):
            raise NatKerasError(f"ArchGraph {self.name!r} has duplicate node ids.")
        if len(self._edge_index) != len(self.edges):
            raise NatKerasError(f"ArchGraph {self.name!r} has duplicate edge ids.")
        incoming: dict[str, list[Edge]] = {n.id: [] for n in self.nodes}
        outgoing: dict[str, list[Edge]] = {n.id: [] for n in self.nodes}
        for edge in self.edges:
            if edge.src not in incoming or edge.dst not in incoming:
                raise NatKerasError(
                    f"ArchGraph {self.name!r}: edge {edge.id!r} joins unknown nodes "
                    f"{edge.src!r} -> {edge.dst!r}."
                )
            incoming[edge.dst].append(edge)
            outgoing[edge.src].append(edge)
        object.__setattr__(self, "_incoming", incoming)
        object.__setattr__(self, "_outgoing", outgoing)

    # -- look-ups -----------------------------------------------------------

    def node(self, node_id: str) -> Node:
        try:
            return self._node_index[node_id]
        except KeyError:
            raise UnknownNameError(f"ArchGraph {self.name!r} has no node {node_id!r}.") from None

    def edge(self, edge_id: str) -> Edge:
        try:
            return self._edge_index[edge_id]
        except KeyError:
            raise UnknownNameError(f"ArchGraph {self.name!r} has no edge {edge_id!r}.") from None

    def has_edge(self, edge_id: str) -> bool:
        return edge_id in self._edge_index

    def in_edges(self, node_id: str) -> list[Edge]:
        """Edges into `node_id`, in graph order."""
        return list(self._incoming[node_id])

    def out_edges(self, node_id: str) -> list[Edge]:
        """Edges out of `node_id`, in graph order."""
        return list(self._outgoing[node_id])

    def transformable_edges(self) -> list[Edge]:
        return [e for e in self.edges if e.transformable]

    def edges_of(self, kinds: Iterable[str]) -> Iterator[Edge]:
        kinds = set(kinds)
        return (e for e in self.edges if e.kind in kinds)

    def in_use(self, node_id: str) -> bool:
        """Whether the network has the node's layers: it is an output or feeds a real edge.

        A node that feeds only placeholder edges (a hand-made cell's c_{k-2})
        is not built until a plan adds a skip from it, so its own cost does
        not count before that (`nat_keras.plan_cost` counts it then).
        """
        return self.node(node_id).is_output or any(e.kind != PLACEHOLDER for e in self.out_edges(node_id))

    @property
    def params(self) -> int:
        """Parameters of the whole network (equals Keras `count_params()`)."""
        return sum(e.params for e in self.edges) + sum(n.params for n in self.nodes if self.in_use(n.id))

    @property
    def macs(self) -> int:
        return sum(e.macs for e in self.edges) + sum(n.macs for n in self.nodes if self.in_use(n.id))

    def fingerprint(self) -> str:
        """A short hash of the structure: plans carry it to catch wrong models."""
        structure = [
            (e.id, e.src, e.dst, e.kind, e.op, list(e.input_shape), list(e.output_shape)) for e in self.edges
        ]
        digest = hashlib.sha256(json.dumps([self.name, structure]).encode())
        return digest.hexdigest()[:16]

    # -- serialisation ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "nodes": [_to_plain(dataclasses.asdict(n)) for n in self.nodes],
            "edges": [_to_plain(dataclasses.asdict(e)) for e in self.edges],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchGraph:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise NatKerasError(
                f"ArchGraph data has schema_version {version}; this nat_keras reads "
                f"{SCHEMA_VERSION}. Re-encode the model with this version."
            )
        nodes = tuple(Node(**_node_fields(n)) for n in data["nodes"])
        edges = tuple(Edge(**_edge_fields(e)) for e in data["edges"])
        return cls(
            name=data["name"],
            nodes=nodes,
            edges=edges,
            inputs=tuple(data["inputs"]),
            outputs=tuple(data["outputs"]),
        )

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> ArchGraph:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArchGraph):
            return NotImplemented
        return (self.name, self.nodes, self.edges, self.inputs, self.outputs) == (
            other.name,
            other.nodes,
            other.edges,
            other.inputs,
            other.outputs,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.nodes, self.edges))

    def __repr__(self) -> str:
        return (
            f"ArchGraph(name={self.name!r}, nodes={len(self.nodes)}, edges={len(self.edges)}, "
            f"transformable={len(self.transformable_edges())}, params={self.params:,}, "
            f"macs={self.macs:,})"
        )


def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _shape(value: Any) -> Shape:
    return tuple(None if v is None else int(v) for v in value)


def _node_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "shape": _shape(data["shape"]), "post": tuple(data.get("post", ()))}


def _edge_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {
        **data,
        "layers": tuple(data.get("layers", ())),
        "input_shape": _shape(data.get("input_shape", ())),
        "output_shape": _shape(data.get("output_shape", ())),
        "actions": tuple(data.get("actions", (ops.KEEP,))),
        "copies": tuple(tuple(copy) for copy in data.get("copies", ())),
    }
