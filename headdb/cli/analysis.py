"""Typer sub-apps for the analysis side of the CLI: `query`, `report`, `export`.

headdb/cli.py mounts them:

    from headdb.cli.analysis import export_app, query_app, report_app
    app.add_typer(query_app, name="query")
    app.add_typer(report_app, name="report")
    app.add_typer(export_app, name="export")

Conventions as in cli.py: ctx.obj is the global Options (`.connect()`), user mistakes raise
UserError (one line, exit 2), tables go through headdb.reports.output.emit.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from headdb.errors import UserError
from headdb.reports.output import emit

err = Console(stderr=True, soft_wrap=True, highlight=False)

PARAM_HELP = "A query param as NAME=VALUE; repeat for several (see `headdb query list`)."
QUERIES_HELP = "Extra folder of named queries (also $HEADDB_QUERIES); repeatable."


def parse_params(items: list[str] | None) -> dict[str, str]:
    """['base=a', 'task=b'] -> {'base': 'a', 'task': 'b'}; a malformed item is a UserError."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--param expects NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"--param expects NAME=VALUE, got {item!r}")
        if key in out:
            raise UserError(f"--param {key} is given twice")
        out[key] = value
    return out


def _extra_dirs(ctx: typer.Context, queries: list[Path] | None) -> list[Path]:
    """Query folders from the command, plus a global `--queries` the main app may define."""
    runtime = getattr(ctx.obj, "runtime", None)
    return [*(runtime.queries if runtime is not None else ()), *(queries or [])]


# ------------------------------------------------------------------------------------ query


class _QueryGroup(TyperGroup):
    """`headdb query NAME ...` where NAME is any query of the catalogue (packaged or a user's)."""

    def list_commands(self, ctx):
        try:
            from headdb.warehouse.queries import catalogue

            names = catalogue().names()
        except UserError:
            names = []
        return ["list", "show"] + names

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        command = copy.copy(typer.main.get_command(_named_query_app))
        command.name = name
        try:
            from headdb.warehouse.queries import catalogue

            query = catalogue().get(name)
            command.help = (
                query.description
                + "\n\nParams: "
                + (
                    "; ".join(
                        f"{p.signature()}"
                        + (f" {{{'|'.join(map(str, p.choices))}}}" if p.choices else "")
                        + (f" - {p.help}" if p.help else "")
                        for p in query.params
                    )
                    or "none"
                )
            )
            command.short_help = query.description.split(". ")[0][:90]
        except UserError:
            command.help = "A query from a --queries folder."
        return command


query_app = typer.Typer(
    cls=_QueryGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run a named query: `headdb query list`, `headdb query NAME --param k=v`.",
)


def print_listing(rows: list[tuple[str, str]], footer: str) -> None:
    """One line per entry: its name and the first sentence of its description, cut to the
    terminal's width (never wrapped), then a footer saying where the details are."""
    console = Console(soft_wrap=True, highlight=False)
    pad = max((len(name) for name, _ in rows), default=0) + 2
    room = max(20, console.width - pad - 1)
    for name, text in rows:
        first = text.split(". ")[0].rstrip(".") + "."
        line = first if len(first) <= room else first[: room - 1] + "…"
        console.print(Text(name.ljust(pad), style="bold") + Text(line))
    console.print(Text(footer, style="dim"))


@query_app.command("list")
def query_list(
    ctx: typer.Context,
    queries: Optional[List[Path]] = typer.Option(None, "--queries", help=QUERIES_HELP),
    fmt: str = typer.Option("table", "--format", help="table | csv | json | parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file."),
) -> None:
    """List the named queries, one line each (--format csv/json: with params and descriptions)."""
    from headdb.warehouse.queries import list_queries

    listing = list_queries(_extra_dirs(ctx, queries))
    if fmt != "table" or out is not None:
        emit(listing, fmt, out, title="queries")
        return
    print_listing(
        list(listing.select("name", "description").iter_rows()),
        f"{listing.height} queries; `headdb query show NAME` for one's params and SQL",
    )


