"""Online serving logic: routing, cache, resilient feature lookup, scoring through the one predict path.

The BentoML service in bentos/fraud_scorer/ is a thin shell around `ServingEngine`; nothing here imports
BentoML, so the logic is testable (and benchmarkable) on its own and the import rule of DESIGN.md holds
(pipelines never import bentos/).

Request flow of one (adaptive) batch, `ServingEngine.predict(records)`:

1. route each record: `bucket(entity_id) < challenger weight` -> challenger, else champion (sticky: the
   bucket is a stable hash of the entity id, never Python's salted `hash()`);
2. answer from the TTL cache keyed by (release version, canonical request) where possible: the version
   is part of the key, so a new release can never be answered from an old release's entries;
3. fetch the Feast online features of the remaining entities in ONE lookup (timeout + circuit breaker);
   when the store is down or slow, the in-process last-known features of the entity (or the empty
   state a brand-new entity has, which training saw too) are used and the answer is flagged;
4. score each arm's rows with `Release.score` (pipelines.model.release, the path training/batch use); a
   challenger that fails or is slower than its budget is replaced by the champion's answer;
5. cache, log (background JSONL writer, pipelines.serving_log), count (pipelines.serving_metrics).

Aliases and the challenger weight (registry rollout tags) are re-read every `serve.refresh_s` by a daemon
thread; new releases are loaded before the swap, so an alias move changes answers without a restart and
without a failed request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import gc
import hashlib
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.config import Params
from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.errors import StageError

if TYPE_CHECKING:
    from pipelines.engines.registry import Registry
    from pipelines.model.release import Release
    from pipelines.serving_log import PredictionLogWriter
    from pipelines.serving_metrics import ServingMetrics

log = logging.getLogger(__name__)

# where the features a prediction used came from
SOURCE_ONLINE = "online"  # the online store answered (an unknown entity gets the empty state: still fresh)
SOURCE_LAST_KNOWN = "last_known"  # store unreachable/slow: this process's last answer for the entity
SOURCE_DEFAULT = "default"  # store unreachable and nothing known: the empty state of a new entity

# `source` of a scoring call -> the endpoint label of its metrics
_ENDPOINTS = {"api": "predict", "api_batch": "predict_batch", "job": "score_file"}
# request-time fields (besides entity_id) that become canonical event columns of the scoring frame
_FLOAT_FIELDS: tuple[str, ...] = ("latitude", "longitude", "merchant_latitude", "merchant_longitude")


class NotReady(RuntimeError):
    """No champion release is loaded yet (the service answers 503 and /readyz is false)."""


# --------------------------------------------------------------------------------------------------
# Request / response schema (pydantic: BentoML validates it before batching, so one bad record fails
# only its own request, and the error names the field)
# --------------------------------------------------------------------------------------------------


class ScoreRequest(BaseModel):
    """One event to score: the entity id and the request-time fields (the rest comes from Feast)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity_id: str = Field(
        min_length=1, max_length=256, description="The entity (card) the event belongs to."
    )
    amount: float = Field(ge=0, allow_inf_nan=False, description="Transaction amount.")
    timestamp: dt.datetime | None = Field(
        None, description="Event time (ISO 8601; naive = UTC). Omitted: the server's receive time."
    )
    merchant: str | None = Field(None, max_length=256)
    category: str | None = Field(None, max_length=256)
    latitude: float | None = Field(None, ge=-90, le=90, description="Cardholder home latitude.")
    longitude: float | None = Field(None, ge=-180, le=180, description="Cardholder home longitude.")
    merchant_latitude: float | None = Field(None, ge=-90, le=90)
    merchant_longitude: float | None = Field(None, ge=-180, le=180)
    event_id: str | None = Field(None, max_length=256, description="Client event id (joins late labels).")

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is None:
            return None
        return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)

    def canonical(self) -> tuple[Any, ...]:
        """The cache identity of the request: every field the score depends on (not event_id)."""
        return (
            self.entity_id,
            self.amount,
            self.timestamp,
            self.merchant,
            self.category,
            self.latitude,
            self.longitude,
            self.merchant_latitude,
            self.merchant_longitude,
        )


