"""Feast access for every part of the platform: the project's store, its definitions, point-in-time reads.

The store is built programmatically for a project root (absolute registry / online-store paths under
data/feast, the FileSource's glob made absolute under data/features), so stages, Airflow tasks and the
serving process all see the same store whatever their working directory. The offline store is Feast's
DuckDB store (feature_repo/feature_store.yaml): historical joins and materialization are DuckDB queries
over the Parquet partitions.

Point-in-time: a features row is the entity's state AFTER its event; `historical_features` joins each
event at `event_timestamp - 1 µs`, so it sees only strictly earlier events, exactly what the online store
holds when that event is scored live. `OnlineFeatureReader` is the one reader of the online store (the
serving process wraps it with a timeout, a circuit breaker and fallbacks; tests read through it too).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import threading
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import yaml

from pipelines.config import Params
from pipelines.contract import ENTITY_KEY, FEATURE_COLUMNS, FEATURE_VIEW, TIMESTAMP
from pipelines.errors import StageError

if TYPE_CHECKING:
    from feast import FeatureStore

DEFINITIONS_FILE = "definitions.py"

log = logging.getLogger(__name__)


# The point-in-time join pairs every request row with all of its entity's feature rows before keeping the
# latest, so memory grows with rows x history; requests are sent in chunks of whole entities.
_HISTORICAL_CHUNK_ROWS = 250_000
_JOIN_OFFSET = pd.Timedelta(microseconds=1)


def repo_dir(params: Params) -> Path:
    """The Feast repo directory (feature_store.yaml + definitions), from params.feature_store.repo."""
    return params.resolve(params.feature_store.repo)


def repo_config(params: Params) -> Any:
    """Feast RepoConfig from the repo's feature_store.yaml, with absolute paths and params' online store."""
    from feast.repo_config import RepoConfig

    repo = repo_dir(params)
    yaml_path = repo / "feature_store.yaml"
    if not yaml_path.is_file():
        raise StageError(f"feature_store: {yaml_path} not found (params feature_store.repo = {repo})")
    raw = yaml.safe_load(yaml_path.read_text()) or {}
    feast_dir = params.paths.feast
    raw["registry"] = {
        "registry_type": "file",
        "path": str(feast_dir / "registry.db"),
        "cache_ttl_seconds": 60,
    }
    if params.feature_store.online_store == "redis":
        raw["online_store"] = {
            "type": "redis",
            "connection_string": params.feature_store.redis_connection_string,
        }
    else:
        raw["online_store"] = {"type": "sqlite", "path": str(feast_dir / "online.db")}
    raw.setdefault("offline_store", {"type": "duckdb"})
    raw.setdefault("provider", "local")
    return RepoConfig(repo_path=repo, **raw)


def get_store(params: Params) -> FeatureStore:
    """A FeatureStore for the project (creates data/feast/ if needed; does not apply anything)."""
    from feast import FeatureStore

    params.paths.feast.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(params))


def load_definitions(params: Params) -> list[Any]:
    """Import feature_repo/definitions.py by file path (no sys.path edits) and return its Feast objects.

    The FeatureView's ttl is set from params.features.history_days (params.yaml is the only knob), and
    its source must resolve to params.paths.features.
    """
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource
    from feast.infra.offline_stores.file_source import FileSource

    path = repo_dir(params) / DEFINITIONS_FILE
    if not path.is_file():
        raise StageError(f"feature_store: {path} not found (the Feast definitions module)")
    # compiled and run by hand: no sys.path edit, no module cache (fresh objects per call, so setting
    # ttl never leaks between projects), and no __pycache__ written into the repo (a DVC dependency)
    module = types.ModuleType("sluice_feature_repo_definitions")
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)

    objects: list[Any] = []
    for value in vars(module).values():
        if isinstance(value, FeatureView):
            value.ttl = dt.timedelta(days=params.features.history_days)
            source = value.batch_source
            if isinstance(source, FileSource):
                source.file_options.uri = _absolute_source(params, source.path, f"{path}: {source.name!r}")
        if isinstance(value, Entity | FeatureView | FeatureService | DataSource):
            objects.append(value)
    names = {getattr(o, "name", None) for o in objects}
    for required in (FEATURE_VIEW, params.feature_store.feature_service):
        if required not in names:
            raise StageError(
                f"feature_store: {path} defines no {required!r} (found {sorted(map(str, names))})"
            )
    return objects


def _absolute_source(params: Params, declared: str, where: str) -> str:
    """The source's path made absolute (DuckDB reads it relative to the working directory, not the repo);
    its folder (the part before any glob) must be data/features, where pipelines.features writes."""
    parts = Path(declared).parts
    glob_at = next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")), len(parts))
    folder = (repo_dir(params) / Path(*parts[:glob_at])).resolve()
    if folder != params.paths.features.resolve():
        raise StageError(
            f"feature_store: {where} reads {folder}, but features are written to {params.paths.features}"
        )
    return str(folder.joinpath(*parts[glob_at:]))


def apply(params: Params) -> FeatureStore:
    """Register the definitions of feature_repo/ in the project's registry (idempotent)."""
    store = get_store(params)
    store.apply(load_definitions(params))
    return store


