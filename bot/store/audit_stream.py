"""Reading the audit trail in order without holding it: the export's and the forwarders' view
of the events (dicts shaped as `audit.export` yields them), streamed in bounded memory."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, Any

import sqlalchemy as sa

from bot.store.tables import AuditEvent, Store

_TABLE: sa.Table = AuditEvent.__table__  # type: ignore[attr-defined]
_NAMES = tuple(c.name for c in _TABLE.columns)
_loads = json.JSONDecoder().decode
_dumps = json.JSONEncoder(ensure_ascii=False).encode  # one encoder, not one per line
# audit.canonical's spelling, with one encoder for the whole export.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
BATCH = 2000  # rows per round trip; what is held in memory at once

# The CSV's columns, a stable contract: `details` is the canonical JSON of the event's details
# (empty once pruned), `details_hash` what the chain hashes in their place (empty where the
# database predates it).
CSV_COLUMNS = (
    "seq",
    "at",
    "actor",
    "action",
    "request_id",
    "details",
    "details_hash",
    "prev_hash",
    "hash",
)


def as_dict(row: Any) -> dict[str, Any]:
    """One stored event as `audit.export` spells it: every column in the table's order, the
    time in ISO 8601, the details parsed (None once pruned)."""
    out = dict(zip(_NAMES, row, strict=True))
    out["at"] = out["at"].isoformat()
    details = out["details"]
    out["details"] = None if details is None else _loads(details)
    return out


def _query(
    since: datetime | None, until: datetime | None, request_id: int | None, after: int
) -> sa.Select:
    query = sa.select(_TABLE).where(_TABLE.c.seq > after).order_by(_TABLE.c.seq)
    if since is not None:
        query = query.where(_TABLE.c.at >= since)
    if until is not None:
        query = query.where(_TABLE.c.at < until)
    if request_id is not None:
        query = query.where(_TABLE.c.request_id == request_id)
    return query


def page(conn: sa.Connection | Any, after: int, limit: int) -> list[dict[str, Any]]:
    """At most `limit` events after seq `after`, oldest first (a connection or a session)."""
    return [as_dict(r) for r in conn.execute(_query(None, None, None, after).limit(limit))]


def events(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id: int | None = None,
    batch: int = BATCH,
) -> Iterator[dict[str, Any]]:
    """Every event with `since` <= at < `until` (either open), oldest first, in bounded
    memory: PostgreSQL streams one query through a server-side cursor (one snapshot);
    SQLite reads pages by sequence, so no read transaction stays open for the whole export
    (one would hold back the write-ahead log's checkpoints)."""
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(
                _query(since, until, request_id, 0)
            )
            for row in result:
                yield as_dict(row)
        return
    after = 0
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(_query(since, until, request_id, after).limit(batch)).all()
        for row in rows:
            yield as_dict(row)
        if len(rows) < batch:
            return
        after = rows[-1].seq


def write_jsonl(out: IO[str], items: Iterable[dict[str, Any]]) -> int:
    """One JSON object per line, keys in the event's own order; returns how many."""
    n = 0
    for event in items:
        out.write(_dumps(event) + "\n")
        n += 1
    return n


def csv_row(event: dict[str, Any]) -> list[Any]:
    details = event.get("details")
    return [
        event["seq"],
        event["at"],
        event["actor"],
        event["action"],
        "" if event.get("request_id") is None else event["request_id"],
        "" if details is None else _canonical(details),
        event.get("details_hash") or "",
        event["prev_hash"],
        event["hash"],
    ]


def write_csv(out: IO[str], items: Iterable[dict[str, Any]]) -> int:
    """A header, then one row per event (RFC 4180 quoting); returns how many events."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    n = 0
    for event in items:
        writer.writerow(csv_row(event))
        n += 1
    return n
