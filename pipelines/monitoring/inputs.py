"""The frames monitoring compares, assembled from what other stages wrote and from the registry.

- current: the prediction log (data/prediction_log/, rows served in [start, end)) when serving wrote any;
  otherwise (a laptop `dvc repro`, no serving traffic) the batch predictions of the range
  (data/predictions) joined to their validated events, with each event's features taken as the entity's
  state after its previous event (data/features, as-of join), which is what Feast serves online.
- reference: the current champion's training data: data/dataset/train.parquet restricted to the
  champion's `train_start`/`train_end` registry tags (the whole file when there is no champion yet);
  when the file holds another range (a newer dataset), the window is rebuilt from validated events +
  data/features the same way as the current side. Scored by the champion release when one exists.
- the champion: the version the `champion` alias points at, with its release tags, resolved and loaded
  through pipelines.artifacts (pinned version URI, fingerprint checked).
- labels: the validated events' label of the live-metrics window, with the label delay to apply, and the
  labels posted to the ingestion service for its predictions (the landing store, as of the as-of time).
- the training history: every registered version with its offline metrics and champion-gate verdict.

The model's request-time features are a function argument (`FeatureFn`): the stage passes the model's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines import artifacts, io
from pipelines.artifacts import RegisteredVersion, load_version, resolve_version, split_path
from pipelines.contract import CHAMPION, ENTITY_KEY, EVENT_ID, LABEL, TIMESTAMP
from pipelines.errors import StageError
from pipelines.ingestion.labels import read_labels
from pipelines.monitoring import ARM, SCORE
from pipelines.monitoring.drift import sample

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.engines.registry import Registry, ReleaseTags
    from pipelines.model.release import Release
    from pipelines.sections import MonitorParams

log = logging.getLogger(__name__)

# Model input columns computed from an event frame (same index), e.g. model.request_features.
FeatureFn = Callable[[pd.DataFrame], pd.DataFrame]


# ---- point-in-time features ---------------------------------------------------------------------------


def features_asof(events: pd.DataFrame, features: pd.DataFrame, history_days: int) -> pd.DataFrame:
    """Events + the entity's feature state after its previous event (strictly before it, within the
    history TTL): the point-in-time view Feast gives training and the online store gives serving."""
    if events.empty:
        return events
    ev = events.copy()
    ev[TIMESTAMP] = pd.to_datetime(ev[TIMESTAMP], utc=True).astype("datetime64[us, UTC]")
    ev["_order"] = np.arange(len(ev))
    if features.empty:
        return ev.drop(columns="_order")
    ft = features.copy()
    ft[TIMESTAMP] = pd.to_datetime(ft[TIMESTAMP], utc=True).astype("datetime64[us, UTC]")
    ft = ft.rename(columns={TIMESTAMP: "_feature_ts"}).sort_values("_feature_ts")
    ev = ev.sort_values(TIMESTAMP)
    merged = pd.merge_asof(
        ev,
        ft,
        left_on=TIMESTAMP,
        right_on="_feature_ts",
        by=ENTITY_KEY,
        allow_exact_matches=False,
        tolerance=pd.Timedelta(days=history_days),
    )
    return merged.sort_values("_order").drop(columns=["_order", "_feature_ts"]).reset_index(drop=True)


def _events_with_features(params: Params, events: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """`features_asof` over the data/features partitions that can hold the state of [start, end)'s events."""
    hist = params.features.history_days
    feats = io.read_partitions(params.paths.features, start - dt.timedelta(days=hist), end)
    return features_asof(events, feats, hist)


# ---- current window -----------------------------------------------------------------------------------


