"""Ingestion throughput: single events over HTTP (group commit vs a commit per request) and batch uploads
against the ingest stage reading the same file.

    .venv/bin/python -m benchmarks.ingest [--duration 20] [--clients 1,16,64] [--days 30]
                                          [--out reports/bench_ingest.json]

A project in a temp dir whose source is a CSV log in the card-transactions layout (benchmarks/ingest_world).
The ingestion service (`bentoml serve`, one worker, no keys, no rate limit) runs pinned to core 0; wrk
(one thread, a Lua script POSTing one event per request, a new event_id each time) to core 1. Non-2xx
answers count as failures, never as throughput. Measured in one run:

- events:  POST /v1/ingest/events req/s and p50/p99 at each client count, as shipped (group commit), and
           at the top count with ingest_service.commit_group 1 (a commit, an fsync, per request): the ratio
           is what group commit buys;
- store:   the same events through the library alone (pipelines.ingestion, no HTTP, 64 concurrent
           callers in this process), group commit vs a commit per request: the landing store's own
           ceiling, which the HTTP numbers above sit under;
- batch:   POST /v1/ingest/batch of the log file (read, validated whole with the GX suite, landed in one
           transaction: client wall time, median of 3) in rows/s, against `ingest.run` over the same file
           as the configured log (read, canonicalized, written as day partitions), in the same process
           as this script: the ratio batch / stage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.ingest_world import IngestServer, log_frame, log_project
from benchmarks.serving import CLIENT_CORE, SERVER_CORE, wrk
from benchmarks.world import merge
from pipelines import ingest
from pipelines.config import load_params
from pipelines.ingestion.service import Ingestion
from pipelines.sections import SyntheticParams

BENCH_SERVICE: dict[str, Any] = {"rate_limit_per_s": 1e9, "rate_limit_burst": 1_000_000_000}
LUA = r"""
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"event_id":"%(prefix)s-%%d","entity_id":"%%d","event_timestamp":"2026-01-0%%dT%%02d:%%02d:%%02dZ",'
    .. '"amount":%%.2f,"merchant":"fraud_m_%%d","category":"grocery_pos","latitude":40.7,'
    .. '"longitude":-74.0,"merchant_latitude":40.8,"merchant_longitude":-73.9}',
    n, 4000000000000000 + n %% 997, 1 + n %% 7, math.floor(n / 3600) %% 24, math.floor(n / 60) %% 60,
    n %% 60, 5 + (n * 7919) %% 900 + (n %% 97) / 100, n %% 50)
  return wrk.format("POST", "/v1/ingest/events", {["Content-Type"] = "application/json"}, body)
end
"""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    ap.add_argument(
        "--clients", default="1,16,64", help="comma-separated client counts (the last is the top)"
    )
    ap.add_argument("--days", type=int, default=30, help="days of events in the batch file (~2,000 a day)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return ap.parse_args(argv)


def _script(tmp: Path) -> Path:
    """A wrk script with event ids no earlier run used (a duplicate is cheaper than a new event)."""
    path = tmp / f"events-{uuid.uuid4().hex[:8]}.lua"
    path.write_text(LUA % {"prefix": uuid.uuid4().hex[:8]})
    return path


def _served(project: Path, tmp: Path, name: str, service: dict[str, Any]) -> IngestServer:
    """The service on a copy of the project's params with `service` merged into ingest_service."""
    import yaml

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["ingest_service"] = merge(raw.get("ingest_service") or {}, service)
    path = project / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return IngestServer(path, tmp / name, env={"SLUICE_API_KEYS": ""}, cpus=SERVER_CORE)


def events(project: Path, tmp: Path, clients: list[int], duration: int) -> dict[str, Any]:
    """wrk runs against the shipped service, then the top client count with a commit per request."""
    out: dict[str, Any] = {}
    for name, service in (("group", BENCH_SERVICE), ("per_request", {**BENCH_SERVICE, "commit_group": 1})):
        server = _served(project, tmp, name, service)
        server.start()
        try:
            wrk(server.url, 8, 3, _script(tmp))  # warm-up
            counts = clients if name == "group" else clients[-1:]
            out[name] = {c: wrk(server.url, c, duration, _script(tmp)) for c in counts}
            for c, r in out[name].items():
                print(
                    f"  events {name:<12} {c:>3} clients: {r['ok_rps']:>8,.0f} req/s  p50 {r['p50_ms']} ms  "
                    f"p99 {r['p99_ms']} ms  failed {r['failed']}"
                )
        finally:
            server.stop()
    return out


