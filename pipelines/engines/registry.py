"""Typed helpers over MlflowClient for the registry contract (DESIGN.md section 4).

Used by register, batch_predict, the canary rollout and the `sluice` ops CLI, so the tag layout lives in
one place:

- aliases only (`challenger`, `champion`, `previous`), never the deprecated stages;
- a release is one model version whose tags carry feature_list, feature_service, threshold,
  train_start, train_end, fingerprint and metrics (`ReleaseTags`);
- every alias move is recorded twice: on the version it lands on (`alias.<alias>` = JSON of the move)
  and in an append-only history on the registered model (`history.<000001>` = JSON), so "who moved
  champion when and why, and what was there before" and rollback are plain queries;
- rollout state (challenger_weight, step, started_at, decision) are tags `rollout.<field>` on the
  registered model, the one source of truth shared by the serving process and the canary DAG.

Nothing is imported from MLflow at module import (the stage modules stay cheap to import).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.contract import CHAMPION, PREVIOUS

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from pipelines.config import Params


HISTORY_PREFIX = "history."
ALIAS_TAG_PREFIX = "alias."
ROLLOUT_PREFIX = "rollout."
# zero-padded so tag keys sort in move order in the UI and in `sorted()`
_SEQ_WIDTH = 6
_URI_LOCK = threading.Lock()

RELEASE_TAG_KEYS: tuple[str, ...] = (
    "feature_list",
    "feature_service",
    "threshold",
    "train_start",
    "train_end",
    "fingerprint",
    "metrics",
)


def current_user() -> str:
    """Who is acting: $SLUICE_USER, else the OS user (Airflow workers set SLUICE_USER to the DAG id)."""
    user = os.environ.get("SLUICE_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers): still record something
        return "unknown"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ReleaseTags:
    """What a registered version says about itself; serving and batch read these, never loose files."""

    feature_list: list[str]
    feature_service: str
    threshold: float
    train_start: str
    train_end: str
    fingerprint: str
    metrics: dict[str, float] = field(default_factory=dict)

    def to_tags(self) -> dict[str, str]:
        """MLflow tag values are strings: lists/dicts as sorted JSON, floats via repr (exact round-trip)."""
        return {
            "feature_list": json.dumps(list(self.feature_list)),
            "feature_service": self.feature_service,
            "threshold": repr(float(self.threshold)),
            "train_start": str(self.train_start),
            "train_end": str(self.train_end),
            "fingerprint": self.fingerprint,
            "metrics": json.dumps(self.metrics, sort_keys=True),
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> ReleaseTags:
        """Parse a version's tags; KeyError names the missing tags (versions not made by register)."""
        missing = [k for k in RELEASE_TAG_KEYS if k not in tags]
        if missing:
            raise KeyError(f"model version lacks release tags {missing}")
        return cls(
            feature_list=list(json.loads(tags["feature_list"])),
            feature_service=tags["feature_service"],
            threshold=float(tags["threshold"]),
            train_start=tags["train_start"],
            train_end=tags["train_end"],
            fingerprint=tags["fingerprint"],
            metrics=dict(json.loads(tags["metrics"])),
        )


@dataclass(frozen=True)
class AliasMove:
    """One alias move (or removal: `version` None) as recorded in the registry."""

    seq: int
    alias: str
    version: str | None
    previous: str | None
    who: str
    when: str
    why: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AliasMove:
        d = json.loads(text)
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class RolloutState:
    """Canary state stored as `rollout.*` tags on the registered model (strings in, typed out)."""

    challenger_weight: float = 0.0
    step: int = 0
    started_at: str | None = None
    decision: str | None = None
    updated_at: str | None = None
    updated_by: str | None = None


