"""The prediction cache: a bounded LRU whose entries expire after a TTL.

The engine keys it by (release version, canonical request), so a new release can never be answered from
an old release's entries, and only stores answers scored from fresh features by the routed arm.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class TTLCache:
    """A bounded LRU whose entries expire after `ttl_s`. Not thread-safe: used from the event loop only."""

    def __init__(self, maxsize: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.maxsize = maxsize
        self.ttl_s = ttl_s
        self.clock = clock
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.maxsize > 0 and self.ttl_s > 0

    def get(self, key: Hashable) -> Any | None:
        if not self.enabled:
            return None
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        expires, value = item
        if expires <= self.clock():
            self._data.pop(key, None)
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if not self.enabled:
            return
        self._data[key] = (self.clock() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def status(self) -> dict[str, Any]:
        """The cache part of /health/dependencies."""
        return {
            "ok": True,
            "enabled": self.enabled,
            "size": len(self),
            "max_size": self.maxsize,
            "ttl_s": self.ttl_s,
            "hits": self.hits,
            "misses": self.misses,
        }

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
