"""Named queries: one SQL file per query, with a header block that declares it.

A query file looks like this:

    -- name: heads_gained
    -- description: Heads in the target checkpoint's circuit and not in the base's ...
    -- param: base: str                 Reference checkpoint: id, lineage@step or name.
    -- param: task: str = NULL          Task id or name; NULL: every task.
    -- param: scope: str = 'final' {final|union}   Allowed values go in braces.
    -- returns: task, change, layer, head, ...
    SELECT ... WHERE checkpoint_id = hd_checkpoint($base) ...

- `name` must equal the file's stem; `description` is one line (continuation lines start with
  `--` and at least three spaces); `returns` documents the columns.
- `param: NAME: TYPE [= DEFAULT] [{a|b|c}] [help]`, TYPE one of str, int, float, bool. DEFAULT is
  NULL, a quoted string, a number or true/false; a param without a default is required.
- Values are bound as DuckDB named parameters (`$name`), never pasted into the SQL text.
- Files whose name starts with `_` are not queries: they hold shared TEMP macros (for example
  `hd_circuits`, "the circuit of a checkpoint on a task") and are executed, packaged ones first,
  in the query's own session before the query runs. TEMP objects live only in that session, so
  a read-only session can create them and the warehouse never changes.

The packaged catalogue is `headdb.resources.queries_dir()`; users add directories of their own
(`--queries DIR`, or `HEADDB_QUERIES=DIR[:DIR...]`). A user's query may not reuse a packaged
name (rename it): silently shadowing a packaged query would change a shared analysis.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, cast

import duckdb
import polars as pl

from headdb.errors import UserError
from headdb.resources import queries_dir
from headdb.settings import runtime
from headdb.warehouse.refs import resolve_params
from headdb.warehouse import statements as stored

if TYPE_CHECKING:
    from headdb.warehouse.sinks import Session
    from headdb.warehouse.store import Warehouse

TYPES = ("str", "int", "float", "bool")

_HEADER_LINE = re.compile(r"^--\s?(\w+):\s*(.*)$")
_CONTINUATION = re.compile(r"^--\s{3,}(\S.*)$")
_PARAM = re.compile(
    r"""^(?P<name>[A-Za-z_]\w*)\s*:\s*(?P<type>\w+)
        (?:\s*=\s*(?P<default>'(?:[^']|'')*'|[^\s{]+))?
        (?:\s*\{(?P<choices>[^}]*)\})?
        \s*(?P<help>.*)$""",
    re.VERBOSE,
)
_REF = re.compile(r"\$([A-Za-z_]\w*)")
_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = None
    required: bool = True
    choices: tuple[Any, ...] = ()
    help: str = ""

    def signature(self) -> str:
        text = f"{self.name}: {self.type}"
        if not self.required:
            text += " = " + ("NULL" if self.default is None else repr(self.default))
        return text

    def coerce(self, value: Any, query: str) -> Any:
        """`value` (a Python value or a command-line string) as this param's type."""
        if value is None:
            if self.required:
                raise UserError(
                    f"query {query}: param {self.name} needs a value ({self.type}); give --param {self.name}=..."
                )
            return None
        out = _coerce(value, self.type)
        if out is _BAD:
            raise UserError(
                f"query {query}: param {self.name} must be {_ARTICLE[self.type]}, got {value!r}; "
                f"give --param {self.name}={_EXAMPLE[self.type]}"
            )
        if self.choices and out not in self.choices:
            raise UserError(
                f"query {query}: param {self.name}={out!r} is not one of {', '.join(map(str, self.choices))}"
            )
        return out


_BAD = object()
_ARTICLE = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}
_EXAMPLE = {"str": "NAME", "int": "10", "float": "0.5", "bool": "true"}


def _coerce(value: Any, kind: str) -> Any:
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # checkpoint and task ids given as numbers
        return _BAD
    if kind == "int":
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        return _BAD
    if kind == "float":
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                out = float(value)
            except ValueError:
                return _BAD
            return out if not math.isnan(out) else _BAD
        return _BAD
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        return _BAD
    raise AssertionError(kind)


