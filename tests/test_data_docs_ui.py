"""GX data docs in a browser with the network off: headless Debian Chromium driven by Playwright.

Builds the validate stage's data docs for two days (one failing), opens them as file:// with every
non-local request blocked and recorded, and checks the index's bootstrap-table lists both runs, a
validation page's results tables are populated and styled (Bootstrap, bootstrap-table, Font Awesome
icons, Vega) and no request tried to leave the machine. Screenshots go to test-artifacts/data-docs/.
Marked `ui` (deselected by default): `make test-ui`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM_ARGS, chromium, network_off
from tests.conftest import REPO_ROOT
from tests.test_data_docs import BAD, GOOD, build_docs

pytestmark = [pytest.mark.ui, pytest.mark.integration]

SHOTS = REPO_ROOT / "test-artifacts" / "data-docs"
# what the pages' scripts define once the vendored files loaded: jQuery, bootstrap-table, Vega
LIBRARIES = "[typeof jQuery, typeof jQuery.fn.bootstrapTable, typeof jQuery.fn.modal, typeof vegaEmbed]"
DARK_BODY = "getComputedStyle(document.body).backgroundColor !== 'rgb(255, 255, 255)'"
# the solid icon face (fas), loaded: only a face in use loads, and both pages show fas icons
FA_SOLID_LOADED = """async () => {
  await document.fonts.ready;
  return [...document.fonts].some(f => f.family.includes("Font Awesome 6 Free") && f.weight === "900"
                                      && f.status === "loaded");
}"""


def test_data_docs_render_with_the_network_off(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright not installed")
    browser_path = chromium()
    site = build_docs(tmp_path / "project")
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    errors: list[str] = []

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("requestfailed", lambda req: errors.append(f"{req.url}: {req.failure}"))
        attempted = network_off(page, local=("file:",))
        try:
            # the index: a bootstrap-table filled by jQuery from the page's data, one row per run
            page.goto((site / "index.html").as_uri(), wait_until="load")
            rows = page.locator("table.ge-index-page-validation-results-table tbody tr")
            rows.first.wait_for()
            assert rows.count() == 2
            text = page.inner_text("table.ge-index-page-validation-results-table")
            assert f"date={GOOD}" in text and f"date={BAD}" in text
            _assert_rendered(page)
            page.screenshot(path=SHOTS / "index.png")
            # dark mode comes from the vendored bootstrap-dark (a prefers-color-scheme stylesheet)
            page.emulate_media(color_scheme="dark")
            assert page.evaluate(DARK_BODY), "bootstrap-dark did not apply"
            page.screenshot(path=SHOTS / "index_dark.png")
            page.emulate_media(color_scheme="light")

            # the failing day's page, reached as a person does: a click on its row
            rows.filter(has_text=f"date={BAD}").first.click()
            page.wait_for_url(lambda url: f"/date%3D{BAD}/" in url or f"/date={BAD}/" in url)
            page.wait_for_load_state("load")
            results = page.locator("div.bootstrap-table table tbody tr")
            results.first.wait_for()
            assert results.count() > 20  # overview, statistics and each expectation's row
            assert "Unsuccessful Expectations" in page.inner_text("body")
            assert page.locator("i.fas.fa-times.text-danger").count() >= 1  # the failed expectation
            _assert_rendered(page)
            page.screenshot(path=SHOTS / "validation_page.png")
            failed = page.locator("tr", has=page.locator("i.fas.fa-times.text-danger")).first
            failed.scroll_into_view_if_needed()
            page.screenshot(path=SHOTS / "validation_failed_expectation.png")
        finally:
            browser.close()
    assert attempted == [], f"requests that left the machine: {attempted}"
    assert errors == [], errors


def _assert_rendered(page: Any) -> None:
    """Every vendored library ran and styled the page: scripts defined, Bootstrap CSS and the icon font."""
    assert page.evaluate(LIBRARIES) == ["function"] * 4
    # Bootstrap's sticky navbar (top_navbar.j2): position is the default static without bootstrap.min.css
    assert page.evaluate("getComputedStyle(document.querySelector('nav.navbar')).position") == "sticky"
    assert page.evaluate(FA_SOLID_LOADED), "Font Awesome's solid icons did not load"
    logo = page.locator("nav.navbar img").first
    assert logo.evaluate("img => img.complete && img.naturalWidth > 0"), "GX logo missing"
