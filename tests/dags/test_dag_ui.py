"""The Airflow UI as a person uses it: headless Debian Chromium driven by Playwright (no browser download).

Starts `airflow standalone` on a tiny project, logs in with the generated admin password, checks the
dashboard shows no DAG import errors and the DAG list shows the four DAGs, then triggers ingestion for
one date from the trigger form (start/end fields) and waits for the run to succeed in the UI.
Marked `ui` (deselected by default): `make airflow-ui-test` or `pytest -m ui tests/dags`. Needs
`apt-get install chromium` and the `playwright` Python package (its driver only; Chromium is Debian's).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from pathlib import Path

import pytest

from pipelines import io

pytestmark = [pytest.mark.ui, pytest.mark.e2e]

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # this machine's network is closed: no background connections, updates or sync
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DAG_IDS = ("batch_inference", "features", "ingestion", "training")
DAY = "2026-01-05"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian chromium not installed (apt-get install -y chromium)")
    return path


def test_ui_login_list_trigger(standalone_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright not installed")
    chromium = _chromium()
    server, params = standalone_factory()
    for dag_id in DAG_IDS:
        server.wait_dag(dag_id)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
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

            # the DAG list: all four DAGs with their tags
            page.goto(f"{server.url}/dags", wait_until="networkidle")
            page.get_by_text(f"{len(DAG_IDS)} Dags").wait_for()
            for dag_id in DAG_IDS:
                page.get_by_role("link", name=dag_id, exact=True).first.wait_for()
            page.screenshot(path=shots / "dags.png")

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