def _parse_default(text: str | None, kind: str, where: str) -> tuple[Any, bool]:
    """(default, required) from the header's `= DEFAULT` text."""
    if text is None:
        return None, True
    if text.upper() == "NULL":
        return None, False
    if text.startswith("'"):
        text = text[1:-1].replace("''", "'")
    value = _coerce(text, kind)
    if value is _BAD:
        raise UserError(f"{where}: default {text!r} is not {_ARTICLE[kind]}")
    return value, False


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    params: tuple[Param, ...]
    sql: str
    path: Path
    returns: str = ""
    packaged: bool = True

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def bind(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """Validate and coerce `values` into the named parameters of the SQL."""
        values = dict(values or {})
        known = {p.name for p in self.params}
        unknown = [k for k in values if k not in known]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], known, n=1)
            fix = (
                f"did you mean {hint[0]}?"
                if hint
                else (f"its params are {', '.join(sorted(known))}" if known else "it takes no params")
            )
            raise UserError(f"query {self.name} has no param {unknown[0]!r}; {fix}")
        bound = {}
        for p in self.params:
            bound[p.name] = (
                p.coerce(values[p.name], self.name)
                if p.name in values
                else (p.coerce(None, self.name) if p.required else p.default)
            )
        return bound

    def usage(self) -> str:
        return " ".join(f"--param {p.name}=..." if p.required else f"[--param {p.name}=...]" for p in self.params)


def parse_query(path: Path, *, packaged: bool = True) -> Query:
    """Read one query file; a malformed header is a UserError naming the file and the line."""
    text = path.read_text()
    fields: dict[str, str] = {}
    params: list[Param] = []
    last: str | None = None
    body_lines: list[str] = []
    in_header = True
    for line in text.splitlines():
        stripped = line.strip()
        if in_header and stripped.startswith("--"):
            m = _HEADER_LINE.match(stripped)
            c = _CONTINUATION.match(stripped) if not m else None
            if m:
                key, value = m.group(1).lower(), m.group(2).strip()
                if key == "param":
                    params.append(_parse_param(value, path))
                    last = "param"
                elif key in ("name", "description", "returns"):
                    if key in fields:
                        raise UserError(f"query file {path}: `{key}:` appears twice")
                    fields[key] = value
                    last = key
                else:
                    raise UserError(
                        f"query file {path}: unknown header key {key!r} (use name, description, param, returns)"
                    )
            elif c and last:
                if last == "param":
                    p = params[-1]
                    params[-1] = Param(
                        p.name, p.type, p.default, p.required, p.choices, (p.help + " " + c.group(1)).strip()
                    )
                else:
                    fields[last] += " " + c.group(1).strip()
            else:
                last = None  # a plain comment ends continuation
            continue
        if in_header and not stripped:
            continue
        in_header = False
        body_lines.append(line)
    name = fields.get("name")
    if not name:
        raise UserError(f"query file {path}: no `-- name:` line in its header")
    if name != path.stem:
        raise UserError(f"query file {path}: its name {name!r} differs from the file name; rename one")
    if not fields.get("description"):
        raise UserError(f"query file {path}: no `-- description:` line in its header")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise UserError(f"query file {path}: a param is declared twice")
    sql = "\n".join(body_lines).strip()
    if not sql:
        raise UserError(f"query file {path}: no SQL after the header")
    used = set(_REF.findall(_strip_literals(sql)))
    undeclared = sorted(used - set(names))
    if undeclared:
        raise UserError(
            f"query file {path}: the SQL uses ${undeclared[0]} which the header does not declare; "
            f"add `-- param: {undeclared[0]}: str`"
        )
    unused = [n for n in names if n not in used]
    if unused:
        raise UserError(f"query file {path}: param {unused[0]} is declared but the SQL never uses ${unused[0]}")
    return Query(
        name=name,
        description=fields["description"],
        params=tuple(params),
        sql=sql,
        path=path,
        returns=fields.get("returns", ""),
        packaged=packaged,
    )


