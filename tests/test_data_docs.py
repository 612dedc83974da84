"""GX data docs render offline: no built page loads anything from the network; every asset is in the site.

GX's templates load Bootstrap, jQuery, Font Awesome, Vega... from CDNs; engines.gx_docs points them at
copies inside the site. The browser check of the same pages (network blocked) is tests/test_data_docs_ui.py.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import ingest, io, validate
from pipelines.engines import gx_docs
from pipelines.errors import GateFailed
from tests.conftest import make_project

GOOD, BAD = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
# script/img src and link href of a page, the references a browser fetches to render it
_ASSET_REF = re.compile(r"""<(?:script|img|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.IGNORECASE)


def build_docs(root: Path) -> Path:
    """The validate stage's data docs for two days, the second failing (an amount over the bound)."""
    params = make_project(root)
    ingest.run(params, GOOD, BAD + dt.timedelta(days=1))
    raw = io.partition_dir(params.paths.raw, BAD) / io.PART_FILE
    frame = pq.read_table(raw).to_pandas()
    frame.loc[0, "amount"] = params.validate_.max_amount * 10
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), raw)
    with pytest.raises(GateFailed):
        validate.run(params, GOOD, BAD + dt.timedelta(days=1))
    return params.paths.reports / "validation"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_docs(tmp_path_factory.mktemp("docs") / "project")


@pytest.mark.integration
def test_no_page_loads_from_the_network(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 4  # index, the suite, one page per validated day
    for page in pages:
        html = page.read_text()
        assert gx_docs.external_assets(html) == [], page
        remote = [ref for ref in _ASSET_REF.findall(html) if re.match(r"(?:https?:)?//", ref)]
        assert remote == [], page
        assert "integrity=" not in html and "crossorigin=" not in html, page


@pytest.mark.integration
def test_every_asset_a_page_references_is_in_the_site(site: Path) -> None:
    for page in sorted(site.rglob("*.html")):
        refs = [r for r in _ASSET_REF.findall(page.read_text()) if not r.startswith(("#", "data:"))]
        assert refs, page
        missing = [r for r in refs if not (page.parent / r.split("?")[0]).resolve().is_file()]
        assert missing == [], page
    fonts = site / gx_docs.VENDOR / "fontawesome-free-6.6.0" / "webfonts"
    assert (fonts / "fa-solid-900.woff2").is_file()  # all.min.css loads it from ../webfonts/


@pytest.mark.unit
def test_localize_page_rewrites_cdn_tags_and_the_logo() -> None:
    html = (
        '<script src="https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js" '
        'integrity="sha384-x" crossorigin="anonymous"></script>\n'
        '<link rel="shortcut icon" href="../../../static/images/favicon.ico" type="image/x-icon"/>\n'
        '<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1"/>\n'
        "<style>a {background: url('https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
        "full_logo_dark.png')}</style>\n"
        '<a href="https://greatexpectations.io">a link, not an asset</a>'
    )
    assert len(gx_docs.external_assets(html)) == 3
    out = gx_docs.localize_page(html, "../../../..")
    assert '<script src="../../../../static/vendor/popper.js-1.12.9/popper.min.js"></script>' in out
    assert 'href="../../../../static/images/favicon.ico"' in out
    assert '<img src="../../../../static/images/logo-long.png"/>' in out
    assert "url('../../../../static/images/logo-long.png')" in out
    assert '<a href="https://greatexpectations.io">' in out
    assert gx_docs.external_assets(out) == []
    assert gx_docs.localize_page(out, "../../../..") == out  # idempotent


@pytest.mark.unit
def test_every_cdn_asset_is_vendored() -> None:
    for url, local in gx_docs.CDN_ASSETS.items():
        assert (gx_docs.STATIC / local).is_file(), url
