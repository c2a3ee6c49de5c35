"""Which heads a demo's SFT model needs for subtraction, set beside its circuits.

    python benchmarks/bench_head_necessity.py DIR/seed0-native [DIR/seed1-native ...] [--kind mean] [--markdown FILE]

Each argument is a demo folder that `bench_demo.py` (or `headdb demo --out`) left, with its
warehouse `<folder>.duckdb` beside it. For the last SFT checkpoint it zeroes every head alone and
answers the demo's subtraction and addition benchmarks greedily (one torch thread), then reads
the `sub` circuits of the base and `sft@last` from the warehouse and prints, per run:

- how many heads of each layer halve subtraction accuracy when zeroed alone;
- the three heads whose zeroing costs subtraction most beyond what it costs addition, and where
  they are: gained (in SFT's `sub` circuit, not the base's), kept (both), lost (the base's only)
  or neither;
- the two most important heads of SFT's `sub` circuit zeroed together, against every set of as
  many heads per layer drawn outside that circuit (the demo's control, all its possible draws):
  their mean and worst accuracy;
- the demo's own SFT ablation (its manifest's `heads_query`: the two strongest gained heads)
  against the mean of every such draw, problem by problem: the difference and its 95% paired
  bootstrap interval (headdb's own), i.e. the demo's criterion with the control's expectation in
  place of its one random draw;
- the same for every pair of SFT's gained heads: how many pairs have their interval below 0, and
  the best pair. Where none has, no rule that ablates two gained heads (whatever it ranks them
  by) can meet the demo's criterion on that model; only its training can.

`--kind mean` mean-ablates instead of zeroing (means over the benchmark's prompts, as the study's
mean ablation).

This is why the demo's ablation criterion flips between seeds (benchmarks/RESULTS.md, "why the
ablation contrast flips"): a diagnosis of trained models, not a timing.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MAX_CONTROLS = 64  # draws evaluated per run (all of them in the demo's model)


def _benchmarks(m) -> dict[str, object]:
    """The demo manifest's subtraction and addition benchmarks, as the study loads them."""
    from headdb.evals.benchmarks import load_benchmark

    return {b.name: load_benchmark(b.source, limit=b.limit) for b in m.benchmarks}