class ScoreResponse(BaseModel):
    """One scored event."""

    prediction_id: str
    event_id: str | None = None
    entity_id: str
    score: float = Field(description="Fraud probability in [0, 1].")
    decision: int = Field(description="1 when score >= threshold (flag the event), else 0.")
    threshold: float
    model_name: str
    model_version: str
    arm: Literal["champion", "challenger"] = Field(description="The release that answered.")
    features_fresh: bool = Field(description="False when the online store could not be read in time.")
    feature_source: Literal["online", "last_known", "default"]
    cached: bool = False
    challenger_fallback: bool = Field(
        False, description="Routed to the challenger, answered by the champion."
    )
    latency_ms: float = Field(description="Server-side time of the batch this event was scored in.")


# --------------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------------


def bucket(entity_id: str) -> int:
    """Stable bucket 0..99 of an entity (blake2b: uniform, and the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(entity_id.encode(), digest_size=8).digest(), "big") % 100


def route(entity_id: str, challenger_weight: float) -> str:
    """`hash(entity) % 100 < weight` -> challenger. A higher weight only moves entities to the challenger."""
    return CHALLENGER if bucket(entity_id) < challenger_weight else CHAMPION


# --------------------------------------------------------------------------------------------------
# Cache and circuit breaker
# --------------------------------------------------------------------------------------------------


class TTLCache:
    """A bounded LRU whose entries expire after `ttl_s`. Not thread-safe: used from the event loop only."""

    def __init__(self, maxsize: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.maxsize = maxsize
        self.ttl_s = ttl_s
        self.clock = clock
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.maxsize > 0 and self.ttl_s > 0

    def get(self, key: Hashable) -> Any | None:
        if not self.enabled:
            return None
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        expires, value = item
        if expires <= self.clock():
            self._data.pop(key, None)
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if not self.enabled:
            return
        self._data[key] = (self.clock() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (after reset_s) half-open: one trial call decides."""

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self._trial = False
        self.last_error: str | None = None
        self.last_ok: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        """May a call go to the dependency now? (In half-open, only one trial at a time.)"""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self._trial = False
        self.last_ok = time.time()

    def failure(self, error: str) -> None:
        self.consecutive += 1
        self.last_error = error
        if self._trial or self.consecutive >= self.failures:
            self.opened_at = self.clock()
        self._trial = False


# --------------------------------------------------------------------------------------------------
# Online features
# --------------------------------------------------------------------------------------------------


