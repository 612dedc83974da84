"""pipelines.champion_gate: absolute + vs-champion + behavioural gate, report and tags, alias removal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.champion_gate import compare_with_champion, run_gate
from pipelines.config import Params
from pipelines.errors import GateFailed, StageError
from pipelines.model.behaviour import apply_case, behavioural_checks, load_suite, obvious_cases
from pipelines.sections import ChampionGateParams
from tests.conftest import REPO_ROOT, make_project

CFG = ChampionGateParams()
SHIPPED = REPO_ROOT / "expectations" / "behaviour.yaml"
SUITE = load_suite(SHIPPED)


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mean = rng.uniform(20, 80, n)
    label = (rng.random(n) < 0.1).astype(np.int64)
    ratio = np.where(label == 1, rng.uniform(4, 12, n), rng.uniform(0.5, 1.5, n))
    lat, lon = rng.uniform(30, 45, n), rng.uniform(-120, -75, n)
    far = label == 1
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "entity_id": [f"c{i % 50}" for i in range(n)],
            "event_timestamp": pd.Timestamp("2026-01-10", tz="UTC")
            + pd.to_timedelta(np.arange(n) * 600, "s"),
            "amount": mean * ratio,
            "merchant": [f"Shop {i % 7}" for i in range(n)],
            "category": "grocery_pos",
            "label": label,
            "latitude": lat,
            "longitude": lon,
            "merchant_latitude": lat + np.where(far, 8.0, 0.1),
            "merchant_longitude": lon + np.where(far, 8.0, 0.1),
            "amount_mean_hist": mean,
            "txn_count_1h": np.where(far, 3, 0),
        }
    )


def good(frame: pd.DataFrame) -> np.ndarray:
    """A sane scorer: higher for amounts far above the card's mean and far from home."""
    ratio = np.log(frame["amount"] / frame["amount_mean_hist"])
    dist = np.hypot(
        frame["merchant_latitude"] - frame["latitude"], frame["merchant_longitude"] - frame["longitude"]
    )
    return 1 / (1 + np.exp(-(2.0 * ratio + 0.5 * dist - 4.0))).to_numpy()


def weaker(frame: pd.DataFrame) -> np.ndarray:
    """Monotone in amount only: a worse ranking than `good`."""
    ratio = np.log(frame["amount"] / frame["amount_mean_hist"])
    noise = np.random.default_rng(1).normal(0, 1.5, len(frame))
    return 1 / (1 + np.exp(-(ratio + noise - 2.0))).to_numpy()


def merchant_sensitive(frame: pd.DataFrame) -> np.ndarray:
    bump = frame["merchant"].str[0].str.isupper().to_numpy() * 0.01
    return np.clip(good(frame) + bump, 0, 1)


def inverted(frame: pd.DataFrame) -> np.ndarray:
    return 1 - good(frame)


@pytest.mark.unit
def test_compare_with_champion_margin_and_refresh() -> None:
    cfg = ChampionGateParams(metric="pr_auc", margin=0.01, refresh_tolerance=0.02)
    assert compare_with_champion({"pr_auc": 0.62}, {"pr_auc": 0.60}, cfg) == []
    assert "does not beat" in compare_with_champion({"pr_auc": 0.605}, {"pr_auc": 0.60}, cfg)[0]
    assert compare_with_champion({"pr_auc": 0.59}, {"pr_auc": 0.60}, cfg, refresh=True) == []
    assert (
        "worse than champion"
        in compare_with_champion({"pr_auc": 0.57}, {"pr_auc": 0.60}, cfg, refresh=True)[0]
    )
    assert compare_with_champion({"pr_auc": 0.1}, None, cfg) == []  # first release: nothing to beat
    # margin 0: a tie does not beat the champion
    assert compare_with_champion({"pr_auc": 0.6}, {"pr_auc": 0.6}, ChampionGateParams(margin=0.0))


