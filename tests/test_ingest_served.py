"""The ingestion service as `make serve-ingest` runs it (`bentoml serve`), and the crash test: a client sends
events with retries on any error while the server is SIGKILLed and restarted twice; afterwards every event
that got a 2xx is in the raw partitions exactly once.

CI runs it at 1,000 events with one worker; `pytest -m slow` adds 10,000 events and two workers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.ingest_world import IngestServer, log_frame, log_project
from pipelines import ingest, io
from pipelines.config import Params
from pipelines.sections import SyntheticParams

pytestmark = pytest.mark.integration
KEY = "served-ingest-key"
AUTH = {"X-API-Key": KEY}
START, END = dt.date(2026, 1, 1), dt.date(2026, 1, 4)


def empty_log_project(root: Path, workers: int = 1) -> Params:
    """A project whose CSV log is empty: every raw event is one that landed over HTTP."""
    frame = log_frame(SyntheticParams(n_entities=5), START, END).iloc[:0]
    return log_project(root, frame, {"ingest_service": {"workers": workers}})


def event(i: int) -> dict[str, Any]:
    day = START + dt.timedelta(days=i % 3)
    return {
        "event_id": f"crash-{i:06d}",
        "entity_id": f"{4_000_000_000_000_000 + i % 97}",
        "event_timestamp": f"{day}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}Z",
        "amount": float(1 + i % 500),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IngestServer, Params]]:
    base = tmp_path_factory.mktemp("ingest_served")
    params = empty_log_project(base / "project")
    server = IngestServer(params.root / "params.yaml", base / "server", env={"SLUICE_API_KEYS": KEY})
    server.start()
    yield server, params
    server.stop()


def test_the_served_service_lands_refuses_and_reports(served: tuple[IngestServer, Params]) -> None:
    server, _ = served
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/v1/ingest/events", json=event(1)).status_code == 401
        ok = c.post("/v1/ingest/events", json=[event(1), event(2)], headers=AUTH)
        assert ok.status_code == 202 and ok.json()["landed"] == 2
        again = c.post("/v1/ingest/events", json=event(1), headers=AUTH)
        assert again.status_code == 202 and again.json()["duplicates"] == [event(1)["event_id"]]
        bad = c.post("/v1/ingest/events", json=event(3) | {"amount": -1}, headers=AUTH)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "amount"]
        assert c.get("/v1/ingest/stats", headers=AUTH).json()["totals"]["events_landed"] == 2
        metrics = c.get("/metrics").text
        assert 'sluice_ingest_events_total{outcome="accepted",route="events"} 2.0' in metrics
        assert 'sluice_ingest_events_total{outcome="duplicate",route="events"} 1.0' in metrics
        assert "sluice_ingest_landing_lag_seconds_bucket" in metrics
        doc = c.get("/docs.json").json()
        assert "/v1/ingest/events" in doc["paths"] and "IngestEvent" in doc["components"]["schemas"]


class RetryingClient:
    """Sends every event until it gets a 2xx, retrying on any error or other status; records the 2xx'd."""

    def __init__(self, url: str, events: list[dict[str, Any]], concurrency: int = 16) -> None:
        self.url, self.events, self.concurrency = url, events, concurrency
        self.acked: list[str] = []
        self.errors = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for e in self.events:
            queue.put_nowait(e)
        async with httpx.AsyncClient(base_url=self.url, headers=AUTH, timeout=10) as c:

            async def worker() -> None:
                while not queue.empty():
                    e = queue.get_nowait()
                    while True:
                        try:
                            answer = await c.post("/v1/ingest/events", json=e)
                            if 200 <= answer.status_code < 300:
                                self.acked.append(e["event_id"])
                                break
                        except httpx.HTTPError:
                            pass
                        self.errors += 1
                        await asyncio.sleep(0.05)

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))


def crash_test(base: Path, n_events: int, workers: int = 1, timeout_s: float = 300) -> dict[str, Any]:
    """Send n_events while the server is SIGKILLed at 1/3 and 2/3 of the 2xx'd, restarted each time;
    then run the ingest stage and count each event in the raw partitions."""
    params = empty_log_project(base / "project", workers)
    server = IngestServer(params.root / "params.yaml", base / "server", env={"SLUICE_API_KEYS": KEY})
    server.start()
    client = RetryingClient(server.url, [event(i) for i in range(n_events)])
    deadline = time.monotonic() + timeout_s
    try:
        client.thread.start()
        for mark in (n_events // 3, 2 * n_events // 3):
            while len(client.acked) < mark and time.monotonic() < deadline:
                time.sleep(0.01)
            server.kill()
            server.start()
        client.thread.join(max(1.0, deadline - time.monotonic()))
        assert not client.thread.is_alive(), f"{len(client.acked)} of {n_events} acked in {timeout_s} s"
    finally:
        server.stop()
    summary = ingest.run(params, START, END)
    raw = io.read_partitions(params.paths.raw, START, END, columns=["event_id"])
    counts = Counter(raw["event_id"])
    return {"acked": client.acked, "counts": counts, "errors": client.errors, "summary": summary}


def _check(result: dict[str, Any], n_events: int) -> None:
    acked, counts = result["acked"], result["counts"]
    assert len(acked) == n_events == len(set(acked))
    assert result["errors"] > 0  # the kills did interrupt requests
    assert [i for i in acked if counts[i] != 1] == []  # every 2xx'd event exactly once
    assert max(counts.values()) == 1 and set(counts) == set(acked)


def test_no_answered_event_is_lost_or_duplicated_across_two_kills(tmp_path: Path) -> None:
    _check(crash_test(tmp_path, 1_000), 1_000)


@pytest.mark.slow
def test_crash_test_at_full_size(tmp_path: Path) -> None:
    _check(crash_test(tmp_path, 10_000, timeout_s=900), 10_000)


@pytest.mark.slow
def test_crash_test_with_two_workers(tmp_path: Path) -> None:
    _check(crash_test(tmp_path, 10_000, workers=2, timeout_s=900), 10_000)
