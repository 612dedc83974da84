"""Unique ids for requests and predictions, without a system call each.

`uuid.uuid4()` reads the OS's random source on every call: 6% of the serving process's CPU under load
(py-spy, benchmarks/serving.py --profile). An id here is a random 64-bit prefix drawn once per process
(again after a fork) and a 64-bit counter: 32 hex digits like a uuid4's, unique across the workers of
a service and its restarts.
"""

from __future__ import annotations

import itertools
import os
import uuid

_pid: int | None = None
_prefix = ""
_counter = itertools.count()


def new_id() -> str:
    """A new 32-hex-digit id, unique across processes."""
    global _pid, _prefix, _counter
    if os.getpid() != _pid:  # first call, or a forked child: never reuse the parent's sequence
        _prefix, _counter, _pid = uuid.uuid4().hex[:16], itertools.count(), os.getpid()
    return f"{_prefix}{next(_counter):016x}"