def _parse_param(text: str, path: Path) -> Param:
    m = _PARAM.match(text)
    if not m:
        raise UserError(
            f"query file {path}: cannot read param line {text!r}; "
            "write `-- param: NAME: TYPE [= DEFAULT] [{a|b}] help`"
        )
    kind = m.group("type")
    if kind not in TYPES:
        raise UserError(f"query file {path}: param {m.group('name')} has type {kind!r}, not one of {', '.join(TYPES)}")
    where = f"query file {path}, param {m.group('name')}"
    default, required = _parse_default(m.group("default"), kind, where)
    choices: tuple[Any, ...] = ()
    if m.group("choices"):
        raw = [c.strip() for c in m.group("choices").split("|") if c.strip()]
        choices = tuple(_coerce(c, kind) for c in raw)
        if any(c is _BAD for c in choices):
            raise UserError(f"{where}: choices {m.group('choices')!r} are not all {_ARTICLE[kind]}")
        if default is not None and default not in choices:
            raise UserError(f"{where}: default {default!r} is not among its choices")
    return Param(m.group("name"), kind, default, required, choices, m.group("help").strip())


def _strip_literals(sql: str) -> str:
    """SQL without comments and string literals, so `$x` inside them is not a param."""
    sql = re.sub(r"'(?:[^']|'')*'", "''", sql)
    sql = re.sub(r"--[^\n]*", "", sql)
    return re.sub(r"/\*.*?\*/", "", sql, flags=re.S)


@dataclass
class Catalogue:
    """The packaged queries plus those of `extra_dirs`, and the macros they share."""

    extra_dirs: tuple[Path, ...] = ()
    queries: dict[str, Query] = field(default_factory=dict)
    macros: list[tuple[Path, str]] = field(default_factory=list)

    @classmethod
    def load(cls, extra_dirs: Iterable[str | Path] = ()) -> "Catalogue":
        dirs = [Path(d) for d in extra_dirs]
        cat = cls(extra_dirs=tuple(dirs))
        cat._add_dir(queries_dir(), packaged=True)
        for d in dirs:
            if not d.is_dir():
                raise UserError(f"query directory {d} does not exist or is not a folder")
            cat._add_dir(d, packaged=False)
        return cat

    def _add_dir(self, folder: Path, *, packaged: bool) -> None:
        for path in sorted(folder.glob("*.sql")):
            if path.name.startswith("_"):
                self.macros.append((path, path.read_text()))
                continue
            q = parse_query(path, packaged=packaged)
            if q.name in self.queries:
                first = self.queries[q.name]
                what = "the packaged query" if first.packaged else f"the query in {first.path}"
                raise UserError(f"query {q.name} in {path} has the same name as {what}; rename it")
            self.queries[q.name] = q

    def names(self) -> list[str]:
        return sorted(self.queries)

    def get(self, name: str) -> Query:
        try:
            return self.queries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.queries, n=1)
            fix = f"did you mean {close[0]}?" if close else "see `headdb query list`"
            raise UserError(f"unknown query {name!r}; {fix}") from None

    def listing(self) -> pl.DataFrame:
        rows = [
            {
                "name": q.name,
                "params": ", ".join(p.signature() for p in q.params),
                "description": q.description,
                "source": "packaged" if q.packaged else str(q.path.parent),
            }
            for q in (self.queries[n] for n in self.names())
        ]
        return pl.DataFrame(
            rows, schema={"name": pl.Utf8, "params": pl.Utf8, "description": pl.Utf8, "source": pl.Utf8}
        )


def catalogue(extra_dirs: Iterable[str | Path] = ()) -> Catalogue:
    """The packaged queries, the runtime's query folders (HEADDB_QUERIES) and `extra_dirs`
    (each folder once)."""
    folders = dict.fromkeys(Path(d) for d in [*runtime().queries, *extra_dirs])
    return Catalogue.load(list(folders))


def list_queries(extra_dirs: Iterable[str | Path] = ()) -> pl.DataFrame:
    return catalogue(extra_dirs).listing()