@query_app.command("show")
def query_show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A query's name."),
    queries: Optional[List[Path]] = typer.Option(None, "--queries", help=QUERIES_HELP),
) -> None:
    """A query's description, params (type, default, choices) and SQL."""
    from headdb.warehouse.queries import catalogue

    q = catalogue(_extra_dirs(ctx, queries)).get(name)
    console = Console(highlight=False)
    console.print(Text(q.name, style="bold"), Text(f"({'packaged' if q.packaged else q.path})", style="dim"))
    console.print(Text(q.description))
    if q.returns:
        console.print(Text("returns: " + q.returns))
    console.print(Text("params:" + ("" if q.params else " none")))
    for p in q.params:
        choices = f" {{{'|'.join(map(str, p.choices))}}}" if p.choices else ""
        console.print(Text(f"  {p.signature()}{choices}" + (f"  {p.help}" if p.help else "")))
    console.print(Text("sql:"))
    console.print(Text(q.sql.strip()), soft_wrap=True)


_named_query_app = typer.Typer(add_completion=False)


@_named_query_app.command()
def _run_named_query(
    ctx: typer.Context,
    param: Optional[List[str]] = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    queries: Optional[List[Path]] = typer.Option(None, "--queries", help=QUERIES_HELP),
    fmt: str = typer.Option("table", "--format", help="table | csv | json | parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (required for parquet)."),
) -> None:
    from headdb.warehouse.queries import run_query

    name = ctx.info_name
    if fmt == "parquet" and out is None:
        raise UserError("--format parquet needs --out FILE")
    params = parse_params(param)
    dirs = _extra_dirs(ctx, queries)
    from headdb.warehouse.queries import catalogue

    catalogue(dirs).get(name).bind(params)  # check the params before opening the warehouse
    df = run_query(ctx.obj.connect(), name, params, dirs)
    if df.is_empty() and fmt == "table":
        # every reference in the params names something (checked), so this is a true "none"
        given = " ".join(f"{k}={v}" for k, v in params.items()) or "no params"
        Console(stderr=True).print(
            Text(f"{name}: no rows: nothing in the warehouse matches ({given})", style="yellow"), soft_wrap=True
        )
        return
    emit(df, fmt, out, title=name)


# ------------------------------------------------------------------------------------ report

report_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Terminal reports (tables, heatmaps, curves) with optional --png figures.",
)


def _report_console(colour: Optional[bool]) -> Console:
    if colour is None:
        return Console()
    return Console(force_terminal=colour, no_color=not colour, color_system="truecolor" if colour else None)


def _make_report_command(name: str, description: str):
    def command(
        ctx: typer.Context,
        param: Optional[List[str]] = typer.Option(None, "--param", "-p", help=PARAM_HELP),
        png: Optional[Path] = typer.Option(None, "--png", help="Also draw the figure into this PNG file."),
        queries: Optional[List[Path]] = typer.Option(None, "--queries", help=QUERIES_HELP),
        colour: Optional[bool] = typer.Option(
            None, "--color/--no-color", help="Force colour on or off (default: when a terminal)."
        ),
    ) -> None:
        from headdb.reports import run_report

        run_report(
            ctx.obj.connect(), name, parse_params(param), _report_console(colour), png, _extra_dirs(ctx, queries)
        )

    command.__doc__ = description
    command.__name__ = f"report_{name}"
    return command


def _register_reports() -> None:
    from headdb.reports import REPORTS

    for report in REPORTS.values():
        if report.name == "circuit":
            continue
        report_app.command(
            report.name,
            help=report.description + " Params: those of " + ", ".join(report.queries) + " (`headdb query list`).",
        )(_make_report_command(report.name, report.description))


@report_app.command("list")
def report_list() -> None:
    """List the reports, one line each, with the queries they read."""
    from headdb.reports import REPORTS

    print_listing(
        [(r.name, f"{r.description.split('. ')[0].rstrip('.')} [{', '.join(r.queries)}]") for r in REPORTS.values()],
        f"{len(REPORTS)} reports; `headdb report NAME --help` for one's params",
    )


