"""One colour per lineage and per task or benchmark, the same in every figure of a warehouse.

Colours are assigned in the warehouse's own order of names (base lineages first, then the others
by name), so `sft` is the same colour in the faithfulness curve, the regime comparison and the
HTML report, whichever subset a figure shows. Lineages take matplotlib's `tab10` (its grey kept
for base lineages, the reference every comparison is made against); tasks and benchmarks take
`Dark2`, so a lineage and a benchmark are not mistaken for each other. Series kinds that are not
names (gained / lost, new / pruned) have fixed colours here too, shared with the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

BASE_GREY = "#555555"
GAINED = "#1a9850"
LOST = "#d73027"
MISSING = "#dddddd"  # cells with no value: drawn, and named in the legend
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")


def _cycle(name: str, size: int) -> list[str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps[name]
    return [to_hex(cmap(i)) for i in range(size)]


@dataclass
class Palette:
    lineages: Sequence[tuple[str, bool]] = ()  # (name, is_base), in the warehouse's order
    tasks: Sequence[str] = ()
    _lineage: dict[str, str] = field(default_factory=dict)
    _task: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        strong = [c for i, c in enumerate(_cycle("tab10", 10)) if i != 7]  # 7 is tab10's grey
        others = [name for name, base in self.lineages if not base]
        self._lineage = {name: BASE_GREY for name, base in self.lineages if base}
        self._lineage.update({name: strong[i % len(strong)] for i, name in enumerate(others)})
        dark = _cycle("Dark2", 8)
        self._task = {name: dark[i % len(dark)] for i, name in enumerate(self.tasks)}

    def lineage(self, name: str) -> str:
        if name not in self._lineage:  # not in the warehouse (a test's frame): next free colour
            self._lineage[name] = _cycle("tab10", 10)[len(self._lineage) % 10]
        return self._lineage[name]

    def task(self, name: str) -> str:
        if name not in self._task:
            self._task[name] = _cycle("Dark2", 8)[len(self._task) % 8]
        return self._task[name]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def linestyle(i: int) -> str:
    return LINESTYLES[i % len(LINESTYLES)]
