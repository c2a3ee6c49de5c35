"""Benchmark loaders: every preset on a small fixture, errors, the synthetic set, digests."""

import csv
import json

import polars as pl
import pytest

from headdb.evals.benchmarks import (
    COLUMNS,
    PROMPT_SUFFIX,
    build_prompt,
    detect_preset,
    items_digest,
    load_benchmark,
    parse_fields,
    synthetic_arithmetic,
)
from headdb.errors import UserError
from headdb.evals.grading import grade


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def meta(df, i=0):
    return json.loads(df["meta"][i])


def test_math500_jsonl(tmp_path):
    p = write_jsonl(
        tmp_path / "math500.jsonl",
        [
            {
                "problem": "Compute $1+1$.",
                "solution": "It is 2.",
                "answer": "2",
                "subject": "Algebra",
                "level": 1,
                "unique_id": "test/algebra/1.json",
            },
            {
                "problem": "Half of one?",
                "solution": "...",
                "answer": "\\frac{1}{2}",
                "subject": "Prealgebra",
                "level": 3,
                "unique_id": "test/prealgebra/2.json",
            },
        ],
    )
    df = load_benchmark(p)
    assert df.columns == list(COLUMNS)
    assert df["item_id"].to_list() == ["test/algebra/1.json", "test/prealgebra/2.json"]
    assert df["level"].to_list() == ["1", "3"]
    assert df["answer"][1] == "\\frac{1}{2}"
    assert set(df["style"]) == {"math"}
    assert meta(df)["subject"] == "Algebra" and meta(df)["solution"] == "It is 2."
    assert df["prompt"][0] == "Compute $1+1$.\n\n" + PROMPT_SUFFIX
    assert PROMPT_SUFFIX.endswith("within \\boxed{}.")


def test_aime_both_layouts(tmp_path):
    cap = write_jsonl(
        tmp_path / "aime_cap.jsonl",
        [
            {"ID": "2024-I-1", "Problem": "Find x.", "Solution": "...", "Answer": 204},
            {"ID": "2024-I-2", "Problem": "Find y.", "Solution": "...", "Answer": 25},
        ],
    )
    low = tmp_path / "aime_low.parquet"
    pl.DataFrame(
        {
            "id": [60, 61],
            "problem": ["Find x.", "Find y."],
            "solution": ["...", "..."],
            "answer": ["204", "25"],
            "url": ["u1", "u2"],
            "year": [2024, 2024],
        }
    ).write_parquet(low)
    a = load_benchmark(cap)
    b = load_benchmark(low)
    assert a["item_id"].to_list() == ["2024-I-1", "2024-I-2"]
    assert b["item_id"].to_list() == ["60", "61"]
    assert a["answer"].to_list() == b["answer"].to_list() == ["204", "25"]
    assert a["problem"].to_list() == b["problem"].to_list()
    assert meta(b)["year"] == 2024 and meta(b)["url"] == "u1"
    assert detect_preset(["ID", "Problem", "Answer", "Solution"]) == "aime"
    assert detect_preset(["id", "problem", "answer", "solution", "url", "year"]) == "aime"


def test_amc23_csv(tmp_path):
    p = write_csv(
        tmp_path / "amc23.csv", ["id", "question", "answer"], [[0, "How many?", "27.0"], [1, "What value?", "0.5"]]
    )
    df = load_benchmark(p)
    assert df["item_id"].to_list() == ["0", "1"]
    assert df["answer"].to_list() == ["27.0", "0.5"]
    assert set(df["style"]) == {"math"}
    assert grade(df["answer"][0], r"\boxed{27}").correct
    # float answers read from Parquet print without a trailing .0
    pq = tmp_path / "amc.parquet"
    pl.DataFrame({"question": ["How many?"], "answer": [27.0]}).write_parquet(pq)
    assert load_benchmark(pq)["answer"].to_list() == ["27"]


