"""What GET /v1/models tells about the model: its served releases' registry metadata and alias history.

Metadata of a version never changes once registered (tags, source, size), so it is read from the
registry once per process and kept; aliases, the traffic split and the alias history are read on every
call (they are what an operator changes).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from pipelines.api.bodies import ModelInfo, ReleaseInfo, TrainingWindow
from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.serving.routing import Routing

if TYPE_CHECKING:
    from pipelines.engines.registry import Registry

_CACHE: dict[tuple[str, str], dict[str, Any]] = {}
_LOCK = threading.Lock()


def model_info(
    registry: Registry, name: str, routing: Routing, input_schema: dict[str, Any], history: int = 50
) -> ModelInfo:
    """The model `name`: every version an alias points at (served or not), newest first, with the share
    of traffic each answers now, and the last `history` alias moves."""
    aliases = registry.aliases(name)
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    for rel in routing.arms.values():
        by_version.setdefault(rel.version, [])
    releases = [
        _release(registry, name, v, sorted(a), routing, input_schema)
        for v, a in sorted(by_version.items(), key=lambda kv: -int(kv[0]))
    ]
    moves = registry.history(name)[-history:]
    return ModelInfo(
        name=name,
        releases=releases,
        challenger_weight=routing.challenger_weight if routing.has_challenger else 0.0,
        alias_history=moves,
    )


def _release(
    registry: Registry,
    name: str,
    version: str,
    aliases: list[str],
    routing: Routing,
    input_schema: dict[str, Any],
) -> ReleaseInfo:
    meta = _version_meta(registry, name, version)
    arm = next((a for a, r in routing.arms.items() if r.version == version), None)
    loaded = routing.arms[arm] if arm else None
    return ReleaseInfo(
        **meta,
        aliases=aliases,
        arm=arm,
        traffic_share=_share(routing, arm),
        input_schema=input_schema,
        loaded_at=loaded.loaded_at if loaded else None,
    )


def _share(routing: Routing, arm: str | None) -> float:
    """The share of routed traffic `arm` answers: the challenger its weight, the champion the rest."""
    if arm is None:
        return 0.0
    weight = routing.challenger_weight / 100.0 if routing.has_challenger else 0.0
    return round(weight if arm == CHALLENGER else 1.0 - weight, 6) if arm in (CHAMPION, CHALLENGER) else 0.0


def _version_meta(registry: Registry, name: str, version: str) -> dict[str, Any]:
    """The unchanging metadata of one registered version (memoized per process)."""
    key = (name, version)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    mv = registry.get_version(name, version)
    tags = dict(mv.tags)
    location = registry.client.get_model_version_download_uri(name, version)
    meta = {
        "version": str(mv.version),
        "framework": _framework(registry, mv.run_id),
        "metrics": {k: float(v) for k, v in json.loads(tags.get("metrics", "{}")).items()},
        "threshold": float(tags.get("threshold", "nan")),
        "training_window": TrainingWindow(start=tags.get("train_start", ""), end=tags.get("train_end", "")),
        "created": dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat(
            timespec="seconds"
        ),
        "artifact_uri": location,
        "size_bytes": _size(location),
        "fingerprint": tags.get("fingerprint", ""),
        "gate_verdict": tags.get("gate.verdict"),
    }
    with _LOCK:
        _CACHE[key] = meta
    return meta


# the training run's `sluice.model_kind` -> the framework that scores it
_FRAMEWORKS = {"xgboost": "xgboost", "mlp": "pytorch"}


def _framework(registry: Registry, run_id: str | None) -> str:
    """The framework of the version's model, from its training run's tags ("unknown" without a run)."""
    if not run_id:
        return "unknown"
    try:
        kind = registry.client.get_run(run_id).data.tags.get("sluice.model_kind", "")
    except Exception:  # a run deleted from the tracking store: the version still serves
        return "unknown"
    return _FRAMEWORKS.get(kind, kind or "unknown")


def _size(location: str) -> int | None:
    """Bytes of the version's artifacts when they are on a local file system (None elsewhere)."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    root = Path(unquote(parsed.path))
    if not root.exists():
        return None
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