class OnlineFeatureReader:
    """Feast online lookups with ONE FeatureStore per process (building one per call costs milliseconds).

    Same values as `engines.feast_store.online_features` (FEATURE_COLUMNS as float64, NaN for unknown
    entities), which builds a new store per call and goes through `to_dict()` (~60 us/entity of protobuf
    conversion; reading the response proto directly costs ~10 us/entity). Returns a float64 matrix
    (rows = `entity_ids`, columns = FEATURE_COLUMNS).
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
                    from pipelines.engines.feast_store import get_store

                    store = get_store(self.params)
                    self._service = store.get_feature_service(self.params.feature_store.feature_service)
                    self._store = store
                    tolerate_sqlite_timestamps()

    def __call__(self, entity_ids: list[str]) -> np.ndarray:
        from pipelines.contract import ENTITY_KEY, FEATURE_COLUMNS

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
        nan = np.nan
        for j, c in enumerate(FEATURE_COLUMNS):
            values = proto.results[position[c]].values
            if len(values) != len(entity_ids):
                raise StageError(
                    f"online store: asked {len(entity_ids)} entities, got {len(values)} values of {c}"
                )
            col = []
            for v in values:
                kind = v.WhichOneof("val")  # None = no value (unknown entity / missing feature)
                col.append(getattr(v, kind) if kind is not None else nan)
            out[:, j] = col
        return out


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


class FeatureFetcher:
    """Online features for a batch of entities, with timeout, circuit breaker and last-known fallback.

    Never raises for store trouble: rows come back with a source per entity (online, last_known,
    default). `lookup(ids) -> DataFrame(entity_id + columns)` is the raw store call (run in a thread so a
    hung store cannot block the event loop past `timeout_s`).
    """

    def __init__(
        self,
        lookup: Callable[[list[str]], pd.DataFrame | np.ndarray],
        columns: Sequence[str],
        breaker: CircuitBreaker,
        timeout_s: float,
        last_known_size: int,
    ) -> None:
        self.lookup = lookup
        self.columns = list(columns)
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.last_known_size = last_known_size
        self._last: OrderedDict[str, np.ndarray] = OrderedDict()
        self._default = np.full(len(self.columns), np.nan)
        # two threads: a store call stuck past its timeout still holds one
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="feast-online")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _remember(self, ids: list[str], values: np.ndarray) -> None:
        if self.last_known_size <= 0:
            return
        last = self._last
        for e, row in zip(ids, values, strict=True):
            last[e] = row
            last.move_to_end(e)
        while len(last) > self.last_known_size:
            last.popitem(last=False)

    def _fallback(self, ids: list[str]) -> tuple[np.ndarray, list[str]]:
        rows, sources = [], []
        for e in ids:
            row = self._last.get(e)
            if row is None:
                rows.append(self._default)
                sources.append(SOURCE_DEFAULT)
            else:
                rows.append(row)
                sources.append(SOURCE_LAST_KNOWN)
        return np.vstack(rows) if rows else np.empty((0, len(self.columns))), sources

    def _call(self, ids: list[str]) -> np.ndarray:
        got = self.lookup(ids)
        if isinstance(got, pd.DataFrame):
            got = got[self.columns].to_numpy(dtype=np.float64, na_value=np.nan)
        if got.shape != (len(ids), len(self.columns)):
            raise StageError(f"online store: got a {got.shape} answer for {len(ids)} entities")
        return got

    async def fetch(self, ids: list[str]) -> tuple[np.ndarray, list[str]]:
        """(matrix len(ids) x columns, source per id) for distinct entity ids."""
        if not ids:
            return np.empty((0, len(self.columns))), []
        if not self.breaker.allow():
            return self._fallback(ids)
        loop = asyncio.get_running_loop()
        try:
            values = await asyncio.wait_for(loop.run_in_executor(self._pool, self._call, ids), self.timeout_s)
        except Exception as err:  # store down, slow, or answering garbage: all mean "serve without it"
            msg = "timeout" if isinstance(err, TimeoutError) else f"{type(err).__name__}: {err}"
            self.breaker.failure(msg[:300])
            log.warning("online store lookup failed (%s); breaker %s", msg[:200], self.breaker.state)
            return self._fallback(ids)
        self.breaker.success()
        self._remember(ids, values)
        return values, [SOURCE_ONLINE] * len(ids)

    def probe(self, timeout_s: float) -> dict[str, Any]:
        """Active check of the store (for /health/dependencies), outside the breaker's accounting."""
        t0 = time.perf_counter()
        fut = self._pool.submit(self._call, ["__sluice_health_probe__"])
        try:
            fut.result(timeout=timeout_s)
        except Exception as err:
            msg = (
                "timeout"
                if isinstance(err, concurrent.futures.TimeoutError)
                else f"{type(err).__name__}: {err}"
            )
            return {"ok": False, "error": msg[:300]}
        return {"ok": True, "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}


def request_frame(
    records: Sequence[ScoreRequest], feats: np.ndarray, feature_columns: Sequence[str], now: dt.datetime
) -> pd.DataFrame:
    """The event frame the offline pipeline builds (canonical event columns + Feast feature columns), for
    requests; absent optional fields are NaN/None, as in a source without them for that event."""
    ts = [r.timestamp or now for r in records]
    data: dict[str, Any] = {
        "entity_id": [r.entity_id for r in records],
        "event_timestamp": pd.DatetimeIndex(ts).as_unit("us"),
        "amount": np.fromiter((r.amount for r in records), dtype=np.float64, count=len(records)),
        "merchant": [r.merchant for r in records],
        "category": [r.category for r in records],
    }
    for f in _FLOAT_FIELDS:
        data[f] = np.array([np.nan if (v := getattr(r, f)) is None else v for r in records], dtype=np.float64)
    for j, c in enumerate(feature_columns):
        data[c] = feats[:, j]
    return pd.DataFrame(data)


# --------------------------------------------------------------------------------------------------
# Releases
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedRelease:
    """A loaded release serving one arm."""

    arm: str
    model_name: str
    version: str
    threshold: float
    release: Release
    fingerprint: str
    loaded_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class Routing:
    """What is served now: swapped atomically by the refresher (readers take one snapshot per batch)."""

    arms: dict[str, LoadedRelease]
    challenger_weight: float

    @property
    def champion(self) -> LoadedRelease | None:
        return self.arms.get(CHAMPION)


def default_release_loader(params: Params) -> Callable[[str, str | None], Release]:
    """Load `models:/<name>/<version>` through model.packaging (fingerprint verified against the tag)."""

    def load(model_uri: str, fingerprint: str | None) -> Release:
        from pipelines.engines.registry import use_tracking_uri
        from pipelines.model.packaging import load_release

        # pyfunc loading resolves models:/ URIs against the global registry URI: point it at ours
        use_tracking_uri(params.tracking_uri)
        release = load_release(model_uri, expected_fingerprint=fingerprint)
        # an MLP goes to the GPU when there is one; trees stay on CPU (copying each small online batch to
        # the GPU and back costs more than scoring it there saves)
        if release.model_kind == "mlp" and _serving_device(params) == "cuda":
            release = load_release(model_uri, device="cuda", expected_fingerprint=fingerprint)
        return release

    return load


def _serving_device(params: Params) -> str:
    """CUDA when present (and train.device allows it), CPU otherwise: the same release either way."""
    if params.train.device == "cpu":
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------


class ServingEngine:
    """Everything the service does per request, BentoML-free. One per serving process."""

    def __init__(
        self,
        params: Params,
        *,
        registry: Registry | None = None,
        release_loader: Callable[[str, str | None], Release] | None = None,
        feature_lookup: Callable[[list[str]], pd.DataFrame | np.ndarray] | None = None,
        metrics: ServingMetrics | None = None,
        log_writer: PredictionLogWriter | None = None,
        fallback_release: Callable[[], LoadedRelease] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from pipelines.contract import FEATURE_COLUMNS

        self.params = params
        self.cfg = params.serve
        self.model_name = params.register_.model_name
        self._registry = registry
        self._loader = release_loader or default_release_loader(params)
        self.feature_columns = list(FEATURE_COLUMNS)
        self.breaker = CircuitBreaker(self.cfg.breaker_failures, self.cfg.breaker_reset_s, clock=clock)
        self.features = FeatureFetcher(
            feature_lookup or OnlineFeatureReader(params),
            self.feature_columns,
            self.breaker,
            self.cfg.feature_timeout_ms / 1000.0,
            self.cfg.last_known_size,
        )
        self.cache = TTLCache(self.cfg.cache_size, self.cfg.cache_ttl_s, clock=clock)
        self.metrics = metrics
        self.log_writer = log_writer
        # a release bundled with the deployment (the Bento's model), served when the registry cannot
        # be reached at start-up; the refresher switches to the registry's releases once it answers
        self._fallback_release = fallback_release
        self.routing = Routing({}, 0.0)
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._challenger_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="challenger"
        )
        self.last_refresh: dict[str, Any] = {"ok": None, "at": None, "error": None}

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from pipelines.engines.registry import open_registry

            self._registry = open_registry(self.params)
        return self._registry

    @property
    def ready(self) -> bool:
        return self.routing.champion is not None

    def start(self, background: bool = True) -> None:
        """Load the releases now (a failure leaves the engine not ready, retried by the refresher)."""
        self.refresh()
        if not self.ready and self._fallback_release is not None:
            try:
                bundled = self._fallback_release()
                self.routing = Routing({CHAMPION: bundled}, 0.0)
                log.warning("registry unavailable: serving the bundled release v%s", bundled.version)
            except Exception as err:
                log.error("bundled release could not be loaded: %s", err)
        self.warmup()
        if self.log_writer is not None:
            self.log_writer.start()
        # Objects alive after loading (models, pandas/sklearn/mlflow modules) never die: moving them out of
        # the GC's generations removes the 100-300 ms full collections seen under load (STACK.md).
        gc.collect()
        gc.freeze()
        if background and self._thread is None:
            self._thread = threading.Thread(target=self._refresh_loop, name="sluice-refresh", daemon=True)
            self._thread.start()

    def warmup(self) -> None:
        """Open the online store and score one synthetic event per release (first calls pay lazy imports,
        registry loading and allocations; a first request must not time out on them)."""
        try:
            self.features._call(["__warmup__"])
        except Exception as err:  # store down at start-up: requests are served with fallbacks
            log.warning("online store warm-up failed: %s", err)
        tolerate_sqlite_timestamps()
        for rel in self.routing.arms.values():
            self._warm(rel)

    def _warm(self, rel: LoadedRelease) -> None:
        now = dt.datetime.now(dt.UTC)
        req = ScoreRequest(entity_id="__warmup__", amount=10.0, timestamp=now, category="x")
        frame = self._frame([req], np.full((1, len(self.feature_columns)), np.nan), now)
        try:
            rel.release.score(frame)
        except Exception as err:  # a broken release shows up on real requests and in the metrics
            log.warning("warm-up of %s v%s failed: %s", rel.arm, rel.version, err)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.log_writer is not None:
            self.log_writer.close()
        self.features.close()
        self._challenger_pool.shutdown(wait=False, cancel_futures=True)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.cfg.refresh_s):
            self.refresh()

    def refresh(self) -> bool:
        """Re-read aliases + challenger weight; load new releases, then swap. True when something changed."""
        with self._refresh_lock:
            try:
                changed = self._refresh()
            except Exception as err:  # registry down: keep serving what is loaded
                self.last_refresh = {
                    "ok": False,
                    "at": _now_iso(),
                    "error": f"{type(err).__name__}: {err}"[:300],
                }
                log.warning("registry refresh failed: %s", self.last_refresh["error"])
                return False
            self.last_refresh = {"ok": True, "at": _now_iso(), "error": self.last_refresh.get("load_error")}
            return changed

    def _refresh(self) -> bool:
        from pipelines.engines.registry import version_uri

        reg = self.registry
        aliases = reg.aliases(self.model_name)
        wanted = {CHAMPION: aliases.get(CHAMPION), CHALLENGER: aliases.get(CHALLENGER)}
        if wanted[CHALLENGER] is not None and wanted[CHALLENGER] == wanted[CHAMPION]:
            wanted[CHALLENGER] = None  # promoted: one release, no split
        current = self.routing
        by_version = {r.version: r for r in current.arms.values()}
        arms: dict[str, LoadedRelease] = {}
        load_error = None
        for arm, version in wanted.items():
            if version is None:
                continue
            have = by_version.get(version)
            if have is not None:
                arms[arm] = have if have.arm == arm else LoadedRelease(**{**have.__dict__, "arm": arm})
                continue
            try:
                mv = reg.get_version(self.model_name, version)
                tags = dict(mv.tags)
                if "threshold" not in tags:
                    raise StageError(f"model {self.model_name!r} version {version} has no 'threshold' tag")
                release = self._loader(version_uri(self.model_name, version), tags.get("fingerprint"))
                arms[arm] = LoadedRelease(
                    arm=arm,
                    model_name=self.model_name,
                    version=str(version),
                    threshold=float(tags["threshold"]),
                    release=release,
                    fingerprint=release.fingerprint,
                )
                self._warm(arms[arm])  # before the swap: the first live request pays nothing extra
                log.info("loaded %s release %s v%s", arm, self.model_name, version)
            except Exception as err:
                load_error = f"{arm} v{version}: {type(err).__name__}: {err}"[:300]
                log.error("could not load %s", load_error)
                if arm == CHAMPION and current.champion is not None:
                    arms[CHAMPION] = current.champion  # keep serving the old one rather than nothing
        weight = 0.0
        if CHALLENGER in arms:
            weight = float(reg.get_rollout_state(self.model_name).challenger_weight)
        new = Routing(arms, weight)
        self.last_refresh["load_error"] = load_error
        changed = {a: r.version for a, r in new.arms.items()} != {
            a: r.version for a, r in current.arms.items()
        } or new.challenger_weight != current.challenger_weight
        self.routing = new  # one reference assignment: readers see the old or the new, never a mix
        return changed

    # ---- scoring ---------------------------------------------------------------------------------

    def _frame(self, records: Sequence[ScoreRequest], feats: np.ndarray, now: dt.datetime) -> pd.DataFrame:
        return request_frame(records, feats, self.feature_columns, now)

    async def _score_arm(self, rel: LoadedRelease, frame: pd.DataFrame) -> np.ndarray:
        if rel.arm == CHAMPION:
            return rel.release.score(frame)
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(
            loop.run_in_executor(self._challenger_pool, rel.release.score, frame),
            self.cfg.challenger_timeout_ms / 1000.0,
        )

    async def predict(self, records: Sequence[ScoreRequest], source: str = "api") -> list[ScoreResponse]:
        """Score a batch of requests (one adaptive batch of /predict, or one /predict_batch call)."""
        t0 = time.perf_counter()
        routing = self.routing
        champion = routing.champion
        if champion is None:
            raise NotReady("no champion release loaded (yet): see /health/dependencies")
        now = dt.datetime.now(dt.UTC)
        n = len(records)
        has_challenger = CHALLENGER in routing.arms
        weight = routing.challenger_weight
        arms = [route(r.entity_id, weight) if has_challenger else CHAMPION for r in records]

        cached: list[Any] = [None] * n
        keys: list[Any] = [None] * n
        miss: list[int] = []
        for i, r in enumerate(records):
            # a request without a timestamp is scored at "now": never the same twice, never cached
            if r.timestamp is not None and self.cache.enabled:
                keys[i] = (routing.arms[arms[i]].version, r.canonical())
                hit = self.cache.get(keys[i])
                if hit is not None:
                    cached[i] = hit
                    continue
            miss.append(i)

        scores = np.full(n, np.nan)
        served = list(arms)
        fallback = [False] * n
        feat_rows: np.ndarray = np.empty((n, len(self.feature_columns)))
        sources: list[str] = [SOURCE_ONLINE] * n
        errors: list[tuple[str, str, str, int]] = []  # (version, arm, kind, rows)
        if miss:
            ids = list(dict.fromkeys(records[i].entity_id for i in miss))
            values, id_sources = await self.features.fetch(ids)
            pos = {e: k for k, e in enumerate(ids)}
            idx = np.fromiter((pos[records[i].entity_id] for i in miss), dtype=np.int64, count=len(miss))
            miss_feats = values[idx]
            for k, i in enumerate(miss):
                feat_rows[i] = miss_feats[k]
                sources[i] = id_sources[idx[k]]
            frame = self._frame([records[i] for i in miss], miss_feats, now)
            miss_arr = np.asarray(miss, dtype=np.int64)
            miss_arms = np.asarray([arms[i] for i in miss])
            for arm_name in (CHAMPION, CHALLENGER) if has_challenger else (CHAMPION,):
                sel = np.flatnonzero(miss_arms == arm_name)
                if len(sel) == 0:
                    continue
                rel = routing.arms[arm_name]
                sub = frame if len(sel) == len(miss) else frame.iloc[sel]
                try:
                    arm_scores = await self._score_arm(rel, sub)
                except Exception as err:
                    if arm_name == CHAMPION:
                        if self.metrics is not None:
                            self.metrics.error(champion.version, CHAMPION, type(err).__name__, len(sel))
                        raise
                    kind = "timeout" if isinstance(err, TimeoutError) else type(err).__name__
                    errors.append((rel.version, CHALLENGER, kind, len(sel)))
                    log.warning(
                        "challenger v%s failed (%s): champion answers %d rows", rel.version, kind, len(sel)
                    )
                    arm_scores = champion.release.score(sub)
                    for i in miss_arr[sel]:
                        served[i] = CHAMPION
                        fallback[i] = True
                scores[miss_arr[sel]] = arm_scores

        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        out: list[ScoreResponse] = []
        log_rows: list[dict[str, Any]] = []
        for i, r in enumerate(records):
            hit = cached[i]
            if hit is not None:
                rel_version, arm_name, score, threshold, source_i, feats_i = hit
                rel = routing.arms.get(arm_name) or champion
                resp = ScoreResponse(
                    prediction_id=uuid.uuid4().hex,
                    event_id=r.event_id,
                    entity_id=r.entity_id,
                    score=score,
                    decision=int(score >= threshold),
                    threshold=threshold,
                    model_name=rel.model_name,
                    model_version=rel_version,
                    arm=arm_name,
                    features_fresh=source_i == SOURCE_ONLINE,
                    feature_source=source_i,
                    cached=True,
                    latency_ms=elapsed_ms,
                )
            else:
                rel = routing.arms[served[i]]
                score = float(scores[i])
                feats_i = feat_rows[i]
                resp = ScoreResponse(
                    prediction_id=uuid.uuid4().hex,
                    event_id=r.event_id,
                    entity_id=r.entity_id,
                    score=score,
                    decision=int(score >= rel.threshold),
                    threshold=rel.threshold,
                    model_name=rel.model_name,
                    model_version=rel.version,
                    arm=served[i],
                    features_fresh=sources[i] == SOURCE_ONLINE,
                    feature_source=sources[i],
                    challenger_fallback=fallback[i],
                    latency_ms=elapsed_ms,
                )
                # only answers from fresh features and the routed arm are reusable
                if keys[i] is not None and sources[i] == SOURCE_ONLINE and not fallback[i]:
                    self.cache.put(
                        keys[i], (rel.version, served[i], score, rel.threshold, sources[i], feats_i)
                    )
            out.append(resp)
            if self.log_writer is not None:
                log_rows.append(self._log_row(r, resp, feats_i, now, source))
        if log_rows:
            self.log_writer.write_many(log_rows)
        if self.metrics is not None:
            self.metrics.observe_batch(
                out, elapsed_ms / 1000.0, errors, endpoint=_ENDPOINTS.get(source, source)
            )
        return out

    def predict_sync(self, records: Sequence[ScoreRequest], source: str = "api") -> list[ScoreResponse]:
        """`predict` for callers without an event loop (tests, scripts)."""
        return asyncio.run(self.predict(records, source=source))

    def _log_row(
        self, r: ScoreRequest, resp: ScoreResponse, feats: np.ndarray, now: dt.datetime, source: str
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "prediction_id": resp.prediction_id,
            "served_at": now.isoformat(),
            "event_id": r.event_id,
            "entity_id": r.entity_id,
            "event_timestamp": (r.timestamp or now).isoformat(),
            "amount": r.amount,
            "merchant": r.merchant,
            "category": r.category,
            "latitude": r.latitude,
            "longitude": r.longitude,
            "merchant_latitude": r.merchant_latitude,
            "merchant_longitude": r.merchant_longitude,
        }
        for c, v in zip(self.feature_columns, feats.tolist(), strict=True):
            row[c] = None if math.isnan(v) else v
        row.update(
            score=resp.score,
            decision=resp.decision,
            threshold=resp.threshold,
            model_name=resp.model_name,
            model_version=resp.model_version,
            arm=resp.arm,
            feature_source=resp.feature_source,
            cached=resp.cached,
            challenger_fallback=resp.challenger_fallback,
            latency_ms=round(resp.latency_ms, 3),
            source=source,
        )
        return row

    # ---- health ----------------------------------------------------------------------------------

    def health(self, probe_timeout_s: float = 1.0) -> dict[str, Any]:
        """Status of the registry, the online store, the cache and the prediction log (never raises)."""
        routing = self.routing
        store = self.features.probe(probe_timeout_s)
        store.update(
            breaker=self.breaker.state,
            consecutive_failures=self.breaker.consecutive,
            last_error=self.breaker.last_error,
            backend=self.params.feature_store.online_store,
        )
        registry = {
            "ok": bool(self.last_refresh.get("ok")),
            "last_refresh": self.last_refresh.get("at"),
            "error": self.last_refresh.get("error"),
            "model_name": self.model_name,
            "releases": {
                a: {"version": r.version, "threshold": r.threshold, "loaded_at": r.loaded_at}
                for a, r in routing.arms.items()
            },
            "challenger_weight": routing.challenger_weight,
        }
        cache = {
            "ok": True,
            "enabled": self.cache.enabled,
            "size": len(self.cache),
            "max_size": self.cache.maxsize,
            "ttl_s": self.cache.ttl_s,
            "hits": self.cache.hits,
            "misses": self.cache.misses,
        }
        plog = self.log_writer.status() if self.log_writer is not None else {"ok": True, "enabled": False}
        return {
            "ready": self.ready,
            "ok": self.ready and store["ok"] and registry["ok"] and plog.get("ok", True),
            "registry": registry,
            "online_store": store,
            "cache": cache,
            "prediction_log": plog,
        }

    # ---- jobs ------------------------------------------------------------------------------------

    def score_file(self, input_path: str | Path, output_path: str | Path) -> dict[str, Any]:
        """Score a Parquet/CSV file of requests (columns = ScoreRequest fields) into a Parquet file.

        Rows go through `predict` in chunks of serve.max_records (same routing, features, log). Input and
        output must lie under the project root: a job endpoint must not read or write arbitrary files.
        """
        src = _inside(self.params.root, input_path, "input_path")
        dst = _inside(self.params.root, output_path, "output_path")
        if not src.is_file():
            raise StageError(f"input_path {src}: file not found")
        if src.suffix == ".parquet":
            frame = pd.read_parquet(src)
        elif src.suffix == ".csv":
            frame = pd.read_csv(src)
        else:
            raise StageError(f"input_path {src}: expected a .parquet or .csv file")
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
        results: list[ScoreResponse] = []
        step = self.cfg.max_records

        async def run_all() -> None:
            for k in range(0, len(records), step):
                results.extend(await self.predict(records[k : k + step], source="job"))

        asyncio.run(run_all())
        out = pd.DataFrame([r.model_dump() for r in results])
        from pipelines.io import atomic_write_bytes

        dst.parent.mkdir(parents=True, exist_ok=True)
        import io as _io

        buf = _io.BytesIO()
        out.to_parquet(buf, index=False)
        atomic_write_bytes(dst, buf.getvalue())
        return {
            "rows": len(out),
            "output_path": str(dst),
            "flagged": int(out["decision"].sum()) if len(out) else 0,
        }


def serving_params(path: str | Path | None = None) -> Params:
    """Params of the serving process: `path`, else $SLUICE_PARAMS, else the project's params.yaml."""
    import os

    from pipelines.config import load_params

    chosen = path or os.environ.get("SLUICE_PARAMS")
    if chosen is None:
        repo = Path(__file__).resolve().parents[1] / "params.yaml"
        chosen = repo if repo.is_file() else Path.cwd() / "params.yaml"
    return load_params(chosen)


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


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
