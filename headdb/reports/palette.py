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
    _strong: list[str] = field(default_factory=list)
    _dark: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._strong = [c for i, c in enumerate(_cycle("tab10", 10)) if i != 7]  # 7 is tab10's grey
        self._dark = _cycle("Dark2", 8)
        self._lineage = {name: BASE_GREY for name, base in self.lineages if base}
        for name, base in self.lineages:
            if not base:
                self.lineage(name)
        for name in self.tasks:
            self.task(name)

    def lineage(self, name: str) -> str:
        """Its colour; a name the warehouse does not hold (a test's frame) takes the next free one."""
        if name not in self._lineage:
            taken = sum(colour != BASE_GREY for colour in self._lineage.values())
            self._lineage[name] = self._strong[taken % len(self._strong)]
        return self._lineage[name]

    def task(self, name: str) -> str:
        if name not in self._task:
            self._task[name] = self._dark[len(self._task) % len(self._dark)]
        return self._task[name]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def linestyle(i: int) -> str:
    return LINESTYLES[i % len(LINESTYLES)]