def store(project: Path, callers: int, n_events: int = 20_000) -> dict[str, Any]:
    """Events/s of `Ingestion.land_events` (one event per call, `callers` at a time), per commit_group."""
    out: dict[str, Any] = {}
    base = load_params(project / "params.yaml")
    for name, group in (("group", base.ingest_service.commit_group), ("per_request", 1)):
        cfg = base.ingest_service.model_copy(update={"commit_group": group, "max_pending": n_events})
        landing = base.ingest.landing.model_copy(update={"store": f"data/landing/store-{name}.db"})
        params = base.model_copy(
            update={"ingest_service": cfg, "ingest": base.ingest.model_copy(update={"landing": landing})}
        )
        ing = Ingestion(params)
        ing.start()
        bodies = [
            json.dumps(
                {"event_id": f"{name}-{i}", "entity_id": "1", "event_timestamp": "2026-01-02", "amount": 1.0}
            ).encode()
            for i in range(n_events)
        ]

        try:
            seconds = asyncio.run(_drive(ing, bodies, callers))
        finally:
            ing.close()
        out[name] = round(n_events / seconds)
        print(f"  store  {name:<12} {callers:>3} callers: {out[name]:>8,} events/s (library, no HTTP)")
    return out


async def _drive(ing: Ingestion, bodies: list[bytes], callers: int) -> float:
    """Seconds for `callers` concurrent loops to land every body, one per call."""
    todo = iter(bodies)

    async def caller() -> None:
        for b in todo:
            await ing.land_events(b)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return time.perf_counter() - t0


def batch(project: Path, tmp: Path, log_file: Path, rows: int) -> dict[str, Any]:
    """POST the log file as a batch (3 times, new ids each: the first one warm-up) vs ingest.run over it."""
    data = log_file.read_bytes()
    server = _served(project, tmp, "batch", BENCH_SERVICE)
    server.start()
    times = []
    try:
        with httpx.Client(base_url=server.url, timeout=600) as c:
            for i in range(4):  # the first: GX's import and first validation
                body = data if i == 0 else _fresh_ids(data, i)
                t0 = time.perf_counter()
                answer = c.post("/v1/ingest/batch", content=body, headers={"Content-Type": "text/csv"})
                elapsed = time.perf_counter() - t0
                assert answer.status_code == 202 and answer.json()["landed"] == rows, answer.text[:500]
                if i:
                    times.append(elapsed)
    finally:
        server.stop()
    loaded = load_params(project / "params.yaml")
    # the stage reads the file alone (the uploads above landed the same rows in the store)
    landing = loaded.ingest.landing.model_copy(update={"enabled": False})
    stage_params = loaded.model_copy(update={"ingest": loaded.ingest.model_copy(update={"landing": landing})})
    stage = []
    for _ in range(3):
        t0 = time.perf_counter()
        summary = ingest.run(stage_params, stage_params.data.start, stage_params.data.end)
        stage.append(time.perf_counter() - t0)
        assert summary["rows"] == rows
    batch_s, stage_s = statistics.median(times), statistics.median(stage)
    result = {
        "rows": rows,
        "bytes": len(data),
        "batch_s": round(batch_s, 3),
        "stage_s": round(stage_s, 3),
        "batch_rows_per_s": round(rows / batch_s),
        "stage_rows_per_s": round(rows / stage_s),
        "batch_over_stage": round(stage_s / batch_s, 3),
    }
    print(
        f"  batch  {rows:,} rows ({len(data) / 1e6:.1f} MB CSV): upload {result['batch_rows_per_s']:,} "
        f"rows/s ({batch_s:.2f} s), ingest stage {result['stage_rows_per_s']:,} rows/s ({stage_s:.2f} s)"
    )
    return result


def _fresh_ids(csv: bytes, run: int) -> bytes:
    """The CSV with every trans_num (event id) made new, so each upload lands every row."""
    lines = csv.split(b"\n")
    header = lines[0].split(b",")
    col = header.index(b"trans_num")
    out = [lines[0]]
    for line in lines[1:]:
        if line:
            cells = line.split(b",")
            cells[col] = cells[col] + f"-{run}".encode()
            out.append(b",".join(cells))
    return b"\n".join(out) + b"\n"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if not shutil.which("wrk") or not shutil.which("taskset"):
        sys.exit("needs wrk and taskset (Debian: apt-get install -y wrk util-linux)")
    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp_name:
        tmp = Path(tmp_name)
        start = load_params(Path(__file__).resolve().parents[1] / "params.yaml").data.start
        frame = log_frame(SyntheticParams(n_entities=1000), start, start + dt.timedelta(days=args.days))
        project = log_project(
            tmp / "project",
            frame,
            {"data": {"start": str(start), "end": str(start + dt.timedelta(days=args.days))}},
        )
        print(f"==> ingestion benchmark: server on core {SERVER_CORE}, wrk on core {CLIENT_CORE}")
        ev = events(project.root, tmp, clients, args.duration)
        st = store(project.root, clients[-1])
        bt = batch(project.root, tmp, project.resolve(project.ingest.source.path), len(frame))
    top = clients[-1]
    group, single = ev["group"][top]["ok_rps"], ev["per_request"][top]["ok_rps"]
    results = {
        "events": ev,
        "store": st,
        "batch": bt,
        "ratios": {
            f"group_commit_over_commit_per_request_at_{top}": round(group / single, 2) if single else None,
            f"store_group_commit_over_commit_per_request_at_{top}": round(st["group"] / st["per_request"], 2),
            "batch_rows_per_s_over_ingest_stage": bt["batch_over_stage"],
        },
    }
    print(json.dumps(results["ratios"], indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
