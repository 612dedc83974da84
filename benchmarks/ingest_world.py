"""The ingestion service's world: a project whose source is a CSV log, its events as JSON, a served process.

Shared by benchmarks/ingest.py and the ingestion tests (benchmarks never import tests): `log_project`
lays out a project whose ingest.source is a CSV log in the card-transactions layout (column mapping,
`%Y-%m-%d %H:%M:%S` timestamps), `canonical_events` reads such a log back as the canonical events a
producer would post, and `IngestServer` runs `bentoml serve` of bentos/ingest_service (what `make
serve-ingest` runs), with SIGKILL for the crash test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.world import free_port, lay_out_project
from pipelines.config import Params
from pipelines.sections import SyntheticParams
from pipelines.sources.log import canonicalize, read_log
from pipelines.sources.synthetic import generate

REPO = Path(__file__).resolve().parents[1]
SERVICE_DIR = REPO / "bentos" / "ingest_service"
LOG_COLUMNS: dict[str, str] = {
    "event_id": "trans_num",
    "entity_id": "cc_num",
    "event_timestamp": "trans_date_trans_time",
    "amount": "amt",
    "merchant": "merchant",
    "category": "category",
    "label": "is_fraud",
    "latitude": "lat",
    "longitude": "long",
    "merchant_latitude": "merch_lat",
    "merchant_longitude": "merch_long",
}
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def log_frame(cfg: SyntheticParams, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Synthetic events of [start, end) in the card-transactions log layout (the LOG_COLUMNS mapping)."""
    ev = generate(cfg, start, end)
    return pd.DataFrame(
        {
            "trans_date_trans_time": ev["event_timestamp"].dt.strftime(TIMESTAMP_FORMAT),
            "cc_num": ev["entity_id"].str.removeprefix("card_").astype(int) + 4_000_000_000_000_000,
            "merchant": "fraud_" + ev["merchant"],
            "category": ev["category"],
            "amt": ev["amount"].round(2),
            "lat": ev["latitude"].round(4),
            "long": ev["longitude"].round(4),
            "trans_num": [hashlib.md5(e.encode()).hexdigest() for e in ev["event_id"]],
            "merch_lat": ev["merchant_latitude"].round(6),
            "merch_long": ev["merchant_longitude"].round(6),
            "is_fraud": ev["label"],
        }
    )


def log_project(root: Path, frame: pd.DataFrame, *overrides: dict[str, Any]) -> Params:
    """A project in `root` whose source is `frame` written as external/transactions.csv."""
    path = root / "external" / "transactions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    source = {
        "kind": "csv",
        "path": "external/transactions.csv",
        "columns": LOG_COLUMNS,
        "timestamp_format": TIMESTAMP_FORMAT,
    }
    return lay_out_project(root, {"ingest": {"source": source}}, *overrides)


def canonical_events(path: Path) -> pd.DataFrame:
    """A log file in the LOG_COLUMNS layout read as the ingest stage reads it (canonical columns)."""
    return canonicalize(read_log(path, "csv", LOG_COLUMNS), LOG_COLUMNS, TIMESTAMP_FORMAT, str(path))


def as_json_events(frame: pd.DataFrame, with_label: bool = True) -> list[dict[str, Any]]:
    """Canonical events as the JSON a producer posts: ISO 8601 UTC times, absent values left out."""
    out = []
    for rec in frame.to_dict("records"):
        event: dict[str, Any] = {}
        for key, value in rec.items():
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                continue
            if key == "label" and not with_label:
                continue
            if isinstance(value, pd.Timestamp):
                value = value.isoformat().replace("+00:00", "Z")
            elif hasattr(value, "item"):  # numpy scalar
                value = value.item()
            event[key] = value
        out.append(event)
    return out


class IngestServer:
    """`bentoml serve` of the ingestion service on `params_path`, in its own process group (port: a free
    one, the same across restarts)."""

    def __init__(
        self, params_path: Path, workdir: Path, env: dict[str, str] | None = None, cpus: str | None = None
    ) -> None:
        self.params_path = params_path  # its ingest_service section says how many workers
        self.workdir = workdir
        self.cpus = cpus  # `taskset -c` list to pin the server to (the benchmark), None = anywhere
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, ready_timeout: float = 120.0) -> None:
        """Start the server and wait until /readyz answers 200 (its log: workdir/serve-<n>.log)."""
        import httpx

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log_path = self.workdir / f"serve-{self.starts}.log"
        env = {
            **os.environ,
            "SLUICE_PARAMS": str(self.params_path),
            "BENTOML_HOME": str(self.workdir / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            **self.env,
        }
        cmd = ["taskset", "-c", self.cpus] if self.cpus else []
        cmd += [sys.executable, "-m", "bentoml", "serve", "service:IngestService"]
        cmd += ["--working-dir", str(SERVICE_DIR), "--host", "127.0.0.1", "--port", str(self.port)]
        with log_path.open("w") as log_file:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingest server exited:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"ingest server not ready in {ready_timeout:.0f} s:\n{tail}")

    def _tree(self) -> list[Any]:
        """The server process and all its descendants (BentoML's workers run in sessions of their own, so
        a signal to the process group would miss them)."""
        import psutil

        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the whole server (arbiter and workers) at once: no shutdown hook runs."""
        import psutil

        tree = self._tree()
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=30)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the server (it stops its workers, which commit what is queued); SIGKILL what is left
        after 30 s."""
        tree = self._tree()
        if not tree:
            return
        tree[0].send_signal(signal.SIGTERM)
        try:
            assert self.proc is not None
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        import psutil

        for p in tree[1:]:
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.is_running():
                    p.send_signal(signal.SIGKILL)

    def log_text(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.workdir.glob("serve-*.log")))
