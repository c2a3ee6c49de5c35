"""hannamw/EAP-IG's JSON graph format (`Graph.to_json` / `Graph.from_json`, EAP-IG 2025), written
and checked from the format's description, independently of headdb's graph code:

    {"cfg":   {"n_layers": L, "n_heads": H, "parallel_attn_mlp": false, "d_model": D},
     "nodes": {"input": {"in_graph": b}, "a0.h0": {"in_graph": b}, ..., "m0": ..., "logits": ...},
     "edges": {"input->a0.h0<q>": {"score": s, "in_graph": b}, ...}}

Nodes: input, then per layer a{l}.h0 .. a{l}.h{H-1} and m{l}, then logits. Edges run from every
earlier node to each reader: a head's q, k and v inputs (suffix <q>/<k>/<v>; k and v per QUERY
head: EAP-IG has no grouped-query attention), an MLP (which also reads its own layer's heads)
and logits (which reads everything). `from_json` needs the four cfg keys, a dict with `in_graph`
per node (bare booleans are rejected) and, per edge, `score` and `in_graph`; it ignores extra
keys and accepts a subset of the edges.
"""

from __future__ import annotations

import json


def node_names(n_layers: int, n_heads: int) -> list[str]:
    out = ["input"]
    for layer in range(n_layers):
        out += [f"a{layer}.h{h}" for h in range(n_heads)] + [f"m{layer}"]
    return out + ["logits"]


def edge_names(n_layers: int, n_heads: int) -> list[str]:
    """Every edge of EAP-IG's graph, in `from_model`'s insertion order."""
    out: list[str] = []
    residual = ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        for src in residual:
            for head in heads:
                out += [f"{src}->{head}<{p}>" for p in "qkv"]
        out += [f"{src}->m{layer}" for src in residual + heads]
        residual = residual + heads + [f"m{layer}"]
    return out + [f"{src}->logits" for src in residual]


def graph(
    n_layers: int,
    n_heads: int,
    scores: dict[str, float],
    in_graph: set[str],
    nodes_in_graph: set[str],
    d_model: int = 16,
) -> dict:
    return {
        "cfg": {"n_layers": n_layers, "n_heads": n_heads, "parallel_attn_mlp": False, "d_model": d_model},
        "nodes": {n: {"in_graph": n == "logits" or n in nodes_in_graph} for n in node_names(n_layers, n_heads)},
        "edges": {
            e: {"score": float(scores[e]), "in_graph": e in in_graph}
            for e in edge_names(n_layers, n_heads)
            if e in scores
        },
    }


def check_loadable(data: dict) -> None:
    """Assert what the current `Graph.from_json` needs of a file (it raises otherwise)."""
    assert {"cfg", "nodes", "edges"} <= data.keys()
    cfg = data["cfg"]
    for key in ("n_layers", "n_heads", "d_model"):
        assert isinstance(cfg[key], int) and not isinstance(cfg[key], bool), key
    assert isinstance(cfg["parallel_attn_mlp"], bool)
    names = set(node_names(cfg["n_layers"], cfg["n_heads"]))
    for name, node in data["nodes"].items():
        assert name in names, name
        assert isinstance(node, dict) and isinstance(node["in_graph"], bool), (name, node)
        assert "score" not in node or isinstance(node["score"], float)
    edges = set(edge_names(cfg["n_layers"], cfg["n_heads"]))
    for name, edge in data["edges"].items():
        assert name in edges, name
        assert isinstance(edge["score"], float) and isinstance(edge["in_graph"], bool), (name, edge)
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN / Infinity
