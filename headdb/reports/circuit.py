"""A circuit as a graphviz graph: the .dot text is written here; `dot` renders it when installed.

Layout: bottom-to-top (input at the bottom, logits at the top), one rank per layer, heads as
blue boxes, MLPs as green boxes. Edge colour: red for a positive score, blue for a negative one;
width grows with |score|; edges into a head are labelled with the port (q, k, v).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import polars as pl

from headdb.errors import UserError

FILL = {"input": "#dddddd", "logits": "#dddddd", "attn": "#c6dbef", "mlp": "#c7e9c0"}


def _q(name: str) -> str:
    return '"' + str(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def circuit_dot(edges: pl.DataFrame, *, name: str = "circuit", title: str = "") -> str:
    """The .dot text of a circuit from `circuit_graph` rows (src, dst, port, kinds, layers, score)."""
    nodes: dict[str, tuple[str, int | None]] = {}
    for row in edges.iter_rows(named=True):
        nodes[row["src"]] = (row["src_kind"], row["src_layer"])
        nodes[row["dst"]] = (row["dst_kind"], row["dst_layer"])
    scores = [abs(s) for s in edges["score"].to_list() if s is not None] if edges.height else []
    top = max(scores) if scores else 1.0
    top = top if top > 0 else 1.0
    safe = "".join(ch if ch.isalnum() else "_" for ch in name)
    lines = [
        f"digraph {safe} {{",
        "  rankdir=BT;",
        '  graph [fontname="Helvetica", nodesep=0.15, ranksep=0.35'
        + ((", label=" + _q(title) + ", labelloc=t") if title else "")
        + "];",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, height=0.3];',
        '  edge [arrowsize=0.5, fontname="Helvetica", fontsize=8];',
    ]
    for node, (kind, _) in sorted(nodes.items(), key=lambda kv: _order(kv[0], kv[1])):
        lines.append(f"  {_q(node)} [fillcolor={_q(FILL.get(kind, '#ffffff'))}];")
    by_layer: dict[int, list[str]] = {}
    for node, (kind, layer) in nodes.items():
        if layer is not None and kind in ("attn", "mlp"):
            by_layer.setdefault(layer, []).append(node)
    for layer in sorted(by_layer):
        members = "; ".join(_q(n) for n in sorted(by_layer[layer], key=lambda n: _order(n, nodes[n])))
        lines.append(f"  {{ rank=same; {members}; }}")
    if "input" in nodes:
        lines.append('  { rank=min; "input"; }')
    if "logits" in nodes:
        lines.append('  { rank=max; "logits"; }')
    for row in edges.iter_rows(named=True):
        score = row["score"]
        attrs = []
        if score is not None:
            attrs.append(f"color={_q('#b2182b' if score >= 0 else '#2166ac')}")
            attrs.append(f"penwidth={0.5 + 3.0 * abs(score) / top:.2f}")
            tip = "%s score=%.4g" % (row["edge"], score)
            attrs.append(f"tooltip={_q(tip)}")
        else:
            attrs.append('color="#888888"')
        if row["port"]:
            attrs.append("label=" + _q(row["port"]))
        lines.append(f"  {_q(row['src'])} -> {_q(row['dst'])} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _order(name: str, info) -> tuple:
    kind, layer = info
    rank = {"input": -1, "logits": 10**6}.get(kind, layer if layer is not None else 0)
    return (rank, 0 if kind == "attn" else 1, name)


def write_circuit(
    edges: pl.DataFrame, dot_path: str | Path, png_path: str | Path | None, *, name: str, title: str = ""
) -> tuple[Path, Path | None, str]:
    """Write the .dot file, and the PNG when graphviz is installed; returns (dot, png, note)."""
    dot_path = Path(dot_path)
    if not dot_path.parent.exists():
        raise UserError(f"cannot write {dot_path}: folder {dot_path.parent} does not exist")
    dot_path.write_text(circuit_dot(edges, name=name, title=title))
    png_path = Path(png_path) if png_path else dot_path.with_suffix(".png")
    binary = shutil.which("dot")
    if binary is None:
        return (
            dot_path,
            None,
            (
                f"graphviz `dot` is not installed, so only {dot_path} was written; install graphviz "
                f"(e.g. apt-get install graphviz) and run `dot -Tpng {dot_path} -o {png_path}`, or "
                "give --png FILE to draw it with matplotlib"
            ),
        )
    proc = subprocess.run([binary, "-Tpng", str(dot_path), "-o", str(png_path)], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else f"exit code {proc.returncode}"
        return dot_path, None, f"`dot` failed on {dot_path}: {reason}"
    return dot_path, png_path, f"wrote {dot_path} and {png_path}"
