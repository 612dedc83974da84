"""The checks `submit` makes before it accepts a batch job: a bad request is a JobError, never a failed job.

Each check raises a JobError naming the request field and what was expected (pipelines.ops.job_store):
the model spec is pinned to one registered version (`pin_model`), input and output must resolve (symlinks
and `..` followed) under params.serve.job_roots with a .parquet/.csv suffix (`resolve_path`), the input's
schema/header must hold the columns the release needs, `timestamp` accepted for event_timestamp
(`check_input`), an existing output is refused: a job never overwrites a file (`output_path`), and the
batch size must be sane (`check_batch_size`). pipelines.ops.batch_jobs.submit runs them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import Params
from pipelines.contract import ENTITY_KEY, EVENT_ID, FEATURE_COLUMNS, TIMESTAMP
from pipelines.errors import StageError
from pipelines.ops.job_store import jobs_root, refused

SUFFIXES: tuple[str, ...] = (".parquet", ".csv")
TIMESTAMP_ALIAS = "timestamp"
# rows per model call and per Arrow batch: beyond this one worker's memory is at risk
MAX_BATCH_SIZE = 1_000_000
CSV_SAMPLE_ROWS = 100  # CSV types are checked on the first rows (a Parquet file has a typed schema)


@dataclass(frozen=True)
class PinnedModel:
    """The registered version a job scores with, and the event columns (with their kind) it needs."""

    name: str
    version: str
    threshold: float
    fingerprint: str | None
    input_columns: tuple[str, ...]  # the release's raw inputs, event and Feast columns (score_spark prunes)
    event_columns: dict[str, str]  # column the input file must hold -> "timestamp" | "number" | "any"


# (tracking URI, name, version, fingerprint) -> what the release needs: a version's artifacts never change
# (the fingerprint guards that), so each is loaded once per process; its tags are read at every submit
_NEEDS: dict[tuple[str, str, str, str | None], tuple[tuple[str, ...], dict[str, str]]] = {}


def parse_model(params: Params, model: str) -> tuple[str, str | None, str | None]:
    """`<name>`, `<name>@<alias>` or `<name>/<version>` -> (name, alias, version), alias or version set."""
    text = model.strip() if isinstance(model, str) else ""
    name, alias, version = text, None, None
    if "@" in text:
        name, alias = text.split("@", 1)
    elif "/" in text:
        name, version = text.split("/", 1)
    expected = params.register_.model_name
    if not text or name != expected:
        raise refused("model", model, f"unknown; expected {expected}[@<alias>|/<version>]", 404)
    if (version is not None and not version.isdigit()) or alias == "":
        raise refused("model", model, f"expected {expected}@<alias> or {expected}/<version number>")
    if alias is None and version is None:
        alias = params.batch_predict.alias
    return name, alias, version


def pin_model(params: Params, model: str) -> PinnedModel:
    """Resolve the model spec to one registered version (its release loaded once per process)."""
    from pipelines import artifacts
    from pipelines.engines.registry import open_registry

    name, alias, version = parse_model(params, model)
    try:
        registered = artifacts.resolve_version(
            open_registry(params), name, alias=alias, version=version, require_tags=("threshold",)
        )
    except StageError as err:  # no such alias, or a version without release tags
        raise refused("model", model, str(err), 404) from None
    except Exception as err:  # MLflow's MlflowException for an unknown version
        if getattr(err, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise refused("model", model, f"registered model {name!r} has no version {version}", 404) from None
    key = (params.tracking_uri, registered.name, registered.version, registered.fingerprint)
    if key not in _NEEDS:
        release = artifacts.load_version(params, registered)  # the fingerprint is checked here, not later
        _NEEDS[key] = (tuple(release.input_columns), _event_columns(release))
    inputs, events = _NEEDS[key]
    threshold = float(registered.tags["threshold"])
    return PinnedModel(registered.name, registered.version, threshold, registered.fingerprint, inputs, events)


def _event_columns(release: Any) -> dict[str, str]:
    """Columns the input file must hold: the join keys and the release's inputs that Feast does not give."""
    spec = release.spec
    stamps = set(spec.timestamp_inputs())
    categorical = {f.inputs[0] for f in spec.features if f.op == "category"}
    kinds = {ENTITY_KEY: "any", TIMESTAMP: "timestamp"}
    for column in release.input_columns:
        if column not in FEATURE_COLUMNS and column not in kinds:
            kinds[column] = "timestamp" if column in stamps else "any" if column in categorical else "number"
    return kinds


