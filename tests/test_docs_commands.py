"""The commands the README and docs/ show are commands headdb has.

- A shell block marked `<!-- docs-test: run -->` (the README's quickstart) runs for real, in an
  empty folder, with the installed `headdb`: tiny model, init, ingest, query, report, HTML.
- The commands of a block marked `<!-- docs-test: demo -->` (what to ask after `make demo`) run
  against the quick demo's warehouse, in tests/test_demo.py.
- Every other `headdb ...` line of a shell block is parsed by the real command tree (typer's
  click group), without running: a subcommand or an option that does not exist fails here.
  Synopsis notation is read as a user would: `[--steps 5]` is an optional part (checked too),
  `a|b|c` offers choices (the first is checked), `# ...` is a comment.
- Python blocks compile.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!-- docs-test: (\w+) -->\n)?```(\w*)\n(.*?)```", re.S)
SHELL = {"", "bash", "sh", "shell", "console"}


def blocks(path: Path) -> list[tuple[str, str, str]]:
    """(mark, language, body) of each fenced block; mark: "run" (runs here, in an empty folder),
    "demo" (runs against the quick demo's warehouse, in tests/test_demo.py) or ""."""
    return FENCE.findall(path.read_text())


def demo_commands() -> list[str]:
    """The `headdb ...` lines of the blocks marked to run on the demo's warehouse."""
    return [c for path in DOCS for mark, lang, body in blocks(path) if mark == "demo" for c in headdb_lines(body)]


def headdb_lines(body: str) -> list[str]:
    """The `headdb ...` commands of a shell block: continuation lines (a trailing backslash, or an
    indented line after a command, as synopses wrap) joined; `$ ` prompts dropped."""
    commands: list[str] = []
    open_command = False  # the previous line was a headdb command, so an indented option continues it
    for line in re.sub(r"\\\n\s*", " ", body).splitlines():
        text = line.strip().removeprefix("$ ")
        if open_command and commands[-1].count('"') % 2:  # a quoted argument (SQL) spans lines
            commands[-1] += " " + text
        elif text.startswith("headdb "):
            commands.append(text)
            open_command = True
        elif open_command and line[:1].isspace() and text.startswith(("[", "--")):
            commands[-1] += " " + text
        else:
            open_command = False
    return commands


def _choice(token: str) -> str:
    """`eap-ig|eap|exact` -> `eap-ig` (a synopsis offering values); SQL and quoted text untouched."""
    return token.split("|")[0] if re.fullmatch(r"[\w.,=@/-]+(\|[\w.,=@/-]+)+", token) else token


def argv(command: str) -> list[str]:
    """A documented command as the argv a user would type: optional parts taken, first choices."""
    # an optional group `[A | B]` is its first alternative; nested groups do not occur
    text = re.sub(r"\[([^\[\]]*)\]", lambda m: m.group(1).split(" | ")[0], command)
    tokens = shlex.split(text, comments=True)
    assert tokens[0] == "headdb", command
    return [_choice(t) for t in tokens[1:] if t != "..."]


def check_parses(args: list[str]) -> None:
    """Resolve the subcommands and parse the options of `args` with headdb's own command tree;
    nothing is run (click's resilient parsing: no callbacks, no prompts, no required checks, and
    unknown options tolerated, so each `--option` is looked up among the command's own)."""
    from typer.main import get_command

    from headdb.cli.app import app

    command = get_command(app)
    name, rest, parent = "headdb", args, None
    while True:
        ctx = command.make_context(name, list(rest), parent=parent, resilient_parsing=True)
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        remaining = [*protected, *ctx.args]
        if not hasattr(command, "resolve_command") or not remaining:
            assert not ctx.args or hasattr(command, "resolve_command"), f"unexpected arguments {ctx.args}"
            known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
            unknown = [t for t in rest if t.startswith("--") and t.split("=")[0] not in known]
            assert not unknown, f"headdb {name} has no option {unknown[0]}"
            return
        sub_name, sub, rest = command.resolve_command(ctx, remaining)
        assert sub is not None, f"headdb has no command {remaining[0]!r}"
        name, command, parent = sub_name, sub, ctx


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for mark, lang, body in blocks(path):
            if lang in SHELL and mark != "run":
                found += [(f"{path.name}: {c}", c) for c in headdb_lines(body)]
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30  # the README's synopses; a parser that finds none would pass anything


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w[:90] for w, _ in COMMANDS])
def test_documented_command_parses(where, command):
    check_parses(argv(command))


@pytest.mark.parametrize(
    "command",
    [
        "headdb ingest attribution --checkpoint c --task t --stepz 3",  # an option that does not exist
        "headdb ingest atribution --checkpoint c",  # a command that does not exist
        "headdb query list extra-argument",
    ],
)
def test_a_wrong_command_fails_the_check(command):
    with pytest.raises(Exception):
        check_parses(argv(command))


def test_synopsis_notation():
    assert argv("headdb ingest attribution --checkpoint ckpt/ [--method eap-ig|eap|exact] [--steps 5]") == [
        "ingest",
        "attribution",
        "--checkpoint",
        "ckpt/",
        "--method",
        "eap-ig",
        "--steps",
        "5",
    ]
    assert argv("headdb ingest generations [--ablate L5H1 | --scale L5H1=1.3]  # why") == [
        "ingest",
        "generations",
        "--ablate",
        "L5H1",
    ]


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_python_blocks_compile(path):
    for _, lang, body in blocks(path):
        if lang == "python":
            compile(textwrap.dedent(body), str(path), "exec")


def test_the_quickstart_runs(tmp_path):
    import headdb

    runnable = [(path, body) for path in DOCS for mark, lang, body in blocks(path) if mark == "run"]
    assert [path.name for path, _ in runnable] == ["README.md"]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "80",
    }
    env.pop("HEADDB_DB", None)
    _, body = runnable[0]
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    w = headdb.connect(tmp_path / "quick.duckdb", create=False)
    runs = w.sql("SELECT kind, status FROM runs ORDER BY run_id")
    assert runs.rows() == [("attribution", "ok"), ("generation", "ok")]
    assert "L" in done.stdout and "wrote top.png" in " ".join(done.stdout.split())
    html = (tmp_path / "quick.html").read_text()
    assert html.count("<img ") == 1 and "<figcaption>The " in html
