"""Small I/O helpers shared by the stages: date ranges, partitions, atomic writes.

Every output goes through a temp path in the same directory and a rename, so a crash never leaves a
half-written partition or report behind, and a rerun of a range replaces its partitions whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PART_FILE = "part-0.parquet"


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    """The dates of the half-open range [start, end)."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def partition_dir(base: Path, day: dt.date) -> Path:
    """Hive-style partition directory (`date=YYYY-MM-DD`), readable by Spark and pyarrow alike."""
    return base / f"date={day.isoformat()}"


def partition_date(path: Path) -> dt.date:
    """Inverse of `partition_dir`: the date of a `date=YYYY-MM-DD` directory."""
    name = path.name
    if not name.startswith("date="):
        raise ValueError(f"{path}: not a date partition (expected a directory named date=YYYY-MM-DD)")
    return dt.date.fromisoformat(name.removeprefix("date="))


def existing_partitions(base: Path, start: dt.date, end: dt.date) -> list[Path]:
    """Partition directories under `base` whose date lies in [start, end), oldest first."""
    return [p for d in days(start, end) if (p := partition_dir(base, d)).is_dir()]


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temp directory next to `dest`; on success it replaces `dest` whole, on error it vanishes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.parent / f".old-{dest.name}-{uuid.uuid4().hex[:8]}"
            dest.rename(old)
        tmp.rename(dest)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_table(table: pa.Table, path: Path) -> None:
    """Write one Parquet file deterministically: same rows in, same bytes out."""
    # microsecond timestamps: Spark cannot read pandas' default nanoseconds
    pq.write_table(table, path, compression="zstd", coerce_timestamps="us", allow_truncated_timestamps=True)


def write_partition(df: pd.DataFrame, base: Path, day: dt.date) -> Path:
    """Atomically replace the `day` partition under `base` with `df` (one Parquet file)."""
    dest = partition_dir(base, day)
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    with atomic_dir(dest) as tmp:
        write_table(table, tmp / PART_FILE)
    return dest


def read_partitions(
    base: Path, start: dt.date, end: dt.date, columns: list[str] | None = None
) -> pd.DataFrame:
    """Concatenate the partitions of [start, end) under `base` (empty frame when there are none)."""
    parts = existing_partitions(base, start, end)
    if not parts:
        return pd.DataFrame(columns=columns or [])
    tables = [pq.read_table(p / PART_FILE, columns=columns) for p in parts]
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temp file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    """Pretty, key-sorted JSON (stable bytes for DVC metrics and diffs)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
