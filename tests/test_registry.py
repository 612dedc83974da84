"""engines.registry: alias moves with who/when/why/previous, history, release tags, rollout state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.contract import CHALLENGER, CHAMPION, PREVIOUS
from pipelines.engines.registry import (
    Registry,
    ReleaseTags,
    current_user,
    open_registry,
    version_uri,
)

pytestmark = pytest.mark.integration

TAGS = ReleaseTags(
    feature_list=["amount", "log_amount", "hour"],
    feature_service="fraud_scorer_v1",
    threshold=0.4321,
    train_start="2026-01-01",
    train_end="2026-01-15",
    fingerprint="abc123",
    metrics={"roc_auc": 0.91, "pr_auc": 0.5},
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    # one sqlite DB per module: creating MLflow's schema costs ~1 s
    db = tmp_path_factory.mktemp("registry") / "mlflow.db"
    return open_registry(tracking_uri=f"sqlite:///{db}")


def _register(registry: Registry, name: str, run_id: str, tmp: Path) -> str:
    src = tmp / run_id
    src.mkdir(exist_ok=True)
    return registry.register_release(name, str(src), run_id, TAGS)


def test_alias_moves_history_and_tags(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "m_moves"
    monkeypatch.setenv("SLUICE_USER", "alice")
    assert registry.history(name) == [] and registry.aliases(name) == {}
    assert registry.get_version_by_alias(name, CHAMPION) is None

    v1 = _register(registry, name, "run1", tmp_path)
    v2 = _register(registry, name, "run2", tmp_path)
    assert (v1, v2) == ("1", "2")
    assert registry.release_tags(name, v1) == TAGS
    assert registry.find_version_by_run_id(name, "run2") == v2
    assert registry.find_version_by_run_id(name, "nope") is None

    first = registry.move_alias(name, CHAMPION, v1, why="bootstrap")
    assert (first.who, first.previous, first.version, first.seq) == ("alice", None, "1", 1)
    registry.move_alias(name, CHALLENGER, v2, who="bob", why="passed gates")
    registry.promote(name, v2, who="carol", why="canary ok")
    assert registry.aliases(name) == {CHAMPION: "2", CHALLENGER: "2", PREVIOUS: "1"}
    assert registry.alias_version(name, CHAMPION) == "2"
    assert registry.alias_version(name, "nope") is None

    removed = registry.remove_alias(name, CHALLENGER, who="bob", why="promoted")
    assert removed is not None and removed.previous == "2" and removed.version is None
    assert registry.remove_alias(name, CHALLENGER) is None  # nothing to remove: no history entry

    moves = registry.history(name)
    assert [(m.seq, m.alias, m.version, m.previous, m.who) for m in moves] == [
        (1, CHAMPION, "1", None, "alice"),
        (2, CHALLENGER, "2", None, "bob"),
        (3, PREVIOUS, "1", None, "carol"),
        (4, CHAMPION, "2", "1", "carol"),
        (5, CHALLENGER, None, "2", "bob"),
    ]
    assert [m.seq for m in registry.history(name, alias=CHAMPION)] == [1, 4]
    assert all(m.when.endswith("+00:00") for m in moves)
    # the move is also on the version it landed on, and the history tags are zero-padded and ordered
    mv = registry.get_version(name, v2)
    assert json.loads(mv.tags[f"alias.{CHAMPION}"])["why"] == "canary ok"
    model_tags = registry.client.get_registered_model(name).tags
    assert "history.000004" in model_tags
    assert not any(k.startswith("stage") for k in model_tags)
    assert version_uri(name, v2) == "models:/m_moves/2"


def test_versions_oldest_first(registry: Registry, tmp_path: Path) -> None:
    name = "m_versions"
    assert registry.versions(name) == []  # no such model
    for run in ("r1", "r2", "r3"):
        _register(registry, name, run, tmp_path)
    got = registry.versions(name)
    assert [str(v.version) for v in got] == ["1", "2", "3"]
    assert ReleaseTags.from_tags(dict(got[0].tags)) == TAGS and got[0].creation_timestamp > 0


def test_rollout_state_roundtrip(registry: Registry, tmp_path: Path) -> None:
    name = "m_rollout"
    assert registry.get_rollout_state(name).challenger_weight == 0.0
    _register(registry, name, "r1", tmp_path)
    state = registry.set_rollout_state(
        name, who="dag", challenger_weight=10, step=1, started_at="2026-01-20T00:00:00"
    )
    assert (state.challenger_weight, state.step, state.started_at, state.decision) == (
        10.0,
        1,
        "2026-01-20T00:00:00",
        None,
    )
    assert state.updated_by == "dag"
    state = registry.set_rollout_state(name, step=2, decision="promote", started_at=None)
    assert (state.challenger_weight, state.step, state.started_at, state.decision) == (
        10.0,
        2,
        None,
        "promote",
    )
    registry.clear_rollout_state(name)
    assert registry.get_rollout_state(name).step == 0


def test_bad_moves_and_rollout_fields_are_refused(registry: Registry, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    name = "m_bad"
    _register(registry, name, "b1", tmp_path)
    with pytest.raises(MlflowException, match="not found"):
        registry.move_alias(name, CHAMPION, "99")
    assert registry.history(name) == [] and registry.aliases(name) == {}
    with pytest.raises(ValueError, match="unknown rollout fields"):
        registry.set_rollout_state(name, weight=5)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        registry.set_rollout_state(name, challenger_weight=150)
    with pytest.raises(KeyError, match="release tags"):
        ReleaseTags.from_tags({"feature_list": "[]"})
    with pytest.raises(ValueError, match="single quote"):
        registry.find_version_by_run_id(name, "x' or '1'='1")


def test_who_defaults_to_sluice_user_then_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_USER", "airflow:canary")
    assert current_user() == "airflow:canary"
    monkeypatch.delenv("SLUICE_USER")
    assert current_user()


@pytest.mark.unit
def test_use_tracking_uri_sets_mlflow_globals_without_exporting_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The globals are what `models:/` URIs resolve against; the env vars are what load_params reads, so a
    project's URI must not be exported into them (the next project loaded in-process would get it)."""
    import os

    import mlflow

    from pipelines.engines.registry import use_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:////srv/shared.db")
    use_tracking_uri("sqlite:////tmp/project-a/mlflow.db")
    assert mlflow.get_tracking_uri() == "sqlite:////tmp/project-a/mlflow.db"
    assert mlflow.get_registry_uri() == "sqlite:////tmp/project-a/mlflow.db"
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert os.environ["MLFLOW_REGISTRY_URI"] == "sqlite:////srv/shared.db"  # a user's setting stays
