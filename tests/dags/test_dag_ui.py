"""The Airflow UI as a person uses it: headless Debian Chromium driven by Playwright (no browser download).

Starts `airflow standalone` on a tiny project, logs in with the generated admin password, checks the
dashboard shows no DAG import errors and the DAG list shows every DAG of dags/ (the list the DagBag
integrity test checks), opens the canary and monitoring DAGs' pages, then triggers ingestion for one date
from the trigger form (start/end fields) and waits for the run to succeed in the UI. Screenshots are kept
under test-artifacts/airflow-ui/. Marked `ui` (deselected by default): `make test-ui`. Needs Debian's
chromium (`make test-ui` installs it) and the `playwright` Python package (its driver only).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time

import pytest

from pipelines import io
from tests.browser import CHROMIUM_ARGS, chromium
from tests.conftest import REPO_ROOT
from tests.dags.conftest import DAG_IDS

pytestmark = [pytest.mark.ui, pytest.mark.e2e]

DAY = "2026-01-05"
# kept after the run (the test's tmp_path is not): what a reviewer looks at
SHOTS = REPO_ROOT / "test-artifacts" / "airflow-ui"


def test_ui_login_list_trigger(standalone_factory) -> None:  # type: ignore[no-untyped-def]
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright not installed")
    executable = chromium()
    server, params = standalone_factory()
    for dag_id in DAG_IDS:
        server.wait_dag(dag_id)
    shots = SHOTS
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            # log in with the password `airflow standalone` generated
            page.goto(f"{server.url}/", wait_until="networkidle")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", server.password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/auth/" not in url)
            page.get_by_text("Welcome").wait_for()
            page.get_by_text("Dag Processor").wait_for()
            page.screenshot(path=shots / "dashboard.png")
            assert "Import Error" not in page.inner_text("body")
            assert server.api("GET", "/api/v2/importErrors")["total_entries"] == 0

            # the DAG list: every DAG of dags/
            page.goto(f"{server.url}/dags", wait_until="networkidle")
            page.get_by_text(f"{len(DAG_IDS)} Dags").wait_for()
            for dag_id in DAG_IDS:
                page.get_by_role("link", name=dag_id, exact=True).first.wait_for()
            page.screenshot(path=shots / "dags.png")

            # the canary and the monitoring DAGs' pages: their tasks and their asset schedules
            for dag_id, task in (("canary_rollout", "canary"), ("monitoring", "retrain")):
                page.goto(f"{server.url}/dags/{dag_id}", wait_until="networkidle")
                page.get_by_text(dag_id).first.wait_for()
                assert "Import Error" not in page.inner_text("body")
                page.screenshot(path=shots / f"{dag_id}.png")
                tasks = server.api("GET", f"/api/v2/dags/{dag_id}/tasks")["tasks"]
                assert task in {t["task_id"] for t in tasks}, tasks

            # trigger ingestion for one date from the form (unpauses it on trigger, the form's default)
            page.goto(f"{server.url}/dags/ingestion", wait_until="networkidle")
            page.get_by_test_id("trigger-dag-button").click()
            dialog = page.get_by_role("dialog")
            dialog.locator("input[name=element_start]").fill(DAY)
            dialog.locator("input[name=element_end]").fill("2026-01-06")
            page.screenshot(path=shots / "trigger.png")
            dialog.get_by_test_id("trigger-dag-submit").click()
            page.wait_for_url(re.compile(r".*/dags/ingestion/runs/manual__.*"))

            # the run list shows the run's state; the UI is polled as a person would (reload)
            state = _wait_for_run_state(page, f"{server.url}/dags/ingestion/runs", timeout=420)
            page.screenshot(path=shots / "runs.png")
            assert state == "Success", server.tail()
        finally:
            browser.close()
    assert (io.partition_dir(params.paths.validated, dt.date.fromisoformat(DAY)) / io.PART_FILE).is_file()


def _wait_for_run_state(page, url: str, timeout: float) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.goto(url, wait_until="networkidle")
        text = page.inner_text("body")
        for state in ("Success", "Failed"):
            if re.search(rf"\b{state}\b", text):
                return state
        page.wait_for_timeout(5_000)
    raise AssertionError(f"no final run state in the UI after {timeout} s")
