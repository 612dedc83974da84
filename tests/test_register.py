"""pipelines.register: gated registration, champion bootstrap, challenger moves, idempotence by run_id."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Params
from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.contract import FEATURE_COLUMNS as FEAST_COLUMNS
from pipelines.engines.registry import open_registry
from pipelines.errors import GateFailed, StageError
from pipelines.sections import RegisterParams
from tests.conftest import REPO_ROOT, make_project

pytestmark = pytest.mark.integration

START = dt.date(2026, 1, 1)
END = dt.date(2026, 1, 3)


def tiny_events(n: int, seed: int, start: dt.date = START, n_days: int = 2) -> pd.DataFrame:
    """Validated-like events + Feast feature columns; fraud = large amounts at night (learnable)."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    ts = t0 + pd.to_timedelta(np.sort(rng.uniform(0, n_days * 86_400, n)).round(), unit="s")
    amount = rng.lognormal(3.0, 1.0, n).round(2)
    hour = ts.hour.to_numpy()
    label = ((amount > 60) & (hour < 8) | (rng.uniform(size=n) < 0.03)).astype(np.int64)
    df = pd.DataFrame(
        {
            "event_id": [f"e{seed}-{i:05d}" for i in range(n)],
            "entity_id": [f"c{i % 17}" for i in range(n)],
            "event_timestamp": ts.astype("datetime64[us, UTC]"),
            "amount": amount,
            "merchant": [f"m{i % 11}" for i in range(n)],
            "category": rng.choice(["food", "travel", "online"], n),
            "label": label,
        }
    )
    for c in FEAST_COLUMNS:
        df[c] = rng.uniform(1, 100, n)
    for c in ("txn_count_1h", "txn_count_24h", "txn_count_7d", "txn_count_hist"):
        df[c] = rng.integers(0, 20, n).astype(np.float64)
    df["last_event_ts"] = ts.astype("int64").to_numpy() / 1e9 - rng.uniform(10, 50_000, n)
    df.loc[::13, "last_event_ts"] = np.nan  # first events of an entity: no previous event
    return df


def train_tiny_release(params: Params, seed: int) -> dict[str, Any]:
    """Run the real train stage on a tiny dataset; returns models/release.json."""
    from pipelines import train

    frame = tiny_events(300, seed)
    params.paths.dataset.mkdir(parents=True, exist_ok=True)
    frame.iloc[:220].to_parquet(params.paths.dataset / "train.parquet")
    frame.iloc[220:].to_parquet(params.paths.dataset / "valid.parquet")
    train.run(params, START, END)
    return json.loads((params.paths.models / "release.json").read_text())


def write_evaluation(params: Params, release: dict[str, Any], verdict: str = "pass") -> None:
    params.paths.reports.mkdir(parents=True, exist_ok=True)
    metrics = {"roc_auc": 0.9, "pr_auc": 0.5, "recall_at_fpr": 0.4, "log_loss": 0.2, "threshold": 0.37}
    (params.paths.reports / "metrics.json").write_text(json.dumps(metrics))
    # the layout evaluate writes
    evaluation = {
        "verdict": verdict,
        "failed_gates": [] if verdict == "pass" else ["roc_auc 0.55 < roc_auc_min 0.6"],
        "metrics": metrics,
        "run_id": release["run_id"],
        "fingerprint": release["fingerprint"],
    }
    (params.paths.reports / "evaluation.json").write_text(json.dumps(evaluation))