class Registry:
    """The registry contract over one MlflowClient.

    Versions going in and out are str; a raw `ModelVersion.version` is an int from the SQL store and a
    str over REST, so compare through `alias_version` or str(). History sequence numbers assume one
    writer at a time per model (register, the canary DAG and the CLI do not race on one model).
    """

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    # ---- versions -------------------------------------------------------------------------------

    def ensure_model(self, name: str) -> None:
        """Create the registered model `name` unless it exists."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(name)

    def find_version_by_run_id(self, name: str, run_id: str) -> str | None:
        """The oldest version of `name` created from run `run_id` (register's idempotence key), or None."""
        if not self.model_exists(name):
            return None
        found = self.client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{_quote(run_id)}'")
        return str(min(int(v.version) for v in found)) if found else None

    def register_release(
        self,
        name: str,
        model_uri: str,
        run_id: str | None,
        tags: ReleaseTags | dict[str, str],
        description: str | None = None,
    ) -> str:
        """Create a new version of `name` from `model_uri` carrying the release tags; returns the version.

        `model_uri` may be MLflow 3's `models:/m-<id>` (what log_model returns) or `runs:/<id>/<path>`.
        """
        self.ensure_model(name)
        tag_map = tags.to_tags() if isinstance(tags, ReleaseTags) else dict(tags)
        source, model_id = self._resolve_source(model_uri)
        mv = self.client.create_model_version(
            name=name,
            source=source,
            run_id=run_id,
            tags=tag_map,
            description=description,
            model_id=model_id,
        )
        return str(mv.version)

    def _resolve_source(self, model_uri: str) -> tuple[str, str | None]:
        """(source, model_id) for create_model_version, like mlflow.register_model but on our client.

        MLflow 3 stores a model logged in a run as a LoggedModel (`models:/m-<id>`), not under the run's
        artifacts, so `runs:/<run>/<name>` must be resolved to that LoggedModel or the version would
        point at an empty directory.
        """
        if model_uri.startswith("models:/m-"):
            return model_uri, model_uri.removeprefix("models:/").split("/")[0]
        if not model_uri.startswith("runs:/"):
            return model_uri, None
        run_id, _, artifact_path = model_uri.removeprefix("runs:/").partition("/")
        run = self.client.get_run(run_id)
        found = []
        page_token = None
        while True:
            page = self.client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"name = '{_quote(artifact_path)}'",
                page_token=page_token,
            )
            found += [m for m in page if m.source_run_id == run_id]
            page_token = page.token
            if not page_token:
                break
        if len(found) == 1:
            return f"models:/{found[0].model_id}", found[0].model_id
        if not found:
            # a model logged the MLflow 2 way, under the run's own artifacts
            return f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}", None
        raise ValueError(
            f"{model_uri}: {len(found)} logged models of that name in run {run_id}; pass models:/m-<id>"
        )

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of `name`, oldest first (empty when the model does not exist)."""
        if not self.model_exists(name):
            return []
        found = self.client.search_model_versions(f"name = '{_quote(name)}'")
        return sorted(found, key=lambda v: int(v.version))

    def get_version(self, name: str, version: str | int) -> ModelVersion:
        return self.client.get_model_version(name, str(version))

    def release_tags(self, name: str, version: str | int) -> ReleaseTags:
        """The release tags of one version."""
        return ReleaseTags.from_tags(dict(self.get_version(name, version).tags))

    def set_release_tags(self, name: str, version: str | int, tags: ReleaseTags) -> None:
        for key, value in tags.to_tags().items():
            self.client.set_model_version_tag(name, str(version), key, value)

    def model_exists(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    # ---- aliases --------------------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version of the registered model (empty when the model does not exist)."""
        if not self.model_exists(name):
            return {}
        return {k: str(v) for k, v in self.client.get_registered_model(name).aliases.items()}

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version `alias` points at, or None when the model or the alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version (str) `alias` points at, or None (the SQL store returns int versions, REST str)."""
        mv = self.get_version_by_alias(name, alias)
        return None if mv is None else str(mv.version)

    def move_alias(
        self, name: str, alias: str, version: str | int, who: str | None = None, why: str = ""
    ) -> AliasMove:
        """Point `alias` at `version`, recording who/when/why/previous on the version and in the history."""
        version = str(version)
        self.get_version(name, version)  # fail fast (RESOURCE_DOES_NOT_EXIST) before touching anything
        current = self.get_version_by_alias(name, alias)
        move = AliasMove(
            seq=self._next_seq(name),
            alias=alias,
            version=version,
            previous=str(current.version) if current is not None else None,
            who=who or current_user(),
            when=_now(),
            why=why,
        )
        self.client.set_registered_model_alias(name, alias, version)
        self.client.set_model_version_tag(name, version, f"{ALIAS_TAG_PREFIX}{alias}", move.to_json())
        self._append_history(name, move)
        return move

    def remove_alias(self, name: str, alias: str, who: str | None = None, why: str = "") -> AliasMove | None:
        """Delete `alias` (recorded in the history); None when it was not set."""
        current = self.get_version_by_alias(name, alias)
        if current is None:
            return None
        move = AliasMove(
            seq=self._next_seq(name),
            alias=alias,
            version=None,
            previous=str(current.version),
            who=who or current_user(),
            when=_now(),
            why=why,
        )
        self.client.delete_registered_model_alias(name, alias)
        self._append_history(name, move)
        return move

    def promote(self, name: str, version: str | int, who: str | None = None, why: str = "") -> AliasMove:
        """Make `version` champion, keeping the old champion as `previous` (the rollback target)."""
        old = self.get_version_by_alias(name, CHAMPION)
        if old is not None and str(old.version) != str(version):
            why_prev = f"champion replaced by v{version}: {why}"
            self.move_alias(name, PREVIOUS, old.version, who=who, why=why_prev)
        return self.move_alias(name, CHAMPION, version, who=who, why=why)

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every recorded alias move of `name`, oldest first (optionally only those of `alias`)."""
        if not self.model_exists(name):
            return []
        tags = self.client.get_registered_model(name).tags
        moves = [AliasMove.from_json(v) for k, v in tags.items() if k.startswith(HISTORY_PREFIX)]
        moves.sort(key=lambda m: m.seq)
        return [m for m in moves if alias is None or m.alias == alias]

    def _next_seq(self, name: str) -> int:
        tags = self.client.get_registered_model(name).tags
        seqs = [int(k[len(HISTORY_PREFIX) :]) for k in tags if k.startswith(HISTORY_PREFIX)]
        return max(seqs, default=0) + 1

    def _append_history(self, name: str, move: AliasMove) -> None:
        # one tag per move: append-only without read-modify-write of a growing JSON blob
        key = f"{HISTORY_PREFIX}{move.seq:0{_SEQ_WIDTH}d}"
        self.client.set_registered_model_tag(name, key, move.to_json())

    # ---- rollout state --------------------------------------------------------------------------

    def get_rollout_state(self, name: str) -> RolloutState:
        """The canary state of `name` (defaults when none was ever set)."""
        if not self.model_exists(name):
            return RolloutState()
        tags = self.client.get_registered_model(name).tags
        raw = {k[len(ROLLOUT_PREFIX) :]: v for k, v in tags.items() if k.startswith(ROLLOUT_PREFIX)}
        return RolloutState(
            challenger_weight=float(raw.get("challenger_weight", 0.0)),
            step=int(raw.get("step", 0)),
            started_at=raw.get("started_at") or None,
            decision=raw.get("decision") or None,
            updated_at=raw.get("updated_at") or None,
            updated_by=raw.get("updated_by") or None,
        )

    def set_rollout_state(self, name: str, who: str | None = None, **fields: Any) -> RolloutState:
        """Update some rollout fields (challenger_weight, step, started_at, decision); None clears one."""
        allowed = {"challenger_weight", "step", "started_at", "decision"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown rollout fields {sorted(unknown)}; expected some of {sorted(allowed)}")
        if "challenger_weight" in fields and fields["challenger_weight"] is not None:
            w = float(fields["challenger_weight"])
            if not 0.0 <= w <= 100.0:
                raise ValueError(f"challenger_weight must be in [0, 100] (percent of traffic), got {w}")
        for key, value in fields.items():
            tag = f"{ROLLOUT_PREFIX}{key}"
            if value is None:
                self._delete_model_tag(name, tag)
            else:
                self.client.set_registered_model_tag(name, tag, str(value))
        self.client.set_registered_model_tag(name, f"{ROLLOUT_PREFIX}updated_at", _now())
        self.client.set_registered_model_tag(name, f"{ROLLOUT_PREFIX}updated_by", who or current_user())
        return self.get_rollout_state(name)

    def clear_rollout_state(self, name: str) -> None:
        """Remove every rollout tag (a finished or aborted canary)."""
        for key in list(self.client.get_registered_model(name).tags):
            if key.startswith(ROLLOUT_PREFIX):
                self._delete_model_tag(name, key)

    def _delete_model_tag(self, name: str, key: str) -> None:
        if key in self.client.get_registered_model(name).tags:
            self.client.delete_registered_model_tag(name, key)


def _quote(value: str) -> str:
    # MLflow's filter grammar: single-quoted strings; a quote inside would break the filter
    if "'" in value:
        raise ValueError(f"registry names/ids may not contain a single quote: {value!r}")
    return value


def use_tracking_uri(uri: str) -> None:
    """Point MLflow's process-global tracking and registry URIs at `uri`.

    MLflow resolves `models:/` URIs (create_model_version's source, load_model) against these globals,
    not against a client's; unset, they default to ./mlflow.db of the current directory, the project's
    only when a stage runs from the project root (dvc), not in an Airflow worker. mlflow's setters also
    export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, which `load_params` takes as an override: those are
    put back as they were, so one project's URI never leaks into params loaded later in this process.
    """
    import mlflow

    # one caller at a time: a thread saving the env while another has set it would "restore" the other's
    # URI for good (the serving process refreshes releases in a background thread)
    with _URI_LOCK:
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def open_registry(params: Params | None = None, tracking_uri: str | None = None) -> Registry:
    """A Registry on params.tracking_uri (or an explicit URI); registry URI = tracking URI."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or (params.tracking_uri if params is not None else None)
    if uri is None:
        raise ValueError("open_registry needs params or a tracking_uri")
    use_tracking_uri(uri)  # the client's own calls resolve `models:/m-<id>` sources through the globals
    return Registry(MlflowClient(tracking_uri=uri, registry_uri=uri))


def version_uri(name: str, version: str | int) -> str:
    """The pinned URI of one version (what batch jobs load so an alias move mid-job changes nothing)."""
    return f"models:/{name}/{version}"