@pytest.mark.unit
def test_behavioural_checks() -> None:
    frame = _frame()
    ok = behavioural_checks(good, frame, threshold=0.5, cfg=CFG, suite=SUITE)
    assert all(r["ok"] for r in ok.values()), ok
    assert ok["minimum_functionality"]["fraud_flagged"] == 1.0

    bad = behavioural_checks(merchant_sensitive, frame, 0.5, CFG, SUITE)
    assert not bad["invariance"]["ok"] and bad["directional"]["ok"]

    inv = behavioural_checks(inverted, frame, 0.5, CFG, SUITE)
    assert not inv["directional"]["ok"] and not inv["minimum_functionality"]["ok"]


@pytest.mark.unit
def test_shipped_obvious_cases_are_what_the_file_says() -> None:
    """The file's edits, applied to real negative rows: 15x the usual amount at 3 am, far from home..."""
    frame = _frame().assign(amount_sum_1h=0.0)
    base = frame[frame["label"] == 0].head(50).reset_index(drop=True)
    pos, neg = obvious_cases(frame, SUITE)
    assert len(pos) == len(neg) == 50
    np.testing.assert_allclose(pos["amount"], base["amount_mean_hist"] * 15)
    assert (pos["event_timestamp"].dt.hour == 3).all() and (neg["event_timestamp"].dt.hour == 14).all()
    assert (pos["category"] == "shopping_net").all() and (neg["category"] == base["category"]).all()
    np.testing.assert_allclose(pos["merchant_latitude"], np.clip(base["latitude"] + 10, -89, 89))
    np.testing.assert_allclose(neg["merchant_longitude"], base["longitude"])
    np.testing.assert_allclose(pos["amount_sum_1h"], pos["amount"] * 5)
    assert (pos["txn_count_1h"] == 5).all() and (neg["txn_count_1h"] == 0).all()
    # a row without coordinates keeps its (absent) coordinates: those edits are skipped, not faked
    no_coords = apply_case(frame.drop(columns=["merchant_latitude"]).head(3), SUITE.directional.cases[0])
    assert no_coords is not None and "merchant_latitude" not in no_coords


@pytest.mark.unit
def test_behaviour_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "behaviour.yaml"
    bad.write_text("invariance:\n  cases:\n    - name: x\n      edit: {merchant: {scale: 2, set: 1}}\n")
    with pytest.raises(StageError, match=r"behaviour.yaml: invalid behaviour cases(.|\n)*invariance.cases.0"):
        load_suite(bad)
    with pytest.raises(StageError, match="behaviour cases not found"):
        load_suite(tmp_path / "missing.yaml")


class _Fake:
    def __init__(self, fn: object) -> None:
        self.score = fn


@pytest.fixture
def gate_project(tmp_path: Path) -> Params:
    p = make_project(tmp_path / "project", {"evaluate": {"gates": {"roc_auc_min": 0.6, "pr_auc_min": 0.1}}})
    p.paths.dataset.mkdir(parents=True, exist_ok=True)
    _frame(seed=1).to_parquet(p.paths.dataset / "valid.parquet")
    _frame(seed=2).to_parquet(p.paths.dataset / "test.parquet")
    return p


