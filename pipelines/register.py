"""register: turn the trained, evaluated release into a registered model version with alias `challenger`.

Inputs (files): models/release.json (train), reports/metrics.json and reports/evaluation.json (evaluate).
A release whose evaluation verdict is not `pass` is refused (GateFailed). The first release of a model
also becomes `champion` (bootstrap), later ones only move `challenger`; promotion is the rollout's job.
Registering the same training run again reuses its version (idempotent reruns). Writes
reports/registry.json.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from pipelines.artifacts import RELEASE_DOC, read_json
from pipelines.config import Params
from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.engines.registry import Registry, ReleaseTags, open_registry, version_uri
from pipelines.errors import GateFailed, StageError
from pipelines.io import atomic_write_json

log = logging.getLogger(__name__)

REPORT_NAME = "registry.json"


def check_verdict(evaluation: dict[str, Any], path: Path | str = "evaluation.json") -> None:
    """Raise GateFailed unless evaluate's verdict is `pass` (a missing verdict is not a pass)."""
    verdict = evaluation.get("verdict")
    if verdict != "pass":
        failed = evaluation.get("failed_gates") or "no failed gates listed"
        raise GateFailed(f"{path}: evaluation verdict is {verdict!r}, not 'pass'; not registering: {failed}")


def release_tags(
    release: dict[str, Any], metrics: dict[str, Any], feature_service: str, fingerprint: str
) -> ReleaseTags:
    """The version tags of a release, from train's release.json and evaluate's metrics.json."""
    if "threshold" not in metrics:
        raise StageError("metrics.json: field 'threshold' missing (evaluate chooses it at evaluate.max_fpr)")
    numeric = {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return ReleaseTags(
        feature_list=list(release["feature_list"]),
        feature_service=str(release.get("feature_service") or feature_service),
        threshold=float(metrics["threshold"]),
        train_start=str(release["train_start"]),
        train_end=str(release["train_end"]),
        fingerprint=fingerprint,
        metrics=numeric,
    )


def register_release(
    registry: Registry, name: str, release: dict[str, Any], tags: ReleaseTags, who: str | None = None
) -> dict[str, Any]:
    """Register (or reuse, same run_id) the release; set `challenger`, and `champion` when there is none."""
    run_id = release["run_id"]
    existing = registry.find_version_by_run_id(name, run_id)
    if existing is not None:
        version, created = existing, False
        log.info("run %s is already version %s of %s: not registering again", run_id, version, name)
    else:
        version = registry.register_release(name, release["model_uri"], run_id, tags)
        created = True
    aliases = registry.aliases(name)
    if aliases.get(CHALLENGER) != version:
        registry.move_alias(name, CHALLENGER, version, who=who, why=f"passed offline gates (run {run_id})")
    if CHAMPION not in aliases:
        registry.move_alias(name, CHAMPION, version, who=who, why="bootstrap")
    aliases = registry.aliases(name)
    return {
        "name": name,
        "version": version,
        "run_id": run_id,
        "created": created,
        "aliases": sorted(a for a, v in aliases.items() if v == version),
        "uri": version_uri(name, version),
    }


def _fingerprint(release: dict[str, Any]) -> str:
    if release.get("fingerprint"):
        return str(release["fingerprint"])
    # older release.json without it: the loaded release verifies and reports its own fingerprint
    from pipelines.model.packaging import load_release

    return str(load_release(release["model_uri"]).fingerprint)


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Register models/release.json if its evaluation passed; write reports/registry.json."""
    paths = params.paths
    release_path = paths.models / RELEASE_DOC
    release = read_json(release_path, "train")
    required = ("run_id", "model_uri", "feature_list", "train_start", "train_end")
    missing = [k for k in required if k not in release]
    if missing:
        raise StageError(f"{release_path}: fields {missing} missing")
    evaluation_path = paths.reports / "evaluation.json"
    evaluation = read_json(evaluation_path, "evaluate")
    check_verdict(evaluation, evaluation_path)
    metrics_path = paths.reports / "metrics.json"
    metrics = read_json(metrics_path, "evaluate")
    # a stale evaluation of another run must not let this release through
    for path, doc in ((evaluation_path, evaluation), (metrics_path, metrics)):
        for key in ("run_id", "fingerprint"):
            if doc.get(key) and release.get(key) and doc[key] != release[key]:
                raise StageError(
                    f"{path}: evaluated {key} {doc[key]}, but {release_path} has {release[key]}; "
                    "rerun evaluate"
                )
    tags = release_tags(release, metrics, params.feature_store.feature_service, _fingerprint(release))
    summary = register_release(open_registry(params), params.register_.model_name, release, tags)
    atomic_write_json(paths.reports / REPORT_NAME, {k: v for k, v in summary.items() if k != "created"})
    return summary


def describe(summary: dict[str, Any]) -> str:
    """Progress line: the registered version and its aliases."""
    state = "registered" if summary["created"] else "already registered"
    aliases = ", ".join(summary["aliases"]) or "none"
    return f"{summary['name']} v{summary['version']} {state} (aliases: {aliases})"


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "register", describe)
