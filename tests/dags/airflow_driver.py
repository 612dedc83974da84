"""Runs Airflow in a child process for the DAG tests: `python airflow_driver.py MODE spec.json out.json`.

Airflow reads its configuration (AIRFLOW_HOME, the DB URL, DAGS_FOLDER) once, at import, so each test
session drives it from a fresh process whose environment the test built (see conftest.airflow_env).

Modes:
- `dagbag`: parse dags/ with DagBag; report import errors, parse time, each DAG's tags/retries/doc/
  timeouts, and which heavy modules the DAG files pulled in.
- `run`: `dag.test()` a list of steps `{"dag", "logical_date"?, "conf"?, "conf_from_asset"?, "params"?}`;
  `params` points SLUICE_PARAMS at another project for that step (tasks run in-process);
  `"logical_date": null` runs without one (no data interval, like an asset-triggered run); a step
  `{"call": "module:function", "args": {...}}` calls a function between runs (e.g. posts events); report
  each run's state, task states, duration, the asset events it emitted and the asset queue after it
  (consumer DAGs get queued only when they are unpaused: AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION).
  `conf_from_asset: URI` passes the newest event's extra of that asset as the run's start/end, the same
  dates the scheduler hands an asset-triggered run in triggering_asset_events.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HEAVY = ("pyspark", "feast", "great_expectations", "mlflow", "torch", "xgboost", "evidently", "bentoml")


def _dagbag(dags: Path) -> tuple[Any, float]:
    from airflow.dag_processing.dagbag import DagBag

    # the dag-processor puts the bundle (dags/) on sys.path for `import _common`; run_driver does the
    # same through PYTHONPATH
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=str(dags))
    return bag, time.perf_counter() - t0


def _watchers(dag: Any) -> list[dict[str, Any]]:
    """The asset watchers of a DAG's schedule: asset uri, watcher name, trigger classpath and kwargs."""
    out: list[dict[str, Any]] = []
    todo = [getattr(dag.timetable, "asset_condition", None)]
    while todo:
        cond = todo.pop()
        todo.extend(getattr(cond, "objects", []))  # AssetAll / AssetAny
        for watcher in getattr(cond, "watchers", None) or []:
            classpath, kwargs = watcher.trigger.serialize()
            out.append({"asset": cond.uri, "name": watcher.name, "classpath": classpath, "kwargs": kwargs})
    return out


def mode_dagbag(spec: dict[str, Any]) -> dict[str, Any]:
    dags = Path(spec["dags"])
    t0 = time.perf_counter()
    import airflow.sdk  # noqa: F401  (the import cost is Airflow's own, not the DAG files')

    airflow_import = time.perf_counter() - t0
    before = set(sys.modules)
    bag, parse = _dagbag(dags)
    new_heavy = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in HEAVY and "." not in m)
    return {
        "airflow_import_s": airflow_import,
        "parse_s": parse,
        "import_errors": {str(k): v for k, v in bag.import_errors.items()},
        "heavy_modules": new_heavy,
        "dags": {
            dag_id: {
                "tags": sorted(dag.tags),
                "retries": dag.default_args.get("retries"),
                "execution_timeout": str(dag.default_args.get("execution_timeout")),
                "doc_md": dag.doc_md or "",
                "timetable": type(dag.timetable).__name__,
                "catchup": dag.catchup,
                "watchers": _watchers(dag),
                "tasks": {
                    t.task_id: {"retries": t.retries, "outlets": [a.uri for a in t.outlets]}
                    for t in dag.tasks
                },
                "fileloc": dag.fileloc,
            }
            for dag_id, dag in bag.dags.items()
        },
    }


def mode_run(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow import settings
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from sqlalchemy import func, select

    def events_after(last_id: int) -> list[dict[str, Any]]:
        with settings.Session() as session:
            rows = session.execute(
                select(AssetEvent, AssetModel.uri)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetEvent.id > last_id)
                .order_by(AssetEvent.id)
            )
            return [
                {"id": ev.id, "uri": uri, "extra": ev.extra, "source_dag_id": ev.source_dag_id}
                for ev, uri in rows
            ]

    def last_event_id() -> int:
        with settings.Session() as session:
            return int(session.scalar(select(func.max(AssetEvent.id))) or 0)

    def queued() -> list[list[str]]:
        """[consumer dag_id, asset uri] waiting in the asset queue (what the scheduler starts next)."""
        with settings.Session() as session:
            rows = session.execute(
                select(AssetDagRunQueue.target_dag_id, AssetModel.uri).join(
                    AssetModel, AssetDagRunQueue.asset_id == AssetModel.id
                )
            )
            return sorted([dag_id, uri] for dag_id, uri in rows)

    steps: list[dict[str, Any]] = []
    for step in spec["steps"]:
        if "call" in step:
            steps.append({"call": step["call"], "result": _call(step["call"], step.get("args") or {})})
            continue
        # a fresh DAG object per run: in-process task runs update the task's params in place, so a
        # reused DAG would leak one run's conf (start/end) into the next
        bag, _ = _dagbag(Path(spec["dags"]))
        if bag.import_errors:
            raise SystemExit(f"import errors: {bag.import_errors}")
        dag = bag.get_dag(step["dag"])
        if step.get("params"):
            # tasks run in this process (dag.test): several projects can share one DB and one import
            os.environ["SLUICE_PARAMS"] = step["params"]
        conf = dict(step.get("conf") or {})
        if uri := step.get("conf_from_asset"):
            # Airflow normalizes a bare-authority URI with a trailing slash ("sluice://retrain/")
            found = [e for e in events_after(0) if e["uri"].rstrip("/") == uri.rstrip("/")]
            if not found:
                raise SystemExit(f"no asset event for {uri}")
            conf.update({"start": found[-1]["extra"]["start"], "end": found[-1]["extra"]["end"]})
        kwargs: dict[str, Any] = {"run_conf": conf or None}
        if step.get("logical_date"):
            kwargs["logical_date"] = dt.datetime.fromisoformat(step["logical_date"])
        elif "logical_date" in step:  # explicitly null: a run without dates
            kwargs["logical_date"] = None
        before = last_event_id()
        t0 = time.perf_counter()
        dr = dag.test(**kwargs)
        seconds = time.perf_counter() - t0
        with settings.Session() as session:
            tis = {ti.task_id: str(ti.state) for ti in dr.get_task_instances(session=session)}
        steps.append(
            {
                "dag": step["dag"],
                "state": str(dr.state),
                "tasks": tis,
                "seconds": seconds,
                "conf": conf,
                "interval": [str(dr.data_interval_start), str(dr.data_interval_end)],
                # the asset events this run emitted
                "asset_events": events_after(before),
                "queued": queued(),
            }
        )
        print(f"[driver] {step['dag']} {conf or kwargs.get('logical_date')}: {dr.state} {tis} {seconds:.1f}s")
    return {"steps": steps, "asset_events": events_after(0), "queued": sorted({q[0] for q in queued()})}


def _call(target: str, args: dict[str, Any]) -> Any:
    """`module:function(**args)`, e.g. tests.landing_world:post between two DAG runs."""
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(**args)


def main() -> None:
    mode, spec_path, out_path = sys.argv[1:4]
    spec = json.loads(Path(spec_path).read_text())
    result = {"dagbag": mode_dagbag, "run": mode_run}[mode](spec)
    result["env"] = {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_", "SLUICE_"))}
    Path(out_path).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
