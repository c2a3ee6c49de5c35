"""A study's reports as one self-contained HTML file (`headdb report study MANIFEST --html FILE`).

Each report of the list is rendered by the one runner (`headdb.reports.run_report`) into a
recording rich Console, whose output becomes an HTML <pre> block with inline styles (so colours,
bars and heatmap cells survive), and into a PNG figure, embedded as a base64 data URI. Nothing
refers to another file or the network: no external CSS, scripts, fonts or images, so the file
opens the same in any browser, offline, and can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import io
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.terminal_theme import MONOKAI

from headdb.errors import UserError
from headdb.reports.plots import caption_of

WIDTH = 100  # terminal columns the reports are laid out for in the file

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1.5em; color: #222; background: #fafafa; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2.2em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
.meta, .params, .desc { color: #555; font-size: 0.92em; }
.params code { background: #eee; padding: 0 0.3em; border-radius: 3px; }
pre.terminal { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px;
               line-height: 1.15; padding: 0.8em 1em; border-radius: 6px; overflow-x: auto; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; background: white; }
figcaption { color: #555; font-size: 0.9em; }
nav ol { columns: 2; font-size: 0.95em; }
.summary { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1.2em; }
.missing { color: #a15c00; }
"""

PRE = '<pre class="terminal" style="background:{background};color:{foreground}"><code>{code}</code></pre>'


@dataclass(frozen=True)
class Section:
    """One rendered report: its terminal output as HTML and its figure, if it drew one."""

    anchor: str
    name: str
    params: Mapping[str, Any]
    description: str
    terminal_html: str
    png: bytes | None
    rows: int
    caption: str = ""  # what the figure shows, written into the PNG by the report


def render_section(db, index: int, name: str, params: Mapping[str, Any], folder: Path, extra_dirs=()) -> Section:
    """Run report `name` once into a recording console and a PNG inside `folder`."""
    from headdb.reports import get_report, run_report

    report = get_report(name)
    console = Console(
        record=True, file=io.StringIO(), width=WIDTH, force_terminal=True, color_system="truecolor", highlight=False
    )
    png = folder / f"{index:02d}-{name}.png"
    kw = {"dot": False} if name == "circuit" else {}  # the figure drawn with matplotlib, no .dot
    df = run_report(db, name, params, console, png, extra_dirs, announce_files=False, **kw)
    terminal = console.export_html(theme=MONOKAI, inline_styles=True, code_format=PRE)
    drawn = png.exists()
    return Section(
        anchor=f"r{index}-{name}",
        name=name,
        params=dict(params),
        description=report.description,
        terminal_html=terminal,
        png=png.read_bytes() if drawn else None,
        rows=0 if df is None else df.height,
        caption=caption_of(png) if drawn else "",
    )


def render_sections(db, reports: Sequence[tuple[str, Mapping[str, Any]]], extra_dirs=()) -> list[Section]:
    with tempfile.TemporaryDirectory(prefix="headdb-html-") as tmp:
        return [
            render_section(db, i, name, params, Path(tmp), extra_dirs)
            for i, (name, params) in enumerate(reports, start=1)
        ]


def _params_text(params: Mapping[str, Any]) -> str:
    if not params:
        return "no params"
    return " ".join(f"<code>{html.escape(str(k))}={html.escape(str(v))}</code>" for k, v in params.items())


def _section_html(s: Section) -> str:
    parts = [
        f'<section id="{s.anchor}">',
        f"<h2>{html.escape(s.name)}</h2>",
        f'<p class="desc">{html.escape(s.description)}</p>',
        f'<p class="params">params: {_params_text(s.params)}</p>',
        s.terminal_html,
    ]
    if s.png is not None:
        data = base64.b64encode(s.png).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(s.name)} figure">'
            f"<figcaption>{html.escape(s.caption or s.name)}</figcaption></figure>"
        )
    else:
        parts.append('<p class="missing">no figure: the report had nothing to draw (see its text above)</p>')
    parts.append("</section>")
    return "\n".join(parts)


def study_html(sections: Sequence[Section], *, title: str, subtitle: str = "", summary: Sequence[str] = ()) -> str:
    """The whole document: a title, an optional summary (plain lines), a contents list, the sections."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = "\n".join(
        f'<li><a href="#{s.anchor}">{html.escape(s.name)}</a> '
        f'<span class="params">{html.escape(", ".join(f"{k}={v}" for k, v in s.params.items()))}</span></li>'
        for s in sections
    )
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(subtitle)}{" · " if subtitle else ""}generated {stamp} by headdb; '
        f"{len(sections)} report(s), {sum(s.png is not None for s in sections)} figure(s)</p>",
    ]
    if summary:
        body.append(
            '<div class="summary"><h2 style="margin-top:0.4em">What the study found</h2><ul>'
            + "".join(f"<li>{html.escape(line)}</li>" for line in summary)
            + "</ul></div>"
        )
    body.append(f"<nav><h2>Reports</h2><ol>{toc}</ol></nav>")
    body.extend(_section_html(s) for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_study_html(
    db,
    reports: Sequence[tuple[str, Mapping[str, Any]]],
    path: str | Path,
    *,
    title: str,
    subtitle: str = "",
    summary: Sequence[str] = (),
    extra_dirs=(),
) -> Path:
    """Render every (name, params) report and write the self-contained HTML file to `path`."""
    path = Path(path)
    if not path.parent.exists():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    if not reports:
        raise UserError("the manifest has no [[reports]] entries, so there is nothing to put in the HTML file")
    from headdb.reports import get_report

    for name, _ in reports:  # every name checked before the first report runs
        get_report(name)
    sections = render_sections(db, reports, extra_dirs)
    path.write_text(study_html(sections, title=title, subtitle=subtitle, summary=summary), encoding="utf-8")
    return path