@pytest.mark.integration
def test_run_gate_pass_and_fail_write_report_tags_and_drop_alias(gate_project: Params) -> None:
    from pipelines.engines.registry import open_registry

    p = gate_project
    reg, name = open_registry(p), p.register_.model_name
    reg.ensure_model(name)
    for _ in range(3):
        reg.client.create_model_version(name, source="file:///nonexistent", run_id=None)
    reg.move_alias(name, "champion", "1", why="bootstrap")
    scorers = {"1": weaker, "2": good, "3": inverted}

    def load(v: str) -> _Fake:
        return _Fake(scorers[v])

    reg.move_alias(name, "challenger", "2", why="registered")
    out = run_gate(p, reg=reg, load=load)
    assert out["verdict"] == "pass" and out["champion_version"] == "1"
    assert out["challenger"]["pr_auc"] > out["champion"]["pr_auc"]
    report = json.loads((p.paths.reports / "champion_gate.json").read_text())
    assert report["verdict"] == "pass" and report["behavioural"]["invariance"]["ok"]
    assert reg.get_version(name, "2").tags["gate.verdict"] == "pass"

    reg.move_alias(name, "challenger", "3", why="registered")
    with pytest.raises(GateFailed, match="v3 failed: absolute: pr_auc") as err:
        run_gate(p, reg=reg, load=load)
    assert "vs champion: pr_auc" in str(err.value) and "directional failed" in str(err.value)
    assert "cases in expectations/behaviour.yaml" in str(err.value)  # the user's recourse: edit the data
    assert reg.get_version(name, "3").tags["gate.verdict"] == "fail"
    assert reg.alias_version(name, "challenger") is None
    assert "champion gate failed" in reg.history(name)[-1].why
    assert json.loads((p.paths.reports / "champion_gate.json").read_text())["verdict"] == "fail"


@pytest.mark.integration
def test_sluice_gate_refresh_accepts_a_tie_that_the_default_gate_refuses(
    gate_project: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sluice gate [VERSION] [--refresh]`: a retrain on fresher data that scores like the champion is a
    refresh (pass within refresh_tolerance), not an improvement (fail: it does not beat the champion)."""
    from typer.testing import CliRunner

    from pipelines import champion_gate
    from pipelines.engines.registry import open_registry
    from pipelines.ops.cli import app

    p = gate_project
    reg, name = open_registry(p), p.register_.model_name
    reg.ensure_model(name)
    for _ in range(2):
        reg.client.create_model_version(name, source="file:///nonexistent", run_id=None)
    reg.move_alias(name, "champion", "1", why="bootstrap")
    reg.move_alias(name, "challenger", "2", why="registered")
    # both versions score like `good`: only the models' loading is replaced, registry and data are real
    monkeypatch.setattr(champion_gate, "_default_loader", lambda *_: lambda v: _Fake(good))
    params_file = str(p.root / "params.yaml")

    refused = CliRunner().invoke(app, ["gate", "--params", params_file])
    assert refused.exit_code == 1 and "does not beat champion" in refused.output
    assert reg.alias_version(name, "challenger") is None  # a failed gate drops the alias

    accepted = CliRunner().invoke(app, ["gate", "2", "--refresh", "--params", params_file])
    assert accepted.exit_code == 0, accepted.output
    out = json.loads(accepted.output.strip().splitlines()[-1])
    assert (out["verdict"], out["version"], out["champion_version"]) == ("pass", "2", "1")
    report = json.loads((p.paths.reports / "champion_gate.json").read_text())
    assert report["refresh"] is True and reg.get_version(name, "2").tags["gate.verdict"] == "pass"


@pytest.mark.integration
def test_editing_the_behaviour_file_is_the_recourse_for_a_refused_model(gate_project: Params) -> None:
    """The verdict follows the cases file, with no code change: cases that do not fit the data (obvious
    positives at 1% of the usual amount) refuse a sane model, naming the file; fixing the file passes it."""
    from pipelines.engines.registry import open_registry

    p = gate_project
    reg, name = open_registry(p), p.register_.model_name
    reg.ensure_model(name)
    reg.client.create_model_version(name, source="file:///nonexistent", run_id=None)
    reg.move_alias(name, "challenger", "1", why="registered")

    cases = p.root / "expectations" / "behaviour.yaml"
    cases.write_text(SHIPPED.read_text().replace("times: 15", "times: 0.01"))
    refused = r"minimum_functionality failed.*cases in expectations/behaviour\.yaml"
    with pytest.raises(GateFailed, match=refused):
        run_gate(p, reg=reg, load=lambda v: _Fake(good))
    cases.write_text(SHIPPED.read_text())
    reg.move_alias(name, "challenger", "1", why="registered again")
    assert run_gate(p, reg=reg, load=lambda v: _Fake(good))["verdict"] == "pass"