class Answers:
    """Greedy answers of a model to one benchmark, with a head set zero- or mean-ablated
    (headdb's own generation loop, interventions and grader)."""

    def __init__(self, model, tok, bench, kind: str = "zero"):
        from headdb.evals.generation import chat_prompts
        from headdb.evals.interventions import head_means
        from headdb.settings import Sampling

        self.model, self.tok, self.kind = model, tok, kind
        self.prompts = chat_prompts(tok, bench["prompt"].to_list())
        self.golds = bench["answer"].to_list()
        self.sampling = Sampling(samples=1, temperature=0, max_new_tokens=24, batch_size=len(self.prompts))
        self.means = {}
        self._done: dict[frozenset[tuple[int, int]], np.ndarray] = {}  # greedy: a head set's answers never change
        if kind == "mean":  # over the benchmark's prompts, as the study's mean ablation
            enc = tok(self.prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            self.means = head_means(model, [{n: enc[n] for n in ("input_ids", "attention_mask")}])

    def correct(self, heads: list[tuple[int, int]]) -> np.ndarray:
        """1.0 or 0.0 per problem, in the benchmark's order."""
        key = frozenset(heads)
        if key not in self._done:
            self._done[key] = self._generate(heads)
        return self._done[key]

    def _generate(self, heads: list[tuple[int, int]]) -> np.ndarray:
        from headdb.evals.generation import generate
        from headdb.evals.grading import grade
        from headdb.evals.interventions import Intervention, applied

        intervention = Intervention(self.kind, heads, means=self.means) if heads else None
        with applied(self.model, intervention):
            out = generate(self.model, self.tok, self.prompts, self.sampling)
        right = np.zeros(len(self.prompts))
        for i, text in zip(out["prompt_index"], out["completion"]):
            right[i] = grade(self.golds[i], text).correct
        return right

    def accuracy(self, heads: list[tuple[int, int]]) -> float:
        return float(self.correct(heads).mean())


def _circuit(db, checkpoint: str, n_heads: int) -> dict[tuple[int, int], float]:
    """(layer, head) -> importance of the heads in `checkpoint`'s `sub` circuit."""
    from headdb.demo.study import SELECTION

    t = db.query("top_heads", checkpoint=checkpoint, task="sub", n=n_heads, selection=SELECTION)
    t = t.filter(t["in_circuit"])
    return {(int(r["layer"]), int(r["head"])): float(r["importance"]) for r in t.iter_rows(named=True)}


def layer_matched_draws(
    heads: list[tuple[int, int]], outside: set[tuple[int, int]], n_heads: int
) -> list[list[tuple[int, int]]]:
    """Every set of as many heads per layer as `heads` has, none in `outside` (the demo's control
    rule, all its possible draws; at most MAX_CONTROLS)."""
    from headdb.evals.interventions import heads_per_layer

    per_layer = heads_per_layer(heads)
    layers = sorted(per_layer)
    pools = [[(layer, h) for h in range(n_heads) if (layer, h) not in outside] for layer in layers]
    draws = itertools.islice(
        itertools.product(*[itertools.combinations(p, per_layer[layer]) for p, layer in zip(pools, layers)]),
        MAX_CONTROLS,
    )
    return [[x for group in draw for x in group] for draw in draws]


def _sft_ablation(m):
    """The demo manifest's ablation of SFT's emergent heads (not the one of its strongest heads)."""
    return next(a for a in m.ablations if a.checkpoint == "sft@last" and a.heads_query.name == "heads_gained")


def _gained(db, a) -> list[tuple[int, int]]:
    """Every head SFT gained on `sub`: the entry's heads_query without its order and limit."""
    from headdb.jobs.headsets import heads_from_query

    q = a.heads_query
    return heads_from_query(db, q.name, q.params, where=q.where, extra_dirs=db.query_dirs)


def _against_every_draw(sub: Answers, heads, outside, n_heads):
    """`heads` against the mean of every layer-matched draw outside `outside`, problem by problem:
    headdb's paired bootstrap interval of the difference and the number of draws, or None."""
    from headdb.evals.bootstrap import paired_difference

    draws = layer_matched_draws(heads, outside, n_heads)
    if not draws:
        return None
    expected = np.mean([sub.correct(draw) for draw in draws], axis=0)  # per problem, over every draw
    return paired_difference(sub.correct(heads), expected), len(draws)


def diagnose(folder: Path, kind: str = "zero") -> dict:
    import headdb

    from headdb.demo.study import FULL, demo_study
    from headdb.jobs.study import queried_heads

    db = headdb.connect(Path(f"{folder}.duckdb"), create=False)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = demo_study(folder, FULL)  # the manifest the demo's study ran
    benches = _benchmarks(m)
    tok = AutoTokenizer.from_pretrained(folder / "runs" / "sft")
    model = AutoModelForCausalLM.from_pretrained(folder / "runs" / "sft", dtype=torch.float32).eval()
    sub, add = Answers(model, tok, benches["subtraction"], kind), Answers(model, tok, benches["addition"], kind)
    cfg = model.config
    layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    heads = [(layer, h) for layer in range(layers) for h in range(n_heads)]
    base_sub, base_add = sub.accuracy([]), add.accuracy([])
    alone = {x: (sub.accuracy([x]), add.accuracy([x])) for x in heads}
    before, after = _circuit(db, "base", len(heads)), _circuit(db, "sft@last", len(heads))

    def where(x):
        return {(True, True): "kept", (False, True): "gained", (True, False): "lost"}.get(
            (x in before, x in after), "neither"
        )

    specific = sorted(heads, key=lambda x: (alone[x][0] - base_sub) - (alone[x][1] - base_add))[:3]
    strongest = sorted(after, key=after.get, reverse=True)[:2]
    controls = [sub.accuracy(draw) for draw in layer_matched_draws(strongest, set(after), n_heads)]
    a = _sft_ablation(m)
    ablated, _ = queried_heads(db, m, a, say=lambda _: None)  # as the study ran it
    contrast = _against_every_draw(sub, ablated, set(after), n_heads)
    # every pair of gained heads: could any rule that picks two of them meet the criterion?
    pairs = [_against_every_draw(sub, list(p), set(after), n_heads) for p in itertools.combinations(_gained(db, a), 2)]
    return {
        "run": folder.name,
        "subtraction": base_sub,
        "halving": [sum(alone[(layer, h)][0] < base_sub / 2 for h in range(n_heads)) for layer in range(layers)],
        "specific": [(f"L{x[0]}H{x[1]}", where(x), alone[x][0] - base_sub, alone[x][1] - base_add) for x in specific],
        "strongest": ",".join(f"L{layer}H{h}" for layer, h in sorted(strongest)),
        "strongest_accuracy": sub.accuracy(strongest),
        "controls": (sum(controls) / len(controls), min(controls), len(controls)) if controls else None,
        "ablated": ",".join(f"L{layer}H{h}" for layer, h in ablated),
        "contrast": contrast,
        "pairs": [p[0] for p in pairs if p is not None],
    }


def report(rows: list[dict]) -> list[str]:
    lines = [
        "| run | subtraction (greedy) | heads per layer that alone halve it | most subtraction-specific heads: "
        "class (subtraction, addition change) | SFT circuit's two strongest, zeroed | layer-matched pairs "
        "outside the circuit: mean, worst (draws) | the demo's ablation heads minus every draw: difference "
        "[95% interval] (draws) | pairs of gained heads below every draw (interval below 0): count, best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        specific = "; ".join(f"{h} {c} ({s:+.2f}, {a:+.2f})" for h, c, s, a in r["specific"])
        controls = "no draw" if r["controls"] is None else "{:.2f}, {:.2f} ({})".format(*r["controls"])
        contrast = "no draw"
        if r["contrast"] is not None:
            interval, n = r["contrast"]
            contrast = f"{interval.estimate:+.2f} {interval.text(2)} ({n})"
        pairs = f"{sum(p.high < 0 for p in r['pairs'])} of {len(r['pairs'])}"
        if r["pairs"]:
            best = min(r["pairs"], key=lambda p: p.estimate)
            pairs += f", {best.estimate:+.2f} {best.text(2)}"
        lines.append(
            f"| {r['run']} | {r['subtraction']:.2f} | {', '.join(map(str, r['halving']))} | {specific} | "
            f"{r['strongest']}: {r['strongest_accuracy']:.2f} | {controls} | {r['ablated']}: {contrast} | {pairs} |"
        )
    classes = [c for r in rows for _, c, _, _ in r["specific"]]
    lines += [
        "",
        "Most subtraction-specific heads, by class: "
        + ", ".join(f"{c} {classes.count(c)}" for c in ("gained", "kept", "lost", "neither")),
        "The demo's ablation heads below every draw (interval below 0): "
        f"{sum(r['contrast'] is not None and r['contrast'][0].high < 0 for r in rows)} of {len(rows)} runs",
        "Runs where no pair of gained heads is below every draw: "
        f"{sum(not any(p.high < 0 for p in r['pairs']) for r in rows)} of {len(rows)}",
    ]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="demo folders, each with <folder>.duckdb beside it")
    ap.add_argument("--kind", choices=("zero", "mean"), default="zero", help="how heads are ablated")
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    for folder in args.folders:
        print(f"{folder.name} ...", file=sys.stderr, flush=True)
        rows.append(diagnose(folder, args.kind))
    text = "\n".join(report(rows)) + "\n"
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
