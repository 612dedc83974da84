"""The Evidently workspace monitoring writes to (`monitor.workspace`), shown by `make monitor-ui`.

One project per registered model, its id derived from the model name (every run finds it without a
listing), with the dashboard of pipelines.monitoring.panels. Runs have ids derived from what they are
(the day's run from its date, a training run from its version): a rerun replaces its run instead of
adding a second one, idempotent like the rest of the stage.

Atomicity: Evidently's Workspace.add_run writes the snapshot file in place, under a new random id. A crash
mid-write leaves a truncated JSON file, and `evidently ui` refuses to start on one (it loads every
snapshot at start-up and fails on a malformed file). So a run is serialized as Workspace.add_run does it
(the SnapshotModel as JSON with Evidently's NumpyEncoder) into a temp file renamed over
<workspace>/<project id>/snapshots/<run id>.json, the layout Evidently's local workspace reads. The
project's metadata and dashboard go through Evidently's API, which writes them in place with no
atomicity; they are written only when missing or changed, and the next run rewrites a damaged one whole
(a damaged one fails this stage with the path named).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import io
from pipelines.errors import StageError

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from evidently.ui.workspace import Workspace

_NS = uuid.UUID("0b7e6c52-3f4d-4a8e-9c21-6d5f2e8a7b13")  # namespace of the project and run ids


def project_id(model_name: str) -> uuid.UUID:
    """The monitoring project of a registered model."""
    return uuid.uuid5(_NS, f"project/{model_name}")


def run_id(project: uuid.UUID, key: str) -> uuid.UUID:
    """The run of `key` ("day/<date>", "version/<n>") in `project`."""
    return uuid.uuid5(project, key)


def _ensure_project(ws: Workspace, model_name: str) -> uuid.UUID:
    """The model's project, created with its dashboard when missing; the dashboard updated when changed."""
    from evidently.sdk.models import ProjectModel

    from pipelines.monitoring.panels import dashboard_equal, dashboard_model

    pid = project_id(model_name)
    if ws.get_project(pid) is None:
        description = (
            f"sluice monitoring of the registered model {model_name!r}: drift, live quality, decisions"
        )
        ws.add_project(ProjectModel(id=pid, name=f"sluice: {model_name}", description=description))
    wanted = dashboard_model()
    if not dashboard_equal(ws.get_dashboard(pid), wanted):
        ws.save_dashboard(pid, wanted)
    return pid


def snapshot_path(ws_path: Path, project: uuid.UUID, run: uuid.UUID) -> Path:
    """Where Evidently's local workspace keeps a run (evidently.ui.storage.local.base.LocalState)."""
    from evidently.ui.storage.local.base import SNAPSHOTS_DIR_NAME

    return ws_path / str(project) / SNAPSHOTS_DIR_NAME / f"{run}.json"


def write_run(ws_path: Path, project: uuid.UUID, key: str, snapshot: Snapshot) -> Path:
    """Write (or replace) the run `key` atomically (see the module docstring)."""
    from evidently.legacy.utils import NumpyEncoder

    path = snapshot_path(ws_path, project, run_id(project, key))
    io.atomic_write_text(path, json.dumps(snapshot.to_snapshot_model().dict(), cls=NumpyEncoder))
    # A running `evidently ui` reloads a run on a modify event of its own file, not on a rename onto it:
    # one byte appended after the rename (JSON allows trailing whitespace) makes it show the new run now.
    with path.open("a") as fh:
        fh.write("\n")
    return path


def write_workspace(path: Path, model_name: str, runs: dict[str, Snapshot]) -> dict[str, Any]:
    """Add (or replace) `runs` ({key: snapshot}) in the model's project of the workspace at `path`.

    StageError naming `path` when the workspace cannot be opened or written (a file in the way, no
    permission, a damaged project file).
    """
    try:
        from evidently.ui.workspace import Workspace

        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} is not a directory")
        ws = Workspace(str(path))
        pid = _ensure_project(ws, model_name)
        files = {key: write_run(path, pid, key, snap) for key, snap in runs.items()}
    except Exception as err:  # Evidently's storage raises many kinds; the user needs the path and the why
        raise StageError(f"monitor: Evidently workspace {path}: {type(err).__name__}: {err}") from err
    return {"workspace": str(path), "project_id": str(pid), "runs": {k: str(f) for k, f in files.items()}}
