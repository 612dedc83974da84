"""Batch uploads: a CSV / Parquet / JSON-lines file, checked whole with the GX suite before any row lands.

The file is read as the configured source's log is (pipelines.sources.log: the params' column mapping and
timestamp_format; with the synthetic source, the canonical column names), then validated as one frame with
the suite by the validate stage's code (engines.gx_suite), in the form a raw partition is read back in.
Accepted: the service lands all its rows in one transaction. Refused (a file that cannot be read or mapped,
or any failed expectation): nothing of it lands, and the file is kept with its validation result under
data/landing/quarantine/batch=<id>/.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines import io
from pipelines.contract import CANONICAL_COLUMNS
from pipelines.engines.gx_suite import failed_expectations, suite_for_columns, validate_frames
from pipelines.errors import StageError
from pipelines.sections import SourceParams
from pipelines.sources.log import canonicalize, read_log

FORMATS: tuple[str, ...] = ("csv", "parquet", "jsonl")
CONTENT_TYPES: dict[str, str] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-jsonlines": "jsonl",
}
SUFFIXES: dict[str, str] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}
SUFFIXES[".ndjson"] = "jsonl"
RESULT_FILE = "validation_result.json"
_GX_LOCK = threading.Lock()  # one GX validation at a time per process (its context is not thread-safe)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UnsupportedFormat(ValueError):
    """The upload's format cannot be told or is not one of FORMATS (answered 415)."""


def batch_format(content_type: str | None, filename: str | None, explicit: str | None) -> str:
    """The upload's format: `format` given, else its Content-Type, else its file name's suffix."""
    if explicit:
        if explicit not in FORMATS:
            raise UnsupportedFormat(f"format {explicit!r}: expected one of {list(FORMATS)}")
        return explicit
    media = (content_type or "").split(";")[0].strip().lower()
    if media in CONTENT_TYPES:
        return CONTENT_TYPES[media]
    suffix = Path(filename or "").suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    raise UnsupportedFormat(
        f"cannot tell the batch's format from Content-Type {media or None!r} or name {filename!r}: send "
        f"one of {sorted(CONTENT_TYPES)}, a file named *.csv|*.parquet|*.jsonl, "
        f"or ?format={'|'.join(FORMATS)}"
    )


@dataclass
class CheckedBatch:
    """An upload after its check: the canonical frame (when it could be read) and what failed."""

    batch_id: str
    name: str
    fmt: str
    path: Path
    received_at: float
    frame: pd.DataFrame | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)
    gx_result: dict[str, Any] | None = None
    evaluated: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.frame is not None and not self.failed

    @property
    def rows(self) -> int:
        return 0 if self.frame is None else len(self.frame)


class BatchChecker:
    """Reads and validates uploads for one project (source mapping, suite, landing directories)."""

    def __init__(
        self,
        source: SourceParams,
        suite: dict[str, Any],
        parameters: dict[str, Any],
        landing_dir: Path,
        quarantine_dir: Path,
    ) -> None:
        synthetic = source.kind == "synthetic"  # no log to mirror: the canonical names
        self.mapping = {c: c for c in CANONICAL_COLUMNS} if synthetic else dict(source.columns)
        self.timestamp_format = None if synthetic else source.timestamp_format
        self.suite = suite
        self.parameters = parameters
        self.incoming = landing_dir / "incoming"
        self.quarantine_dir = quarantine_dir

    def check(self, data: bytes, fmt: str, name: str | None) -> CheckedBatch:
        """Keep the upload as a file, read it through the column mapping, validate it whole (blocking)."""
        batch_id = uuid.uuid4().hex
        safe = _SAFE_NAME.sub("_", Path(name or f"batch.{fmt}").name)[:128] or f"batch.{fmt}"
        path = self.incoming / f"{batch_id}.{fmt}"
        io.atomic_write_bytes(path, data)
        batch = CheckedBatch(batch_id, safe, fmt, path, time.time())
        try:
            raw = read_log(path, fmt, self.mapping)
            batch.frame = canonicalize(raw, self.mapping, self.timestamp_format, f"batch {safe}")
        except StageError as err:
            text = str(err).replace(str(path), safe)  # the caller knows its file by its name
            batch.failed = [{"type": "readable_batch", "column": None, "error": text}]
            return batch
        # validate what a raw partition of these rows reads back as (io.write_partition drops pandas'
        # metadata: strings come back as objects, a nullable Int64 without nulls as int64)
        table = pa.Table.from_pandas(batch.frame, preserve_index=False).replace_schema_metadata(None)
        as_partition = table.to_pandas()
        with _GX_LOCK:
            result = validate_frames({batch_id: as_partition}, self.suite, self.parameters)[batch_id]
        batch.gx_result = result
        batch.failed = failed_expectations(result)
        batch.evaluated = len(result.get("results", []))
        batch.skipped = suite_for_columns(self.suite, list(batch.frame.columns))[1]
        return batch

    def quarantine(self, batch: CheckedBatch) -> Path:
        """Move a refused upload to quarantine/batch=<id>/ with its validation result; the directory."""
        dest = self.quarantine_dir / f"batch={batch.batch_id}"
        report = {
            "batch_id": batch.batch_id,
            "name": batch.name,
            "format": batch.fmt,
            "received_at": batch.received_at,
            "rows": batch.rows if batch.frame is not None else None,
            "success": False,
            "failed": batch.failed,
            "gx_result": batch.gx_result,
        }
        with io.atomic_dir(dest) as tmp:
            batch.path.replace(tmp / batch.name)
            io.atomic_write_json(tmp / RESULT_FILE, report)
        return dest

    def discard(self, batch: CheckedBatch) -> None:
        """Remove an accepted upload's file (its rows are in the store)."""
        batch.path.unlink(missing_ok=True)
