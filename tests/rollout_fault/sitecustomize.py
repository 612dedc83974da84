"""Fault injection for the canary end-to-end test (tests/test_rollout_e2e.py), test-only.

On PYTHONPATH of a `bentoml serve` child with SLUICE_FAULTY="<version>:<error_share>:<delay_ms>[,...]",
the release of each listed registry version fails `error_share` of its score calls and sleeps `delay_ms`
in each (after a few clean warm-up calls), by wrapping pipelines.serving.releases.default_release_loader.
Nothing happens without the variable.
"""

from __future__ import annotations

import os

_SPEC = os.environ.get("SLUICE_FAULTY")

if _SPEC:
    import random
    import time
    from typing import Any

    _FAULTS = {
        v: (float(share), float(delay)) for v, share, delay in (x.split(":") for x in _SPEC.split(","))
    }

    class _Faulty:
        def __init__(self, inner: Any, share: float, delay_ms: float) -> None:
            self._inner = inner
            self._share, self._delay = share, delay_ms
            self._calls = 0
            self._rng = random.Random(0)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def score(self, frame: Any) -> Any:
            self._calls += 1
            if self._calls > 3:  # the engine's warm-up calls stay clean, or the release never loads
                if self._delay:
                    time.sleep(self._delay / 1000.0)
                if self._rng.random() < self._share:
                    raise RuntimeError("injected challenger fault")
            return self._inner.score(frame)

    import pipelines.serving.releases as _releases

    _original = _releases.default_release_loader

    def _loader(params: Any) -> Any:
        load = _original(params)

        def wrapped(registered: Any) -> Any:
            release = load(registered)
            fault = _FAULTS.get(registered.version)
            return release if fault is None else _Faulty(release, *fault)

        return wrapped

    _releases.default_release_loader = _loader
