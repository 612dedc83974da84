"""Online serving throughput/latency: our BentoML service vs batching off vs a plain sync FastAPI app.

    .venv/bin/python -m benchmarks.serving [--project DIR] [--duration 20] [--clients 1,16,64]
                                           [--no-mlp] [--profile] [--out reports/bench_serving.json]

Without --project, a tiny world is built in a temp dir by the real stages (benchmarks/world.py:
ingest -> features -> Feast SQLite online store -> two XGBoost releases + one PyTorch MLP registered).
Every server runs in its own process pinned to core 0 (`taskset -c 0`, one worker); the load generator
(wrk, one thread, a Lua script POSTing one record per request, entity and amount varying per request so
the prediction cache rarely hits) runs pinned to core 1. Non-2xx answers count as failures, never as
throughput. All servers score the same champion with the same Feast lookup; configurations:

- fastapi:        benchmarks/serving_baseline.py (sync def endpoint, one request per call)
- bento-nobatch:  the service with serve.batching false (everything else on)
- bento:          the service as shipped (adaptive batching, cache, prediction log, metrics)
- *-mlp:          the last two with the PyTorch MLP release as champion

The shipped service is also driven through its other scoring routes at the top client count, same
server, same run: /v1/predict (seed 000's body) and /v2/models/{name}/infer (Open Inference Protocol
tensors), between two /predict runs; their req/s over the mean of those is the API issue's ratio
(target >= 0.9).

Prints a table and the ratios the serving issue asks for; writes them as JSON (--out). --profile
samples the batched server with py-spy during its 64-client run (py-spy from $PY_SPY or PATH) and prints
where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

SERVER_CORE = "0"
CLIENT_CORE = "1"
# serving knobs of the benchmarked service: the shipped defaults, minus auth and the rate limit
BENCH_SERVE: dict[str, Any] = {"rate_limit_per_s": 1e9, "rate_limit_burst": 1_000_000_000}

LUA = r"""
local entities = {%(entities)s}
local n = 0
local fmt = '%(body)s'
request = function()
  n = n + 1
  local e = entities[(n %% #entities) + 1]
  local amount = 5 + (n * 7919) %% 900 + (n %% 97) / 100
  local hh, mm, ss = math.floor(n / 3600) %% 24, math.floor(n / 60) %% 60, n %% 60
  local body = string.format(fmt, e, amount, hh, mm, ss)
  return wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json"}, body)
end
"""
# one event per request, the same fields through each scoring route (%%s entity, %%.2f amount, time)
_EVENT = (
    '"entity_id":"%%s","amount":%%.2f,"timestamp":"2026-01-07T%%02d:%%02d:%%02dZ","merchant":"merchant_05",'
    '"category":"shopping_net","latitude":36.46,"longitude":-99.43,"merchant_latitude":36.9,'
    '"merchant_longitude":-98.7'
)
_V2 = (
    '{"inputs":['
    '{"name":"entity_id","shape":[1],"datatype":"BYTES","data":["%%s"]},'
    '{"name":"amount","shape":[1],"datatype":"FP64","data":[%%.2f]},'
    '{"name":"timestamp","shape":[1],"datatype":"BYTES","data":["2026-01-07T%%02d:%%02d:%%02dZ"]},'
    '{"name":"merchant","shape":[1],"datatype":"BYTES","data":["merchant_05"]},'
    '{"name":"category","shape":[1],"datatype":"BYTES","data":["shopping_net"]},'
    '{"name":"latitude","shape":[1],"datatype":"FP64","data":[36.46]},'
    '{"name":"longitude","shape":[1],"datatype":"FP64","data":[-99.43]},'
    '{"name":"merchant_latitude","shape":[1],"datatype":"FP64","data":[36.9]},'
    '{"name":"merchant_longitude","shape":[1],"datatype":"FP64","data":[-98.7]}]}'
)
# route -> (path, body format, the endpoint label of sluice_batch_size)
ROUTES: dict[str, tuple[str, str, str]] = {
    "predict": ("/predict", '{"records":[{' + _EVENT + "}]}", "predict"),
    "v1": ("/v1/predict", '{"model":"%(model)s","features":{' + _EVENT + "}}", "v1_predict"),
    "v2": ("/v2/models/%(model)s/infer", _V2, "v2_infer"),
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except Exception as err:  # not up yet
        return getattr(err, "code", 0) or 0, ""


class Server:
    """One server process pinned to SERVER_CORE."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.cmd, self.env, self.log = name, cmd, env, log
        self.port = int(cmd[cmd.index("--port") + 1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.fh = self.log.open("w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *self.cmd],
            cwd=REPO,
            env=self.env,
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} died at start-up:\n{self.log.read_text()[-4000:]}")
            if _get(f"{self.url}/readyz", 2)[0] == 200:
                return self
            time.sleep(0.5)
        sys.exit(f"{self.name} not ready in 240 s:\n{self.log.read_text()[-4000:]}")

    def worker_pids(self) -> list[int]:
        """The service worker processes: descendants of the server whose command runs the BentoML worker."""
        assert self.proc is not None
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                todo.append(child)
                try:
                    cmd = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"_bentoml_impl.worker.service" in cmd:
                    found.append(child)
        return found

    def __exit__(self, *_: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.fh.close()


def wrk(url: str, clients: int, duration: int, script: Path) -> dict[str, Any]:
    """One wrk run; req/s counts 2xx answers only."""
    cmd = [
        "taskset",
        "-c",
        CLIENT_CORE,
        "wrk",
        "-t1",
        f"-c{clients}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))  # type: ignore[union-attr]
    secs_m = re.search(r"requests in ([\d.]+)(ms|s|m)", out)
    assert secs_m is not None
    secs = float(secs_m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[secs_m.group(2)]
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in sock.groups()) if sock else 0

    def pct(p: str) -> float | None:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else None

    return {
        "clients": clients,
        "requests": total,
        "ok_rps": round((total - non2xx) / secs, 1),
        "failed": non2xx + errors,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
    }


def batch_hist(url: str, endpoint: str = "predict") -> dict[str, float]:
    """Cumulative sluice_batch_size buckets of /metrics (of one endpoint label)."""
    _, text = _get(f"{url}/metrics", 10)
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(rf'sluice_batch_size_bucket\{{endpoint="{endpoint}",le="([^"]+)"\}} ([\d.e+]+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def counter_sum(url: str, name: str, **labels: str) -> float:
    """Sum of a counter's samples on /metrics whose labels include `labels`."""
    _, text = _get(f"{url}/metrics", 10)
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def hist_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Per-bucket counts (not cumulative) of the calls between two scrapes: {"<=1": n, "<=2": n, ...}."""
    out, prev = {}, 0.0
    for le in sorted(after, key=lambda x: float("inf") if x == "+Inf" else float(x)):
        cum = after[le] - before.get(le, 0.0)
        out[f"<={le}"] = int(cum - prev)
        prev = cum
    return {k: v for k, v in out.items() if v}


def write_variant(project: Path, name: str, serve: dict[str, Any]) -> Path:
    """params.<name>.yaml beside the project's params.yaml (same root) with a serve section override."""
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["serve"] = {**BENCH_SERVE, **serve}
    path = project / f"params.{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def set_champion(project: Path, version: str) -> None:
    from pipelines.config import load_params
    from pipelines.engines.registry import open_registry

    params = load_params(project / "params.yaml")
    reg = open_registry(params)
    reg.move_alias(params.register_.model_name, "champion", version, who="benchmark", why="serving benchmark")
    reg.set_rollout_state(params.register_.model_name, challenger_weight=0, who="benchmark")


def profile(pid: int, seconds: int, out: Path) -> list[tuple[str, float]]:
    """py-spy samples of `pid` for `seconds`: the top frames by own (leaf) share and by inclusive share."""
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not spy:
        print("  (py-spy not found: set PY_SPY or install it; skipping the profile)")
        return []
    raw = out.with_suffix(".txt")
    subprocess.run(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        capture_output=True,
        check=False,
    )
    if not raw.exists():
        return []
    leaf: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        count = int(n)
        total += count
        frames = stack.split(";")
        leaf[_area(frames[-1])] += count
        for area in {_area(f) for f in frames}:
            incl[area] += count
    summary = [(k, round(100 * v / total, 1)) for k, v in incl.most_common(25)]
    out.write_text(
        json.dumps({"inclusive_pct": summary, "leaf_pct": leaf.most_common(25), "samples": total}, indent=1)
    )
    return summary


def _area(frame: str) -> str:
    """A frame 'func (path/to/module.py:line)' -> 'package:func' (coarse enough to add up)."""
    m = re.match(r"(.+?) \((.+?):\d+\)", frame)
    if not m:
        return frame
    func, path = m.groups()
    parts = Path(path).parts
    if "site-packages" in parts:
        pkg = parts[parts.index("site-packages") + 1]
    elif "pipelines" in parts:
        pkg = ".".join([*parts[parts.index("pipelines") : -1], Path(path).stem])
    else:
        pkg = Path(path).stem
    return f"{pkg}:{func}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="an existing served project (params.yaml, registry, Feast)")
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--no-mlp", action="store_true", help="skip the PyTorch MLP runs")
    ap.add_argument("--only-bento", action="store_true", help="only the shipped service (and its routes)")
    ap.add_argument("--mlp", help="with --project: the registered version of a PyTorch MLP release")
    ap.add_argument("--profile", action="store_true", help="py-spy the batched server at 64 clients")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench_serving.json")
    return ap.parse_args(argv)


def served_project(args: argparse.Namespace, tmp: Path) -> tuple[Path, str, str | None]:
    """(project root, champion version, MLP version or None): --project's, else a world built in `tmp`."""
    if args.project is None:
        from benchmarks.world import build_world

        print("building a tiny served world (real stages; ~1-2 min) ...", flush=True)
        world = build_world(tmp, use_redis=False, mlp=not args.no_mlp)
        return world.params_path.parent, world.champion, world.mlp
    from pipelines.config import load_params
    from pipelines.engines.registry import open_registry

    project = args.project.resolve()
    p = load_params(project / "params.yaml")
    mv = open_registry(p).get_version_by_alias(p.register_.model_name, "champion")
    assert mv is not None, "the project has no champion"
    return project, str(mv.version), (None if args.no_mlp else args.mlp)


def wrk_script(project: Path, tmp: Path, route: str = "predict") -> Path:
    """The wrk Lua script POSTing one event per request to `route` (ROUTES) over 500 of the project's
    entities."""
    import pandas as pd

    from pipelines.config import load_params

    model = load_params(project / "params.yaml").register_.model_name
    path, body, _ = ROUTES[route]
    entities = sorted(pd.read_parquet(project / "data" / "raw")["entity_id"].astype(str).unique())[:500]
    script = tmp / f"post-{route}.lua"
    fill = {"model": model}
    script.write_text(
        LUA % {"entities": ",".join(f'"{e}"' for e in entities), "path": path % fill, "body": body % fill}
    )
    return script


class Servers:
    """Builds the benchmarked servers of one project (each on a free port, logs under `tmp`)."""

    def __init__(self, project: Path, tmp: Path) -> None:
        self.project, self.tmp = project, tmp
        self.base_env = {
            **os.environ,
            "BENTOML_HOME": str(tmp / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "PYTHONPATH": str(REPO),
        }

    def _server(self, name: str, serve: dict[str, Any], cmd: list[str]) -> Server:
        env = {**self.base_env, "SLUICE_PARAMS": str(write_variant(self.project, name, serve))}
        return Server(name, cmd, env, self.tmp / f"{name}.log")

    def bento(self, name: str, serve: dict[str, Any]) -> Server:
        cmd = [sys.executable, "-m", "bentoml", "serve", "service:FraudScorer"]
        cmd += ["--working-dir", str(REPO / "bentos" / "fraud_scorer")]
        cmd += ["--host", "127.0.0.1", "--port", str(_free_port())]
        return self._server(name, serve, cmd)

    def fastapi(self, name: str) -> Server:
        cmd = [sys.executable, "-m", "uvicorn", "benchmarks.serving_baseline:app"]
        cmd += ["--host", "127.0.0.1", "--port", str(_free_port()), "--workers", "1"]
        cmd += ["--no-access-log", "--log-level", "warning"]
        return self._server(name, {}, cmd)

    def plan(self, champion: str, mlp: str | None) -> list[tuple[str, Callable[[], Server], str]]:
        """(configuration, server factory, champion version to serve) of every run, in order."""
        plan: list[tuple[str, Callable[[], Server], str]] = [
            ("fastapi", lambda: self.fastapi("fastapi"), champion),
            ("bento-nobatch", lambda: self.bento("bento-nobatch", {"batching": False}), champion),
            ("bento", lambda: self.bento("bento", {}), champion),
        ]
        if mlp:
            plan += [
                ("fastapi-mlp", lambda: self.fastapi("fastapi-mlp"), mlp),
                ("bento-nobatch-mlp", lambda: self.bento("bento-nobatch-mlp", {"batching": False}), mlp),
                ("bento-mlp", lambda: self.bento("bento-mlp", {}), mlp),
            ]
        return plan


def measure(
    name: str,
    server: Server,
    clients: int,
    args: argparse.Namespace,
    script: Path,
    tmp: Path,
    endpoint: str = "predict",
) -> dict[str, Any]:
    """One wrk run at `clients` against a ready server, with the service's own counters when a Bento."""
    is_bento = name.startswith("bento")
    before = batch_hist(server.url, endpoint) if is_bento else {}
    fb0 = counter_sum(server.url, "sluice_feature_fallbacks_total")
    hit0 = counter_sum(server.url, "sluice_cache_hits_total")
    prof = None
    if args.profile and name == "bento" and clients == max(_clients(args)):
        r, prof = _profiled_wrk(server, clients, args.duration, script, tmp)
    else:
        r = wrk(server.url, clients, args.duration, script)
    if is_bento:
        r["batch_size_hist"] = hist_delta(before, batch_hist(server.url, endpoint))
        # answers without fresh features (lookups over serve.feature_timeout_ms), cache hits
        r["feature_fallbacks"] = int(counter_sum(server.url, "sluice_feature_fallbacks_total") - fb0)
        r["cache_hits"] = int(counter_sum(server.url, "sluice_cache_hits_total") - hit0)
    if prof:
        r["profile_inclusive_pct"] = prof
    print(
        f"{name:18s} c={clients:3d}  {r['ok_rps']:8.1f} req/s  failed={r['failed']:6d}  "
        f"p50={r['p50_ms']} ms  p99={r['p99_ms']} ms  "
        f"fallbacks={r.get('feature_fallbacks', '-')}  {r.get('batch_size_hist', '')}",
        flush=True,
    )
    return r


def _profiled_wrk(
    server: Server, clients: int, duration: int, script: Path, tmp: Path
) -> tuple[dict[str, Any], list[tuple[str, float]] | None]:
    """A wrk run while py-spy samples the service worker (the newest process of the server's session)."""
    import threading

    worker = max(server.worker_pids())
    holder: dict[str, Any] = {}
    seconds = max(5, duration - 4)
    t = threading.Thread(target=lambda: holder.update(top=profile(worker, seconds, tmp / "profile.json")))
    t.start()
    r = wrk(server.url, clients, duration, script)
    t.join()
    return r, holder.get("top")


def measure_routes(
    server: Server, project: Path, args: argparse.Namespace, tmp: Path
) -> dict[str, list[dict[str, Any]]]:
    """/v1/predict and /v2 infer at the top client count, between two /predict runs (same server)."""
    top = max(_clients(args))
    runs: dict[str, list[dict[str, Any]]] = {"bento-predict-again": []}
    for route in ("v1", "v2"):
        script = wrk_script(project, tmp, route)
        wrk(server.url, 8, 3, script)  # warm-up of the route
        runs[f"bento-{route}"] = [measure(f"bento-{route}", server, top, args, script, tmp, ROUTES[route][2])]
    again = measure("bento-predict-again", server, top, args, wrk_script(project, tmp), tmp)
    runs["bento-predict-again"].append(again)
    return runs


def ratios(results: dict[str, Any], top: int, mlp: str | None) -> dict[str, float]:
    """The ratios the serving issue asks for, at `top` clients."""

    def rps(name: str) -> float:
        return next(r["ok_rps"] for r in results["runs"][name] if r["clients"] == top)

    out = {
        f"bento/bento-nobatch@{top} (xgboost, target >= 1.5)": rps("bento") / rps("bento-nobatch"),
        f"bento/fastapi@{top} (xgboost, target >= 1.0)": rps("bento") / rps("fastapi"),
    }
    out.update(route_ratios(results, top))
    if mlp:
        out[f"bento-mlp/bento-nobatch-mlp@{top} (mlp cpu, target >= 1.4)"] = rps("bento-mlp") / rps(
            "bento-nobatch-mlp"
        )
        out[f"bento-mlp/fastapi-mlp@{top} (mlp cpu)"] = rps("bento-mlp") / rps("fastapi-mlp")
    return {k: round(v, 2) for k, v in out.items()}


def route_ratios(results: dict[str, Any], top: int) -> dict[str, float]:
    """Only the routes' ratios (--only-bento)."""
    runs = results["runs"]
    rps = {k: next(r["ok_rps"] for r in v if r["clients"] == top) for k, v in runs.items()}
    predict = (rps["bento"] + rps["bento-predict-again"]) / 2
    return {
        f"/v1/predict / /predict @{top} (target >= 0.9)": round(rps["bento-v1"] / predict, 2),
        f"/v2/models/{{name}}/infer / /predict @{top} (target >= 0.9)": round(rps["bento-v2"] / predict, 2),
    }


def _clients(args: argparse.Namespace) -> list[int]:
    return [int(c) for c in args.clients.split(",")]


def _report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print("\nratios (same machine, same run):")
    for k, v in results["ratios"].items():
        print(f"  {k}: {v}")
    if args.profile and results["runs"]["bento"][-1].get("profile_inclusive_pct"):
        print("\nprofile of the batched service at 64 clients (inclusive % of samples):")
        for area, pct in results["runs"]["bento"][-1]["profile_inclusive_pct"]:
            print(f"  {pct:5.1f}%  {area}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if not shutil.which("wrk") or not shutil.which("taskset"):
        sys.exit("needs wrk and taskset (Debian: apt-get install -y wrk util-linux)")
    clients = _clients(args)
    tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-serving-"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    project, champion, mlp = served_project(args, tmp)
    set_champion(project, champion)
    script = wrk_script(project, tmp)

    results: dict[str, Any] = {"runs": {}, "duration_s": args.duration, "machine_cores": os.cpu_count()}
    plan = Servers(project, tmp).plan(champion, mlp)
    if args.only_bento:
        plan = [p for p in plan if p[0] == "bento"]
    for name, make, version in plan:
        set_champion(project, version)
        with make() as server:
            wrk(f"{server.url}", 8, 3, script)  # warm-up: first batches, JIT-ish allocations
            results["runs"][name] = [measure(name, server, c, args, script, tmp) for c in clients]
            if name == "bento":
                results["runs"].update(measure_routes(server, project, args, tmp))
    set_champion(project, champion)
    results["ratios"] = (
        route_ratios(results, max(clients)) if args.only_bento else ratios(results, max(clients), mlp)
    )
    _report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
