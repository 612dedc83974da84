"""The user's CSV/Parquet event log (or an uploaded JSON-lines batch), mapped onto the canonical columns.

The log is mapped onto canonical names by `ingest.source.columns`. Ingest is strict about the shape
(file exists, mapped columns exist, timestamps parse) but lenient about values: a non-numeric amount
cell becomes NaN, an odd label stays, so that `validate` can quarantine the partition with a report
instead of ingest crashing on one bad cell. Every error names the file and, where it is about one, the
column (and the canonical name it is mapped to). The log is only ever read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.contract import CANONICAL_COLUMNS, COORD_COLUMNS, EVENT_ID, LABEL, REQUIRED_COLUMNS, TIMESTAMP
from pipelines.errors import StageError
from pipelines.sections import SourceParams

NUMERIC_COLUMNS = ("amount", *COORD_COLUMNS)


def _read_header(path: Path, kind: str) -> list[str]:
    """Column names of the log; an unreadable file is a StageError naming it (no parser traceback)."""
    try:
        if kind == "csv":
            return list(pd.read_csv(path, nrows=0).columns)
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except Exception as err:  # unreadable file: name it, don't leak a parser traceback
        raise StageError(f"{path}: cannot read as {kind}: {err}") from None


def _read_columns(path: Path, kind: str, wanted: list[str]) -> pd.DataFrame:
    try:
        if kind == "csv":
            # strings everywhere: card numbers must not turn into floats, bad cells must not abort
            return pd.read_csv(path, usecols=wanted, dtype=str, keep_default_na=True)
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=wanted).to_pandas()
    except Exception as err:
        raise StageError(f"{path}: cannot read as {kind}: {err}") from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    """A JSON-lines file (one event object per line) as read, values untyped beyond JSON's own types."""
    try:
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    except Exception as err:
        raise StageError(f"{path}: cannot read as jsonl: {err}") from None


def read_log(path: Path, kind: str, columns: dict[str, str]) -> pd.DataFrame:
    """Read the mapped columns of a CSV/Parquet/JSON-lines log, untyped (CSV cells stay strings)."""
    if not path.is_file():
        raise StageError(f"{path}: source file not found (ingest.source.path, kind {kind})")
    whole = _read_jsonl(path) if kind == "jsonl" else None  # JSON lines have no header to read apart
    header = list(whole.columns) if whole is not None else _read_header(path, kind)
    missing = {canon: col for canon, col in columns.items() if col not in header}
    if missing:
        listed = ", ".join(f"{col!r} (mapped to {canon})" for canon, col in missing.items())
        raise StageError(
            f"{path}: missing column(s) {listed}; the file has {header}. "
            "Fix ingest.source.columns in params.yaml or the file."
        )
    wanted = list(dict.fromkeys(columns.values()))
    return whole[wanted] if whole is not None else _read_columns(path, kind, wanted)


def _parse_text_timestamps(text: pd.Series, fmt: str | None, where: str) -> pd.Series:
    ts = pd.to_datetime(text, format=fmt, utc=True, errors="coerce")
    retry = ts.isna() & text.notna()
    if fmt is None and retry.any():
        # pandas infers one format from the first value; mixed spellings get a second chance
        ts[retry] = pd.to_datetime(text[retry], format="mixed", utc=True, errors="coerce")
    bad = ts.isna() & text.notna()
    if bad.any():
        examples = [f"row {i}: {v!r}" for i, v in text[bad].head(3).items()]
        expected = f"format {fmt!r}" if fmt else "ISO-8601 or a common date-time format"
        raise StageError(
            f"{where}: {int(bad.sum())} unparsable timestamp(s), expected {expected} "
            f"(ingest.source.timestamp_format): {', '.join(examples)}"
        )
    return ts


