"""The prediction log: every served prediction as one JSON line, for monitoring and the canary.

Layout: `data/prediction_log/date=YYYY-MM-DD/predictions-<HHMMSS>-<pid>-<seq>.jsonl` (UTC date the
prediction was served). A background thread drains an in-memory queue every `serve.log_flush_s` and
appends whole lines, so the request path only pays a queue put; a file is closed and a new one started
when it reaches `serve.log_rotate_bytes` or the date changes. One writer per process: files never have
two writers, whatever the number of server workers.

A row holds the prediction id, served_at, the request (event_id, entity_id, event_timestamp, amount,
merchant, category, coordinates), the Feast feature columns the model saw (null = missing), score,
decision, threshold, model_name, model_version, arm, feature_source, cached, challenger_fallback,
latency_ms and source (api | api_batch | job): the columns of data/dataset plus the serving facts. Keys
never appear (the log has no request headers). `log_row` builds a row;
`pipelines.artifacts.read_prediction_log` reads them back as a DataFrame (monitoring, the canary).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from pipelines.serving.schema import ScoreRequest, ScoreResponse

log = logging.getLogger(__name__)

try:  # ~5x faster than json for these rows (NaN -> null too); in the lock as a transitive dependency
    import orjson

    def _dumps(row: dict[str, Any]) -> bytes:
        return orjson.dumps(row, default=str)

except ImportError:  # pragma: no cover - the stdlib fallback

    def _dumps(row: dict[str, Any]) -> bytes:
        return json.dumps(row, separators=(",", ":"), default=str).encode()


class PredictionLogWriter:
    """Append-only, size-rotated JSONL writer fed from the request path through a queue."""

    def __init__(
        self, directory: Path, rotate_bytes: int, flush_s: float = 1.0, max_queue: int = 1_000_000
    ) -> None:
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.flush_s = flush_s
        self._queue: queue.Queue[list[dict[str, Any]]] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._file: Any = None
        self._path: Path | None = None
        self._date: str | None = None
        self._seq = 0
        self.written = 0
        self.dropped = 0
        self.files: list[str] = []
        self.last_error: str | None = None
        self._flush_lock = threading.Lock()

    # ---- request path ----------------------------------------------------------------------------

    def write_many(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows (never blocks: when the writer cannot keep up, rows are counted as dropped)."""
        try:
            self._queue.put_nowait(rows)
        except queue.Full:
            self.dropped += len(rows)

    # ---- writer thread ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sluice-prediction-log", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()
        self.flush()

    def flush(self) -> int:
        """Write everything queued so far; returns the number of rows written."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> int:
        batches: list[list[dict[str, Any]]] = []
        while True:
            try:
                batches.append(self._queue.get_nowait())
            except queue.Empty:
                break
        n = 0
        for rows in batches:
            for row in rows:
                try:
                    self._write_line(_dumps(row))
                    n += 1
                except Exception as err:  # disk full, permissions: count, keep serving
                    self.dropped += 1
                    self.last_error = f"{type(err).__name__}: {err}"[:300]
        if self._file is not None:
            self._file.flush()
        self.written += n
        return n

    def _write_line(self, line: bytes) -> None:
        today = dt.datetime.now(dt.UTC).date().isoformat()
        if self._file is None or self._date != today or self._file.tell() >= self.rotate_bytes:
            self._rotate(today)
        self._file.write(line + b"\n")

    def _rotate(self, today: str) -> None:
        if self._file is not None:
            self._file.close()
        self._seq += 1
        d = self.directory / f"date={today}"
        d.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%H%M%S")
        self._path = d / f"predictions-{stamp}-{os.getpid()}-{self._seq:04d}.jsonl"
        self._file = self._path.open("ab")
        self._date = today
        self.files.append(str(self._path))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._flush_lock:
            self._flush()
            if self._file is not None:
                self._file.close()
                self._file = None

    def status(self) -> dict[str, Any]:
        return {
            "ok": self.last_error is None,
            "enabled": True,
            "directory": str(self.directory),
            "current_file": str(self._path) if self._path else None,
            "written": self.written,
            "queued_batches": self._queue.qsize(),
            "dropped": self.dropped,
            "error": self.last_error,
        }


def log_row(
    request: ScoreRequest,
    response: ScoreResponse,
    feature_columns: Sequence[str],
    feats: np.ndarray,
    now: dt.datetime,
    source: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The log row of one served prediction (layout above); `feats` = the feature values the model saw;
    `request_id` = the HTTP request's X-Request-ID (ties a logged prediction to an access-log line)."""
    row: dict[str, Any] = {
        "prediction_id": response.prediction_id,
        "request_id": request_id,
        "served_at": now.isoformat(),
        "event_id": request.event_id,
        "entity_id": request.entity_id,
        "event_timestamp": (request.timestamp or now).isoformat(),
        "amount": request.amount,
        "merchant": request.merchant,
        "category": request.category,
        "latitude": request.latitude,
        "longitude": request.longitude,
        "merchant_latitude": request.merchant_latitude,
        "merchant_longitude": request.merchant_longitude,
    }
    for c, v in zip(feature_columns, feats.tolist(), strict=True):
        row[c] = None if math.isnan(v) else v
    row.update(
        score=response.score,
        decision=response.decision,
        threshold=response.threshold,
        model_name=response.model_name,
        model_version=response.model_version,
        arm=response.arm,
        feature_source=response.feature_source,
        cached=response.cached,
        challenger_fallback=response.challenger_fallback,
        latency_ms=round(response.latency_ms, 3),
        source=source,
    )
    return row


def wait_flushed(writer: PredictionLogWriter, timeout_s: float = 5.0) -> None:
    """Block until the writer's queue is empty (tests)."""
    deadline = time.monotonic() + timeout_s
    while writer._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.flush()
