"""The `sluice` ops CLI against a real MLflow registry in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.config import Params
from pipelines.engines.registry import open_registry
from pipelines.ops.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture
def registry_with_two_versions(project: Params) -> tuple[Params, Path]:
    import mlflow

    reg = open_registry(project)
    name = project.register_.model_name
    mlflow.set_tracking_uri(project.tracking_uri)
    reg.ensure_model(name)
    for _ in range(2):
        reg.client.create_model_version(name, source="file:///nonexistent", run_id=None)
    reg.move_alias(name, "champion", "1", why="bootstrap")
    return project, project.root / "params.yaml"


def test_status_promote_rollback_history(registry_with_two_versions: tuple[Params, Path]) -> None:
    project, params_file = registry_with_two_versions
    runner = CliRunner()
    args = ["--params", str(params_file)]

    out = runner.invoke(app, ["status", *args])
    assert out.exit_code == 0, out.output
    assert "champion    v1" in out.output

    out = runner.invoke(app, ["promote", "2", "--reason", "better PR AUC", *args])
    assert out.exit_code == 0, out.output
    reg = open_registry(project)
    name = project.register_.model_name
    assert reg.alias_version(name, "champion") == "2"
    assert reg.alias_version(name, "previous") == "1"

    out = runner.invoke(app, ["rollback", "--reason", "p99 regression", *args])
    assert out.exit_code == 0, out.output
    assert reg.alias_version(name, "champion") == "1"

    out = runner.invoke(app, ["history", *args])
    assert out.exit_code == 0
    assert "better PR AUC" in out.output and "rollback: p99 regression" in out.output
    assert len([m for m in reg.history(name) if m.alias == "champion"]) == 3


def test_rollback_without_previous_fails_clearly(registry_with_two_versions: tuple[Params, Path]) -> None:
    _, params_file = registry_with_two_versions
    out = CliRunner().invoke(app, ["rollback", "--reason", "x", "--params", str(params_file)])
    assert out.exit_code == 1
    assert "no `previous` alias" in out.output


def test_bad_params_file_is_named(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["status", "--params", str(tmp_path / "missing.yaml")])
    assert out.exit_code == 2
    assert "missing.yaml" in out.output
