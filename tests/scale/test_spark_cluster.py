"""Spark standalone cluster: the features and batch_predict stages on spark://127.0.0.1 by params only.

Starts a master and one worker (1 core, 1 GiB) from the installed pyspark, runs the stages locally (the
session's local[1] Spark) and then on the cluster in subprocesses (one process cannot hold two masters),
with a second params file in the same project that differs only in spark.master, and compares outputs
row for row. Checks on the master's JSON status that the cluster ran the applications. Slow (~2-3 min):
the whole chain ingest -> batch_predict runs once locally before the cluster runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pipelines.config import Params
from pipelines.io import PART_FILE
from tests.conftest import make_project
from tests.scale.conftest import free_port, http_ok, reachable, start_process, stop_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _spark_class() -> Path:
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not path.is_file():
        pytest.skip(f"spark-class not found in the installed pyspark ({path})")
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A standalone master + worker on 127.0.0.1; yields its master URL and status URL; stopped after."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no Java runtime: a Spark standalone cluster cannot start")
    spark_class = _spark_class()
    base = tmp_path_factory.mktemp("spark-cluster")
    port, ui = free_port(7077), free_port(8080)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
    master_url = f"spark://127.0.0.1:{port}"
    master = start_process(
        [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(ui)],
        base / "master" / "master.log", env,
    )  # fmt: skip
    worker = None
    try:
        wait_until(lambda: reachable("127.0.0.1", port), 120, "spark master", base / "master" / "master.log")
        worker = start_process(
            [str(spark_class), "org.apache.spark.deploy.worker.Worker", master_url, "--cores", "1",
             "--memory", "1g", "--host", "127.0.0.1", "--webui-port", str(free_port()),
             "--work-dir", str(base / "work")],
            base / "worker" / "worker.log", env,
        )  # fmt: skip
        status = f"http://127.0.0.1:{ui}/json/"

        def worker_alive() -> bool:
            if not http_ok(status):
                return False
            with urllib.request.urlopen(status, timeout=2) as resp:
                return json.load(resp).get("aliveworkers", 0) >= 1

        wait_until(worker_alive, 120, "spark worker registration", base / "worker" / "worker.log")
        yield {"master": master_url, "status": status, "logs": base}
    finally:
        for proc in (worker, master):
            if proc is not None:
                stop_process(proc)


def _run_stage(stage: str, params_file: Path, logs: Path) -> dict[str, Any]:
    """`python -m pipelines.<stage> --params FILE` in a fresh process (own SparkSession, on the cluster)."""
    env = {**os.environ, "SLUICE_SPARK_DRIVER_MEMORY": "1g"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", f"pipelines.{stage}", "--params", str(params_file), "--json"],
        capture_output=True, text=True, env=env, timeout=420, cwd=params_file.parent,
    )  # fmt: skip
    (logs / f"{stage}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"{stage} on the cluster failed:\n{proc.stderr[-4000:]}"
    # --json: stage_main prints the summary as indented JSON, last thing on stdout
    return json.loads(proc.stdout[proc.stdout.rindex("\n{") + 1 if "\n{" in proc.stdout else 0 :])


def _read_all(base: Path) -> dict[str, pd.DataFrame]:
    return {p.parent.name: pd.read_parquet(p) for p in sorted(base.glob(f"date=*/{PART_FILE}"))}


def _assert_same(local: dict[str, pd.DataFrame], remote: dict[str, pd.DataFrame]) -> None:
    assert list(remote) == list(local) and local
    for day, frame in local.items():
        pd.testing.assert_frame_equal(remote[day], frame, check_exact=True, obj=day)


@pytest.fixture(scope="module")
def local_run(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Params]:
    """The whole chain with the session's local Spark, ending in predictions (validate is a copy: GX is
    not under test and costs ~1 min here)."""
    from pipelines import batch_predict, dataset, evaluate, feature_store, features, ingest, register, train

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = make_project(tmp_path_factory.mktemp("scale") / "project")
    s, e = params.data.start, params.data.end
    ingest.run(params, s, e)
    shutil.copytree(params.paths.raw, params.paths.validated)
    for stage in (features, feature_store, dataset, train, evaluate, register, batch_predict):
        stage.run(params, s, e)
    yield params
    mp.undo()


def test_features_and_batch_predict_on_standalone_cluster(local_run: Params, cluster: dict[str, Any]) -> None:
    params = local_run
    local_features = _read_all(params.paths.features)
    local_predictions = _read_all(params.paths.predictions)

    # the same project, another params file: only spark.master differs (configuration only)
    raw = yaml.safe_load((params.root / "params.yaml").read_text())
    raw["spark"] = {**raw.get("spark", {}), "master": cluster["master"]}
    cluster_params = params.root / "params_cluster.yaml"
    cluster_params.write_text(yaml.safe_dump(raw, sort_keys=False))

    # outputs are replaced in place: clear them, so what we compare is surely what the cluster wrote
    shutil.rmtree(params.paths.features)
    summary = _run_stage("features", cluster_params, cluster["logs"])
    assert summary["rows"] == sum(len(f) for f in local_features.values())
    _assert_same(local_features, _read_all(params.paths.features))

    shutil.rmtree(params.paths.predictions)
    summary = _run_stage("batch_predict", cluster_params, cluster["logs"])
    assert summary["rows"] == sum(len(f) for f in local_predictions.values())
    _assert_same(local_predictions, _read_all(params.paths.predictions))

    with urllib.request.urlopen(cluster["status"], timeout=5) as resp:
        apps = json.load(resp)
    names = [a["name"] for a in apps.get("completedapps", []) + apps.get("activeapps", [])]
    assert "sluice-batch_predict" in names, f"the cluster ran {names}, not our stages"
