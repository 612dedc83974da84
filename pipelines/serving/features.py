"""Online features of a batch of entities that never fail a request: timeout, circuit breaker, fallbacks.

`FeatureFetcher` wraps the raw store lookup (in production `engines.feast_store.OnlineFeatureReader`,
the one reader of the Feast online store) with:

- a timeout: the lookup runs in a thread, so a hung store cannot block the event loop past `timeout_s`;
- a circuit breaker: after N consecutive failures the store is not asked until a reset period has passed,
  then one trial call decides;
- fallbacks: when the store is down or slow, the in-process last-known features of the entity are used,
  or the empty state a brand-new entity has (which training saw too); each row says where it came from.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import StageError

log = logging.getLogger(__name__)

# where the features a prediction used came from
SOURCE_ONLINE = "online"  # the online store answered with the entity's row
SOURCE_NEW_ENTITY = "new_entity"  # the store answered: it has no row of the entity (the empty state is used)
SOURCE_LAST_KNOWN = "last_known"  # store unreachable/slow: this process's last answer for the entity
SOURCE_DEFAULT = "default"  # store unreachable and nothing known: the empty state of a new entity


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


class FeatureFetcher:
    """Online features for a batch of entities, with timeout, circuit breaker and last-known fallback.

    Never raises for store trouble: rows come back with a source per entity (online, last_known,
    default). `lookup(ids) -> DataFrame(entity_id + columns)` is the raw store call (run in a thread so a
    hung store cannot block the event loop past `timeout_s`).
    """

    def __init__(
        self,
        lookup: Callable[[list[str]], Any],
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
        self._probe_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="feast-probe"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._probe_pool.shutdown(wait=False, cancel_futures=True)

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

    def _call(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(values, found) of `ids` from the raw lookup, which answers OnlineRows-like (values, found),
        a DataFrame or a bare matrix (the last two: every entity counts as found)."""
        got = self.lookup(ids)
        found = None
        if isinstance(got, tuple):
            got, found = got
        if isinstance(got, pd.DataFrame):
            got = got[self.columns].to_numpy(dtype=np.float64, na_value=np.nan)
        if got.shape != (len(ids), len(self.columns)):
            raise StageError(f"online store: got a {got.shape} answer for {len(ids)} entities")
        return got, (np.ones(len(ids), dtype=bool) if found is None else np.asarray(found, dtype=bool))

    async def fetch(self, ids: list[str]) -> tuple[np.ndarray, list[str]]:
        """(matrix len(ids) x columns, source per id) for distinct entity ids."""
        if not ids:
            return np.empty((0, len(self.columns))), []
        if not self.breaker.allow():
            return self._fallback(ids)
        loop = asyncio.get_running_loop()
        try:
            values, found = await asyncio.wait_for(
                loop.run_in_executor(self._pool, self._call, ids), self.timeout_s
            )
        except Exception as err:  # store down, slow, or answering garbage: all mean "serve without it"
            msg = "timeout" if isinstance(err, TimeoutError) else f"{type(err).__name__}: {err}"
            self.breaker.failure(msg[:300])
            log.warning("online store lookup failed (%s); breaker %s", msg[:200], self.breaker.state)
            return self._fallback(ids)
        self.breaker.success()
        self._remember(ids, values)
        return values, [SOURCE_ONLINE if f else SOURCE_NEW_ENTITY for f in found.tolist()]

    def probe(self, timeout_s: float) -> dict[str, Any]:
        """Active check of the store (for /health/dependencies), outside the breaker's accounting."""
        t0 = time.perf_counter()
        # its own thread: a probe stuck on a hung store must not hold one of the request path's threads
        fut = self._probe_pool.submit(self._call, ["__sluice_health_probe__"])
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

    def health(self, probe_timeout_s: float) -> dict[str, Any]:
        """The probe's answer with the breaker's state (the online_store part of /health/dependencies).

        Not ok while the breaker is open or half-open: requests are then served with fallback features,
        whatever a single probe says."""
        status = self.probe(probe_timeout_s)
        state = self.breaker.state
        status.update(
            ok=bool(status["ok"]) and state == "closed",
            breaker=state,
            consecutive_failures=self.breaker.consecutive,
            last_error=self.breaker.last_error,
        )
        return status

    def warm_up(self) -> None:
        """Open the store with one lookup (a first request must not pay the connection and lazy imports)."""
        try:
            self._call(["__warmup__"])
        except Exception as err:  # store down at start-up: requests are served with fallbacks
            log.warning("online store warm-up failed: %s", err)
