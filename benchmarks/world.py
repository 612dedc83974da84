"""A tiny served world, built by running the real stages: what the serving benchmark and tests serve.

ingest -> (raw copied as validated: the GX suite is not under test here) -> features (Spark local[1]) ->
feature_store (materialize [START, CUT) into a private redis-server when asked and one can be started,
else the embedded SQLite store) -> train twice on the project's own events (point-in-time joined) ->
registry: v1 champion, v2 challenger (weight 0), optionally v3 a PyTorch MLP without alias.

Benchmark-side code (benchmarks never import tests; tests/serving_world.py builds its world here).
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipelines.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]

START = dt.date(2026, 1, 1)
END = dt.date(2026, 1, 8)
# the online store holds the state as of CUT; events of [CUT, END) are "live" traffic (parity sample)
CUT = dt.date(2026, 1, 7)
MODEL = "fraud_scorer"

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

# A tiny synthetic world: big enough for every stage to have frauds to learn, small enough for seconds
# (the tests' projects, tests/conftest.py make_project).
TINY_PARAMS: dict[str, Any] = {
    # dates as strings: DVC refuses YAML date values in params files
    "data": {"start": "2026-01-01", "end": "2026-01-15"},
    "ingest": {
        "synthetic": {
            "seed": 11,
            "n_entities": 60,
            "n_merchants": 40,
            "txns_per_entity_per_day": 3.0,
            "fraud_rate": 0.03,
        }
    },
    "spark": {"master": "local[1]"},
    "train": {"xgboost": {"n_estimators": 40, "max_depth": 4}, "mlp": {"epochs": 3}},
    # tiny data: the gates only have to be reachable, not impressive
    "evaluate": {
        "max_fpr": 0.05,
        "gates": {"roc_auc_min": 0.6, "pr_auc_min": 0.05, "recall_at_fpr_min": 0.05},
    },
}

# The serving world's params over TINY_PARAMS: 250 entities over [START, END), the served model's
# name and the serving knobs above.
WORLD_PARAMS: dict[str, Any] = {
    "data": {"start": START, "end": END},
    "ingest": {"synthetic": {"n_entities": 250}},
    "register": {"model_name": MODEL},
    "serve": SERVE_OVERRIDES,
}


@dataclass
class RedisServer:
    """A private redis-server (never a shared one on 6379): tests may stop and restart it."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    _registered: bool = False

    def start(self) -> None:
        if not self._registered:
            atexit.register(self.stop)  # never leave a redis-server behind the process
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lay_out_project(root: Path, *overrides: dict[str, Any]) -> Params:
    """A project in `root`: params.yaml (the repo's, with each of `overrides` merged in, in order),
    expectations/ and feature_repo/ copied from the repo; returns its params."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for over in overrides:
        raw = merge(raw, over)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for sub in ("expectations", "feature_repo"):
        src = REPO / sub
        if src.is_dir():
            shutil.copytree(
                src, root / sub, dirs_exist_ok=True, ignore=shutil.ignore_patterns("data", "__pycache__")
            )
    return load_params(root / "params.yaml")


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` merged in, nested mappings key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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


def _start_redis(base: Path, overrides: dict[str, Any]) -> RedisServer | None:
    """A private redis-server as the online store (in `overrides`), or None when none can be started."""
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        return None
    redis = RedisServer(free_port(), base)
    redis.start()
    overrides["feature_store"] = {
        "online_store": "redis",
        "redis_connection_string": f"127.0.0.1:{redis.port}",
    }
    return redis


def _register_releases(params: Params, mlp: bool) -> list[str]:
    """Train on the world's events and register v1, v2 (XGBoost) [and v3, an MLP]; v1 champion, v2
    challenger."""
    from pipelines.contract import CHALLENGER, CHAMPION
    from pipelines.engines.registry import ReleaseTags, open_registry

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
    return versions


def build_world(base: Path, use_redis: bool = True, mlp: bool = False) -> World:
    """Build a world under `base` (not memoized). `use_redis=False` keeps the SQLite online store (the
    embedded default, what the benchmark measures); `mlp=True` registers a third version, a PyTorch MLP
    (World.mlp), without alias."""
    from pipelines import feature_store, features, ingest
    from pipelines.io import read_partitions

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = base / "project"
    overrides: dict[str, Any] = {}
    redis = _start_redis(base, overrides) if use_redis else None
    params = lay_out_project(root, TINY_PARAMS, WORLD_PARAMS, overrides)
    ingest.run(params, START, END)
    shutil.copytree(params.paths.raw, params.paths.validated)
    features.run(params, START, END)
    feature_store.run(params, START, CUT)
    versions = _register_releases(params, mlp)
    if redis is not None:
        redis.save()  # the outage test restarts redis from this snapshot
    events = read_partitions(params.paths.validated, START, END)
    return World(
        params, root / "params.yaml", versions[0], versions[1], redis, events, versions[2] if mlp else None
    )