def test_gsm8k_jsonl(tmp_path):
    p = write_jsonl(
        tmp_path / "gsm8k.jsonl",
        [
            {"question": "Janet sells 9 eggs at $2.", "answer": "9 * 2 = <<9*2=18>>18\n#### 18"},
            {"question": "Big number?", "answer": "It is large.\n#### 1,080"},
        ],
    )
    df = load_benchmark(p)
    assert df["answer"].to_list() == ["18", "1080"]
    assert set(df["style"]) == {"gsm8k"}
    assert df["item_id"].to_list() == ["0", "1"]
    assert meta(df, 1)["solution"].endswith("#### 1,080")
    assert grade(df["answer"][1], "so #### 1,080", style="gsm8k").correct


GPQA_HEADER = [
    "Record ID",
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "High-level domain",
]


def gpqa_file(tmp_path):
    rows = [
        [f"rec{i}", f"Question {i}?", f"right {i}", f"wrong {i}a", f"wrong {i}b", f"wrong {i}c", "Physics"]
        for i in range(8)
    ]
    return write_csv(tmp_path / "gpqa_diamond.csv", GPQA_HEADER, rows)


def test_gpqa_multiple_choice(tmp_path):
    p = gpqa_file(tmp_path)
    df = load_benchmark(p, seed=0)
    assert set(df["style"]) == {"mc"}
    assert df["item_id"][0] == "rec0"
    letters = set()
    for i, row in enumerate(df.iter_rows(named=True)):
        m = json.loads(row["meta"])
        assert row["answer"] in "ABCD"
        letters.add(row["answer"])
        assert m["choices"][row["answer"]] == f"right {i}"
        assert f"{row['answer']}) right {i}" in row["problem"]
        for letter in "ABCD":
            assert f"\n{letter}) " in row["problem"]
        assert m["High-level domain"] == "Physics"
    assert len(letters) > 1  # the gold is not always in one position
    again = load_benchmark(p, seed=0)
    assert again.equals(df)
    other = load_benchmark(p, seed=1)
    assert other["answer"].to_list() != df["answer"].to_list()
    assert grade(df["answer"][0], f"The answer is ({df['answer'][0]}).", style="mc").correct


def test_triviaqa_layouts(tmp_path):
    p = write_jsonl(
        tmp_path / "tqa.jsonl",
        [
            {
                "question_id": "tc_1",
                "question": "Capital of France?",
                "answer": {"value": "Paris", "aliases": ["Paris", "City of Light"], "normalized_value": "paris"},
            },
        ],
    )
    df = load_benchmark(p)
    assert df["item_id"][0] == "tc_1" and df["answer"][0] == "Paris"
    assert set(df["style"]) == {"text"}
    aliases = meta(df)["aliases"]
    assert aliases == ["City of Light"]
    assert grade(df["answer"][0], r"\boxed{city of light}", style="text", aliases=aliases).correct

    lst = write_jsonl(tmp_path / "nq.jsonl", [{"question": "Largest planet?", "answer": ["Jupiter", "planet Jupiter"]}])
    d2 = load_benchmark(lst)
    assert d2["answer"][0] == "Jupiter" and meta(d2)["aliases"] == ["planet Jupiter"]

    pq = tmp_path / "tqa.parquet"
    pl.DataFrame(
        {
            "question": ["Capital of Italy?"],
            "question_id": ["tc_2"],
            "answer": [{"value": "Rome", "aliases": ["Roma", "Rome"]}],
            "entity_pages": [[{"title": "Rome", "text": "long page " * 50}]],
        }
    ).write_parquet(pq)
    d3 = load_benchmark(pq)
    assert d3["answer"][0] == "Rome" and meta(d3)["aliases"] == ["Roma"]
    assert "entity_pages" not in meta(d3)


