"""The releases being served: loaded by registry alias, refreshed in the background, warmed before use.

`ReleaseSet` reads the `champion` and `challenger` aliases of params.register.model_name and the
challenger weight (the registry's rollout tags), loads each new version through `pipelines.artifacts`
(pinned version URI, fingerprint checked against the version's tag), warms it with one synthetic event,
and only then swaps the `Routing` readers see: an alias move changes answers without a restart and
without a failed request. A registry that cannot be reached keeps what is loaded; a champion that fails
to load keeps the previous champion. A daemon thread repeats this every `serve.refresh_s`.

An MLP release goes to the GPU when there is one; trees stay on CPU (copying each small online batch to
the GPU and back costs more than scoring it there saves).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.artifacts import RegisteredVersion, load_version, resolve_version
from pipelines.config import Params
from pipelines.contract import CHALLENGER, CHAMPION, FEATURE_COLUMNS
from pipelines.serving.routing import LoadedRelease, Routing
from pipelines.serving.schema import ScoreRequest, request_frame

if TYPE_CHECKING:
    from pipelines.engines.registry import Registry
    from pipelines.model.release import Release

log = logging.getLogger(__name__)

ReleaseLoader = Callable[[RegisteredVersion], "Release"]


def default_release_loader(params: Params) -> ReleaseLoader:
    """Load a registered version by its pinned URI, fingerprint checked (pipelines.artifacts.load_version);
    an MLP is reloaded onto CUDA when serving has a GPU."""

    def load(version: RegisteredVersion) -> Release:
        release = load_version(params, version)
        if release.model_kind == "mlp" and serving_device(params) == "cuda":
            release = load_version(params, version, device="cuda")
        return release

    return load


def serving_device(params: Params) -> str:
    """CUDA when present (and train.device allows it), CPU otherwise: the same release either way."""
    if params.train.device == "cpu":
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def warm(rel: LoadedRelease) -> None:
    """Score one synthetic event (first calls pay lazy imports and allocations; a request must not)."""
    now = dt.datetime.now(dt.UTC)
    req = ScoreRequest(entity_id="__warmup__", amount=10.0, timestamp=now, category="x")
    frame = request_frame([req], np.full((1, len(FEATURE_COLUMNS)), np.nan), FEATURE_COLUMNS, now)
    try:
        rel.release.score(frame)
    except Exception as err:  # a broken release shows up on real requests and in the metrics
        log.warning("warm-up of %s v%s failed: %s", rel.arm, rel.version, err)


class ReleaseSet:
    """The served releases of one model: `routing` is the snapshot readers take, swapped whole."""

    def __init__(
        self, params: Params, *, registry: Registry | None = None, loader: ReleaseLoader | None = None
    ) -> None:
        self.params = params
        self.model_name = params.register_.model_name
        self._registry = registry
        self._loader = loader or default_release_loader(params)
        self.routing = Routing({}, 0.0)
        self.last_refresh: dict[str, Any] = {"ok": None, "at": None, "error": None}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from pipelines.engines.registry import open_registry

            self._registry = open_registry(self.params)
        return self._registry

    # ---- refresh ----------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Re-read aliases + challenger weight; load new releases, then swap. True when something changed."""
        with self._lock:
            try:
                changed, load_error = self._refresh()
            except Exception as err:  # registry down: keep serving what is loaded
                self.last_refresh = {
                    "ok": False,
                    "at": _now_iso(),
                    "error": f"{type(err).__name__}: {err}"[:300],
                }
                log.warning("registry refresh failed: %s", self.last_refresh["error"])
                return False
            self.last_refresh = {"ok": True, "at": _now_iso(), "error": load_error}
            return changed

    def _refresh(self) -> tuple[bool, str | None]:
        aliases = self.registry.aliases(self.model_name)
        wanted = {CHAMPION: aliases.get(CHAMPION), CHALLENGER: aliases.get(CHALLENGER)}
        if wanted[CHALLENGER] is not None and wanted[CHALLENGER] == wanted[CHAMPION]:
            wanted[CHALLENGER] = None  # promoted: one release, no split
        current = self.routing
        arms, load_error = self._load_arms(wanted, current)
        weight = 0.0
        if CHALLENGER in arms:
            weight = float(self.registry.get_rollout_state(self.model_name).challenger_weight)
        new = Routing(arms, weight)
        changed = _versions(new) != _versions(current) or new.challenger_weight != current.challenger_weight
        self.routing = new  # one reference assignment: readers see the old or the new, never a mix
        return changed, load_error

    def _load_arms(
        self, wanted: dict[str, str | None], current: Routing
    ) -> tuple[dict[str, LoadedRelease], str | None]:
        """The release of each wanted (arm, version): reused when loaded already, else loaded and warmed."""
        by_version = {r.version: r for r in current.arms.values()}
        arms: dict[str, LoadedRelease] = {}
        load_error = None
        for arm, version in wanted.items():
            if version is None:
                continue
            have = by_version.get(version)
            if have is not None:
                arms[arm] = have if have.arm == arm else dataclasses.replace(have, arm=arm)
                continue
            try:
                arms[arm] = self._load(arm, version)
            except Exception as err:
                load_error = f"{arm} v{version}: {type(err).__name__}: {err}"[:300]
                log.error("could not load %s", load_error)
                if arm == CHAMPION and current.champion is not None:
                    arms[CHAMPION] = current.champion  # keep serving the old one rather than nothing
        return arms, load_error

    def _load(self, arm: str, version: str) -> LoadedRelease:
        registered = resolve_version(
            self.registry, self.model_name, version=version, require_tags=("threshold",)
        )
        release = self._loader(registered)
        loaded = LoadedRelease(
            arm=arm,
            model_name=self.model_name,
            version=registered.version,
            threshold=float(registered.tags["threshold"]),
            release=release,
            fingerprint=release.fingerprint,
        )
        warm(loaded)  # before the swap: the first live request pays nothing extra
        log.info("loaded %s release %s v%s", arm, self.model_name, version)
        return loaded

    def use_bundled(self, load: Callable[[], LoadedRelease]) -> None:
        """Serve the release bundled with the deployment as champion (the registry could not be read)."""
        try:
            bundled = load()
        except Exception as err:
            log.error("bundled release could not be loaded: %s", err)
            return
        self.routing = Routing({CHAMPION: bundled}, 0.0)
        log.warning("registry unavailable: serving the bundled release v%s", bundled.version)

    def warm_all(self) -> None:
        for rel in self.routing.arms.values():
            warm(rel)

    # ---- background refresher ---------------------------------------------------------------------

    def start_refresher(self, interval_s: float) -> None:
        """A daemon thread calling `refresh` every `interval_s` until `close`."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._refresh_loop, args=(interval_s,), name="sluice-refresh", daemon=True
            )
            self._thread.start()

    def _refresh_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ---- health -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The registry part of /health/dependencies: last refresh and what is served."""
        routing = self.routing
        return {
            "ok": bool(self.last_refresh.get("ok")),
            "last_refresh": self.last_refresh.get("at"),
            "error": self.last_refresh.get("error"),
            "model_name": self.model_name,
            "releases": {
                a: {"version": r.version, "threshold": r.threshold, "loaded_at": r.loaded_at}
                for a, r in routing.arms.items()
            },
            "challenger_weight": routing.challenger_weight,
        }


def _versions(routing: Routing) -> dict[str, str]:
    return {a: r.version for a, r in routing.arms.items()}


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
