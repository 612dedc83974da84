"""Helpers for the scale-out tests: reachability checks, free ports, background servers, a PostgreSQL db.

Engines (override with env vars): PostgreSQL $SLUICE_TEST_PG (default postgresql://postgres@127.0.0.1:5432,
trust auth), Redis $SLUICE_TEST_REDIS (default 127.0.0.1:6379). Tests skip cleanly when one is unreachable.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import reachable

REDIS = os.environ.get("SLUICE_TEST_REDIS", "127.0.0.1:6379")


def free_port(preferred: int | None = None) -> int:
    """`preferred` when nothing listens there, else a port the OS picks."""
    if preferred is not None and not reachable("127.0.0.1", preferred, timeout=0.5):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server in its own process group, stdout+stderr to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=log.parent
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Terminate the process group we started (SIGTERM, then SIGKILL); never anything else."""
    import signal

    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll `check` until true, else fail naming `what` (with the server log's tail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
    pytest.fail(f"{what} not ready after {timeout:.0f} s\n{tail}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False
