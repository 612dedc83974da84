"""The landing store: the events and labels posted to the ingestion service, durable before the answer.

An embedded SQLite database (ingest.landing.store, default data/landing/landing.db) in WAL mode with
synchronous=FULL: a commit returns once the write-ahead log is fsync'd, so an answered request survives a
killed process (or a power cut), and readers (the ingest stage, stats) never block the writer. Events are
keyed by event_id (INSERT OR IGNORE: a retried event is stored once, its first copy kept), labels by
(event_id, labelled_at). Every row gets a `seq` that only grows (AUTOINCREMENT never reuses one), so
"what landed since X" is a range scan: `watermarks()` and `pending_days()` are what an Airflow sensor
needs to pick new landings up without asking the service.

Tables: events (the canonical columns, `event_date` = the raw partition it belongs to, landed_at,
batch_id, ingested_at), labels, batches (accepted and refused uploads) and ingested_days (per date, the
last ingest run that took its landed events). The write functions take a connection inside a
transaction (the group-commit writer's, writer.py); timestamps are integer microseconds (columns.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.contract import CANONICAL_COLUMNS, EVENT_ID, LABEL
from pipelines.errors import StageError
from pipelines.ingestion.columns import KINDS, SQL_TYPES

if TYPE_CHECKING:
    from pipelines.config import Params

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000  # another process (worker, ingest stage) holding the write lock: wait, don't fail
# an event row as inserted: the canonical columns (event_id first), then where and when it landed
EVENT_ROW: tuple[str, ...] = (*CANONICAL_COLUMNS, "event_date", "landed_at", "batch_id")
_BODY = [c for c in CANONICAL_COLUMNS if c != EVENT_ID]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    {", ".join(f"{c} {SQL_TYPES[KINDS[c]]}" for c in _BODY)},
    event_date TEXT NOT NULL,
    landed_at REAL NOT NULL,
    batch_id TEXT,
    ingested_at REAL
);
CREATE INDEX IF NOT EXISTS events_by_date ON events (event_date, seq);
CREATE INDEX IF NOT EXISTS events_pending ON events (event_date) WHERE ingested_at IS NULL;
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    labelled_at INTEGER NOT NULL,
    label INTEGER NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (event_id, labelled_at)
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    name TEXT,
    format TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('accepted', 'refused')),
    rows INTEGER NOT NULL,
    landed INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    quarantine TEXT
);
CREATE TABLE IF NOT EXISTS ingested_days (
    day TEXT PRIMARY KEY,
    run_at REAL NOT NULL,
    rows INTEGER NOT NULL,
    landed INTEGER NOT NULL,
    events_seq INTEGER NOT NULL,
    labels_seq INTEGER NOT NULL
);
"""


