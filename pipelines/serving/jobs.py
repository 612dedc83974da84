"""The serving job: score a Parquet/CSV file of requests through the online path into a Parquet file.

Rows go through `ServingEngine.predict` in chunks of serve.max_records (same routing, features, cache, log
and metrics as live requests, logged with source "job"). Input and output must lie under the project
root: a job endpoint must not read or write arbitrary files.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.config import Params
from pipelines.errors import StageError
from pipelines.serving.schema import ScoreRequest, ScoreResponse

# ServingEngine.predict: (records, source=...) -> the answers
Predict = Callable[..., Awaitable[list[ScoreResponse]]]


def score_file(
    predict: Predict, params: Params, input_path: str | Path, output_path: str | Path
) -> dict[str, Any]:
    """Score a file of requests (columns = ScoreRequest fields) through `predict`; write the answers."""
    src = _inside(params.root, input_path, "input_path")
    dst = _inside(params.root, output_path, "output_path")
    records: Sequence[ScoreRequest] = read_requests(src)
    results: list[ScoreResponse] = []
    step = params.serve.max_records

    async def run_all() -> None:
        for k in range(0, len(records), step):
            results.extend(await predict(records[k : k + step], source="job"))

    asyncio.run(run_all())
    out = pd.DataFrame([r.model_dump() for r in results])
    _write_parquet(dst, out)
    return {
        "rows": len(out),
        "output_path": str(dst),
        "flagged": int(out["decision"].sum()) if len(out) else 0,
    }


def read_requests(src: Path) -> list[ScoreRequest]:
    """The requests of a .parquet/.csv file (`event_timestamp` accepted for `timestamp`; other columns
    ignored); StageError naming the file and row when one is invalid."""
    frame = _read_frame(src)
    if "timestamp" not in frame.columns and "event_timestamp" in frame.columns:
        frame = frame.rename(columns={"event_timestamp": "timestamp"})
    allowed = set(ScoreRequest.model_fields)
    frame = frame[[c for c in frame.columns if c in allowed]]
    missing = [c for c in ("entity_id", "amount") if c not in frame.columns]
    if missing:
        raise StageError(f"input_path {src}: missing column(s) {missing}")
    records: list[ScoreRequest] = []
    for n, row in enumerate(frame.to_dict(orient="records")):
        clean = {k: (None if _isnull(v) else v) for k, v in row.items()}
        if "entity_id" in clean and clean["entity_id"] is not None:
            clean["entity_id"] = str(clean["entity_id"])
        try:
            records.append(ScoreRequest.model_validate(clean))
        except Exception as err:
            raise StageError(f"input_path {src}: row {n}: {err}") from None
    return records


def _read_frame(src: Path) -> pd.DataFrame:
    if not src.is_file():
        raise StageError(f"input_path {src}: file not found")
    if src.suffix == ".parquet":
        return pd.read_parquet(src)
    if src.suffix == ".csv":
        return pd.read_csv(src)
    raise StageError(f"input_path {src}: expected a .parquet or .csv file")


def _write_parquet(dst: Path, frame: pd.DataFrame) -> None:
    from pipelines.io import atomic_write_bytes

    dst.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(dst, buf.getvalue())


def _isnull(v: Any) -> bool:
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _inside(root: Path, path: str | Path, what: str) -> Path:
    p = Path(path)
    p = (p if p.is_absolute() else root / p).resolve()
    if not p.is_relative_to(root.resolve()):
        raise StageError(f"{what} {p}: must lie under the project root {root}")
    return p