def _parse_timestamps(s: pd.Series, fmt: str | None, where: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
    elif pd.api.types.is_numeric_dtype(s):
        raise StageError(
            f"{where}: expected date-time strings or timestamps, got numbers ({s.dtype}); "
            "convert epoch numbers to timestamps first"
        )
    else:
        ts = _parse_text_timestamps(s.astype("string"), fmt, where)
    empty = ts.isna()
    if empty.any():
        raise StageError(
            f"{where}: {int(empty.sum())} row(s) without a timestamp (first at row {empty.idxmax()}); "
            "an event without a time cannot be placed in a date partition"
        )
    # timezone-naive values were localized as UTC above; store microseconds as the contract says
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def _to_numeric(s: pd.Series, where: str) -> pd.Series:
    num = pd.to_numeric(s, errors="coerce")
    if s.notna().any() and num.notna().sum() == 0:
        examples = list(s.dropna().astype(str).head(3))
        raise StageError(f"{where}: expected numbers, no value parses as a number (e.g. {examples})")
    return num.astype(np.float64)


def _to_label(s: pd.Series, where: str) -> pd.Series:
    num = _to_numeric(s, where)
    # integral labels (even "1.0") become int64; nulls stay null (nullable Int64) so validate sees them
    if ((num.dropna() % 1) == 0).all():
        return num.astype("Int64")
    return num


def _to_string(s: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(s) and ((s.dropna() % 1) == 0).all():
        s = s.astype("Int64")  # ids read as floats (1.0) keep their integer spelling
    return s.astype("string")


def _coerce(s: pd.Series, canon: str, timestamp_format: str | None, where: str) -> pd.Series:
    """One mapped column as its canonical type."""
    if canon == TIMESTAMP:
        return _parse_timestamps(s, timestamp_format, where)
    if canon == LABEL:
        return _to_label(s, where)
    if canon in NUMERIC_COLUMNS:
        return _to_numeric(s, where)
    return _to_string(s)


def derive_event_ids(raw: pd.DataFrame) -> pd.Series:
    """Deterministic event ids: a hash of each row's mapped values (identical rows share an id)."""
    cols = [raw[c].astype("string").fillna("\x00") for c in raw.columns]
    joined = cols[0].str.cat(cols[1:], sep="\x1f") if len(cols) > 1 else cols[0]
    return pd.Series(
        [hashlib.blake2b(v.encode(), digest_size=10).hexdigest() for v in joined],
        index=raw.index,
        dtype="string",
    )


def canonicalize(
    raw: pd.DataFrame, columns: dict[str, str], timestamp_format: str | None, origin: str
) -> pd.DataFrame:
    """Rename a user's log to canonical columns and coerce types (pure; `origin` names it in errors).

    Shape problems raise StageError (a missing required mapping, unparsable timestamps, a column with
    no numeric value at all); bad single values are kept (NaN/null) for validate to quarantine.
    """
    missing_req = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing_req:
        raise StageError(f"{origin}: ingest.source.columns must map the required column(s) {missing_req}")
    absent = {canon: col for canon, col in columns.items() if col not in raw.columns}
    if absent:
        raise StageError(f"{origin}: missing column(s) {absent} (canonical: source column)")
    out = {
        canon: _coerce(raw[col], canon, timestamp_format, f"{origin}: column {col!r} (mapped to {canon})")
        for canon, col in columns.items()
    }
    if EVENT_ID not in out:
        mapped = [columns[c] for c in CANONICAL_COLUMNS if c in columns]
        out[EVENT_ID] = derive_event_ids(raw[mapped])
    return pd.DataFrame({c: out[c] for c in CANONICAL_COLUMNS if c in out}).reset_index(drop=True)


def load_log(src: SourceParams, root: Path) -> pd.DataFrame:
    """The user's whole CSV/Parquet log (read-only), mapped to canonical columns."""
    assert src.path is not None  # guaranteed by SourceParams for csv/parquet
    path = Path(src.path) if Path(src.path).is_absolute() else root / src.path
    raw = read_log(path, src.kind, src.columns)
    return canonicalize(raw, src.columns, src.timestamp_format, str(path))