def test_fields_mapping_and_explicit_preset(tmp_path):
    p = write_jsonl(
        tmp_path / "custom.jsonl",
        [
            {"uid": "x1", "prompt_text": "What is 2+2?", "gold": "4", "difficulty": "easy"},
        ],
    )
    with pytest.raises(UserError, match="cannot tell the layout"):
        load_benchmark(p)
    df = load_benchmark(p, fields="problem=prompt_text,answer=gold,item_id=uid,level=difficulty")
    assert df.row(0, named=True)["item_id"] == "x1"
    assert df["problem"][0] == "What is 2+2?" and df["answer"][0] == "4"
    assert df["level"][0] == "easy" and df["style"][0] == "math"
    assert parse_fields("problem=a, answer=b") == {"problem": "a", "answer": "b"}
    with pytest.raises(UserError, match="ROLE=COLUMN"):
        parse_fields("problem")
    with pytest.raises(UserError, match="unknown field role"):
        load_benchmark(p, fields={"question": "prompt_text"})
    # an explicit preset overrides detection; style and suffix are parameters
    g = write_jsonl(tmp_path / "q.jsonl", [{"question": "Eggs?", "answer": "#### 3"}])
    assert load_benchmark(g, preset="gsm8k")["answer"][0] == "3"
    d = load_benchmark(g, preset="gsm8k", suffix="")
    assert d["prompt"][0] == "Eggs?"
    d = load_benchmark(g, preset="gsm8k", suffix="Answer briefly.")
    assert d["prompt"][0] == "Eggs?\n\nAnswer briefly."
    with pytest.raises(UserError, match="unknown benchmark preset"):
        load_benchmark(g, preset="nope")
    assert build_prompt("Q? ", "mc") == "Q?\n\n" + PROMPT_SUFFIX


