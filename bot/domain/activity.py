"""What a grant's database user ran, as the audit trail tells it: pg_stat_statements' rows
grouped by statement kind and first table ("14 statements: SELECT incidents x12, UPDATE
incidents x2", with a multiplication sign), with the normalized statements themselves,
capped. Pure: no I/O.

PostgreSQL normalizes plannable statements (SELECT, INSERT, UPDATE, DELETE, MERGE): their
literals become $1, $2. It does not normalize every utility statement: measured on
PostgreSQL 18, `ALTER ROLE x PASSWORD '…'`, `DO $$…$$` and `COMMENT ON … IS '…'` are kept
verbatim. So a statement whose text still holds a string literal is recorded by its kind and
table only, never by its text, and comments (kept verbatim too) are cut from every text.
Statements are parsed with PostgreSQL's own parser (pglast, libpg_query).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast, parser

NEVER_USED = "credential never used"
UNAVAILABLE = "activity unavailable"
MAX_STATEMENTS = 50  # kept in the event's details, most called first
MAX_TEXT = 500  # characters of one statement's text
TIMES = "\u00d7"  # the multiplication sign
MAX_GROUPS = 8  # named in the summary line; the rest as "and N more"

# Transaction control is how a client talks, not what it did: counted apart.
_QUIET = (ast.TransactionStmt,)
_DML = {
    ast.SelectStmt: "SELECT",
    ast.InsertStmt: "INSERT",
    ast.UpdateStmt: "UPDATE",
    ast.DeleteStmt: "DELETE",
    ast.MergeStmt: "MERGE",
}
_LITERALS = {"SCONST", "USCONST", "BCONST", "XCONST"}
# A quoted identifier may hold any character but NUL: the grant's user chose it, and it
# reaches the security channel and `audit show`. Control characters, line and paragraph
# separators and text-direction controls ("x\u202etxt.exe" shows as "xexe.txt") are shown as
# "?", as the request form refuses them from people.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _shown(text: str | None) -> str | None:
    return None if text is None else _UNSAFE.sub("?", text)


_COMMENTS = {"SQL_COMMENT", "C_COMMENT"}


@dataclass(frozen=True)
class StatementStat:
    """One row of pg_stat_statements for one user: a normalized statement and its counts."""

    query: str
    calls: int
    rows: int
    database: str | None = None


@dataclass(frozen=True)
class Statement:
    """A statement as recorded: `text` is None when it was withheld."""

    kind: str
    table: str | None
    calls: int
    rows: int
    database: str | None
    text: str | None
    quiet: bool = False  # transaction control

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "table": self.table,
            "calls": self.calls,
            "rows": self.rows,
            "database": self.database,
            "query": self.text,
        }
        if self.text is None:
            out["withheld"] = "a literal PostgreSQL did not normalize"
        return out


@dataclass(frozen=True)
class Activity:
    """What one database user ran, or why that is unknown."""

    summary: str  # the line for the thread: "14 statements: …", NEVER_USED, UNAVAILABLE: …
    details: dict[str, Any]

    @property
    def available(self) -> bool:
        return not self.summary.startswith(UNAVAILABLE)


def unavailable(reason: str) -> Activity:
    return Activity(f"{UNAVAILABLE}: {reason}", {"available": False, "reason": reason})


def classify(query: str) -> tuple[str, str | None, str | None, bool]:
    """(kind, first table, text to keep or None, transaction control?) of one normalized
    statement."""
    try:
        tokens = parser.scan(query)
    except parser.ParseError:
        tokens = []
    literal = any(t.name in _LITERALS for t in tokens)
    text = None if literal or not tokens else _without_comments(query, tokens)
    try:
        parsed = pglast.parse_sql(query)
    except parser.ParseError:  # a text the parser cannot read: the kind from its first word
        word = query.strip().split(None, 1)[0].upper() if query.strip() else "?"
        return re.sub(r"[^A-Z_]", "", word)[:32] or "?", None, text, False
    if not parsed:
        return "?", None, text, False
    stmt = parsed[0].stmt
    quiet = isinstance(stmt, _QUIET)
    kind = _DML.get(type(stmt)) or _leading_keywords(tokens)
    return kind, _first_table(stmt), text, quiet


def _without_comments(query: str, tokens: Iterable[Any]) -> str:
    cut = query
    for token in sorted((t for t in tokens if t.name in _COMMENTS), key=lambda t: -t.start):
        cut = cut[: token.start] + cut[token.end + 1 :]
    text = " ".join(cut.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _leading_keywords(tokens: list[Any]) -> str:
    """ "ALTER ROLE", "CREATE TABLE", "TRUNCATE": the statement's first keywords (two at most)."""
    words: list[str] = []
    for token in tokens:
        if token.kind == "NO_KEYWORD" or token.name in _COMMENTS or len(words) == 2:
            break
        words.append(token.name.removesuffix("_P"))
    return " ".join(words) or "?"