def use_release(params: Params, release: dict[str, Any]) -> None:
    params.paths.models.mkdir(parents=True, exist_ok=True)
    (params.paths.models / "release.json").write_text(json.dumps(release))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, dict[str, Any], dict[str, Any]]:
    """A tiny project with two trained releases (two MLflow runs) in its sqlite tracking store."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = make_project(tmp_path_factory.mktemp("register") / "project")
    first = train_tiny_release(params, seed=1)
    second = train_tiny_release(params, seed=2)
    yield params, first, second
    mp.undo()


def _named(params: Params, name: str) -> Params:
    return params.model_copy(update={"register_": RegisterParams(model_name=name)})


def test_bootstraps_champion_then_only_moves_challenger(trained: Any) -> None:
    from pipelines import register
    from pipelines.model.packaging import load_release

    base, first, second = trained
    params = _named(base, "reg_bootstrap")
    use_release(params, first)
    write_evaluation(params, first)
    summary = register.run(params, START, END)
    assert (summary["version"], summary["created"]) == ("1", True)
    assert summary["aliases"] == [CHALLENGER, CHAMPION]
    report = json.loads((params.paths.reports / "registry.json").read_text())
    assert report == {
        "name": "reg_bootstrap",
        "version": "1",
        "run_id": first["run_id"],
        "aliases": [CHALLENGER, CHAMPION],
        "uri": "models:/reg_bootstrap/1",
    }

    use_release(params, second)
    write_evaluation(params, second)
    summary = register.run(params, START, END)
    assert summary["version"] == "2" and summary["aliases"] == [CHALLENGER]

    registry = open_registry(params)
    assert registry.aliases("reg_bootstrap") == {CHAMPION: "1", CHALLENGER: "2"}
    moves = [(m.alias, m.version, m.previous, m.why) for m in registry.history("reg_bootstrap")]
    assert moves[1] == (CHAMPION, "1", None, "bootstrap")
    assert moves[2][:3] == (CHALLENGER, "2", "1")
    tags = registry.release_tags("reg_bootstrap", "2")
    assert tags.feature_list == second["feature_list"] and tags.fingerprint == second["fingerprint"]
    assert tags.threshold == 0.37 and tags.feature_service == "fraud_scorer_v1"
    assert (tags.train_start, tags.train_end) == (START.isoformat(), END.isoformat())
    assert tags.metrics["roc_auc"] == 0.9
    # the registered version loads as the very release that was trained (fingerprint verified)
    assert load_release("models:/reg_bootstrap/2").fingerprint == second["fingerprint"]


def test_same_run_is_not_registered_twice(trained: Any) -> None:
    from pipelines import register

    base, first, _ = trained
    params = _named(base, "reg_idem")
    use_release(params, first)
    write_evaluation(params, first)
    a = register.run(params, START, END)
    report = (params.paths.reports / "registry.json").read_bytes()
    b = register.run(params, START, END)
    assert (a["version"], b["version"], b["created"]) == ("1", "1", False)
    assert (params.paths.reports / "registry.json").read_bytes() == report
    registry = open_registry(params)
    assert len(registry.client.search_model_versions("name = 'reg_idem'")) == 1
    assert len(registry.history("reg_idem")) == 2  # challenger + champion bootstrap, no repeated moves


def test_refuses_failed_evaluation(trained: Any) -> None:
    from pipelines import register

    base, first, _ = trained
    params = _named(base, "reg_failed")
    use_release(params, first)
    write_evaluation(params, first, verdict="fail")
    with pytest.raises(GateFailed, match=r"verdict is 'fail'.*roc_auc_min"):
        register.run(params, START, END)
    assert not open_registry(params).model_exists("reg_failed")


def test_refuses_missing_or_stale_inputs(trained: Any, tmp_path: Path) -> None:
    from pipelines import register

    base, first, second = trained
    params = _named(base, "reg_stale")
    use_release(params, second)
    write_evaluation(params, first)  # evaluation of another run
    with pytest.raises(StageError, match="rerun evaluate"):
        register.run(params, START, END)
    empty = make_project(tmp_path / "empty")
    with pytest.raises(StageError, match=r"release\.json: not found"):
        register.run(empty, START, END)
    assert not open_registry(params).model_exists("reg_stale")


def test_registers_from_any_working_directory(trained: Any, tmp_path: Path) -> None:
    """A stage process that did not start in the project root (an Airflow worker) registers into the
    project's store: MLflow resolves the `models:/m-<id>` source against the global URI, not the client's."""
    import subprocess
    import sys

    base, first, _ = trained
    params = _named(base, "reg_elsewhere")
    use_release(params, first)
    write_evaluation(params, first)
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["SLUICE_PARAMS"] = str(params.root / "params.yaml")
    code = (
        "import datetime as dt, json, os\n"
        "from pipelines import register\n"
        "from pipelines.config import RegisterParams, load_params\n"
        "p = load_params(os.environ['SLUICE_PARAMS'])\n"
        "p = p.model_copy(update={'register_': RegisterParams(model_name='reg_elsewhere')})\n"
        f"print(json.dumps(register.run(p, dt.date.fromisoformat('{START}'), dt.date.fromisoformat('{END}')),"
        " default=str))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=elsewhere,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["version"] == "1"
    assert not (elsewhere / "mlflow.db").exists()  # nothing written to a stray store in the cwd
    assert open_registry(params).alias_version("reg_elsewhere", CHAMPION) == "1"
