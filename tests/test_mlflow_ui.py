"""`make mlflow-ui` opens MLflow 3's classic view: the registry and the runs, not the GenAI pages.

Registers a small model in a throwaway store (two run-backed versions, `champion` and `challenger`), runs
the real target on it (`make -o setup`: the environment is already there), opens the model URL it prints
in headless Chromium with every request off the server blocked, and checks the model, its versions and
aliases and the Experiments and Model registry links of the sidebar. Then the way the README tells to keep
that view: a page without the URL query, the sidebar's "Model training" switch, an experiment's runs.
Screenshots: test-artifacts/mlflow-ui/. Marked `ui` (deselected by default): `make test-ui`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import load_params
from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.engines.registry import open_registry
from tests.browser import CHROMIUM_ARGS, chromium, free_port, network_off
from tests.conftest import REPO_ROOT
from tests.test_registry import TAGS

pytestmark = [pytest.mark.ui, pytest.mark.integration]

SHOTS = REPO_ROOT / "test-artifacts" / "mlflow-ui"
EXPERIMENT = "sluice-fraud"
MODEL_URL = re.compile(r"http://127\.0\.0\.1:\d+/#/models/\S+")
# MLflow's assistant panel opens on a first visit and covers a third of the page: as if seen before
NO_ASSISTANT = "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')"


def _small_registry(root: Path, name: str) -> None:
    """One experiment, two finished training runs, a version of `name` from each, both aliases set."""
    registry = open_registry(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    client = registry.client
    experiment = client.create_experiment(EXPERIMENT, artifact_location=(root / "mlartifacts").as_uri())
    for i in (1, 2):
        run = client.create_run(experiment, run_name=f"train window {i}")
        client.log_param(run.info.run_id, "model", "xgboost")
        client.log_metric(run.info.run_id, "roc_auc", 0.9 + i / 100)
        client.set_terminated(run.info.run_id)
        model_dir = root / "models" / str(i)
        model_dir.mkdir(parents=True)
        registry.register_release(name, str(model_dir), run.info.run_id, TAGS)
    registry.move_alias(name, CHAMPION, "1", why="bootstrap")
    registry.move_alias(name, CHALLENGER, "2", why="passed the offline gates")


@pytest.fixture
def mlflow_ui(tmp_path: Path) -> Iterator[str]:
    """`make mlflow-ui` on a small registry; yields the model URL it printed."""
    _small_registry(tmp_path, load_params(REPO_ROOT / "params.yaml").register_.model_name)
    log = tmp_path / "mlflow-ui.log"
    variables = [
        f"MLFLOW_PORT={free_port()}",
        f"MLFLOW_STORE=sqlite:///{tmp_path / 'mlflow.db'}",
        f"MLFLOW_ARTIFACTS={(tmp_path / 'mlartifacts').as_uri()}",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with log.open("w") as out:
        # its own process group: make, its shell, the URL printer and the server stop together
        proc = subprocess.Popen(
            ["make", "-s", "-o", "setup", "mlflow-ui", *variables],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield _wait_for_url(log, proc, timeout=180)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for_url(log: Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := MODEL_URL.search(log.read_text()):
            return match.group(0)
        if proc.poll() is not None:
            break
        time.sleep(1)
    raise AssertionError(f"`make mlflow-ui` printed no model URL:\n{log.read_text()[-3000:]}")


def test_mlflow_ui_opens_the_registry_and_runs(mlflow_ui: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright not installed")
    browser_path = chromium()
    assert "workflowType=machine_learning" in mlflow_ui
    server = mlflow_ui.split("/#/", 1)[0]
    name = load_params(REPO_ROOT / "params.yaml").register_.model_name
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(NO_ASSISTANT)
        page = context.new_page()
        page.set_default_timeout(60_000)
        attempted = network_off(page, local=(server,))
        try:
            # the printed URL: the registered model with its versions and their aliases
            page.goto(mlflow_ui, wait_until="load")
            versions = page.get_by_role("link", name=re.compile(r"^Version [12]$"))
            versions.last.wait_for()
            assert versions.count() == 2
            assert page.get_by_role("heading", name=name).count() == 1
            for version, alias in (("1", CHAMPION), ("2", CHALLENGER)):
                link = page.get_by_role("link", name=f"Version {version}", exact=True)
                row = page.get_by_role("row").filter(has=link)
                # the alias badge "@ champion" (a no-break space)
                assert re.search(rf"@\s{alias}\b", row.inner_text()), f"version {version}: no @{alias}"
            _assert_sidebar(page, "Experiments", "Model registry")
            page.get_by_text("Versions", exact=True).evaluate("e => e.scrollIntoView({block: 'start'})")
            page.screenshot(path=SHOTS / "registered_model.png")

            # a page without the query falls back to the stored choice; the switch stores the classic one
            page.get_by_role("link", name="Experiments", exact=True).click()
            page.get_by_role("link", name=EXPERIMENT).wait_for()
            page.get_by_text("Model training", exact=True).click()
            stored = page.evaluate("localStorage.getItem('mlflow.workflowType_v1')")
            assert stored == '"machine_learning"'
            page.get_by_role("link", name=EXPERIMENT).click()
            page.get_by_text("train window 2").first.wait_for()
            assert "train window 1" in page.inner_text("body")
            assert "/runs" in page.url
            _assert_sidebar(page, "Runs", "Model registry")  # inside an experiment: its own items
            page.screenshot(path=SHOTS / "experiment_runs.png")
        finally:
            browser.close()
    assert attempted == [], f"requests that left the machine: {attempted}"


def _assert_sidebar(page: Any, *links: str) -> None:
    """The sidebar's links; "Model registry" is the classic view's (GenAI's sidebar has none)."""
    for name in links:
        assert page.get_by_role("link", name=name, exact=True).count() >= 1, f"no {name!r} in the sidebar"
