"""The served world of the serving tests (benchmarks/world.py, built once per test process) and a
`bentoml serve` of the service on it.

The world: ingest -> features (Spark, the shared local[1] session) -> feature_store (materialize
[start, cut) into a private redis-server when one can be started, else SQLite) -> train twice on the
project's own events -> registry: v1 champion, v2 challenger (weight 0). `build_world` is memoized: every
serving test module shares it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.world import CUT, END, MODEL, START, World, free_port
from benchmarks.world import build_world as _build

__all__ = ["API_KEY", "CUT", "END", "MODEL", "RATE_KEY", "START", "World", "bentoml_served", "build_world"]

API_KEY = "test-key-1"
RATE_KEY = "test-key-rate"

_LOCK = threading.Lock()
_WORLD: World | None = None


def build_world(base: Path) -> World:
    """Build (once per process) the served world under `base`."""
    global _WORLD
    with _LOCK:
        if _WORLD is None:
            _WORLD = _build(base)
        return _WORLD


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

    port = free_port()
    env = {
        **os.environ,
        "SLUICE_PARAMS": str(world.params_path),
        "SLUICE_API_KEYS": API_KEY,
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        **(extra_env or {}),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
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
