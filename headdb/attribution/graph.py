"""The computational graph of a decoder-only transformer, in EAP-IG names.

Nodes, in this order (node_id = position):
    0                        input     the token embeddings
    then for each layer L:   a{L}.h0 .. a{L}.h{H-1} (kind attn), then m{L} (kind mlp)
    last                     logits
so node_id(a{L}.h{h}) = 1 + L*(H+1) + h and node_id(m{L}) = 1 + L*(H+1) + H.

Edges run from a node's output (its write into the residual stream) into the residual input
of every later reader:
    into a{L}'s ports   from input and every head and MLP of layers < L
    into m{L}           from input, every head and MLP of layers < L, and the heads of layer L
    into logits         from every node
So a destination's sources are always a prefix of the node order (that is what lets scores
be computed with one einsum per destination block).

Ports and grouped-query attention (GQA). A head reads the residual three times: as query,
key and value input. Query ports are per query head: `a{L}.h{h}<q>` for h < n_heads. Key
and value ports are per KV HEAD, because that is what the model computes (one K and one V
projection per kv head, shared by its n_heads/n_kv_heads query heads) and what the bridge's
split-input hooks expose: `a{L}.h{g}<k>` and `a{L}.h{g}<v>` for g < n_kv_heads, where g is
the kv head index. So a layer has n_heads q-ports, n_kv_heads k-ports and n_kv_heads
v-ports; the score of `x->a3.h1<k>` is the effect of x through the key input of kv head 1,
which serves query heads n_rep*1 .. n_rep*2-1 (n_rep = n_heads / n_kv_heads, HF's
`repeat_kv` grouping: query head h uses kv head h // n_rep). For k/v edges the stored
dst_node is the node named in the edge (a3.h1), which only carries the name; circuit
pruning treats a k/v port of kv head g as an input of all of g's query heads. Without GQA
(n_kv_heads == n_heads) this is exactly EAP-IG's graph.

Edge order (edge_id = position), destination-major in forward order:
    for each layer L: the attention block  [ports q0..q{H-1}, k0..k{KV-1}, v0..v{KV-1}] x
                      [sources 0..n_src-1], port-major; then the m{L} block [sources];
    finally the logits block [sources].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class GraphLayout:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    node_names: tuple[str, ...]
    node_kind: tuple[str, ...]
    node_layer: np.ndarray  # int32, -1 for input/logits
    node_head: np.ndarray  # int32, -1 for non-heads
    edge_src: np.ndarray  # int32
    edge_dst: np.ndarray  # int32 (name-carrying node for k/v ports, see module docstring)
    edge_port: np.ndarray  # object array of "q" | "k" | "v" | ""
    edge_port_index: np.ndarray  # int32: q: h, k: H+g, v: H+KV+g within the layer; -1 otherwise
    attn_offset: tuple[int, ...]  # first edge id of each layer's attention block
    mlp_offset: tuple[int, ...]  # first edge id of each m{L} block
    logits_offset: int

    # ----------------------------------------------------------------- sizes
    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_edges(self) -> int:
        return len(self.edge_src)

    @property
    def n_rep(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def n_ports(self) -> int:
        """Residual reads of one attention layer: H q-ports + KV k-ports + KV v-ports."""
        return self.n_heads + 2 * self.n_kv_heads

    @property
    def logits_node(self) -> int:
        return self.n_nodes - 1

    def head_node(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_node(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def n_src_attn(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1)

    def n_src_mlp(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    @property
    def n_src_logits(self) -> int:
        return self.n_nodes - 1

    @cached_property
    def edge_names(self) -> list[str]:
        out = []
        for s, d, p in zip(self.edge_src, self.edge_dst, self.edge_port):
            name = f"{self.node_names[s]}->{self.node_names[d]}"
            out.append(f"{name}<{p}>" if p else name)
        return out

    def node_id(self, name: str) -> int:
        return self.node_names.index(name)

    def edge_id(self, name: str) -> int:
        return self._edge_index[name]

    @cached_property
    def _edge_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.edge_names)}

    # --------------------------------------------------------------- tables
    def nodes_table(self) -> pa.Table:
        layer = [None if v < 0 else int(v) for v in self.node_layer]
        head = [None if v < 0 else int(v) for v in self.node_head]
        return pa.table(
            {
                "node_id": pa.array(np.arange(self.n_nodes, dtype=np.int32)),
                "name": pa.array(self.node_names, pa.string()),
                "kind": pa.array(self.node_kind, pa.string()),
                "layer": pa.array(layer, pa.int32()),
                "head": pa.array(head, pa.int32()),
            }
        )

    def edges_table(self) -> pa.Table:
        return pa.table(
            {
                "edge_id": pa.array(np.arange(self.n_edges, dtype=np.int32)),
                "src_node": pa.array(self.edge_src),
                "dst_node": pa.array(self.edge_dst),
                "dst_port": pa.array(self.edge_port.tolist(), pa.string()),
                "name": pa.array(self.edge_names, pa.string()),
            }
        )


def _dims(shape) -> tuple[int, int, int]:
    if isinstance(shape, tuple):
        n_layers, n_heads, n_kv = shape
    else:
        n_layers, n_heads = shape.n_layers, shape.n_heads
        n_kv = getattr(shape, "n_kv_heads", None) or n_heads
    if n_heads % n_kv:
        raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv}")
    return int(n_layers), int(n_heads), int(n_kv)


def build_layout(shape) -> GraphLayout:
    """The `GraphLayout` of a shape (a `ModelShape`-like object or (n_layers, n_heads, n_kv))."""
    return _build(*_dims(shape))


@lru_cache(maxsize=16)
def _build(n_layers: int, n_heads: int, n_kv: int) -> GraphLayout:
    nodes = [("input", "input", -1, -1)]  # (name, kind, layer, head) in node order
    for L in range(n_layers):
        nodes += [(f"a{L}.h{h}", "attn", L, h) for h in range(n_heads)]
        nodes.append((f"m{L}", "mlp", L, -1))
    nodes.append(("logits", "logits", -1, -1))
    names, kinds, layers, heads = (list(column) for column in zip(*nodes))

    src, dst, port, pidx = [], [], [], []
    attn_off, mlp_off = [], []
    n_nodes = len(names)

    def block(n_src: int, dst_node: int, port_name: str, port_index: int):
        src.extend(range(n_src))
        dst.extend([dst_node] * n_src)
        port.extend([port_name] * n_src)
        pidx.extend([port_index] * n_src)

    for L in range(n_layers):
        attn_off.append(len(src))
        n_src = 1 + L * (n_heads + 1)
        base = 1 + L * (n_heads + 1)
        for h in range(n_heads):
            block(n_src, base + h, "q", h)
        for g in range(n_kv):
            block(n_src, base + g, "k", n_heads + g)
        for g in range(n_kv):
            block(n_src, base + g, "v", n_heads + n_kv + g)
        mlp_off.append(len(src))
        block(n_src + n_heads, base + n_heads, "", -1)
    logits_off = len(src)
    block(n_nodes - 1, n_nodes - 1, "", -1)

    def frozen(values, dtype):
        arr = np.asarray(values, dtype=dtype)
        arr.setflags(write=False)  # layouts are cached and shared: nobody may edit them
        return arr

    return GraphLayout(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        node_names=tuple(names),
        node_kind=tuple(kinds),
        node_layer=frozen(layers, np.int32),
        node_head=frozen(heads, np.int32),
        edge_src=frozen(src, np.int32),
        edge_dst=frozen(dst, np.int32),
        edge_port=frozen(port, object),
        edge_port_index=frozen(pidx, np.int32),
        attn_offset=tuple(attn_off),
        mlp_offset=tuple(mlp_off),
        logits_offset=logits_off,
    )


def layout(shape) -> tuple[pa.Table, pa.Table]:
    """(nodes, edges) Arrow tables for graph_nodes / graph_edges (add model_key when storing).

    nodes: node_id int32, name, kind (input|attn|mlp|logits), layer, head (null where n/a)
    edges: edge_id int32, src_node, dst_node, dst_port (q|k|v|''), name (EAP-IG, e.g. a0.h1->a3.h5<k>)
    """
    g = build_layout(shape)
    return g.nodes_table(), g.edges_table()