@contextlib.contextmanager
def offline_queries() -> Iterator[None]:
    """Run Feast offline-store work, then close the DuckDB connection it ran on.

    Feast's DuckDB store queries through ibis' process-global default backend, which nothing closes: it
    keeps its memory until exit, where duckdb's bindings then report dozens of "leaked" objects. Closing
    it here is safe: ibis opens a fresh one on the next query. Feast resets the warning filters at import;
    ibis' DeprecationWarning about DuckDB's renamed fetch_arrow_table, on every query, is silenced here.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        import ibis

        backend = ibis.options.default_backend
        if backend is not None:
            backend.disconnect()
            ibis.options.default_backend = None


def materialize(store: FeatureStore, start: dt.datetime, end: dt.datetime, views: list[str]) -> None:
    """Materialize `views` for [start, end] (inclusive, Feast's bounds) into the online store.

    Feast announces each view with print(); that goes to this module's log (INFO) instead of stdout,
    where it would break the stage's one-line progress.
    """
    banner = io.StringIO()
    with offline_queries(), contextlib.redirect_stdout(banner):
        store.materialize(start, end, feature_views=views)
    for line in banner.getvalue().splitlines():
        if line.strip():
            log.info("feast: %s", line.strip())


def _to_float_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Feature columns as float64 (NaN where the entity had no state), in FEATURE_COLUMNS order."""
    return pd.DataFrame(
        {c: pd.to_numeric(df[c], errors="coerce").astype("float64") for c in FEATURE_COLUMNS}, index=df.index
    )


def historical_features(
    params: Params, events: pd.DataFrame, store: FeatureStore | None = None
) -> pd.DataFrame:
    """`events` plus the FEATURE_COLUMNS as of 1 µs before each event (same rows, same order).

    Features are float64, NaN when the entity has no earlier event within the view's ttl (or the row's
    entity_id / event_timestamp is null). Pass `store` to reuse one FeatureStore. Each distinct
    (entity_id, event_timestamp) is asked once and the answers are merged back by a row key: the result
    never depends on whether an offline store keeps, drops or merges duplicate and unmatched rows.
    """
    missing = [c for c in (ENTITY_KEY, TIMESTAMP) if c not in events.columns]
    if missing:
        raise StageError(f"historical_features: events lack columns {missing}; has {list(events.columns)}")
    clash = [c for c in FEATURE_COLUMNS if c in events.columns]
    if clash:
        raise StageError(f"historical_features: events already have feature columns {clash}")
    out = events.copy()
    if events.empty:
        for c in FEATURE_COLUMNS:
            out[c] = pd.Series(dtype="float64")
        return out

    ts = pd.to_datetime(events[TIMESTAMP], utc=True)
    keys = pd.DataFrame({ENTITY_KEY: events[ENTITY_KEY].astype(str).to_numpy(), TIMESTAMP: ts.to_numpy()})
    request_id = keys.groupby([ENTITY_KEY, TIMESTAMP], sort=True).ngroup().to_numpy()
    requests = (
        keys.assign(_request=request_id)
        .drop_duplicates("_request")
        .query("_request >= 0")  # null keys: nothing to ask, their features stay NaN
        .sort_values([ENTITY_KEY, TIMESTAMP], kind="stable")
        .reset_index(drop=True)
    )
    requests[TIMESTAMP] = (
        pd.to_datetime(requests[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]") - _JOIN_OFFSET
    )

    store = store or get_store(params)
    service = _service(store, params)
    answers = []
    # chunks of whole entities (requests are sorted by entity) bound the join's memory
    entity_codes = requests[ENTITY_KEY].factorize()[0]
    chunk_of = _chunk_ids(entity_codes, _HISTORICAL_CHUNK_ROWS)
    for _, chunk in requests.groupby(chunk_of, sort=True):
        with offline_queries():
            job = store.get_historical_features(entity_df=chunk.reset_index(drop=True), features=service)
            answers.append(job.to_df()[["_request", *FEATURE_COLUMNS]])
    answer = pd.concat(answers, ignore_index=True) if answers else pd.DataFrame(columns=["_request"])
    if answer["_request"].duplicated().any():
        raise StageError("historical_features: Feast returned more than one row per request")

    found = answer.set_index("_request").reindex(request_id)
    feats = _to_float_frame(found.reset_index(drop=True))
    feats.index = out.index
    for c in FEATURE_COLUMNS:
        out[c] = feats[c]
    if len(out) != len(events) or not out.index.equals(events.index):
        raise StageError(f"historical_features: {len(events)} events in, {len(out)} rows out")
    return out


def _service(store: FeatureStore, params: Params) -> Any:
    """The FeatureService named in params, or a StageError saying the store was never applied."""
    name = params.feature_store.feature_service
    try:
        return store.get_feature_service(name)
    except Exception as err:  # Feast raises its own not-found types (and registry-file errors)
        raise StageError(
            f"feature_store: feature service {name!r} not in the registry under {params.paths.feast} "
            f"({type(err).__name__}); run the feature_store stage (apply + materialize) first"
        ) from err


def _chunk_ids(entity_codes: Any, max_rows: int) -> Any:
    """Chunk number per request row: consecutive entities grouped until a chunk holds about max_rows."""
    import numpy as np

    chunk = np.empty(len(entity_codes), dtype=np.int64)
    current, size, prev = 0, 0, None
    for i, code in enumerate(entity_codes):
        if code != prev and size >= max_rows:
            current, size = current + 1, 0
        chunk[i] = current
        size += 1
        prev = code
    return chunk


class OnlineFeatureReader:
    """The one reader of the online store: FEATURE_COLUMNS of entities, as a float64 matrix.

    Rows = `entity_ids` in order, columns = FEATURE_COLUMNS; NaN for an unknown entity (the empty state a
    new entity has) or a missing value: the state after each entity's last materialized event. ONE
    FeatureStore per reader (building one per call costs milliseconds), opened on the first call; the
    response proto is read directly (`to_dict()` costs ~60 us/entity of protobuf conversion, this ~10).
    The serving process wraps it with a timeout, a circuit breaker and fallbacks (pipelines.serving).
    """

    def __init__(self, params: Params) -> None:
        self.params = params
        self._store: Any = None
        self._service: Any = None
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    store = get_store(self.params)
                    self._service = _service(store, self.params)
                    self._store = store
                    tolerate_sqlite_timestamps()

    def __call__(self, entity_ids: list[str]) -> OnlineRows:
        self._ensure()
        resp = self._store.get_online_features(
            features=self._service, entity_rows=[{ENTITY_KEY: e} for e in entity_ids]
        )
        proto = resp.proto
        position = {name: j for j, name in enumerate(proto.metadata.feature_names.val)}
        missing = [c for c in FEATURE_COLUMNS if c not in position]
        if missing:
            raise StageError(f"online store: feature service lacks columns {missing}")
        out = np.full((len(entity_ids), len(FEATURE_COLUMNS)), np.nan)
        found = np.zeros(len(entity_ids), dtype=bool)
        for j, c in enumerate(FEATURE_COLUMNS):
            result = proto.results[position[c]]
            if len(result.values) != len(entity_ids):
                raise StageError(
                    f"online store: asked {len(entity_ids)} entities, got {len(result.values)} values of {c}"
                )
            out[:, j] = _proto_column(result.values)
            # no event timestamp on any feature = the store holds no row of the entity (never materialized).
            # Not the statuses: Feast's Redis store answers PRESENT (with empty values) for unknown keys
            n = len(entity_ids)
            found |= np.fromiter((ts.seconds != 0 for ts in result.event_timestamps), dtype=bool, count=n)
        return OnlineRows(out, found)


class OnlineRows(NamedTuple):
    """An online lookup: `values` (entities x FEATURE_COLUMNS, NaN = no value) and `found` (the store
    holds a row of the entity; False = an entity it has never seen)."""

    values: np.ndarray
    found: np.ndarray


def _proto_column(values: Any) -> list[float]:
    """One feature's values of a response proto; NaN where the value is unset (unknown entity / missing)."""
    nan = np.nan
    col = []
    for v in values:
        kind = v.WhichOneof("val")  # None = no value (unknown entity / missing feature)
        col.append(getattr(v, kind) if kind is not None else nan)
    return col


def tolerate_sqlite_timestamps() -> None:
    """Make sqlite3's process-global "timestamp" converter accept ISO strings as well as epochs.

    Importing Feast's SQLite online store registers a converter that only parses epoch integers; BentoML's
    task result store (a TIMESTAMP column filled by CURRENT_TIMESTAMP) then fails to read its rows in the
    same process. Both formats are parsed here, so Feast and BentoML tasks can share a process.
    """
    import sqlite3

    try:
        import feast.infra.online_stores.sqlite  # noqa: F401  (registers Feast's converter first)
    except Exception:
        return

    def convert(val: bytes) -> dt.datetime:
        try:
            return dt.datetime.fromtimestamp(int(val))
        except ValueError:
            return dt.datetime.fromisoformat(val.decode())

    sqlite3.register_converter("timestamp", convert)