def read_prediction_log(directory: Path, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Logged predictions served in [start, end) (the serving log's reader; empty when none)."""
    if not directory.is_dir():
        return pd.DataFrame()
    frame = artifacts.read_prediction_log(directory, start, end)
    if frame.empty:
        return frame
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True, format="ISO8601")
    if EVENT_ID not in frame.columns or frame[EVENT_ID].isna().all():
        frame[EVENT_ID] = frame.get("prediction_id")
    return frame


def current_frame(params: Params, start: dt.date, end: dt.date) -> tuple[pd.DataFrame, str]:
    """Predictions of [start, end) with their event and feature columns, and where they came from."""
    p = params.paths
    logged = read_prediction_log(p.prediction_log, start, end)
    if not logged.empty:
        return logged, "prediction_log"
    preds = io.read_partitions(p.predictions, start, end)
    if preds.empty:
        return preds, "none"
    events = io.read_partitions(p.validated, start, end)
    if events.empty:
        raise StageError(f"monitor: batch predictions for [{start}, {end}) but no validated events there")
    keep = [c for c in preds.columns if c not in events.columns or c == EVENT_ID]
    frame = _events_with_features(params, events.merge(preds[keep], on=EVENT_ID, how="inner"), start, end)
    frame[ARM] = "batch"
    return frame, "batch_predictions"


# ---- the champion and its reference --------------------------------------------------------------------


@dataclass(frozen=True)
class Champion:
    """The registered version the champion alias points at, with its parsed release tags."""

    version: RegisteredVersion
    tags: ReleaseTags

    @property
    def train_window(self) -> tuple[dt.date, dt.date]:
        """[train_start, train_end) of the release, as dates."""
        return _as_date(self.tags.train_start), _as_date(self.tags.train_end)

    def info(self) -> dict[str, Any]:
        """What the monitor summary records of the champion."""
        return {
            "model_name": self.version.name,
            "version": self.version.version,
            "train_start": self.tags.train_start,
            "train_end": self.tags.train_end,
            "feature_list": self.tags.feature_list,
            "threshold": self.tags.threshold,
        }


def _as_date(value: str) -> dt.date:
    return dt.date.fromisoformat(value[:10])


@dataclass(frozen=True)
class VersionRecord:
    """One registered version as the training history shows it: when, its offline test metrics (the
    release's `metrics` tag), the champion gate's verdict (None before any gate ran) and its aliases."""

    version: str
    created: dt.datetime  # naive UTC, what Evidently's timestamps are
    metrics: dict[str, float]
    gate_verdict: str | None
    aliases: list[str]


def _version_record(mv: Any, aliases: dict[str, str]) -> VersionRecord:
    """The record of a registry ModelVersion; `aliases`: alias -> version of the registered model (a
    version from search_model_versions does not carry its aliases)."""
    tags = dict(mv.tags)
    try:
        metrics = {k: float(v) for k, v in json.loads(tags.get("metrics") or "{}").items()}
    except (ValueError, TypeError, AttributeError):  # a version not made by register: no metrics shown
        metrics = {}
    created = dt.datetime.fromtimestamp(int(mv.creation_timestamp or 0) / 1000, dt.UTC)
    return VersionRecord(
        version=str(mv.version),
        created=created.replace(tzinfo=None),
        metrics=metrics,
        gate_verdict=tags.get("gate.verdict"),
        aliases=sorted(a for a, v in aliases.items() if v == str(mv.version)),
    )


def registry_history(params: Params) -> list[VersionRecord]:
    """Every registered version of params' model, oldest first ([] without a registry, like the champion)."""
    name = params.register_.model_name
    try:
        registry = _registry(params)
        if registry is None:
            return []
        aliases = registry.aliases(name)
        return [_version_record(v, aliases) for v in registry.versions(name)]
    except Exception as err:  # like find_champion: monitoring goes on without the history, and says so
        log.warning("monitor: no training history from the registry: %s", err)
        return []


def _registry_champion(registry: Registry, name: str) -> Champion | None:
    from pipelines.engines.registry import ReleaseTags

    if not registry.model_exists(name):
        return None
    try:
        version = resolve_version(registry, name, alias=CHAMPION)
    except StageError:  # the model has no champion yet
        return None
    return Champion(version=version, tags=ReleaseTags.from_tags(version.tags))


def _registry(params: Params) -> Registry | None:
    """params' registry, None when it is a SQLite file nobody created yet (no run registered anything)."""
    uri = params.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    from pipelines.engines.registry import open_registry

    return open_registry(params)


def find_champion(params: Params) -> Champion | None:
    """The champion of params' registered model, or None (no registry, no model, no champion yet)."""
    try:
        registry = _registry(params)
        return None if registry is None else _registry_champion(registry, params.register_.model_name)
    except Exception as err:  # a registry that cannot answer: monitor without it, say so in the summary
        log.warning("monitor: no champion info from the registry: %s", err)
        return None


def _champion_rows(frame: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame | None:
    """The rows of [start, end) when `frame` is the champion's dataset (or a part of it), else None."""
    ts = pd.to_datetime(frame[TIMESTAMP], utc=True)
    lo = pd.Timestamp(dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC))
    hi = pd.Timestamp(dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC))
    inside = frame[((ts >= lo) & (ts < hi)).to_numpy()]
    if len(inside) and ts.min() >= lo:
        return inside.reset_index(drop=True)
    return None