def _first_table(node: Any) -> str | None:
    """The first table the statement names: its target for INSERT, UPDATE, DELETE, MERGE and
    most utility statements, the first of FROM for a SELECT."""
    target = getattr(node, "relation", None)
    if isinstance(target, ast.RangeVar):
        return _name(target)
    if isinstance(node, ast.DropStmt) and node.objects:
        first = node.objects[0]
        parts = first if isinstance(first, tuple | list) else (first,)
        names = [p.sval for p in parts if isinstance(p, ast.String)]
        return ".".join(names) or None
    with_clause = getattr(node, "withClause", None)
    helpers = {c.ctename for c in (with_clause.ctes if with_clause else ()) or ()}
    for found in _range_vars(node):
        if found.schemaname or found.relname not in helpers:
            return _name(found)
    return None


def _range_vars(node: Any) -> Iterable[ast.RangeVar]:
    if isinstance(node, ast.RangeVar):
        yield node
        return
    if isinstance(node, tuple | list):
        for item in node:
            yield from _range_vars(item)
        return
    if isinstance(node, ast.Node):
        # A CTE's body comes after the statement's own FROM: WITH … names helpers first.
        fields = [f for f in node if f != "withClause"] + (
            ["withClause"] if "withClause" in node else []
        )
        for field in fields:
            yield from _range_vars(getattr(node, field, None))


def _name(rv: ast.RangeVar) -> str:
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


def summarize(stats: list[StatementStat]) -> Activity:
    """The activity of one user from their pg_stat_statements rows (none: never used)."""
    if not stats:
        return Activity(NEVER_USED, {"available": True, "calls": 0, "statements": []})
    statements = [
        Statement(kind, _shown(table), s.calls, s.rows, _shown(s.database), _shown(text), quiet)
        for s in stats
        for kind, table, text, quiet in [classify(s.query)]
    ]
    counted = [st for st in statements if not st.quiet]
    groups: dict[tuple[str, str | None], int] = {}
    for st in counted:
        groups[(st.kind, st.table)] = groups.get((st.kind, st.table), 0) + st.calls
    calls = sum(groups.values())
    ranked = sorted(groups.items(), key=lambda g: (-g[1], g[0][0], g[0][1] or ""))
    named = [
        f"{kind} {table} {TIMES}{n}" if table else f"{kind} {TIMES}{n}"
        for (kind, table), n in ranked
    ]
    if len(named) > MAX_GROUPS:
        named = [*named[:MAX_GROUPS], f"and {len(named) - MAX_GROUPS} more"]
    quiet_calls = sum(st.calls for st in statements if st.quiet)
    if not counted:
        summary = f"no statements beyond transaction control ({quiet_calls})"
    else:
        summary = f"{calls} statement{'s' if calls != 1 else ''}: " + ", ".join(named)
    kept = sorted(counted, key=lambda st: -st.calls)
    details: dict[str, Any] = {
        "available": True,
        "calls": calls,
        "rows": sum(st.rows for st in counted),
        "transaction_control_calls": quiet_calls,
        "groups": [{"kind": k, "table": t, "calls": n} for (k, t), n in ranked],
        "statements": [st.to_json() for st in kept[:MAX_STATEMENTS]],
    }
    if len(kept) > MAX_STATEMENTS:
        details["statements_left_out"] = len(kept) - MAX_STATEMENTS
    return Activity(summary, details)
