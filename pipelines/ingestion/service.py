"""The ingestion service's library side, one per worker process: check, land, answer.

`Ingestion(params)` derives the per-event rules from the GX suite (rules.py, models.py), and `start()`
opens the landing store and its group-commit writer. The HTTP routes (pipelines.api.ingest_routes) hand
it request bodies and send back what it returns:

- `land_events(body)`: one event or a list, checked whole (InvalidBody: nothing stored), then landed in
  one savepoint of a group commit; answers the ids, how many were new and which were already stored.
- `land_labels(body)`: the same for labels; also which labels wait for their event (joined when it lands).
- `land_batch(data, fmt, name)`: an upload read and validated whole with the suite (batch.py); accepted ->
  every row in one transaction, refused -> BatchRefused, the file quarantined, nothing landed.
- `stats(start, end)`: stats.py.

After a commit that landed something new it raises the landing flag (notify.py): what tells Airflow's
`ingestion` DAG to ingest the days concerned, without it ever asking this service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipelines.config import Params
from pipelines.contract import CANONICAL_COLUMNS, TIMESTAMP
from pipelines.engines.gx_suite import load_suite, suite_parameters
from pipelines.ingestion import store
from pipelines.ingestion.batch import BatchChecker, CheckedBatch
from pipelines.ingestion.columns import event_date, frame_rows, to_micros
from pipelines.ingestion.metrics import IngestMetrics
from pipelines.ingestion.models import BodyParser, InvalidBody, event_parser, label_parser
from pipelines.ingestion.notify import flag_path, raise_flag
from pipelines.ingestion.rules import derive_rules
from pipelines.ingestion.stats import day_stats
from pipelines.ingestion.writer import GroupCommitWriter, WriterClosed
from pipelines.sources import source_columns

T = TypeVar("T")
log = logging.getLogger(__name__)


class BatchRefused(RuntimeError):
    """An upload refused whole: the failed expectations, the batch id and where the file was kept."""

    def __init__(self, batch: CheckedBatch, quarantine: str) -> None:
        what = ", ".join(
            (f"{f['type']}({f['column']})" if f.get("column") else str(f["type"]))
            + (f": {f['error']}" if f.get("error") else "")
            for f in batch.failed
        )
        super().__init__(
            f"batch {batch.name} refused, nothing landed: {len(batch.failed)} expectation(s) failed "
            f"[{what}]; the file and its validation result are kept in {quarantine}"
        )
        self.batch = batch
        self.quarantine = quarantine


class Ingestion:
    """Checks and lands events, labels and batches for one project (params), in one worker process."""

    def __init__(self, params: Params, metrics: IngestMetrics | None = None) -> None:
        self.params = params
        self.cfg = params.ingest_service
        suite = load_suite(params.resolve(params.validate_.suite))
        parameters = suite_parameters(params.validate_)
        self.columns = source_columns(params.ingest.source)
        self.rules = derive_rules(suite, parameters, self.columns)
        self.events = event_parser(self.rules, self.cfg.max_events)
        self.labels = label_parser(self.rules, self.cfg.max_events)
        self.store_path = params.resolve(params.ingest.landing.store)
        self.flag = flag_path(self.store_path)
        self.batches = BatchChecker(
            params.ingest.source, suite, parameters, params.paths.landing, params.paths.landing_quarantine
        )
        self.metrics = metrics
        self.writer: GroupCommitWriter | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Open (create) the landing store and start its writer."""
        on_group = self.metrics.group_size.observe if self.metrics else None
        self.writer = GroupCommitWriter(
            lambda: store.connect(self.store_path, create=True),
            max_pending=self.cfg.max_pending,
            max_group=self.cfg.commit_group,
            on_group=(lambda n, _s: on_group(n)) if on_group else None,
        )
        self.writer.start()
        self._flag_pending()
        log.info("landing store %s open (rules: %s)", self.store_path, ", ".join(self.columns))

    def _flag_pending(self) -> None:
        """Raise the landing flag when the store holds what no ingest run took (a worker killed between a
        commit and its flag would otherwise leave it for the next daily run)."""
        conn = store.connect(self.store_path, create=False)
        try:
            pending = store.pending_days(conn)
        finally:
            conn.close()
        if pending:
            raise_flag(self.flag)

    def _landed(self, new: int) -> None:
        """After a commit: raise the landing flag when something new landed (never for duplicates only)."""
        if new:
            raise_flag(self.flag)

    @property
    def ready(self) -> bool:
        return self.writer is not None and self.writer.alive

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def _commit(self, op: Callable[[sqlite3.Connection], T], timeout: float | None = None) -> T:
        if self.writer is None:
            raise WriterClosed("the ingestion service is starting: the landing store is not open yet")
        return await self.writer.call(op, timeout or self.cfg.commit_timeout_s)

    # ---- events and labels ---------------------------------------------------------------------------

    def _parse(self, parser: BodyParser, body: bytes, counter: Callable[[int], None]) -> list[Any]:
        try:
            return parser.parse(body)
        except InvalidBody:
            counter(_items(body))
            raise

    async def land_events(self, body: bytes) -> dict[str, Any]:
        """Check and land one event or a list (all or nothing); the answer's body."""
        t0 = time.perf_counter()
        refused = self.metrics.events.labels("events", "refused").inc if self.metrics else _ignore
        items = self._parse(self.events, body, refused)
        rows = [self._event_row(item) for item in items]

        def op(conn: sqlite3.Connection) -> tuple[float, list[bool]]:
            now = time.time()
            return now, store.insert_events(conn, [(*r, now, None) for r in rows])

        landed_at, new = await self._commit(op)
        self._landed(sum(new))
        ids = [r[0] for r in rows]
        if self.metrics:
            ts = CANONICAL_COLUMNS.index(TIMESTAMP)
            lags = [landed_at - r[ts] / 1e6 for r, n in zip(rows, new, strict=True) if n]
            self.metrics.landed("events", len(lags), len(rows) - len(lags), lags)
            self.metrics.commit.observe(time.perf_counter() - t0)
        return {
            "event_ids": ids,
            "landed": sum(new),
            "duplicates": [i for i, n in zip(ids, new, strict=True) if not n],
        }

    def _event_row(self, event: Any) -> tuple[Any, ...]:
        """An event model as store values: canonical columns (absent ones None), then its date."""
        values = event.__dict__
        micros = to_micros(values[TIMESTAMP])
        row = [micros if c == TIMESTAMP else values.get(c) for c in CANONICAL_COLUMNS]
        return (*row, event_date(micros))

    async def land_labels(self, body: bytes) -> dict[str, Any]:
        """Check and land one label or a list (all or nothing); the answer's body."""
        refused = self.metrics.labels.labels("refused").inc if self.metrics else _ignore
        items = self._parse(self.labels, body, refused)
        rows = [(x.event_id, to_micros(x.labelled_at), x.label) for x in items]
        ids = [r[0] for r in rows]

        def op(conn: sqlite3.Connection) -> tuple[list[bool], set[str]]:
            now = time.time()
            return store.insert_labels(conn, [(*r, now) for r in rows]), store.known_events(conn, ids)

        new, known = await self._commit(op)
        # a label waiting for its event changes no partition yet: its event's landing raises the flag
        self._landed(sum(n and r[0] in known for n, r in zip(new, rows, strict=True)))
        if self.metrics:
            self.metrics.labels.labels("accepted").inc(sum(new))
            self.metrics.labels.labels("duplicate").inc(len(new) - sum(new))
        return {
            "event_ids": ids,
            "landed": sum(new),
            "duplicates": [i for i, n in zip(ids, new, strict=True) if not n],
            "pending": [i for i in ids if i not in known],
        }

    # ---- batches -------------------------------------------------------------------------------------

    async def land_batch(self, data: bytes, fmt: str, name: str | None) -> dict[str, Any]:
        """Validate an upload whole and land all of its rows, or refuse it (BatchRefused, quarantined)."""
        checked = await asyncio.to_thread(self.batches.check, data, fmt, name)
        if not checked.accepted:
            await self._refuse(checked)
        assert checked.frame is not None
        try:
            frame = checked.frame
            dates = frame[TIMESTAMP].dt.strftime("%Y-%m-%d")
            rows = [(*r, d) for r, d in zip(frame_rows(frame, CANONICAL_COLUMNS), dates, strict=True)]

            def op(conn: sqlite3.Connection) -> int:
                now = time.time()
                landed = store.insert_event_rows(conn, [(*r, now, checked.batch_id) for r in rows])
                store.record_batch(conn, _batch_record(checked, "accepted", landed))
                return landed

            # one transaction for the whole batch: give it time by its size (it never lands partly)
            landed = await self._commit(op, self.cfg.commit_timeout_s + len(rows) / 5_000)
            self._landed(landed)
        finally:
            self.batches.discard(checked)
        if self.metrics:
            self.metrics.batches.labels("accepted").inc()
            self.metrics.landed("batch", landed, len(rows) - landed, [])
        return {
            "batch_id": checked.batch_id,
            "name": checked.name,
            "format": checked.fmt,
            "rows": len(rows),
            "landed": landed,
            "duplicates": len(rows) - landed,
            "days": dates.value_counts().sort_index().to_dict(),
            "validation": {
                "suite": self.params.validate_.suite,
                "success": True,
                "evaluated": checked.evaluated,
                "skipped_optional_columns": checked.skipped,
            },
        }

    async def _refuse(self, checked: CheckedBatch) -> None:
        where = await asyncio.to_thread(self.batches.quarantine, checked)
        shown = _relative(where, self.params.root)
        record = _batch_record(checked, "refused", 0, shown)
        await self._commit(lambda conn: store.record_batch(conn, record))
        if self.metrics:
            self.metrics.batches.labels("refused").inc()
            self.metrics.events.labels("batch", "refused").inc(checked.rows)
        raise BatchRefused(checked, shown)

    # ---- reads ---------------------------------------------------------------------------------------

    def stats(self, start: dt.date | None, end: dt.date | None) -> dict[str, Any]:
        """Per-day figures (stats.py), read on a connection of its own (blocking)."""
        conn = store.connect(self.store_path, create=False)
        try:
            return day_stats(conn, self.params.paths.quarantine, start, end)
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        """Readiness and the store's watermarks (blocking)."""
        report: dict[str, Any] = {"ready": self.ready, "store": _relative(self.store_path, self.params.root)}
        if self.ready:
            conn = store.connect(self.store_path, create=False)
            try:
                report["watermarks"] = store.watermarks(conn)
            finally:
                conn.close()
        return report


def _batch_record(
    batch: CheckedBatch, status: str, landed: int, quarantine: str | None = None
) -> dict[str, Any]:
    return {
        "batch_id": batch.batch_id,
        "received_at": batch.received_at,
        "name": batch.name,
        "format": batch.fmt,
        "status": status,
        "rows": batch.rows,
        "landed": landed,
        "duplicates": batch.rows - landed if status == "accepted" else 0,
        "quarantine": quarantine,
    }


def _items(body: bytes) -> int:
    """How many items a refused body held (for the refused counter): a list's length, else one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return 1
    return len(parsed) if isinstance(parsed, list) else 1


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _ignore(_n: int = 1) -> None:
    return None