def store_path(params: Params) -> Path | None:
    """The landing store a reader opens; None when there is none (nothing landed yet) or ingest.landing
    is off (readers then go without it)."""
    cfg = params.ingest.landing
    path = params.resolve(cfg.store)
    return path if cfg.enabled and path.is_file() else None


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL.

    `create` makes the directory, the file and the tables; without it a missing store is an error
    (a reader never creates one)."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise FileNotFoundError(f"{path}: no landing store")
    # autocommit mode (isolation_level None): BEGIN/COMMIT are explicit; the writer thread owns its own
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: fsync the WAL at every commit (NORMAL would only at checkpoints: a power cut could lose
    # answered requests). The fsync is shared by every request of a group commit.
    conn.execute("PRAGMA synchronous = FULL")
    if create:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _create(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    _check_version(conn, path)
    return conn


def _create(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or int(row[0]) != SCHEMA_VERSION:
        raise StageError(f"{path}: landing store schema {row and row[0]}, expected {SCHEMA_VERSION}")


# ---- writes (inside the caller's transaction) -------------------------------------------------------


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_INSERT_EVENT = _insert_sql("events", EVENT_ROW)
_INSERT_LABEL = _insert_sql("labels", ("event_id", "labelled_at", "label", "received_at"))


def insert_events(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> list[bool]:
    """Insert events (values in EVENT_ROW order); for each, True if new, False if its id was stored."""
    cur = conn.cursor()
    out = []
    for row in rows:
        cur.execute(_INSERT_EVENT, row)
        out.append(cur.rowcount == 1)
    return out


def insert_event_rows(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> int:
    """Insert many events at once (a batch); the number that were new."""
    before = conn.total_changes
    conn.executemany(_INSERT_EVENT, rows)
    return conn.total_changes - before


def insert_labels(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> list[bool]:
    """Insert labels (event_id, labelled_at µs, label, received_at); True for each new one."""
    cur = conn.cursor()
    out = []
    for row in rows:
        cur.execute(_INSERT_LABEL, row)
        out.append(cur.rowcount == 1)
    return out


def known_events(conn: sqlite3.Connection, event_ids: Sequence[str]) -> set[str]:
    """The ids among `event_ids` whose event has landed."""
    found: set[str] = set()
    for i in range(0, len(event_ids), 500):  # SQLite caps the number of bound parameters
        chunk = event_ids[i : i + 500]
        sql = f"SELECT event_id FROM events WHERE event_id IN ({', '.join('?' * len(chunk))})"
        found.update(r[0] for r in conn.execute(sql, chunk))
    return found


def record_batch(conn: sqlite3.Connection, batch: dict[str, Any]) -> None:
    """Record an accepted or refused upload (keys: the batches table's columns)."""
    cols = list(batch)
    conn.execute(
        f"INSERT INTO batches ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [batch[c] for c in cols],
    )


def mark_ingested(
    conn: sqlite3.Connection, rows_per_day: dict[str, tuple[int, int]], seqs: tuple[int, int], run_at: float
) -> None:
    """Record an ingest run: per day (rows written, landed rows among them); events up to the run's
    snapshot (`seqs` = events_seq, labels_seq) of those days are ingested."""
    events_seq, labels_seq = seqs
    for day, (rows, landed) in rows_per_day.items():
        conn.execute(
            "UPDATE events SET ingested_at = ? WHERE event_date = ? AND seq <= ? AND ingested_at IS NULL",
            (run_at, day, events_seq),
        )
        conn.execute(
            "INSERT INTO ingested_days (day, run_at, rows, landed, events_seq, labels_seq) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day) DO UPDATE SET run_at = excluded.run_at, "
            "rows = excluded.rows, landed = excluded.landed, events_seq = excluded.events_seq, "
            "labels_seq = excluded.labels_seq",
            (day, run_at, rows, landed, events_seq, labels_seq),
        )


# ---- reads ------------------------------------------------------------------------------------------


def watermarks(conn: sqlite3.Connection) -> dict[str, int]:
    """The last event and label seq landed, and the last event seq an ingest run has taken."""
    one = lambda sql: conn.execute(sql).fetchone()[0] or 0  # noqa: E731
    return {
        "events_seq": one("SELECT MAX(seq) FROM events"),
        "labels_seq": one("SELECT MAX(seq) FROM labels"),
        "ingested_seq": one("SELECT MAX(events_seq) FROM ingested_days"),
    }


def read_landed(
    conn: sqlite3.Connection, start: str, end: str, columns: Sequence[str]
) -> tuple[list[tuple[Any, ...]], tuple[int, int]]:
    """Landed events dated [start, end) in `columns`, their label the latest posted one (by labelled_at)
    if any, else their own; and the snapshot's (events_seq, labels_seq). One read transaction."""
    picked = [
        f"COALESCE((SELECT l.label FROM labels l WHERE l.event_id = e.event_id "
        f"ORDER BY l.labelled_at DESC, l.seq DESC LIMIT 1), e.{LABEL})"
        if c == LABEL
        else f"e.{c}"
        for c in columns
    ]
    conn.execute("BEGIN")
    try:
        rows = conn.execute(
            f"SELECT {', '.join(picked)} FROM events e WHERE e.event_date >= ? AND e.event_date < ?",
            (start, end),
        ).fetchall()
        marks = watermarks(conn)
    finally:
        conn.execute("COMMIT")
    return rows, (marks["events_seq"], marks["labels_seq"])


def pending_days(conn: sqlite3.Connection) -> list[str]:
    """Dates whose raw partition lacks landed data: events no ingest run has taken, or labels arrived
    after the date's last run."""
    rows = conn.execute(
        "SELECT DISTINCT event_date FROM events WHERE ingested_at IS NULL "
        "UNION SELECT DISTINCT e.event_date FROM labels l JOIN events e ON e.event_id = l.event_id "
        "JOIN ingested_days d ON d.day = e.event_date WHERE l.seq > d.labels_seq ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def labels_as_of(
    conn: sqlite3.Connection, event_ids: Iterable[str], until: int
) -> list[tuple[str, int | None]]:
    """For each of `event_ids` that got a posted label: its latest one with labelled_at <= `until` (µs; by
    labelled_at, then arrival), or None when every label it got came later. One read transaction; the ids
    go through a temporary table (any number of them, one indexed join)."""
    conn.execute("BEGIN")
    try:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (event_id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM wanted")
        conn.executemany("INSERT OR IGNORE INTO wanted (event_id) VALUES (?)", ((i,) for i in event_ids))
        rows = conn.execute(
            "SELECT w.event_id, (SELECT l.label FROM labels l WHERE l.event_id = w.event_id "
            "AND l.labelled_at <= ? ORDER BY l.labelled_at DESC, l.seq DESC LIMIT 1) FROM wanted w "
            "WHERE EXISTS (SELECT 1 FROM labels l WHERE l.event_id = w.event_id) ORDER BY w.event_id",
            (until,),
        ).fetchall()
    finally:
        conn.execute("ROLLBACK")  # only the temporary table was written
    return [(r[0], r[1]) for r in rows]