def reference_frame(params: Params, champion: Champion | None) -> pd.DataFrame:
    """The champion's training data (see the module docstring for the fallbacks)."""
    path = split_path(params, "train")
    frame = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    if champion is None:
        if frame.empty:
            raise StageError(f"monitor: no reference: {path} is missing and there is no champion")
        return frame
    s, e = champion.train_window
    rows = None if frame.empty else _champion_rows(frame, s, e)
    if rows is not None:
        return rows
    events = io.read_partitions(params.paths.validated, s, e)
    if events.empty:
        raise StageError(
            f"monitor: no reference: the champion trained on [{s}, {e}) but {path} holds another range "
            f"and data/validated has no partition there"
        )
    return _events_with_features(params, events, s, e)


def champion_release(params: Params, champion: Champion | None) -> Release | None:
    """The champion's release (fingerprint checked), None without a champion or when it cannot load."""
    if champion is None:
        return None
    try:
        return load_version(params, champion.version)
    except Exception as err:
        log.warning("monitor: champion release not loaded (no prediction drift): %s", err)
        return None


def champion_scores(release: Release | None, frame: pd.DataFrame) -> np.ndarray | None:
    """The champion release's scores of `frame` (for prediction drift), None when it cannot score."""
    if release is None:
        return None
    try:
        return release.score(frame)
    except Exception as err:
        log.warning("monitor: reference not scored (no prediction drift): %s", err)
        return None


# ---- what drift compares ------------------------------------------------------------------------------


def model_inputs(frame: pd.DataFrame, features: FeatureFn, feature_list: list[str] | None) -> pd.DataFrame:
    """The model input columns `features` computes from `frame`, restricted to the release's list."""
    feats = features(frame)
    if feature_list:
        feats = feats[[c for c in feature_list if c in feats.columns]]
    return feats


def drift_inputs(
    frame: pd.DataFrame, features: FeatureFn, feature_list: list[str] | None, cfg: MonitorParams
) -> pd.DataFrame:
    """A seeded sample of `frame`'s model inputs (at most monitor.max_rows) minus monitor.exclude_features;
    its index is `frame`'s, so the sampled rows' other columns (score, events) can be looked up."""
    x = sample(model_inputs(frame, features, feature_list), cfg.max_rows, cfg.seed)
    return x.drop(columns=[c for c in cfg.exclude_features if c in x.columns])


def current_scores(current: pd.DataFrame, rows: pd.Index) -> np.ndarray:
    """The served scores of the sampled current rows."""
    return current.loc[rows, SCORE].astype(float).to_numpy()


# ---- labels ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelWindow:
    """The live-metrics window [start, end): its predictions, its events' labels and the label delay, and
    the labels posted for its predictions."""

    start: dt.date
    end: dt.date
    predictions: pd.DataFrame
    events: pd.DataFrame  # event_id, event_timestamp, label of the validated events
    delay_hours: float
    # event_id, label as of the as-of time (<NA>: labelled later) of the predictions that got a posted
    # label; None without a landing store
    posted: pd.DataFrame | None = None


def label_window(
    params: Params,
    start: dt.date,
    end: dt.date,
    current: pd.DataFrame,
    floor: dt.date | None = None,
    as_of: dt.datetime | None = None,
) -> LabelWindow:
    """The trailing monitor.metrics_window_days ending at `end` (at least [start, end), whose predictions
    `current` already holds), never before `floor` (the test window keeps training days out); the label
    delay is monitor.label_delay_hours, else the generator's; the posted labels as of `as_of` (default:
    `end`, midnight UTC)."""
    cfg = params.monitor
    m_start = min(start, end - dt.timedelta(days=cfg.metrics_window_days))
    if floor is not None:
        m_start = max(m_start, min(floor, start))
    preds = current_frame(params, m_start, end)[0] if m_start < start else current
    delay = cfg.label_delay_hours
    if delay is None:
        delay = params.ingest.synthetic.label_delay_hours
    events = io.read_partitions(params.paths.validated, m_start, end, columns=[EVENT_ID, TIMESTAMP, LABEL])
    as_of = as_of or dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC)
    ids = preds[EVENT_ID].dropna().unique() if EVENT_ID in preds.columns else []
    posted = read_labels(params, as_of, ids)
    return LabelWindow(
        start=m_start, end=end, predictions=preds, events=events, delay_hours=delay, posted=posted
    )
