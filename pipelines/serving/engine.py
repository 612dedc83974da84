"""ServingEngine: everything the service does per request, as named steps over the serving parts.

One engine per serving process. It owns the served releases (`ReleaseSet`), the online-feature fetcher
(`FeatureFetcher` around `engines.feast_store.OnlineFeatureReader`), the prediction cache, and optionally
the prediction log writer and the Prometheus metrics. `predict` is the request flow of the package
docstring: route, cache lookup, fetch features, score arms, then cache / log / count.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from pipelines.config import Params
from pipelines.contract import CHALLENGER, CHAMPION, FEATURE_COLUMNS
from pipelines.serving.cache import TTLCache
from pipelines.serving.features import SOURCE_ONLINE, CircuitBreaker, FeatureFetcher
from pipelines.serving.ids import new_id
from pipelines.serving.log import log_row
from pipelines.serving.metrics import ENDPOINTS
from pipelines.serving.releases import ReleaseLoader, ReleaseSet
from pipelines.serving.routing import LoadedRelease, Routing
from pipelines.serving.schema import ScoreRequest, ScoreResponse, request_frame

if TYPE_CHECKING:
    from pipelines.engines.registry import Registry
    from pipelines.serving.log import PredictionLogWriter
    from pipelines.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)


class NotReady(RuntimeError):
    """No champion release is loaded yet (the service answers 503 and /readyz is false)."""


class ScoringError(RuntimeError):
    """A request failed while its records were scored (counted and logged with its traceback once; the
    service answers 500). The original error is its `__cause__`."""


@dataclass(frozen=True)
class ScoreCall:
    """One request's records, scored together with other requests' in one batch (`score_calls`)."""

    records: Sequence[ScoreRequest]
    arm: str | None = None  # the arm asked for (None: the canary routing decides per entity)
    request_id: str | None = None
    source: str = "api"


class _Cached(NamedTuple):
    """A cache entry: the answer of one (release version, canonical request)."""

    version: str
    arm: str
    score: float
    threshold: float
    source: str
    feats: np.ndarray


@dataclass
class _Batch:
    """One scoring call in flight: per-record state, index i = records[i]."""

    records: Sequence[ScoreRequest]
    routing: Routing
    champion: LoadedRelease
    now: dt.datetime
    arms: list[str]  # the routed arm
    n_features: int
    request_ids: Sequence[str | None]
    sources_of: Sequence[str]  # the endpoint each record came through (the log's `source`)
    keys: list[Any] = field(init=False)  # cache key; None = not cacheable
    cached: list[_Cached | None] = field(init=False)
    miss: list[int] = field(default_factory=list)  # the records to score
    scores: np.ndarray = field(init=False)
    served: list[str] = field(init=False)  # the arm that answered
    fallback: list[bool] = field(init=False)  # routed to the challenger, answered by the champion
    feats: np.ndarray = field(init=False)
    sources: list[str] = field(init=False)
    errors: list[tuple[str, str, str, int]] = field(default_factory=list)  # (version, arm, kind, rows)

    def __post_init__(self) -> None:
        n = len(self.records)
        self.keys = [None] * n
        self.cached = [None] * n
        self.scores = np.full(n, np.nan)
        self.served = list(self.arms)
        self.fallback = [False] * n
        self.feats = np.empty((n, self.n_features))
        self.sources = [SOURCE_ONLINE] * n


class ServingEngine:
    """Everything the service does per request, BentoML-free. One per serving process."""

    def __init__(
        self,
        params: Params,
        *,
        registry: Registry | None = None,
        release_loader: ReleaseLoader | None = None,
        feature_lookup: Callable[[list[str]], Any] | None = None,
        metrics: ServingMetrics | None = None,
        log_writer: PredictionLogWriter | None = None,
        fallback_release: Callable[[], LoadedRelease] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params = params
        self.cfg = params.serve
        self.model_name = params.register_.model_name
        self.feature_columns = list(FEATURE_COLUMNS)
        self.releases = ReleaseSet(params, registry=registry, loader=release_loader)
        self.breaker = CircuitBreaker(self.cfg.breaker_failures, self.cfg.breaker_reset_s, clock=clock)
        self.features = FeatureFetcher(
            feature_lookup or _online_reader(params),
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
        self._challenger_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="challenger"
        )

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def routing(self) -> Routing:
        return self.releases.routing

    @routing.setter
    def routing(self, routing: Routing) -> None:
        self.releases.routing = routing

    @property
    def ready(self) -> bool:
        return self.routing.champion is not None

    def refresh(self) -> bool:
        """Re-read aliases + challenger weight; load new releases, then swap. True when something changed."""
        return self.releases.refresh()

    def start(self, background: bool = True) -> None:
        """Load the releases now (a failure leaves the engine not ready, retried by the refresher)."""
        self.refresh()
        if not self.ready and self._fallback_release is not None:
            self.releases.use_bundled(self._fallback_release)
        self.warmup()
        if self.log_writer is not None:
            self.log_writer.start()
        # Objects alive after loading (models, pandas/sklearn/mlflow modules) never die: moving them out of
        # the GC's generations removes the 100-300 ms full collections seen under load (STACK.md).
        gc.collect()
        gc.freeze()
        if background:
            self.releases.start_refresher(self.cfg.refresh_s)

    def warmup(self) -> None:
        """Open the online store and score one synthetic event per release (first calls pay lazy imports,
        registry loading and allocations; a first request must not time out on them)."""
        from pipelines.engines.feast_store import tolerate_sqlite_timestamps

        self.features.warm_up()
        tolerate_sqlite_timestamps()
        self.releases.warm_all()

    def close(self) -> None:
        self.releases.close()
        if self.log_writer is not None:
            self.log_writer.close()
        self.features.close()
        self._challenger_pool.shutdown(wait=False, cancel_futures=True)

    # ---- scoring ---------------------------------------------------------------------------------

    async def predict(
        self, records: Sequence[ScoreRequest], source: str = "api", arm: str | None = None
    ) -> list[ScoreResponse]:
        """Score a batch of requests (a test, a script); raises what failed it (counted)."""
        return await self.score_call(ScoreCall(records, arm=arm, source=source))

    async def score_call(self, call: ScoreCall) -> list[ScoreResponse]:
        """One request scored on its own (not batched with others); raises what failed it (counted)."""
        [answer] = await self.score_calls([call])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def predict_sync(self, records: Sequence[ScoreRequest], source: str = "api") -> list[ScoreResponse]:
        """`predict` for callers without an event loop (tests, scripts)."""
        return asyncio.run(self.predict(records, source=source))

    async def score_calls(self, calls: Sequence[ScoreCall]) -> list[list[ScoreResponse] | Exception]:
        """Score several requests in one batch; the answer of each, or the error that failed it alone.

        An unexpected error while scoring the batch never fails the other requests in it: each request is
        then scored apart, so only the one that really fails gets its error (counted per version/arm).
        """
        if not calls:
            return []
        try:
            flat = await self._predict_calls(calls)
        except NotReady as err:
            return [err] * len(calls)
        except Exception as err:
            if len(calls) == 1:
                return [self._failed(calls[0], err)]
            log.warning("a batch of %d requests failed (%s): scoring them apart", len(calls), err)
            out: list[list[ScoreResponse] | Exception] = []
            for call in calls:
                try:
                    out.append(await self._predict_calls([call]))
                except Exception as alone:
                    out.append(self._failed(call, alone))
            return out
        answers: list[list[ScoreResponse] | Exception] = []
        k = 0
        for call in calls:
            answers.append(flat[k : k + len(call.records)])
            k += len(call.records)
        return answers

    def _failed(self, call: ScoreCall, err: Exception) -> Exception:
        """Count a request that failed on its own (per version/arm) and log it once, with its id."""
        if isinstance(err, NotReady):
            return err
        champion = self.routing.champion
        arm = call.arm or CHAMPION
        rel = self.routing.arms.get(arm) or champion
        if self.metrics is not None:
            self.metrics.error(rel.version if rel else "none", arm, type(err).__name__, len(call.records))
        log.error("request %s failed (%d records): %s", call.request_id, len(call.records), err, exc_info=err)
        failed = ScoringError(f"scoring failed ({type(err).__name__})")
        failed.__cause__ = err
        return failed

    async def _predict_calls(self, calls: Sequence[ScoreCall]) -> list[ScoreResponse]:
        """The request flow over the records of `calls`, in order (route, cache, features, score, log)."""
        t0 = time.perf_counter()
        batch = self._route(calls)
        self._lookup_cache(batch)
        if batch.miss:
            frame = await self._fetch_features(batch)
            await self._score_arms(batch, frame)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        out = [self._answer(batch, i, elapsed_ms) for i in range(len(batch.records))]
        self._log_and_count(batch, out, elapsed_ms)
        return out

    def _route(self, calls: Sequence[ScoreCall]) -> _Batch:
        """Step 1: one routing snapshot for the batch, and the arm of each record (the asked arm, else
        the canary split; an asked arm no longer served falls back to the champion)."""
        routing = self.routing
        champion = routing.champion
        if champion is None:
            raise NotReady("no champion release loaded (yet): see /health/dependencies")
        now = dt.datetime.now(dt.UTC)
        records: list[ScoreRequest] = []
        arms: list[str] = []
        request_ids: list[str | None] = []
        sources: list[str] = []
        for call in calls:
            records.extend(call.records)
            request_ids.extend([call.request_id] * len(call.records))
            sources.extend([call.source] * len(call.records))
            if call.arm is not None:
                arms.extend([call.arm if call.arm in routing.arms else CHAMPION] * len(call.records))
            else:
                arms.extend(routing.arm_of(r.entity_id) for r in call.records)
        return _Batch(records, routing, champion, now, arms, len(self.feature_columns), request_ids, sources)

    def _lookup_cache(self, b: _Batch) -> None:
        """Step 2: answers cached for (the routed release's version, the request); the rest are misses."""
        for i, r in enumerate(b.records):
            # a request without a timestamp is scored at "now": never the same twice, never cached
            if r.timestamp is not None and self.cache.enabled:
                b.keys[i] = (b.routing.arms[b.arms[i]].version, r.canonical())
                hit = self.cache.get(b.keys[i])
                if hit is not None:
                    b.cached[i] = hit
                    continue
            b.miss.append(i)

    async def _fetch_features(self, b: _Batch) -> pd.DataFrame:
        """Step 3: one online lookup for the distinct entities of the misses; their scoring frame."""
        ids = list(dict.fromkeys(b.records[i].entity_id for i in b.miss))
        values, id_sources = await self.features.fetch(ids)
        pos = {e: k for k, e in enumerate(ids)}
        idx = np.fromiter((pos[b.records[i].entity_id] for i in b.miss), dtype=np.int64, count=len(b.miss))
        miss_feats = values[idx]
        for k, i in enumerate(b.miss):
            b.feats[i] = miss_feats[k]
            b.sources[i] = id_sources[idx[k]]
        return request_frame([b.records[i] for i in b.miss], miss_feats, self.feature_columns, b.now)

    async def _score_arms(self, b: _Batch, frame: pd.DataFrame) -> None:
        """Step 4: each arm scores its misses (`frame` rows are the misses, in order)."""
        miss_arr = np.asarray(b.miss, dtype=np.int64)
        miss_arms = np.asarray([b.arms[i] for i in b.miss])
        for arm in (CHAMPION, CHALLENGER) if b.routing.has_challenger else (CHAMPION,):
            sel = np.flatnonzero(miss_arms == arm)
            if len(sel) == 0:
                continue
            sub = frame if len(sel) == len(b.miss) else frame.iloc[sel]
            rows = miss_arr[sel]
            b.scores[rows] = await self._score_arm(b, arm, sub, rows)

    async def _score_arm(self, b: _Batch, arm: str, sub: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """One arm's scores; a failing or slow challenger's rows are answered by the champion."""
        rel = b.routing.arms[arm]
        try:
            return await self._run_release(rel, sub)
        except Exception as err:
            if arm == CHAMPION:
                raise  # counted per request by score_calls, once the failing request is known
            kind = "timeout" if isinstance(err, TimeoutError) else type(err).__name__
            b.errors.append((rel.version, CHALLENGER, kind, len(rows)))
            log.warning("challenger v%s failed (%s): champion answers %d rows", rel.version, kind, len(rows))
            scores = b.champion.release.score(sub)
            for i in rows:
                b.served[i] = CHAMPION
                b.fallback[i] = True
            return scores

    async def _run_release(self, rel: LoadedRelease, frame: pd.DataFrame) -> np.ndarray:
        """The champion scores on the event loop; the challenger in its own thread, within its budget."""
        if rel.arm == CHAMPION:
            return rel.release.score(frame)
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(
            loop.run_in_executor(self._challenger_pool, rel.release.score, frame),
            self.cfg.challenger_timeout_ms / 1000.0,
        )

    def _answer(self, b: _Batch, i: int, elapsed_ms: float) -> ScoreResponse:
        """Step 5a: the response of record i; a reusable fresh answer goes to the cache."""
        r = b.records[i]
        hit = b.cached[i]
        if hit is not None:
            b.feats[i] = hit.feats
            return ScoreResponse(
                prediction_id=new_id(),
                event_id=r.event_id,
                entity_id=r.entity_id,
                score=hit.score,
                decision=int(hit.score >= hit.threshold),
                threshold=hit.threshold,
                model_name=(b.routing.arms.get(hit.arm) or b.champion).model_name,
                model_version=hit.version,
                arm=hit.arm,
                features_fresh=hit.source == SOURCE_ONLINE,
                feature_source=hit.source,
                cached=True,
                latency_ms=elapsed_ms,
            )
        rel = b.routing.arms[b.served[i]]
        score = float(b.scores[i])
        # only answers from fresh features and the routed arm are reusable
        if b.keys[i] is not None and b.sources[i] == SOURCE_ONLINE and not b.fallback[i]:
            entry = _Cached(rel.version, b.served[i], score, rel.threshold, b.sources[i], b.feats[i])
            self.cache.put(b.keys[i], entry)
        return ScoreResponse(
            prediction_id=new_id(),
            event_id=r.event_id,
            entity_id=r.entity_id,
            score=score,
            decision=int(score >= rel.threshold),
            threshold=rel.threshold,
            model_name=rel.model_name,
            model_version=rel.version,
            arm=b.served[i],
            features_fresh=b.sources[i] == SOURCE_ONLINE,
            feature_source=b.sources[i],
            challenger_fallback=b.fallback[i],
            latency_ms=elapsed_ms,
        )

    def _log_and_count(self, b: _Batch, out: list[ScoreResponse], elapsed_ms: float) -> None:
        """Step 5b: the prediction log (one queue put per batch) and the metrics (per endpoint)."""
        if self.log_writer is not None and out:
            rows = [
                log_row(r, resp, self.feature_columns, b.feats[i], b.now, b.sources_of[i], b.request_ids[i])
                for i, (r, resp) in enumerate(zip(b.records, out, strict=True))
            ]
            self.log_writer.write_many(rows)
        if self.metrics is not None:
            for source in dict.fromkeys(b.sources_of):
                picked = [o for o, s in zip(out, b.sources_of, strict=True) if s == source]
                errors = b.errors if source == b.sources_of[0] else []
                self.metrics.observe_batch(
                    picked, elapsed_ms / 1000.0, errors, endpoint=ENDPOINTS.get(source, source)
                )

    # ---- health ----------------------------------------------------------------------------------

    def health(self, probe_timeout_s: float = 1.0) -> dict[str, Any]:
        """Status of the registry, the online store, the cache and the prediction log (never raises)."""
        registry = self.releases.health()
        store = self.features.health(probe_timeout_s)
        store["backend"] = self.params.feature_store.online_store
        plog = self.log_writer.status() if self.log_writer is not None else {"ok": True, "enabled": False}
        return {
            "ready": self.ready,
            "ok": self.ready and store["ok"] and registry["ok"] and plog.get("ok", True),
            "registry": registry,
            "online_store": store,
            "cache": self.cache.status(),
            "prediction_log": plog,
        }


def _online_reader(params: Params) -> Callable[[list[str]], Any]:
    from pipelines.engines.feast_store import OnlineFeatureReader

    return OnlineFeatureReader(params)


def serving_params(path: str | Path | None = None) -> Params:
    """Params of the serving process: `path`, else $SLUICE_PARAMS, else the project's params.yaml."""
    import os

    from pipelines.config import load_params

    chosen = path or os.environ.get("SLUICE_PARAMS")
    if chosen is None:
        repo = Path(__file__).resolve().parents[2] / "params.yaml"
        chosen = repo if repo.is_file() else Path.cwd() / "params.yaml"
    return load_params(chosen)
