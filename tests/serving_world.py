"""A tiny served world for the serving tests, built once per test process by running the real stages.

ingest -> (raw copied as validated: the GX suite is not under test here) -> features (Spark, the shared
local[1] session) -> feature_store (materialize [start, cut) into a private redis-server when one can be
started, else SQLite) -> train twice on the project's own events (point-in-time joined) -> registry:
v1 champion, v2 challenger (weight 0). `build_world` is memoized: every serving test module shares it.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.config import Params
from tests.conftest import make_project

START = dt.date(2026, 1, 1)
END = dt.date(2026, 1, 8)
# the online store holds the state as of CUT; events of [CUT, END) are "live" traffic (parity sample)
CUT = dt.date(2026, 1, 7)
MODEL = "fraud_scorer"
API_KEY = "test-key-1"
RATE_KEY = "test-key-rate"

SERVE_OVERRIDES: dict[str, Any] = {
    "refresh_s": 1.0,
    "feature_timeout_ms": 2000,  # shared, loaded test machine: only a dead store should time out
    "breaker_failures": 2,
    "breaker_reset_s": 1.0,
    "rate_limit_per_s": 1000,
    "rate_limit_burst": 2000,
    "max_request_bytes": 200_000,
    "max_records": 300,
    "log_flush_s": 0.1,
    "max_latency_ms": 1000,
    "max_batch_size": 64,
}


@dataclass
class RedisServer:
    """A private redis-server (never the shared one on 6379): tests may stop and restart it."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    _registered: bool = False

    def start(self) -> None:
        if not self._registered:
            atexit.register(self.stop)  # never leave a redis-server behind the test process
            self._registered = True
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def save(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "save"], check=True, capture_output=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@dataclass
class World:
    params: Params
    params_path: Path
    champion: str
    challenger: str
    redis: RedisServer | None
    events: pd.DataFrame  # validated events of [START, END) with their labels
    mlp: str | None = None


_LOCK = threading.Lock()
_WORLD: World | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _training_frames(params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The project's events of [START, CUT) with the entity's state after its PREVIOUS event (the
    dataset stage's point-in-time rule), split by time."""
    from pipelines.io import read_partitions

    events = read_partitions(params.paths.validated, START, CUT).sort_values("event_timestamp")
    feats = read_partitions(params.paths.features, START, CUT).sort_values("event_timestamp")
    feats = feats.drop(columns=[c for c in ("date",) if c in feats.columns])
    events = events.drop(columns=[c for c in ("date",) if c in events.columns])
    joined = pd.merge_asof(
        events,
        feats,
        on="event_timestamp",
        by="entity_id",
        allow_exact_matches=False,  # strictly earlier events only
        direction="backward",
    )
    cut = int(len(joined) * 0.75)
    return joined.iloc[:cut].reset_index(drop=True), joined.iloc[cut:].reset_index(drop=True)


def _train(params: Params, seed: int, n_estimators: int, kind: str = "xgboost") -> dict[str, Any]:
    import json

    from pipelines import train

    p = params.model_copy(
        update={
            "train": params.train.model_copy(
                update={
                    "seed": seed,
                    "model": kind,
                    "device": "cpu",
                    "xgboost": params.train.xgboost.model_copy(update={"n_estimators": max(n_estimators, 1)}),
                }
            )
        }
    )
    train.run(p, START, CUT)
    return json.loads((params.paths.models / "release.json").read_text())


def build_world(base: Path) -> World:
    """Build (once per process) the served world under `base`."""
    global _WORLD
    with _LOCK:
        if _WORLD is None:
            _WORLD = _build(base)
        return _WORLD


def _build(base: Path, use_redis: bool = True, mlp: bool = False) -> World:
    """Build a world under `base` (not memoized). `use_redis=False` keeps the SQLite online store (the
    embedded default, what the benchmark measures); `mlp=True` registers a third version, a PyTorch MLP
    (World.mlp), without alias."""
    from pipelines import feature_store, features, ingest
    from pipelines.contract import CHALLENGER, CHAMPION
    from pipelines.engines.registry import ReleaseTags, open_registry

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = base / "project"
    redis = None
    overrides: dict[str, Any] = {
        "data": {"start": START, "end": END},
        "ingest": {"synthetic": {"n_entities": 250}},
        "register": {"model_name": MODEL},
        "serve": SERVE_OVERRIDES,
    }
    if use_redis and shutil.which("redis-server") and shutil.which("redis-cli"):
        redis = RedisServer(_free_port(), base)
        redis.start()
        overrides["feature_store"] = {
            "online_store": "redis",
            "redis_connection_string": f"127.0.0.1:{redis.port}",
        }
    params = make_project(root, overrides)
    ingest.run(params, START, END)
    shutil.copytree(params.paths.raw, params.paths.validated)
    features.run(params, START, END)
    feature_store.run(params, START, CUT)

    train_df, valid_df = _training_frames(params)
    params.paths.dataset.mkdir(parents=True, exist_ok=True)
    train_df.to_parquet(params.paths.dataset / "train.parquet")
    valid_df.to_parquet(params.paths.dataset / "valid.parquet")
    registry = open_registry(params)
    versions = []
    plan: list[tuple[int, int, str]] = [(1, 30, "xgboost"), (2, 12, "xgboost")] + (
        [(3, 0, "mlp")] if mlp else []
    )
    for seed, n_trees, kind in plan:
        rel = _train(params, seed, n_trees, kind)
        tags = ReleaseTags(
            feature_list=rel["feature_list"],
            feature_service=params.feature_store.feature_service,
            threshold=0.2,
            train_start=rel["train_start"],
            train_end=rel["train_end"],
            fingerprint=rel["fingerprint"],
        )
        versions.append(registry.register_release(MODEL, rel["model_uri"], rel["run_id"], tags))
    registry.move_alias(MODEL, CHAMPION, versions[0], who="tests", why="serving world")
    registry.move_alias(MODEL, CHALLENGER, versions[1], who="tests", why="serving world")
    if redis is not None:
        redis.save()  # the outage test restarts redis from this snapshot
    from pipelines.io import read_partitions

    events = read_partitions(params.paths.validated, START, END)
    return World(
        params, root / "params.yaml", versions[0], versions[1], redis, events, versions[2] if mlp else None
    )


SERVICE_DIR = Path(__file__).resolve().parents[1] / "bentos" / "fraud_scorer"


@contextlib.contextmanager
def bentoml_served(
    world: World, workdir: Path, extra_env: dict[str, str] | None = None, ready_timeout: float = 120
) -> Iterator[str]:
    """`bentoml serve` of the service (what `make serve` runs) on a free port, ready; yields its URL.

    Its log goes to workdir/serve.log and is shown when the server dies or never gets ready.
    """
    import httpx
    import pytest

    port = _free_port()
    env = {
        **os.environ,
        "SLUICE_PARAMS": str(world.params_path),
        "SLUICE_API_KEYS": API_KEY,
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        **(extra_env or {}),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "bentoml", "serve", "service:FraudScorer", "--working-dir", str(SERVICE_DIR)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    log_path = workdir / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + ready_timeout
            while time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                pytest.fail(
                    f"bentoml serve not ready in {ready_timeout:.0f} s:\n" + log_path.read_text()[-3000:]
                )
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
