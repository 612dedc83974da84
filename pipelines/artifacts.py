"""The one reader of what stages hand each other: dataset splits, JSON reports, the prediction log,
registered releases.

Stages hand each other files and registry entries, never Python objects. Each reader here names the file
(or the registered model, alias and version) and the stage that produces it when something is missing, so
a user knows which stage to run. A registered release is always loaded by its pinned version URI and
checked against the version's `fingerprint` tag: an alias move mid-job changes nothing, and artifacts
swapped after registration are refused.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.contract import LABEL, PREDICTION_LOG_GLOB, SPLITS
from pipelines.errors import StageError

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.config import Params
    from pipelines.engines.registry import Registry
    from pipelines.model.release import Release

RELEASE_DOC = "release.json"  # under paths.models, written by train


# ---- files --------------------------------------------------------------------------------------------


def split_path(params: Params, split: str) -> Path:
    """data/dataset/<split>.parquet."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return params.paths.split(split)


def read_split(params: Params, split: str, *, labelled: bool = True) -> pd.DataFrame:
    """One dataset split; StageError naming the file when missing, empty or (if `labelled`) unlabelled."""
    import pandas as pd

    path = split_path(params, split)
    if not path.is_file():
        raise StageError(f"{path}: dataset split not found (run the dataset stage first)")
    frame = pd.read_parquet(path)
    if frame.empty:
        raise StageError(f"{path}: dataset split is empty")
    if labelled and LABEL not in frame.columns:
        raise StageError(f"{path}: no {LABEL!r} column")
    return frame


def read_json(path: Path, producer: str) -> dict[str, Any]:
    """A JSON object another stage wrote; StageError naming the file and its producing stage."""
    if not path.is_file():
        raise StageError(f"{path}: not found (run the {producer} stage first)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StageError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a JSON object")
    return data


def read_release_doc(params: Params) -> dict[str, Any]:
    """models/release.json written by train (its MLflow model URI, run id and fingerprint)."""
    path = params.paths.models / RELEASE_DOC
    doc = read_json(path, "train")
    if "model_uri" not in doc:
        raise StageError(f"{path}: has no model_uri")
    return doc


def read_prediction_log(
    directory: Path, start: dt.date | None = None, end: dt.date | None = None
) -> pd.DataFrame:
    """All logged predictions served in [start, end) (UTC dates; None = unbounded) as one DataFrame.

    Tolerates a partial last line in a file being written right now.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for part in sorted(Path(directory).glob("date=*")):
        day = dt.date.fromisoformat(part.name.split("=", 1)[1])
        if (start is not None and day < start) or (end is not None and day >= end):
            continue
        for f in sorted(part.glob(PREDICTION_LOG_GLOB)):
            with f.open(encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break  # being written
                    rows.append(json.loads(line))
    return pd.DataFrame(rows)


# ---- registered releases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version: name, version, its tags and the pinned URI to load it by."""

    name: str
    version: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        from pipelines.engines.registry import version_uri

        return version_uri(self.name, self.version)

    @property
    def fingerprint(self) -> str | None:
        return self.tags.get("fingerprint")


def resolve_version(
    registry: Registry,
    name: str,
    *,
    alias: str | None = None,
    version: str | None = None,
    require_tags: tuple[str, ...] = (),
) -> RegisteredVersion:
    """The version `alias` points at (or `version` itself) with its tags; StageError names what is missing."""
    if (alias is None) == (version is None):
        raise ValueError("resolve_version takes exactly one of alias or version")
    if alias is not None:
        mv = registry.get_version_by_alias(name, alias)
        if mv is None:
            raise StageError(f"registered model {name!r} has no alias {alias!r} (run register first)")
        where = f"model {name!r} version {mv.version} (alias {alias!r})"
    else:
        mv = registry.get_version(name, str(version))
        where = f"model {name!r} version {version}"
    tags = dict(mv.tags)
    missing = [t for t in require_tags if t not in tags]
    if missing:
        raise StageError(f"{where} lacks release tags {missing}")
    return RegisteredVersion(name=name, version=str(mv.version), tags=tags)


def load_release_at(
    model_uri: str, tracking_uri: str | None, *, fingerprint: str | None = None, device: str = "cpu"
) -> Release:
    """Load the release at `model_uri`, resolving registry URIs against `tracking_uri`, fingerprint checked.

    MLflow resolves `models:/` URIs against its process-global URI, which a fresh process (a Spark worker,
    an Airflow task, the serving process) has not set: it is pointed at `tracking_uri` first.
    """
    from pipelines.model.packaging import load_release

    if tracking_uri:
        from pipelines.engines.registry import use_tracking_uri

        use_tracking_uri(tracking_uri)
    return load_release(model_uri, device=device, expected_fingerprint=fingerprint)


def load_version(params: Params, version: RegisteredVersion, *, device: str = "cpu") -> Release:
    """The release of a registered version, by its pinned URI, checked against its fingerprint tag."""
    return load_release_at(version.uri, params.tracking_uri, fingerprint=version.fingerprint, device=device)
