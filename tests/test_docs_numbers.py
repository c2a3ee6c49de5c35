"""Every number README.md and docs/ state is either computed here or names where it was measured.

- **Measured** numbers (a time, a rate, a memory size, a speed ratio such as 1.6x, "7 of 9 runs",
  a correlation) stand in a paragraph, list item or table that names its section of
  benchmarks/RESULTS.md: `RESULTS.md` and, in the same paragraph, a quoted heading of that file
  ("Demo", "Circuit sizes"). A heading that no longer exists fails, as does a measurement with no
  source.
- **Computed** numbers (the memory model's table, graph sizes, Poisson weights, a default) are
  recomputed below from the code, so a change that moves them fails here until the docs follow.
- Numbers inside code (blocks and `inline`) are commands and settings, checked by
  test_docs_commands.py; constants that are the study's choices (T 0.6, tau 0.1, 1.3x scaling) are
  listed in CHOICES with what they are.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest

from headdb.attribution.graph import build_layout
from headdb.attribution.memory import estimate, layer_saved_bytes, plain_pass, size
from headdb.settings import Runtime

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"

NUMBER = r"(?<![\w.])\d[\d,]*(?:\.\d+)?"
MEASURED = re.compile(
    NUMBER + r"\s?(?:s|ms|min|minutes?|seconds?|hours?|GiB|GB|MiB|MB|KiB)(?![\w/])"
    r"|" + NUMBER + r"x(?![\w/])"
    r"|" + NUMBER + r"\s?(?:samples|tokens|pairs) (?:per second|/s)"
    r"|" + NUMBER + r" of " + NUMBER + r" (?:runs|seeds)"
    r"|Pearson " + NUMBER + r"|(?<![\w.])[-−]\d*\.\d+",  # a signed decimal: a measured change (-0.24 accuracy)
)


def paragraphs(path: Path) -> list[str]:
    """Paragraphs (list items and tables included) outside code blocks."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def without_code(paragraph: str) -> str:
    return re.sub(r"`[^`\n]*`", "", paragraph)


def results_headings() -> list[str]:
    return [re.sub(r"[`*]", "", h).strip() for h in re.findall(r"^#+ (.+)$", RESULTS.read_text(), flags=re.M)]


def cites_a_test(paragraph: str, measured: list[str]) -> bool:
    """The paragraph names a test file that asserts each of these numbers."""
    named = [ROOT / f for f in re.findall(r"tests/test_\w+\.py", paragraph) if (ROOT / f).exists()]
    numbers = [re.search(NUMBER, m).group(0) for m in measured]
    return bool(named) and all(any(n in f.read_text() for f in named) for n in numbers)


def cites_results(paragraph: str, headings: list[str]) -> list[str]:
    """The RESULTS.md headings a paragraph names (quoted, after 'RESULTS.md'); [] if none."""
    if "RESULTS.md" not in paragraph:
        return []
    after = paragraph[paragraph.index("RESULTS.md") :]
    quoted = re.findall(r'"([^"\n]+)"', " ".join(after.split()))
    return [q for q in quoted if any(h == q or (h.startswith(q) and h[len(q)] in ":,( ") for h in headings)]


# ---------------------------------------------------------------------- computed numbers


def _shapes():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_shapes import SHAPES, config_shape

    return SHAPES, config_shape


def _planned(shape, dtype_bytes: int, seq: int, budget: int = 2**62, circuits: bool = True):
    """(estimate, plan) of a run as the plan takes it on a GPU at batch 1 within `budget`
    (memory.plan_shape; circuits: a study's run, discover)."""
    from headdb.attribution.memory import plan_shape

    plan = plan_shape(
        shape, dtype_bytes=dtype_bytes, seq=seq, budget=budget, wanted=1, device="cuda", circuits=circuits
    )
    kw = dict(scoring=plan.scoring, chunks=plan.chunks, factored=plan.factored, circuits=circuits)
    return estimate(shape, dtype_bytes=dtype_bytes, seq=seq, **kw), plan