def run_query(
    db: Warehouse, name: str, params: Mapping[str, Any] | None = None, extra_dirs: Iterable[str | Path] = ()
) -> pl.DataFrame:
    """Run the named query on warehouse `db` with `params`; a polars DataFrame.

    Unknown query, unknown/missing/ill-typed param: UserError with one line naming the fix.
    Opens the warehouse for this one query; use `query_session` for many queries in a row.
    """
    cat = catalogue(extra_dirs)
    query = cat.get(name)
    bound = query.bind(params)
    with QuerySession(db, cat=cat) as session:
        return session.execute(query, bound)


class QuerySession:
    """One read-only session with the macros created once, for running many queries in a row.

        with query_session(db) as q:
            a = q.run("heads_gained", {"base": "base", "target": "grpo@400"})
            b = q.run("effect_map", {"lineage": "grpo"})

    While it is open the warehouse file is open read-only in this process, so other processes
    cannot write to it: keep it for a batch of queries, not for a whole program.
    """

    def __init__(self, db: Warehouse, extra_dirs: Iterable[str | Path] = (), *, cat: Catalogue | None = None) -> None:
        self.db = db
        self.catalogue = cat if cat is not None else catalogue(extra_dirs)
        self._context: Any = None  # the open db.sink.read() context manager
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> "QuerySession":
        self._context = self.db.sink.read()
        session: Session = self._context.__enter__()
        self._con = session.con
        try:
            for path, text in self.catalogue.macros:
                try:
                    self._con.execute(text)
                except duckdb.Error as exc:
                    raise UserError(f"macro file {path}: {_first_line(exc)}") from None
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        context, self._context, self._con = self._context, None, None
        if context is not None:
            context.__exit__(*exc)
        return False

    def run(self, name: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        query = self.catalogue.get(name)
        return self.execute(query, query.bind(params))

    def value(self, sql: str, params: list[Any] | None = None) -> Any:
        """One value of an SQL expression over the warehouse, with the catalogue's macros."""
        if self._con is None:
            raise RuntimeError("QuerySession is not open; use it in a with block")
        try:
            row = self._con.execute(sql, params).fetchone()
        except duckdb.Error as exc:
            raise _as_user_error(exc, "lookup") from None
        return None if row is None else row[0]

    def names(self) -> tuple[list[tuple[str, bool]], list[str]]:
        """(lineage, is_base) of every lineage, base ones first, and every task and benchmark name:
        what reports key their colours by, so a lineage has one colour in every figure."""
        if self._con is None:
            raise RuntimeError("QuerySession is not open; use it in a with block")
        lineages = self._con.execute(stored.sql("reads", "lineage_names")).fetchall()
        tasks = self._con.execute(stored.sql("reads", "task_names")).fetchall()
        return [(str(name), bool(base)) for name, base in lineages], [str(name) for (name,) in tasks]

    def execute(self, query: Query, bound: dict[str, Any]) -> pl.DataFrame:
        if self._con is None:
            raise RuntimeError("QuerySession is not open; use it in a with block")
        con = self._con
        try:
            statements = con.extract_statements(query.sql)
        except duckdb.Error as exc:
            raise UserError(f"query {query.name} ({query.path}): {_first_line(exc)}") from None
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise UserError(f"query {query.name} ({query.path}) must be exactly one SELECT statement")
        try:
            # a param naming a checkpoint, lineage, task, run or selection must name something:
            # checked here, so that an empty result means nothing matched, not a typo
            bound = resolve_params(con, bound)
        except duckdb.Error as exc:
            raise _as_user_error(exc, f"query {query.name}") from None
        try:
            result = con.execute(query.sql, bound) if bound else con.execute(query.sql)
            table = result.to_arrow_table()
        except duckdb.Error as exc:
            raise _as_user_error(exc, f"query {query.name}") from None
        return cast(pl.DataFrame, pl.from_arrow(table))  # an Arrow table gives a DataFrame


def query_session(db: Warehouse, extra_dirs: Iterable[str | Path] = ()) -> QuerySession:
    return QuerySession(db, extra_dirs)


def _as_user_error(exc: Exception, what: str) -> UserError:
    message = str(exc)
    if "headdb: " in message:  # raised on purpose by error() in a macro or query
        return UserError(message.split("headdb: ", 1)[1].splitlines()[0])
    return UserError(f"{what} failed: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
