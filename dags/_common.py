"""Glue shared by the sluice DAGs: where params.yaml is, which dates a run processes, how a stage is called.

The DAG processor imports this for every DAG file, so it stays import-cheap: stdlib and airflow.sdk at the
top, `pipelines.*` (and through it Spark, GX, Feast, MLflow, torch) only inside the functions tasks call.
No logic of the platform lives here; a task is `return run_stage("<stage>", start, end)`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, Param, get_current_context

if TYPE_CHECKING:
    from pipelines.config import Params

DAGS_DIR = Path(__file__).resolve().parent

# Asset URIs are the contract between DAGs (and the monitoring issue, which emits RETRAIN). The name
# defaults to the URI, so `Asset("sluice://retrain")` written anywhere else is the same asset.
VALIDATED = Asset("sluice://validated/transactions")
FEATURES = Asset("sluice://features/entity_activity")
RETRAIN = Asset("sluice://retrain")
# a challenger that passed the offline gate vs the champion: what starts the canary
GATED = Asset("sluice://challenger/gated")
# events or labels landed by the ingestion service: its events come from the triggerer (landing_asset())
LANDED_URI = "sluice://landing/events"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "sluice",
    # transient failures (a worker killed, a locked SQLite file) get retried; a refused input or a failed
    # gate raises AirflowFailException in run_stage() and is never retried
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
    "execution_timeout": dt.timedelta(hours=2),
}

# Shown in the trigger form of every DAG: an explicit [start, end) overrides the run's own dates.
RANGE_PARAMS: dict[str, Param] = {
    "start": Param(None, type=["null", "string"], format="date", description="first event date (optional)"),
    "end": Param(None, type=["null", "string"], format="date", description="end date, exclusive (optional)"),
}

Range = tuple[dt.date, dt.date]


def params_path() -> Path:
    """params.yaml: $SLUICE_PARAMS, else the repo's params.yaml next to this dags/ folder."""
    env = os.environ.get("SLUICE_PARAMS")
    return Path(env).expanduser().resolve() if env else DAGS_DIR.parent / "params.yaml"


def load() -> Params:
    """The validated params (pydantic is already imported by Airflow, so this is cheap at parse time)."""
    from pipelines.config import load_params

    return load_params(params_path())


def start_date() -> dt.datetime:
    """First data interval of the daily DAGs: airflow.start_date, else data.start (midnight UTC)."""
    p = load()
    day = p.airflow.start_date or p.data.start
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def landing_asset() -> Asset | None:
    """The landed-events asset, watched in the triggerer by Airflow's stock FileDeleteTrigger on the flag
    the ingestion service raises beside its store (pipelines.ingestion.notify); None with ingest.landing
    off. The flag is a local file: no request ever goes to the service."""
    p = load()
    if not p.ingest.landing.enabled:
        return None
    from airflow.providers.standard.triggers.file import FileDeleteTrigger
    from airflow.sdk import AssetWatcher

    from pipelines.ingestion.notify import flag_path

    flag = flag_path(p.resolve(p.ingest.landing.store))
    trigger = FileDeleteTrigger(filepath=str(flag), poke_interval=p.airflow.landing_poke_s)
    return Asset(LANDED_URI, watchers=[AssetWatcher(name="landing_flag", trigger=trigger)])


def run_stage(stage: str, start: dt.date, end: dt.date, outlet: Asset | None = None) -> dict[str, Any]:
    """Call `pipelines.<stage>.run(params, start, end)`; return its summary as JSON-able XCom.

    A StageError (refused input) or GateFailed (a gate said no) is deterministic: retrying cannot help,
    so it becomes AirflowFailException (task fails at once, message in the log). With `outlet`, the
    asset event carries the processed range in its extra, which is how the consumer learns its dates.
    """
    from pipelines.errors import StageError

    module = importlib.import_module(f"pipelines.{stage}")
    try:
        summary = module.run(load(), start, end)
    except StageError as err:
        from airflow.sdk.exceptions import AirflowFailException

        kind = type(err).__name__
        raise AirflowFailException(f"{stage} [{start}, {end}) failed ({kind}): {err}") from err
    if outlet is not None:
        get_current_context()["outlet_events"][outlet].extra = range_extra(start, end)
    return json.loads(json.dumps(summary, default=str))


def run_stage_ranges(
    stage: str, ranges: Sequence[Range], outlet: Asset | None = None
) -> list[dict[str, Any]]:
    """run_stage() over each range in order (an asset-triggered run may consume several)."""
    out = [run_stage(stage, s, e) for s, e in ranges]
    if outlet is not None and ranges:
        extra = range_extra(ranges[0][0], ranges[-1][1])
        extra["ranges"] = [[s.isoformat(), e.isoformat()] for s, e in ranges]
        get_current_context()["outlet_events"][outlet].extra = extra
    return out


def range_extra(start: dt.date, end: dt.date) -> dict[str, Any]:
    """Asset event extra describing [start, end): read back by ranges_from_extras()."""
    return {"start": start.isoformat(), "end": end.isoformat()}


