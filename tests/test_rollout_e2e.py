"""Canary end to end with a real `bentoml serve` process (slow, not in CI).

The served world of tests/serving_world.py (v1 champion, v2 challenger). A client keeps calling
/predict_batch the whole time and counts failed requests. Then:
1. run_canary ramps v2 through the steps on live prediction-log figures and promotes it;
2. v3 (the same model, but the serving process is told by tests/rollout_fault/sitecustomize.py to fail
   10% of its score calls) is ramped: rolled back at the first step; the time from the first failed
   challenger request to the rollback is printed;
3. v4 (the same model made 10x slower than the champion's p99: 500 ms per call, over serving's 200 ms
   challenger timeout) is ramped: rolled back at the first step too.
Zero failed client requests throughout (the champion answers a failing challenger's requests).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import Params
from tests.conftest import REPO_ROOT
from tests.serving_world import API_KEY, MODEL, World, bentoml_served, build_world

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SERVICE_DIR = REPO_ROOT / "bentos" / "fraud_scorer"
FAULT_DIR = Path(__file__).with_name("rollout_fault")
BAD_VERSION = "3"
SLOW_VERSION = "4"


@pytest.fixture(scope="module")
def world(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("rollout-world"))


@pytest.fixture(scope="module")
def bad_version(world: World) -> str:
    from pipelines.engines.registry import RELEASE_TAG_KEYS, open_registry

    reg = open_registry(world.params)
    mv = reg.get_version(MODEL, world.challenger)
    # the same model as v2, registered again: only the served process treats this version as faulty
    tags = {k: mv.tags[k] for k in RELEASE_TAG_KEYS if k in mv.tags}
    versions = [reg.register_release(MODEL, mv.source, mv.run_id, tags) for _ in range(2)]
    assert versions == [BAD_VERSION, SLOW_VERSION]
    return BAD_VERSION


@pytest.fixture(scope="module")
def server(world: World, bad_version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("serve")
    extra = {
        "SLUICE_FAULTY": f"{bad_version}:0.1:0,{SLOW_VERSION}:0:500",
        "PYTHONPATH": os.pathsep.join([str(FAULT_DIR), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with bentoml_served(world, tmp, extra_env=extra, ready_timeout=180) as url:
        yield url


class Traffic:
    """A client thread calling /predict_batch (20 records of random cards) until stopped."""

    def __init__(self, url: str, entities: list[str]) -> None:
        self.url, self.entities = url, entities
        self.ok = self.failed = 0
        self.failures: list[str] = []
        self.arms: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        rng = random.Random(0)
        with httpx.Client(base_url=self.url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
            while not self._stop.is_set():
                records = [
                    {"entity_id": rng.choice(self.entities), "amount": rng.uniform(5, 300)} for _ in range(20)
                ]
                try:
                    r = client.post("/predict_batch", json={"records": records})
                except httpx.HTTPError as err:
                    self.failed += 1
                    self.failures.append(repr(err))
                    continue
                if r.status_code != 200:
                    self.failed += 1
                    self.failures.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                self.ok += 1
                for out in r.json():
                    self.arms[out["arm"]] = self.arms.get(out["arm"], 0) + 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _canary_params(world: World) -> Params:
    r = world.params.rollout
    return world.params.model_copy(
        update={
            "rollout": r.model_copy(
                update={
                    "hold_s": 3.0,
                    "min_requests": 30,
                    "poll_s": 0.5,
                    "max_wait_s": 60.0,
                    # a loaded 2-core test machine: latency is not what this test is about
                    "guardrails": r.guardrails.model_copy(update={"p99_budget_ms": 5000.0, "max_psi": None}),
                }
            )
        }
    )


def test_good_challenger_promoted_bad_one_rolled_back_zero_failed_requests(
    world: World, server: str, bad_version: str
) -> None:
    import pandas as pd

    from pipelines.artifacts import read_prediction_log
    from pipelines.engines.registry import open_registry
    from pipelines.ops.rollout import CanaryRolledBack, run_canary

    params = _canary_params(world)
    reg = open_registry(params)
    entities = sorted(world.events["entity_id"].astype(str).unique())
    with Traffic(server, entities) as traffic:
        t0 = time.time()
        out = run_canary(params, reg, who="e2e")
        good_s = time.time() - t0
        assert out["champion"] == world.challenger
        assert reg.alias_version(MODEL, "previous") == world.champion
        print(f"\ngood challenger v{world.challenger} promoted in {good_s:.1f} s: {out['steps']}")

        reg.move_alias(MODEL, "challenger", bad_version, who="e2e", why="faulty challenger")
        time.sleep(params.serve.refresh_s * 2)  # let serving load v3 (weight 0 until the canary starts)
        started = pd.Timestamp.now(tz="UTC")
        with pytest.raises(CanaryRolledBack, match=r"step 0 \(5%\).*error rate") as err:
            run_canary(params, reg, who="e2e")
        rolled_back = pd.Timestamp.now(tz="UTC")
        time.sleep(params.serve.refresh_s * 2 + 1)  # serving drops the challenger; traffic keeps flowing

        reg.move_alias(MODEL, "challenger", SLOW_VERSION, who="e2e", why="slow challenger")
        time.sleep(params.serve.refresh_s * 2)
        slow_started = pd.Timestamp.now(tz="UTC")
        with pytest.raises(CanaryRolledBack, match=r"step 0 \(5%\)") as slow_err:
            run_canary(params, reg, who="e2e")
        slow_rolled_back = pd.Timestamp.now(tz="UTC")
        time.sleep(params.serve.refresh_s * 2 + 1)
    assert traffic.failed == 0, traffic.failures[:5]
    assert reg.alias_version(MODEL, "challenger") is None
    assert reg.alias_version(MODEL, "champion") == world.challenger

    log = read_prediction_log(params.paths.prediction_log)
    served = pd.to_datetime(log["served_at"], utc=True, format="ISO8601")
    faults = served[(log["challenger_fallback"].fillna(False).astype(bool) & (served >= started)).to_numpy()]
    assert len(faults) > 0
    breach_to_rollback = (rolled_back - faults.min()).total_seconds()
    window = (served > rolled_back + pd.Timedelta(seconds=params.serve.refresh_s + 1)) & (
        served < slow_started
    )
    after = log[window.to_numpy()]
    assert len(after) and (after["arm"] == "champion").all() and not after["challenger_fallback"].any()
    slow_faults = served[
        (log["challenger_fallback"].fillna(False).astype(bool) & (served >= slow_started)).to_numpy()
    ]
    assert len(slow_faults) > 0
    slow_s = (slow_rolled_back - slow_faults.min()).total_seconds()
    print(
        f"bad challenger v{bad_version}: {err.value}\n"
        f"first failed challenger request -> rollback: {breach_to_rollback:.1f} s; "
        f"slow challenger v{SLOW_VERSION}: {slow_err.value}; first slow request -> rollback: {slow_s:.1f} s\n"
        f"client calls ok={traffic.ok} failed={traffic.failed}; arms answered {traffic.arms}"
    )
