"""Headless Debian Chromium for the `ui` tests of pages the project builds or serves, network off.

Playwright drives the system's chromium (its own browser download cannot reach its host from here); every
request that would leave the machine is aborted and recorded, so a test can assert that a page needs none.
"""

from __future__ import annotations

import shutil
import socket
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # no background connections, updates or sync: the only requests are the page's own
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """Path of Debian's chromium; skips the test when it is not installed."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian chromium not installed (apt-get install -y chromium)")
    return path


def network_off(page: Any, local: tuple[str, ...]) -> list[str]:
    """Abort every request of `page` whose URL does not start with one of `local`; the aborted URLs."""
    attempted: list[str] = []

    def handle(route: Any) -> None:
        url = route.request.url
        if url.startswith((*local, "data:", "blob:", "about:")):
            route.continue_()
        else:
            attempted.append(url)
            route.abort()

    page.route("**/*", handle)
    return attempted


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