# ---- which dates a run processes (pure functions + one context reader) ---------------------------------


def interval_dates(start: dt.datetime, end: dt.datetime) -> Range:
    """Event dates [start, end) covered by a data interval (UTC); a partial last day counts as a day."""
    s = start.astimezone(dt.UTC)
    e = end.astimezone(dt.UTC)
    last = e.date() if e.time() == dt.time(0) else e.date() + dt.timedelta(days=1)
    return s.date(), last


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted ranges with overlapping or touching ones joined: [1,2)+[2,3)+[5,6) -> [1,3), [5,6)."""
    out: list[Range] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def ranges_from_extras(extras: Iterable[Mapping[str, Any] | None]) -> list[Range]:
    """Merged [start, end) ranges from asset event extras (or stage summaries) that carry ISO
    `start`/`end` dates, or `ranges` (the exact ones: days between them may not have been processed)."""
    found: list[Range] = []
    for extra in extras:
        if extra and extra.get("ranges"):
            found.extend((dt.date.fromisoformat(s), dt.date.fromisoformat(e)) for s, e in extra["ranges"])
        elif extra and extra.get("start") and extra.get("end"):
            found.append((dt.date.fromisoformat(extra["start"]), dt.date.fromisoformat(extra["end"])))
    return merge_ranges(found)


def explicit_range(params: Mapping[str, Any]) -> Range | None:
    """[start, end) from the trigger form / run conf, or None when neither is given."""
    start, end = params.get("start"), params.get("end")
    if not start and not end:
        return None
    if not (start and end):
        raise ValueError(f"give both start and end (got start={start!r}, end={end!r})")
    s, e = dt.date.fromisoformat(str(start)), dt.date.fromisoformat(str(end))
    if e <= s:
        raise ValueError(f"end ({e}) must be after start ({s})")
    return s, e


def _form_range(ctx: Mapping[str, Any]) -> Range | None:
    """The trigger form's start/end of the running task's context; a bad pair fails the task, unretried."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return explicit_range(ctx.get("params") or {})
    except ValueError as err:
        raise AirflowFailException(str(err)) from err


def _asset_ranges(ctx: Mapping[str, Any], asset: Asset) -> list[Range]:
    """Merged ranges from the extras of the `asset` events that triggered this run (empty if none)."""
    events = (ctx.get("triggering_asset_events") or {}).get(asset, [])
    return ranges_from_extras(ev.extra for ev in events)


def run_ranges(asset: Asset | None = None) -> list[Range]:
    """The ranges this run processes: trigger-form start/end > triggering `asset` events > data interval.

    Asset-triggered runs have no data interval in Airflow 3: their dates come from the extras the
    producing task attached to the events (several events queued while a run was busy are merged).
    """
    from airflow.sdk.exceptions import AirflowFailException

    ctx = get_current_context()
    explicit = _form_range(ctx)
    if explicit:
        return [explicit]
    if asset is not None:
        ranges = _asset_ranges(ctx, asset)
        if ranges:
            return ranges
    interval = _interval_range(ctx)
    if interval:
        return [interval]
    raise AirflowFailException(
        "this run has no dates: trigger it with a logical date (daily DAGs), through its asset, "
        "or with start/end in the trigger form"
    )


def _interval_range(ctx: Mapping[str, Any]) -> Range | None:
    """The dates of the run's data interval; None without one (asset-triggered or manual runs)."""
    start, end = ctx.get("data_interval_start"), ctx.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return interval_dates(start, end)
    return None


def ingest_ranges() -> list[Range]:
    """What an ingestion run ingests: trigger-form start/end > its data interval (scheduled, backfill) >
    without dates (the landing flag started it, or a manual run with no logical date) the days of the
    landing store that no ingest run has taken. Nothing landed since: the task is skipped (so is validate,
    and no asset event is emitted)."""
    from airflow.sdk.exceptions import AirflowSkipException

    ctx = get_current_context()
    dated = _form_range(ctx) or _interval_range(ctx)
    if dated:
        return [dated]
    from pipelines.ingestion.landed import pending_ranges

    ranges = pending_ranges(load())
    if not ranges:
        raise AirflowSkipException("nothing landed that an ingest run has not taken already")
    return ranges


def interval() -> Range:
    """The one [start, end) of a time-scheduled run: trigger-form start/end, else its data interval."""
    return run_ranges()[0]


def training_range() -> Range:
    """Training data range: trigger form > retrain asset extra > schedule window > params data range."""
    ctx = get_current_context()
    explicit = _form_range(ctx)
    if explicit:
        return explicit
    ranges = _asset_ranges(ctx, RETRAIN)
    if ranges:
        return ranges[0][0], ranges[-1][1]
    p = load()
    dag_run = ctx.get("dag_run")
    end = ctx.get("data_interval_end")
    run_type = getattr(dag_run, "run_type", None)
    if end is not None and getattr(run_type, "value", run_type) == "scheduled":
        last = interval_dates(end, end)[1]
        return last - dt.timedelta(days=p.airflow.training_window_days), last
    return p.data.start, p.data.end
