"""PNG figures with matplotlib (Agg backend, no display needed): heatmaps, curves and bars."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from headdb.errors import UserError
from headdb.reports.palette import MISSING, linestyle, marker


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _check(path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.exists():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def _save(plt, fig, path: Path, caption: str) -> Path:
    """Write the PNG with its caption in the file's Description field (the HTML report shows it
    under the image); the legend may sit outside the axes, so the bounding box is tight."""
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Description": caption} if caption else None)
    plt.close(fig)
    return path


def caption_of(path: str | Path) -> str:
    """The caption a figure was written with ('' for none)."""
    from PIL import Image

    with Image.open(path) as image:
        text = getattr(image, "text", {}) or {}
    return str(text.get("Description", ""))


def _legend_outside(ax, handles=None, labels=None) -> None:
    """The legend right of the axes, so it never covers data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def _size(n_rows: int, n_cols: int, panels: int) -> tuple[float, float]:
    w = min(3.0 + 0.28 * n_cols, 14.0)
    h = min(1.5 + 0.25 * n_rows, 12.0)
    return w * panels, h


def heatmaps(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    kind: str = "sequential",
    label: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    row_label: str = "layer",
    col_label: str = "head",
    categories: dict | None = None,
    col_ticks: Sequence[str] | None = None,
    missing: str = "no value",
    caption: str = "",
) -> Path:
    """One layer x head heatmap per panel (title, values). kind: sequential | diverging | categorical
    (values then hold category keys; categories: key -> (label, colour, glyph)). Cells without a
    value are light grey, named `missing` in the legend when a panel has any."""
    plt = _plt()
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    path = _check(path)
    n_rows, n_cols = panels[0][1].shape
    fig, axes = plt.subplots(1, len(panels), figsize=_size(n_rows, n_cols, len(panels)), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        if kind == "categorical":
            keys = list(categories)
            index = {k: i for i, k in enumerate(keys)}
            data = np.full(values.shape, np.nan)
            for (r, c), v in np.ndenumerate(values):
                if v in index:
                    data[r, c] = index[v]
            cmap = ListedColormap([categories[k][1] for k in keys]).with_extremes(bad=MISSING)
            ax.imshow(
                np.ma.masked_invalid(data),
                cmap=cmap,
                vmin=-0.5,
                vmax=len(keys) - 0.5,
                aspect="auto",
                interpolation="nearest",
            )
            ax.legend(
                handles=[Patch(color=categories[k][1], label=categories[k][0]) for k in keys]
                + [Patch(color=MISSING, label=missing)],
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                fontsize=8,
                frameon=False,
            )
        else:
            data = np.asarray(values, dtype=float)
            finite = data[np.isfinite(data)]
            if kind == "diverging":
                m = float(np.max(np.abs(finite))) if finite.size else 1.0
                lo, hi, cmap = (vmin if vmin is not None else -m), (vmax if vmax is not None else m), "RdBu_r"
            else:
                lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
                hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
                cmap = "viridis"
            if hi <= lo:
                hi = lo + 1.0
            image = ax.imshow(
                np.ma.masked_invalid(data),
                cmap=colormaps[cmap].with_extremes(bad=MISSING),
                vmin=lo,
                vmax=hi,
                aspect="auto",
                interpolation="nearest",
            )
            fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.02)
            if not np.isfinite(data).all():
                ax.legend(
                    handles=[Patch(color=MISSING, label=missing)],
                    loc="upper left",
                    bbox_to_anchor=(1.32, 1.0),  # right of the colour bar
                    fontsize=8,
                    frameon=False,
                )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(col_label)
        ax.set_ylabel(row_label)
        step = max(1, n_cols // 16)
        ax.set_xticks(range(0, n_cols, step))
        if col_ticks is not None:
            ax.set_xticklabels([col_ticks[i] for i in range(0, n_cols, step)], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(0, n_rows, max(1, n_rows // 18)))
    fig.tight_layout()
    return _save(plt, fig, path, caption)


def curves(
    path: str | Path,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    twin: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    twin_label: str = "",
    bars: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    logx: bool = False,
    colours: Mapping[str, str] | None = None,
    styles: Mapping[str, int] | None = None,
    rate: bool = False,
    counts: bool = False,
    caption: str = "",
) -> Path:
    """Lines (and optional bars) on one axis, optional lines on a second y axis.

    colours: series or bar name -> colour (a lineage's or a task's, headdb.reports.palette);
    styles: series name -> a style index (marker and dash), to tell apart lines of one colour,
    and lines that coincide; without them each line gets its own. rate: the y axis is 0..1 (an
    accuracy never looks like a swing between -0.04 and 0.04); counts: whole-number y ticks."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    path = _check(path)
    colours = colours or {}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if bars:
        n = len(bars)
        xs_all = sorted({x for xs, _ in bars.values() for x in xs})
        gap = min(np.diff(xs_all)) if len(xs_all) > 1 else 1.0
        width = 0.8 * gap / n
        for i, (name, (xs, ys)) in enumerate(bars.items()):
            ax.bar(
                np.asarray(xs, float) + (i - (n - 1) / 2) * width,
                ys,
                width=width,
                label=name,
                alpha=0.8,
                color=colours.get(name),
            )
    for i, (name, (xs, ys)) in enumerate(series.items()):
        style = styles[name] if styles and name in styles else i
        ax.plot(
            xs,
            ys,
            marker=marker(style),
            linestyle=linestyle(style),
            markersize=7 - 0.5 * (style % 4),  # coinciding lines stay visible as nested markers
            label=name,
            color=colours.get(name),
            alpha=0.9,
        )
    if logx:
        ax.set_xscale("log", base=2)
    xs_seen = [x for xs, _ in [*series.values(), *(bars or {}).values()] for x in xs if x is not None]
    if xs_seen and all(float(x).is_integer() for x in xs_seen):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers, steps: no half ticks
    if rate:
        ax.set_ylim(-0.02, 1.02)
    if counts:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    handles, labels = ax.get_legend_handles_labels()
    if twin:
        ax2 = ax.twinx()
        for (name, (xs, ys)), style in zip(twin.items(), ("--", ":", "-.")):
            ax2.plot(xs, ys, color="black", linestyle=style, marker="s", label=name)
        ax2.set_ylabel(twin_label)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
        if handles:  # past the twin axis' labels
            ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1.0), frameon=False)
    else:
        _legend_outside(ax, handles, labels)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(plt, fig, path, caption)


def barh(
    path: str | Path,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str = "",
    xlabel: str = "",
    intervals: Sequence[tuple[float, float] | None] | None = None,
    caption: str = "",
) -> Path:
    """Horizontal bars, red below zero and blue above; `intervals` (low, high) per bar draw error bars."""
    plt = _plt()
    path = _check(path)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.35 * max(len(labels), 1)))
    colours = ["#b2182b" if v < 0 else "#2166ac" for v in values]
    ax.barh(range(len(labels)), values, color=colours)
    if intervals is not None:
        for i, (value, ci) in enumerate(zip(values, intervals)):
            if ci is not None:
                ax.errorbar(value, i, xerr=[[value - ci[0]], [ci[1] - value]], color="black", capsize=3, lw=1)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return _save(plt, fig, path, caption)


def circuit(path: str | Path, edges, *, n_layers: int, n_heads: int, title: str = "", caption: str = "") -> Path:
    """A circuit drawn without graphviz: input at the bottom, each layer's heads on one row with
    its MLP above them, logits at the top; every head of the model is a faint dot, the circuit's
    nodes are filled boxes; edges are red for a positive score and blue for a negative one, wider
    and darker for a larger |score|. `edges`: rows of the `circuit_graph` query."""
    plt = _plt()
    path = _check(path)
    centre = (n_heads - 1) / 2

    def place(kind: str, layer, head) -> tuple[float, float]:
        if kind == "input":
            return centre, -1.0
        if kind == "logits":
            return centre, float(n_layers)
        if kind == "mlp":
            return centre, layer + 0.5
        return float(head), float(layer)

    fig, ax = plt.subplots(figsize=(min(3.0 + 0.55 * n_heads, 14.0), min(2.0 + 1.1 * n_layers, 12.0)))
    for layer in range(n_layers):
        ax.scatter(range(n_heads), [layer] * n_heads, s=12, color="#cccccc", zorder=1)
    rows = list(edges.iter_rows(named=True))
    top = max([abs(r["score"]) for r in rows if r["score"] is not None] + [1e-12])
    for r in sorted(rows, key=lambda r: abs(r["score"] or 0.0)):  # strongest drawn last, on top
        (x0, y0), (x1, y1) = (
            place(r["src_kind"], r["src_layer"], r["src_head"]),
            place(r["dst_kind"], r["dst_layer"], r["dst_head"]),
        )
        weight = abs(r["score"]) / top if r["score"] is not None else 0.2
        colour = "#888888" if r["score"] is None else ("#b2182b" if r["score"] >= 0 else "#2166ac")
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            zorder=2,
            arrowprops=dict(
                arrowstyle="-|>",
                color=colour,
                alpha=0.25 + 0.6 * weight,
                lw=0.4 + 2.6 * weight,
                shrinkA=7,
                shrinkB=7,
                connectionstyle="arc3,rad=0.08",
            ),
        )
    fills = {"input": "#dddddd", "logits": "#dddddd", "attn": "#c6dbef", "mlp": "#c7e9c0"}
    nodes = {}
    for r in rows:
        nodes[r["src"]] = (r["src_kind"], r["src_layer"], r["src_head"])
        nodes[r["dst"]] = (r["dst_kind"], r["dst_layer"], r["dst_head"])
    for name, (kind, layer, head) in nodes.items():
        x, y = place(kind, layer, head)
        label = f"L{layer}H{head}" if kind == "attn" else (f"MLP{layer}" if kind == "mlp" else name)
        ax.text(
            x,
            y,
            label,
            ha="center",
            va="center",
            fontsize=7,
            zorder=3,
            bbox=dict(boxstyle="round,pad=0.25", facecolor=fills.get(kind, "white"), edgecolor="#555555"),
        )
    ax.set_xlim(-0.8, n_heads - 0.2)
    ax.set_ylim(-1.6, n_layers + 0.6)
    ax.set_yticks(range(n_layers))
    ax.set_yticklabels([f"layer {i}" for i in range(n_layers)], fontsize=8)
    ax.set_xticks(range(n_heads))
    ax.set_xlabel("head")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, path, caption)