def resolve_path(params: Params, uri: str, field: str) -> Path:
    """`uri` (relative to the project root, absolute, or file://) resolved, under a job root, right suffix."""
    roots = [params.resolve(r).resolve() for r in params.serve.job_roots]
    allowed = f"a .parquet or .csv file under {list(params.serve.job_roots)} (params serve.job_roots)"
    text = uri.strip() if isinstance(uri, str) else ""
    if not text:
        raise refused(field, uri, f"empty path; expected {allowed}")
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        raise refused(field, uri, f"only local paths are accepted; expected {allowed}")
    path = Path(text)
    path = (path if path.is_absolute() else params.root / path).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise refused(field, uri, f"outside the allowed folders; expected {allowed}")
    if path.suffix.lower() not in SUFFIXES:
        raise refused(field, uri, f"suffix {path.suffix!r} not accepted; expected {allowed}")
    return path


def check_input(path: Path, uri: str, pinned: PinnedModel) -> tuple[str, list[str]]:
    """Refuse an input file that cannot be scored (reads only its schema or header + first rows).

    Returns the file's timestamp column (event_timestamp, or its alias `timestamp`) and the columns the
    runner reads (event_id too when present: it is passed through; other columns are ignored).
    """
    if not path.is_file():
        raise refused("input_uri", uri, "file not found")
    head = _parquet_head if path.suffix.lower() == ".parquet" else _csv_head
    names, types, rows = head(path, uri)
    stamp = TIMESTAMP if TIMESTAMP in names or TIMESTAMP_ALIAS not in names else TIMESTAMP_ALIAS
    needed = {(stamp if c == TIMESTAMP else c): kind for c, kind in pinned.event_columns.items()}
    missing = [c for c in needed if c not in names]
    if missing:
        what = f"missing column(s) {missing}; expected {list(pinned.event_columns)}"
        raise refused("input_uri", uri, f"{what} ({TIMESTAMP!r} may be named {TIMESTAMP_ALIAS!r})")
    if rows == 0:
        raise refused("input_uri", uri, "the file holds no rows")
    for column, kind in needed.items():
        if (found := types(column, kind)) is not None:
            raise refused("input_uri", uri, f"column {column!r} holds {found}, expected a {kind}")
    return stamp, [c for c in names if c == EVENT_ID] + list(needed)


def _parquet_head(path: Path, uri: str) -> tuple[list[str], Any, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for a file that is not Parquet
        raise refused("input_uri", uri, f"not a readable Parquet file ({err})") from None
    schema = meta.schema.to_arrow_schema()

    def wrong_type(column: str, kind: str) -> str | None:
        t = schema.field(column).type
        ok = {
            "number": pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t),
            "timestamp": pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_string(t),
        }.get(kind, True)
        return None if ok or pa.types.is_null(t) else f"{t} values"

    return list(schema.names), wrong_type, meta.num_rows


def _csv_head(path: Path, uri: str) -> tuple[list[str], Any, int]:
    import pandas as pd

    try:
        sample = pd.read_csv(path, nrows=CSV_SAMPLE_ROWS, dtype=str)
    except Exception as err:  # pandas' ParserError / EmptyDataError
        raise refused("input_uri", uri, f"not a readable CSV file ({err})") from None

    def wrong_value(column: str, kind: str) -> str | None:
        values = sample[column].dropna()
        if kind == "number":
            bad = values[pd.to_numeric(values, errors="coerce").isna()]
        elif kind == "timestamp":
            bad = values[pd.to_datetime(values, errors="coerce", utc=True, format="mixed").isna()]
        else:
            return None
        return f"{bad.iloc[0]!r} (row {bad.index[0]})" if len(bad) else None

    return list(sample.columns), wrong_value, len(sample)


def output_path(params: Params, output_uri: str | None, job_id: str, src: Path) -> Path:
    """Where the job publishes: `output_uri` checked like the input and refused when it exists already."""
    if output_uri is None:
        return jobs_root(params) / job_id / "predictions.parquet"
    dst = resolve_path(params, output_uri, "output_uri")
    if dst == src or dst.exists() or dst.is_symlink():
        raise refused("output_uri", output_uri, "already exists; expected a new file (never overwritten)")
    parent = next(p for p in dst.parents if p.exists())
    if not parent.is_dir():
        raise refused("output_uri", output_uri, f"{parent} is not a folder")
    return dst


def check_batch_size(batch_size: Any) -> int:
    """Rows per model call (and per Arrow batch): an int in [1, MAX_BATCH_SIZE]."""
    ok = isinstance(batch_size, int) and not isinstance(batch_size, bool) and 0 < batch_size <= MAX_BATCH_SIZE
    if not ok:
        raise refused("batch_size", batch_size, f"expected an integer in [1, {MAX_BATCH_SIZE}]")
    return int(batch_size)