@report_app.command("circuit")
def report_circuit(
    ctx: typer.Context,
    run: int = typer.Argument(..., help="run_id of an attribution or import run."),
    selection: str = typer.Option("threshold", "--selection", help="Which circuit of the run."),
    out: Optional[Path] = typer.Option(None, "--out", help="The .dot file (default circuit-runRUN.dot)."),
    png: Optional[Path] = typer.Option(None, "--png", help="PNG file (default: next to the .dot)."),
    queries: Optional[List[Path]] = typer.Option(None, "--queries", help=QUERIES_HELP),
) -> None:
    """A run's circuit as a graphviz .dot file, and a PNG when graphviz `dot` is installed."""
    from headdb.reports import run_report

    run_report(
        ctx.obj.connect(),
        "circuit",
        {"run": run, "selection": selection},
        Console(),
        png,
        _extra_dirs(ctx, queries),
        out=out,
    )


@report_app.command("study")
def report_study(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="Study manifest (TOML) whose [[reports]] to render."),
    html: Optional[Path] = typer.Option(
        None, "--html", help="Write every report, with its figure, into this one self-contained HTML file."
    ),
    queries: Optional[List[Path]] = typer.Option(None, "--queries", help=QUERIES_HELP),
) -> None:
    """Every report of a study manifest: on the terminal, or with --html as one HTML file (tables,
    heatmaps and figures embedded; no network needed to view it)."""
    from headdb.jobs.manifest import load_manifest

    m = load_manifest(manifest)
    entries = [(r.name, r.params) for r in m.reports]
    db = ctx.obj.connect()
    dirs = _extra_dirs(ctx, queries)
    if html is None:
        from headdb.reports import get_report, print_reports

        if not entries:
            raise UserError(f"{manifest} has no [[reports]] entries")
        for name, _ in entries:
            get_report(name)
        print_reports(db, entries, Console(), dirs)
        return
    from headdb.reports.html import write_study_html

    path = write_study_html(
        db,
        entries,
        html,
        title=f"study {m.name}",
        subtitle=f"manifest {manifest}; warehouse {db.location}",
        extra_dirs=dirs,
    )
    err.print(f"wrote {path}: {len(entries)} report(s)")


_register_reports()


# ------------------------------------------------------------------------------------ export

export_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Export the warehouse (Parquet), one run (EAP-IG JSON) or a checkpoint with a head intervention.",
)


@export_app.command("parquet")
def export_parquet_command(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="Folder to create (hive-partitioned Parquet)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty folder."),
) -> None:
    """Every table as Parquet; edge_scores partitioned by model_key and run_id."""
    from headdb.warehouse.export import export_parquet

    counts = export_parquet(ctx.obj.connect(), directory, overwrite=overwrite)
    err.print(
        f"exported {len(counts)} tables ({sum(counts.values())} rows, {counts.get('edge_scores', 0)} edge scores) "
        f"to {directory}"
    )


@export_app.command("graph-json")
def export_graph_json_command(
    ctx: typer.Context,
    run: int = typer.Argument(..., help="run_id with edge scores."),
    out: Optional[Path] = typer.Option(None, "--out", help="JSON file (default graph-runRUN.json)."),
    selection: Optional[str] = typer.Option(
        None, "--selection", help="Circuit marked in_graph (default threshold, else the last)."
    ),
    gqa_split: bool = typer.Option(
        False,
        "--gqa-split",
        help="GQA models: write each kv head's score split evenly over "
        "its query heads (EAP-IG's ungrouped ports); without it a GQA run is refused.",
    ),
    mib_sign: bool = typer.Option(
        False,
        "--mib-sign",
        help="Write scores in MIB's loss sign (negated for a logit-diff or logprob run), as MIB's own "
        "files hold them, so MIB's scorer ranks them as it ranks its own (docs/attribution.md).",
    ),
) -> None:
    """One run as an EAP-IG JSON graph in the current EAP-IG format (cfg, nodes, edges). Scores are
    in EAP-IG's sign; MIB's files carry the loss sign, so for MIB's scorer export a logit-diff run
    with --mib-sign (else its signed ranking, and CPR, come out reversed)."""
    from headdb.interop.graph_json import export_graph_json

    out = out or Path(f"graph-run{run}.json")
    counts = export_graph_json(ctx.obj.connect(), run, out, selection=selection, gqa_split=gqa_split, mib_sign=mib_sign)
    err.print(
        f"wrote {out}: {counts['edges']} edges, {counts['in_graph']} in the circuit, {counts['heads_in_graph']} heads"
    )
