"""The canary_rollout DAG for real (`dag.test()` in a child process), fed by live prediction-log traffic.

While the driver runs the DAG, a thread of this test plays the serving process: every 50 ms it appends
log rows (pipelines.serving.log.PredictionLogWriter, the writer the service uses), routing each request
by the registry's current canary weight. Two projects: a healthy challenger ramps 50 -> 100 % and is
promoted; a challenger whose calls fail 20 % of the time is rolled back at the first step, and the task
fails at once (AirflowFailException: no retry) with the reason.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.config import Params
from tests.conftest import make_project
from tests.dags.conftest import airflow_env, run_driver

pytestmark = pytest.mark.e2e

ROLLOUT = {
    "steps": [50.0, 100.0],
    "hold_s": 1.0,
    "poll_s": 0.2,
    "min_requests": 40,
    "max_wait_s": 60.0,
    # score PSI of ~100 vs ~100 rows of one distribution is noise; tests/test_rollout.py covers PSI
    "guardrails": {"max_psi": None},
}


def _project(root: Path) -> Params:
    from pipelines.engines.registry import open_registry

    params = make_project(root, {"rollout": ROLLOUT})
    reg, name = open_registry(params), params.register_.model_name
    reg.ensure_model(name)
    for _ in range(2):  # the canary moves aliases and reads the log: it never loads the models
        reg.client.create_model_version(name, source="file:///nonexistent", run_id=None)
    reg.move_alias(name, "champion", "1", why="bootstrap")
    reg.move_alias(name, "challenger", "2", why="passed the champion gate")
    return params


class Traffic(threading.Thread):
    """Serving's prediction log, simulated: requests routed by the registry's weight, as the service does."""

    def __init__(self, params: Params, challenger_error_rate: float) -> None:
        super().__init__(daemon=True)
        self.params, self.error_rate = params, challenger_error_rate
        self.stop = threading.Event()
        self.rng = np.random.default_rng(0)
        self.rows = 0

    def run(self) -> None:
        from pipelines.engines.registry import open_registry
        from pipelines.serving.log import PredictionLogWriter

        reg, name = open_registry(self.params), self.params.register_.model_name
        writer = PredictionLogWriter(self.params.paths.prediction_log, rotate_bytes=1 << 24, flush_s=0.05)
        writer.start()
        try:
            while not self.stop.wait(0.05):
                weight = reg.get_rollout_state(name).challenger_weight
                challenger = reg.alias_version(name, "challenger")
                writer.write_many([self._row(weight, challenger) for _ in range(10)])
        finally:
            writer.close()

    def _row(self, weight: float, challenger: str | None) -> dict[str, Any]:
        self.rows += 1
        routed = challenger is not None and self.rng.uniform(0, 100) < weight
        failed = routed and self.rng.uniform() < self.error_rate
        arm = "challenger" if routed and not failed else "champion"
        return {
            "served_at": dt.datetime.now(dt.UTC).isoformat(),
            "event_id": f"e{self.rows}",
            "arm": arm,
            # a failed challenger call is answered by the champion after the timeout
            "challenger_fallback": failed,
            "model_version": challenger if arm == "challenger" else "1",
            "latency_ms": 120.0 if failed else float(self.rng.uniform(3, 9)),
            "score": float(self.rng.beta(1, 20)),
            "decision": False,
        }


def _state(value: str) -> str:
    return value.rsplit(".", 1)[-1].lower()


def test_canary_dag_promotes_a_healthy_challenger_and_rolls_back_a_failing_one(
    tmp_path: Path, airflow_db_template: Path
) -> None:
    from pipelines.engines.registry import open_registry

    home = tmp_path / "airflow_home"
    home.mkdir()
    shutil.copy2(airflow_db_template, home / "airflow.db")
    healthy, failing = _project(tmp_path / "healthy"), _project(tmp_path / "failing")
    traffic = [Traffic(healthy, 0.0), Traffic(failing, 0.2)]
    steps = [{"dag": "canary_rollout", "params": str(p.root / "params.yaml")} for p in (healthy, failing)]
    for t in traffic:
        t.start()
    try:
        result, output = run_driver("run", {"steps": steps}, airflow_env(home), tmp_path / "driver")
    finally:
        for t in traffic:
            t.stop.set()
            t.join(timeout=10)
    promoted, rolled_back = result["steps"]

    assert _state(promoted["state"]) == "success", output[-6000:]
    assert {k: _state(v) for k, v in promoted["tasks"].items()} == {"canary": "success"}
    reg, name = open_registry(healthy), healthy.register_.model_name
    assert reg.aliases(name) == {"champion": "2", "previous": "1"}
    assert reg.history(name)[-1].who == "airflow:canary_rollout"

    assert _state(rolled_back["state"]) == "failed"
    # failed, not up_for_retry: a rollback is a decision, retrying would restart the canary
    assert {k: _state(v) for k, v in rolled_back["tasks"].items()} == {"canary": "failed"}
    assert "CanaryRolledBack" in output and "error rate" in output, output[-8000:]
    reg, name = open_registry(failing), failing.register_.model_name
    assert reg.aliases(name) == {"champion": "1"}
    assert reg.get_rollout_state(name).challenger_weight == 0.0
