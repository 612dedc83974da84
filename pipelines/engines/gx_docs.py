"""GX data docs that render offline: the assets GX's pages load from CDNs, served by the site itself.

GX 1.x page templates load Bootstrap, jQuery, bootstrap-table, Font Awesome, Vega... from public CDNs
and the logo from S3, so with no network the index (a bootstrap-table) is blank and every page
unstyled. After GX builds a site, `localize_site` copies the same files, vendored under
gx_docs_static/ (exact package versions; sources and licences in its README.md), to
<site>/static/vendor/ and points every page at them with relative URLs, so the site also works opened
as file:// and when moved. `external_assets` lists what a page would still fetch from the network.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("gx_docs_static")
VENDOR = Path("static") / "vendor"  # under the site root, next to GX's own static/images, styles, fonts

# every CDN URL of GX 1.x's templates (great_expectations/render/view/templates) -> its vendored file
CDN_ASSETS: dict[str, str] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js-1.12.9/popper.min.js"
    ),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap-4.3.1/bootstrap.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap-4.3.1/bootstrap.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table-1.19.1/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table-1.19.1/bootstrap-table.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js": "bootstrap-table-1.19.1/bootstrap-table-filter-control.min.js",
    # GX links 1.19.0's filter-control CSS (minified on the index only): 1.19.1's has the same rules
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css": "bootstrap-table-1.19.1/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css": "bootstrap-table-1.19.1/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker-1.9.0/bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker-1.9.0/bootstrap-datepicker.min.js"
    ),
    # the minified build of the same file (the plain one is 880 kB)
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        "bootstrap-dark-1.1.0/bootstrap-prefers-dark.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "fontawesome-free-6.6.0/css/all.min.css"
    ),
    # jsDelivr serves the newest release of the major version: these were the newest when vendored
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/vega-embed.min.js",
}
# GX's logo on S3 (with a tracking query) -> the image GX itself copies to <site>/static/images/; the
# dark-mode logo is not shipped, so dark mode shows the light one
S3_IMAGE = re.compile(
    r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/([\w.-]+)(\?[^\"')\s]*)?"
)
GX_IMAGES = {"logo-long.png": "logo-long.png", "full_logo_dark.png": "logo-long.png"}

_TAG = re.compile(r"<(?:script|link)\b[^>]*>", re.IGNORECASE)
_URL_ATTR = re.compile(r"""\b(src|href)=(["'])([^"']+)\2""", re.IGNORECASE)
_SITE_STATIC = re.compile(r"(?:\./|(?:\.\./)+)static/")  # a page's link to the site's own static/
# a browser refuses a crossorigin (CORS) fetch of a file:// page, and SRI needs one: dropped with the CDN
_CORS_ATTRS = re.compile(r"""\s+(?:integrity|crossorigin)=(["'])[^"']*\1""", re.IGNORECASE)
# what a page loads by itself: script/img/iframe/source src, <link href>, CSS url() and @import
_EXTERNAL = (
    re.compile(
        r"""<(?:script|img|iframe|source|embed|audio|video)\b[^>]*?\bsrc=["']?((?:https?:)?//[^"'\s>]+)""",
        re.IGNORECASE,
    ),
    re.compile(r"""<link\b[^>]*?\bhref=["']?((?:https?:)?//[^"'\s>]+)""", re.IGNORECASE),
    re.compile(r"""url\(\s*["']?((?:https?:)?//[^"')\s]+)""", re.IGNORECASE),
    re.compile(r"""@import\s+["']((?:https?:)?//[^"']+)""", re.IGNORECASE),
)


def localize_site(site: Path) -> list[str]:
    """Copy the vendored assets into `site` and point its pages at them; the URLs still external.

    Idempotent. Leftovers (a GX upgrade that adds a CDN asset) are logged, not raised: the docs are a
    report, and the validation verdict must not depend on them; tests keep the list empty.
    """
    shutil.copytree(STATIC, site / VENDOR, dirs_exist_ok=True)
    leftovers: set[str] = set()
    for page in sorted(site.rglob("*.html")):
        html = localize_page(page.read_text(encoding="utf-8"), _relative(site, page.parent))
        page.write_text(html, encoding="utf-8")
        leftovers.update(external_assets(html))
    if leftovers:
        log.warning("GX data docs in %s still load from the network: %s", site, sorted(leftovers))
    return sorted(leftovers)


def localize_page(html: str, to_root: str) -> str:
    """One page with its CDN assets and GX images rewritten to paths relative to the page.

    `to_root` is the page's relative path to the site root ("." or "../..").
    """
    vendor = f"{to_root}/{VENDOR.as_posix()}"

    def tag(match: re.Match[str]) -> str:
        text = match.group(0)
        url = _URL_ATTR.search(text)
        if url is None:
            return text
        if url.group(3) in CDN_ASSETS:
            local = f"{vendor}/{CDN_ASSETS[url.group(3)]}"
        elif own := _SITE_STATIC.match(url.group(3)):
            # from the root down: GX's favicon link on validation pages climbs one level too few
            local = f"{to_root}/static/{url.group(3)[own.end() :]}"
        else:
            return text
        return _CORS_ATTRS.sub("", text[: url.start(3)] + local + text[url.end(3) :])

    def image(match: re.Match[str]) -> str:
        name = GX_IMAGES.get(match.group(1))
        return match.group(0) if name is None else f"{to_root}/static/images/{name}"

    return S3_IMAGE.sub(image, _TAG.sub(tag, html))


def external_assets(html: str) -> list[str]:
    """URLs a browser would fetch from the network to render `html` (links to click are not counted)."""
    return sorted({m.group(1) for pattern in _EXTERNAL for m in pattern.finditer(html)})


def _relative(site: Path, folder: Path) -> str:
    return Path(os.path.relpath(site, folder)).as_posix()