def test_missing_field_reports_file_line_and_field(tmp_path):
    p = tmp_path / "gsm8k.jsonl"
    p.write_text(
        json.dumps({"question": "a", "answer": "#### 1"}) + "\n\n" + json.dumps({"question": "b"}) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(UserError) as e:
        load_benchmark(p, preset="gsm8k")
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "'answer'" in msg
    assert "\n" not in msg

    c = write_csv(tmp_path / "math.csv", ["problem", "answer"], [["p1", "1"], ["p2", ""]])
    with pytest.raises(UserError) as e:
        load_benchmark(c)
    msg = str(e.value)
    assert str(c) in msg and "line 3" in msg and "'answer'" in msg

    g = write_csv(tmp_path / "gpqa.csv", GPQA_HEADER, [["r1", "Q?", "a", "b", "c", "", "x"]])
    with pytest.raises(UserError, match=r"line 2: missing field 'Incorrect Answer 3'"):
        load_benchmark(g)


def test_malformed_and_other_user_errors(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl line 2: malformed JSON"):
        load_benchmark(p)
    q = tmp_path / "list.jsonl"
    q.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 1: expected a JSON object"):
        load_benchmark(q)
    with pytest.raises(UserError, match="not found"):
        load_benchmark(tmp_path / "missing.jsonl")
    t = tmp_path / "x.txt"
    t.write_text("hi")
    with pytest.raises(UserError, match="unsupported benchmark file type"):
        load_benchmark(t)
    d = write_jsonl(
        tmp_path / "dup.jsonl", [{"id": 1, "problem": "a", "answer": "1"}, {"id": 1, "problem": "b", "answer": "2"}]
    )
    with pytest.raises(UserError, match="line 2: duplicate item id '1'"):
        load_benchmark(d)


def test_json_array_file(tmp_path):
    p = tmp_path / "items.json"
    p.write_text(json.dumps([{"problem": "a", "answer": "1"}, {"problem": "b", "answer": "2"}]))
    df = load_benchmark(p, limit=1)
    assert df.height == 1 and df["answer"][0] == "1"


def test_digest(tmp_path):
    rows = [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": "2"}]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    d1 = items_digest(load_benchmark(p))
    assert d1 == items_digest(load_benchmark(p)) and len(d1) == 64
    rows[1]["answer"] = "3"
    q = write_jsonl(tmp_path / "b.jsonl", rows)
    assert items_digest(load_benchmark(q)) != d1
    assert items_digest(load_benchmark(p, suffix="")) != d1


def test_synthetic_arithmetic():
    a = synthetic_arithmetic(n=40, seed=0)
    b = synthetic_arithmetic(n=40, seed=0)
    c = synthetic_arithmetic(n=40, seed=1)
    assert a.equals(b)
    assert a["problem"].to_list() != c["problem"].to_list()
    assert items_digest(a) != items_digest(c)
    assert a.columns == list(COLUMNS)
    assert set(a["level"]) == {"1", "2", "3", "4"}
    assert a["item_id"].n_unique() == 40
    for row in a.iter_rows(named=True):
        expr = json.loads(row["meta"])["expression"]
        assert row["problem"] == f"What is {expr}?"
        assert int(row["answer"]) == eval(expr)  # noqa: S307 - our own arithmetic
        lvl = int(row["level"])
        nums = [int(t) for t in expr.replace("(", " ").replace(")", " ").split() if t.isdigit()]
        if lvl == 1:
            assert all(x < 10 for x in nums) and int(row["answer"]) < 10
        elif lvl == 2:
            assert all(9 < x < 100 for x in nums) and nums[0] % 10 + nums[1] % 10 >= 10
        elif lvl == 3:
            assert all(99 < x < 1000 for x in nums) and int(row["answer"]) >= 0
        else:
            assert len(nums) >= 3
    # a smaller n is a prefix; levels can be restricted
    assert synthetic_arithmetic(n=10, seed=0).equals(a.head(10))
    only = synthetic_arithmetic(n=6, levels=[2])
    assert set(only["level"]) == {"2"}


def test_synthetic_by_name():
    df = load_benchmark("synthetic-arithmetic")
    assert df.height == 100 and set(df["style"]) == {"math"}
    assert df["prompt"][0].endswith(PROMPT_SUFFIX)
    small = load_benchmark("synthetic-arithmetic:n=50,seed=1")
    assert small.equals(synthetic_arithmetic(n=50, seed=1))
    assert load_benchmark("synthetic_arithmetic:n=8,levels=1-2")["level"].to_list() == ["1", "2"] * 4
    assert load_benchmark("synthetic-arithmetic:n=3,levels=1|4")["level"].to_list() == ["1", "4", "1"]
    assert load_benchmark("synthetic-arithmetic:n=5", seed=7).equals(synthetic_arithmetic(5, seed=7))
    with pytest.raises(UserError, match="unknown option"):
        load_benchmark("synthetic-arithmetic:size=5")
    with pytest.raises(UserError, match="levels"):
        load_benchmark("synthetic-arithmetic:levels=9")
    # grading the gold answer against a boxed completion works end to end
    row = small.row(0, named=True)
    assert grade(row["answer"], f"\\boxed{{{row['answer']}}}", style=row["style"]).correct


def test_synthetic_level_5_and_the_bare_prompt():
    df = synthetic_arithmetic(n=60, levels=[5], seed=3)
    for row in df.iter_rows(named=True):
        a, b = (int(x) for x in json.loads(row["meta"])["expression"].split(" - "))
        assert 10 <= b < a < 100 and a // 10 > b // 10 and a % 10 >= b % 10  # no borrow, tens differ
        assert int(row["answer"]) == a - b >= 10
    bare = load_benchmark("synthetic-arithmetic:n=4,levels=5,suffix=none")
    assert bare["prompt"].to_list() == bare["problem"].to_list()
    assert load_benchmark("synthetic-arithmetic:n=4,suffix=study")["prompt"][0].endswith(PROMPT_SUFFIX)
    plain = load_benchmark("synthetic-arithmetic:n=4", suffix="")  # the loader's suffix when the spec has none
    assert plain["prompt"].to_list() == plain["problem"].to_list()
    with pytest.raises(UserError, match="suffix .* must be 'study'"):
        load_benchmark("synthetic-arithmetic:suffix=short")