def _memory_row(label: str, name: str, dtype_bytes: int) -> str:
    shapes, config_shape = _shapes()
    shape = config_shape(shapes[name])
    weights = size(estimate(shape, dtype_bytes=dtype_bytes, seq=128).weights)
    cells = []
    for n in (128, 512, 1024):
        run, _ = _planned(shape, dtype_bytes, n)  # a study's run: discover
        ratio = run.total(1) / plain_pass(shape, dtype_bytes=dtype_bytes, seq=n).total(1)
        cells.append(f"+{size(run.working(1))} ({ratio:.2f}x)")
    return f"| {label} (weights {weights}) | " + " | ".join(cells) + " |"


def _study_least_8b_1024() -> int:
    """The least a study's run (discover) of Qwen3-8B at 1024 tokens holds: every layer factored."""
    shapes, config_shape = _shapes()
    shape = config_shape(shapes["8b"])
    return estimate(shape, dtype_bytes=2, seq=1024, factored=shape.n_layers, circuits=True).total(1)


def _wide_batch_8b_512() -> str:
    """Qwen3-8B, bf16, 16 pairs of 512 tokens: the plan's cost limit against the layers that
    the 1.3x target alone would take, and what those would cost."""
    from headdb.attribution.memory import PEAK_TARGET, factor_limit

    shapes, config_shape = _shapes()
    shape = config_shape(shapes["8b"])
    S, B, L, H, D, dh, F = 512, 16, shape.n_layers, shape.n_heads, shape.d_model, shape.d_head, shape.d_mlp
    plain = plain_pass(shape, dtype_bytes=2, seq=S).total(B)

    def ratio(f: int) -> float:
        return estimate(shape, dtype_bytes=2, seq=S, factored=f).total(B) / plain

    cap = factor_limit(shape)
    need = next(f for f in range(L + 1) if ratio(f) <= PEAK_TARGET)
    per_layer = H * dh * D + 2 * shape.n_kv_heads * dh * D + dh * H * D + 3 * D * F
    cost = (need + need * (need + 1) // 2) * 2 * H * dh * D / (4 * L * per_layer)
    return (
        f"{B} pairs of {S} tokens holds {ratio(cap):.2f} times a plain pass with {cap} layers\nfactored, "
        f"where {need} layers ({100 * cost:.0f}% more FLOPs per step) would reach {ratio(need):.2f} times"
    )


def _factored_8b_1024() -> str:
    """What the plan does with Qwen3-8B at 1024 tokens (bf16, batch 1) with memory to spare and
    within 35 GB: the factored layers, the total, the ratio, and the expansions' cost."""
    shapes, config_shape = _shapes()
    shape = config_shape(shapes["8b"])
    S, L, H, D, dh, F = 1024, shape.n_layers, shape.n_heads, shape.d_model, shape.d_head, shape.d_mlp
    plain = plain_pass(shape, dtype_bytes=2, seq=S).total(1)
    ample, plan = _planned(shape, 2, S)
    tight, tight_plan = _planned(shape, 2, S, budget=35 * 10**9)
    f = plan.factored
    expansions = f + f * (f + 1) // 2
    per_layer = H * dh * D + 2 * shape.n_kv_heads * dh * D + dh * H * D + 3 * D * F
    return (
        f"factors the heads of its last {f} layers: {ample.total(1) / 2**30:.0f} GiB "
        f"({ample.total(1) / 1e9:.0f} GB), {ample.total(1) / plain:.2f}x of a plain pass,\n"
        f"for {expansions} expansions per IG step ({expansions * 2 * S * H * dh * D / 1e12:.1f} TFLOP per row, "
        f"against about {4 * L * per_layer * S / 1e12:.0f} TFLOP for the step's forward\n"
        f"and backward at 4 FLOPs per weight and token). With `--max-memory 35GB` (a 40 GB card) it\n"
        f"factors {tight_plan.factored} layers: {tight.total(1) / 2**30:.0f} GiB ({tight.total(1) / 1e9:.0f} GB), "
        f"{tight.total(1) / plain:.2f}x"
    )


def _gib(text: str) -> str:
    return text.replace("GiB", " GiB").replace("MiB", " MiB")


def _total_8b_1024() -> int:
    shapes, config_shape = _shapes()
    return estimate(config_shape(shapes["8b"]), dtype_bytes=2, seq=1024).total(1)


def _terms_8b_1024() -> tuple[int, int, int]:
    """Qwen3-8B at 1024 tokens, bf16, batch 1: delta, L x saved, and what summed scoring adds."""
    shapes, config_shape = _shapes()
    shape = config_shape(shapes["8b"])
    S, L, H, D = 1024, shape.n_layers, shape.n_heads, shape.d_model
    step, summed = (estimate(shape, dtype_bytes=2, seq=S, scoring=sc).per_row for sc in ("per-step", "summed"))
    return 2 * (1 + L * (H + 1)) * D * S, L * layer_saved_bytes(shape, 2, S) * S, summed - step


DEMO_EDGES = build_layout((4, 8, 2)).n_edges  # the demo's model: 4 layers, 8 query heads on 2 kv heads
STUDY_EDGES = build_layout((28, 12, 12)).n_edges  # EAP-IG's (ungrouped) graph of Qwen2.5-Math-1.5B

# (file, the text as the docs state it, the same text computed from the code)
COMPUTED = [
    (
        "docs/attribution.md",
        "| Qwen2.5-Math-1.5B (weights 2.9 GiB) | +820.7 MiB (1.16x) | +2.2 GiB (1.15x) | +5.3 GiB (1.20x) |",
        lambda: _gib(_memory_row("Qwen2.5-Math-1.5B", "1.5b", 2)),
    ),
    (
        "docs/attribution.md",
        "| Qwen2.5-Math-1.5B fp32 (weights 5.8 GiB) | +1.1 GiB (1.10x) | +3.3 GiB (1.14x) | +7.3 GiB (1.21x) |",
        lambda: _gib(_memory_row("Qwen2.5-Math-1.5B fp32", "1.5b", 4)),
    ),
    (
        "docs/attribution.md",
        "| Qwen3-8B (weights 15.3 GiB) | +2.1 GiB (1.09x) | +9.8 GiB (1.28x) | +20.0 GiB (1.30x) |",
        lambda: _gib(_memory_row("Qwen3-8B", "8b", 2)),
    ),
    (
        "docs/attribution.md",
        "Qwen3-8B at 1024 tokens needs about 38 GiB (41 GB) at batch 1 per step",
        lambda: "Qwen3-8B at 1024 tokens needs about {:.0f} GiB ({:.0f} GB) at batch 1 per step".format(
            _total_8b_1024() / 2**30, _total_8b_1024() / 1e9
        ),
    ),
    (
        "docs/attribution.md",
        "node-output differences (10.0 GB) and the forward's saved\ntensors (12.8 GB); the summed scoring would add 29.6 GB",
        lambda: (
            "node-output differences ({:.1f} GB) and the forward's saved\ntensors ({:.1f} GB); the summed scoring would add {:.1f} GB".format(
                *(b / 1e9 for b in _terms_8b_1024())
            )
        ),
    ),
    (
        "docs/attribution.md",
        "factors the heads of its last 13 layers: 35 GiB (38 GB), 1.30x of a plain pass,\nfor 104 expansions per IG step (3.6 TFLOP per row, against about 28 TFLOP for the step's forward\nand backward at 4 FLOPs per weight and token). With `--max-memory 35GB` (a 40 GB card) it\nfactors 25 layers: 32 GiB (35 GB), 1.19x",
        _factored_8b_1024,
    ),
    (
        "docs/attribution.md",
        "With every layer factored a study's run at this length needs 30 GiB",
        lambda: "With every layer factored a study's run at this length needs {:.0f} GiB".format(
            _study_least_8b_1024() / 2**30
        ),
    ),
    (
        "docs/attribution.md",
        "16 pairs of 512 tokens holds 1.65 times a plain pass with 18 layers\nfactored, where 34 layers (76% more FLOPs per step) would reach 1.28 times",
        _wide_batch_8b_512,
    ),
    (
        "docs/attribution.md",
        "823 against 1519 edges",
        lambda: f"{DEMO_EDGES} against {build_layout((4, 8, 8)).n_edges} edges",
    ),
    ("docs/demo.md", "of this model's 823 edges", lambda: f"of this model's {DEMO_EDGES} edges"),
    ("docs/demo.md", "7% of this model's", lambda: f"{round(100 * 60 / DEMO_EDGES)}% of this model's"),
    ("docs/demo.md", "2.7% of", lambda: f"{100 * 5000 / STUDY_EDGES:.1f}% of"),
    ("docs/demo.md", "184k edges", lambda: f"{round(STUDY_EDGES / 1000)}k edges"),
    ("docs/demo.md", "56 of 336 heads, 17%", lambda: f"56 of {28 * 12} heads, {round(100 * 56 / (28 * 12))}%"),
    ("docs/demo.md", "two (6%)", lambda: f"two ({round(100 * 2 / 32)}%)"),
    (
        "docs/confidence.md",
        "184k edges and B = 100 that is 70 MiB",
        lambda: f"{round(STUDY_EDGES / 1000)}k edges and B = 100 that is {4 * 100 * STUDY_EDGES / 2**20:.0f} MiB",
    ),
    (
        "docs/confidence.md",
        "(0 with chance 37%, 1 with 37%,\n2 with 18%",
        lambda: "(0 with chance {:.0f}%, 1 with {:.0f}%,\n2 with {:.0f}%".format(
            *(100 * math.exp(-1) / math.factorial(k) for k in range(3))
        ),
    ),
    ("docs/scale-out.md", "(default 300 s)", lambda: f"(default {Runtime.model_fields['lock_timeout'].default:g} s)"),
]

# Numbers in prose that are the study's or the demo's choices, not measurements: what each is.
CHOICES = {
    "README.md": ["1.3x / 0.5x scaling"],  # the study's scale factors (its manifest)
}


@pytest.mark.parametrize(("doc", "stated", "compute"), COMPUTED, ids=[f"{d}: {s[:40]}" for d, s, _ in COMPUTED])
def test_computed_numbers_are_what_the_code_computes(doc, stated, compute):
    text = (ROOT / doc).read_text()
    assert stated in text, f"{doc} no longer says {stated!r}: update COMPUTED"
    assert compute() == stated, f"{doc} says {stated!r}; the code gives {compute()!r}"


def _uncomputed(path: Path, paragraph: str) -> str:
    """The paragraph without the stated numbers COMPUTED checks and the CHOICES."""
    name = str(path.relative_to(ROOT))
    for doc, stated, _ in COMPUTED:
        if doc == name:
            paragraph = paragraph.replace(stated, "")
    for choice in CHOICES.get(name, []):
        paragraph = paragraph.replace(choice, "")
    return paragraph


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_measured_number_names_its_results_section(path):
    headings = results_headings()
    unsourced = []
    for paragraph in paragraphs(path):
        measured = MEASURED.findall(without_code(_uncomputed(path, paragraph)))
        if measured and not (cites_results(paragraph, headings) or cites_a_test(paragraph, measured)):
            unsourced.append(f"{measured}: {' '.join(paragraph.split())[:160]}")
    assert not unsourced, (
        f"{path.name}: measurements without a RESULTS.md section (write: benchmarks/RESULTS.md, "
        '"Heading"):\n' + "\n".join(unsourced)
    )


def test_the_scanner_finds_what_it_must():
    """The rule is only as good as its patterns: each kind of measurement is recognised."""
    for text in ("took 294 s", "1.63x", "in 7 of 9 runs", "Pearson 0.978", "700 samples per second", "cost -0.24"):
        assert MEASURED.search(text), text
    for text in ("layer 3", "seed 0", "n = 60", "top 5000 edges"):
        assert not MEASURED.search(text), text
    headings = ["Demo", "Real shapes: time and peak memory against length and batch (bench_shapes.py)"]
    assert cites_results('see benchmarks/RESULTS.md, "Real shapes"', headings) == ["Real shapes"]
    assert cites_results('see benchmarks/RESULTS.md, "Gone"', headings) == []
    assert cites_results("see benchmarks/RESULTS.md", headings) == []
