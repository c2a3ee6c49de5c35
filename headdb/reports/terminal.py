"""Terminal drawing with rich: layer x head heatmaps, colour legends, sparklines and bars.

Heatmaps put layers on rows and heads on columns; each cell is a background-coloured block
(3 characters wide up to 16 heads, 2 beyond, so 36 x 32 fits in 70 columns). Without colour
(output piped to a file, NO_COLOR) cells fall back to glyphs: a shade ramp for sequential
scales, arrows for diverging ones and a letter per category.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.text import Text

# Perceptually ordered anchors (a viridis-like ramp and a blue-white-red diverging ramp).
SEQUENTIAL = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]
DIVERGING = ["#2166ac", "#67a9cf", "#f7f7f7", "#ef8a62", "#b2182b"]
MISSING = "#303030"
SHADES = " ░▒▓█"
SPARKS = "▁▂▃▄▅▆▇█"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(round(c)) for c in rgb)


def ramp(anchors: Sequence[str], t: float) -> str:
    """The colour at position t in [0, 1] along `anchors`, linearly interpolated."""
    t = min(max(t, 0.0), 1.0)
    pos = t * (len(anchors) - 1)
    i = min(int(pos), len(anchors) - 2)
    frac = pos - i
    a, b = _rgb(anchors[i]), _rgb(anchors[i + 1])
    return _hex([a[k] + (b[k] - a[k]) * frac for k in range(3)])


def text_colour(background: str) -> str:
    r, g, b = _rgb(background)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


@dataclass
class Scale:
    """How values become colours: sequential (vmin..vmax), diverging (-m..+m) or categorical."""

    kind: str = "sequential"
    vmin: float = 0.0
    vmax: float = 1.0
    categories: dict | None = None  # value -> (label, colour, glyph)
    label: str = ""

    @classmethod
    def for_values(
        cls,
        values: np.ndarray,
        kind: str = "sequential",
        label: str = "",
        vmin: float | None = None,
        vmax: float | None = None,
    ) -> "Scale":
        finite = values[np.isfinite(values)] if values.size else values
        if kind == "diverging":
            m = float(np.max(np.abs(finite))) if finite.size else 1.0
            m = m if m > 0 else 1.0
            return cls("diverging", -m if vmin is None else vmin, m if vmax is None else vmax, label=label)
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 1.0
        lo = lo if vmin is None else vmin
        hi = hi if vmax is None else vmax
        if hi <= lo:
            hi = lo + 1.0
        return cls("sequential", lo, hi, label=label)

    def position(self, value: float) -> float:
        return (value - self.vmin) / (self.vmax - self.vmin)

    def colour(self, value) -> str:
        if self.kind == "categorical":
            return self.categories[value][1] if value in self.categories else MISSING
        if value is None or not math.isfinite(value):
            return MISSING
        return ramp(DIVERGING if self.kind == "diverging" else SEQUENTIAL, self.position(value))

    def glyph(self, value) -> str:
        if self.kind == "categorical":
            return self.categories[value][2] if value in self.categories else "·"
        if value is None or not math.isfinite(value):
            return "·"
        t = min(max(self.position(value), 0.0), 1.0)
        if self.kind == "diverging":
            return "▼▿ ▵▲"[min(int(t * 5), 4)]
        if value == 0 and self.vmin == 0:
            return " "  # zero on a scale that starts at zero: nothing there
        return SHADES[1:][min(int(t * (len(SHADES) - 1)), len(SHADES) - 2)]


def uses_colour(console: Console) -> bool:
    return console.color_system is not None and not console.no_color


def heatmap(
    values,
    *,
    scale: Scale,
    console: Console,
    title: str = "",
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    row_title: str = "layer",
    col_title: str = "head",
) -> RenderableType:
    """A matrix of cells (rows x cols); values: 2-D float array (NaN = missing) or, for a
    categorical scale, a 2-D object array of category keys (None = missing)."""
    values = np.asarray(values, dtype=object if scale.kind == "categorical" else float)
    n_rows, n_cols = values.shape
    row_labels = list(row_labels) if row_labels is not None else [f"L{r}" for r in range(n_rows)]
    col_labels = list(col_labels) if col_labels is not None else [str(c) for c in range(n_cols)]
    width = 3 if n_cols <= 16 else 2
    pad = max((len(r) for r in row_labels), default=1) + 1
    colour = uses_colour(console)
    lines: list[Text] = []
    if title:
        lines.append(Text(title, style="bold"))
    header = Text(" " * pad)
    if width == 3:
        for c in col_labels:
            header.append(c[-3:].rjust(3), style="dim")
    else:  # 2-character cells: label every 4th column, left-aligned over its cell
        chars = [" "] * (2 * n_cols)
        for c in range(0, n_cols, 4):
            label = col_labels[c]
            for k, ch in enumerate(label[:8]):
                if 2 * c + k < len(chars):
                    chars[2 * c + k] = ch
        header.append("".join(chars), style="dim")
    header.append(f"  {col_title}", style="dim")
    lines.append(header)
    for r in range(n_rows):
        line = Text()
        line.append(row_labels[r].rjust(pad - 1) + " ", style="dim")
        for c in range(n_cols):
            value = values[r, c]
            if colour:
                line.append(" " * width, style=f"on {scale.colour(value)}")
            else:
                line.append(scale.glyph(value).center(width))
        lines.append(line)
    lines.append(legend(scale, console))
    return Group(*lines)


def legend(scale: Scale, console: Console, width: int = 24) -> Text:
    colour = uses_colour(console)
    text = Text("")
    if scale.label:
        text.append(scale.label + ": ", style="dim")
    if scale.kind == "categorical":
        for key, (label, col, glyph) in scale.categories.items():
            if colour:
                text.append("   ", style=f"on {col}")
            else:
                text.append(f"[{glyph}]")
            text.append(f" {label}  ")
        if colour:
            text.append("   ", style=f"on {MISSING}")
            text.append(" none")
        return text
    text.append(_fmt(scale.vmin) + " ")
    for i in range(width):
        value = scale.vmin + (scale.vmax - scale.vmin) * (i + 0.5) / width
        if colour:
            text.append(" ", style=f"on {scale.colour(value)}")
        else:
            text.append(scale.glyph(value) if scale.glyph(value) != " " else "_")
    text.append(" " + _fmt(scale.vmax))
    if scale.kind == "diverging":
        text.append("   (0 in the middle)", style="dim")
    text.append("   ")
    if colour:
        text.append("  ", style=f"on {MISSING}")
    else:
        text.append("·")
    text.append(" no value", style="dim")
    return text


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


SHORT_SERIES = 12


def sparkline(values: Sequence[float | None]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return " " * len(values)
    lo, hi = min(finite), max(finite)
    out = []
    short = len(values) <= SHORT_SERIES
    for v in values:
        if v is None or not math.isfinite(v):
            out.append("·" if short else " ")
        elif hi == lo:
            out.append(SPARKS[0] if v == 0 else SPARKS[len(SPARKS) // 2])  # all zero: nothing there
        else:
            out.append(SPARKS[min(int((v - lo) / (hi - lo) * (len(SPARKS) - 1) + 0.5), len(SPARKS) - 1)])
    # a few points drawn side by side read as one block: a short series gets a space between points
    return (" " if short else "").join(out)


def bar(value: float | None, vmax: float, width: int = 12, *, style: str = "cyan", char: str = "█") -> Text:
    """A horizontal bar of `value` on a 0..vmax scale, with eighth-block resolution."""
    if value is None or not math.isfinite(value) or vmax <= 0:
        return Text(" " * width)
    cells = max(0.0, min(value / vmax, 1.0)) * width
    full = int(cells)
    rest = cells - full
    partial = " ▏▎▍▌▋▊▉"[int(rest * 8)] if full < width else ""
    body = char * full + (partial if partial.strip() else "")
    return Text(body.ljust(width), style=style)


def grid(df, n_layers: int, n_heads: int, column: str, *, fill=np.nan, categorical: bool = False):
    """A (n_layers x n_heads) array from rows with layer, head and `column`."""
    out = np.full((n_layers, n_heads), None if categorical else fill, dtype=object if categorical else float)
    for layer, head, value in zip(df["layer"].to_list(), df["head"].to_list(), df[column].to_list()):
        if 0 <= layer < n_layers and 0 <= head < n_heads:
            out[layer, head] = value if (categorical or value is not None) else fill
    return out
