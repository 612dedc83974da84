"""dags/_common.py: which dates a run processes, and how a stage's errors become task failures."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import GateFailed, StageError
from tests.conftest import make_project
from tests.dags.conftest import DAGS

pytestmark = pytest.mark.unit

D = dt.date


@pytest.fixture(scope="module")
def common() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("sluice_dags_common", DAGS / "_common.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _event(asset: Any, extra: dict[str, Any]) -> Any:
    """A triggering event exactly as the task runner builds it from the API server's reply."""
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset={"name": asset.name, "uri": asset.uri, "extra": {}},
        extra=extra,
        source_task_id="validate",
        source_dag_id="ingestion",
        source_run_id="r",
        source_map_index=-1,
        source_aliases=[],
        timestamp=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    )


def _context(common: types.ModuleType, monkeypatch: pytest.MonkeyPatch, **ctx: Any) -> dict[str, Any]:
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    ctx.setdefault("params", {"start": None, "end": None})
    ctx["triggering_asset_events"] = TriggeringAssetEventsAccessor.build(ctx.pop("events", []))
    ctx.setdefault("outlet_events", {})
    monkeypatch.setattr(common, "get_current_context", lambda: ctx)
    return ctx


def test_interval_dates_whole_and_partial_days(common: types.ModuleType) -> None:
    utc = dt.UTC
    assert common.interval_dates(
        dt.datetime(2026, 1, 1, tzinfo=utc), dt.datetime(2026, 1, 2, tzinfo=utc)
    ) == (
        D(2026, 1, 1),
        D(2026, 1, 2),
    )
    # an hourly interval still names the day it belongs to
    assert common.interval_dates(
        dt.datetime(2026, 1, 1, 5, tzinfo=utc), dt.datetime(2026, 1, 1, 6, tzinfo=utc)
    ) == (D(2026, 1, 1), D(2026, 1, 2))


def test_merge_ranges(common: types.ModuleType) -> None:
    got = common.merge_ranges(
        [(D(2026, 1, 5), D(2026, 1, 6)), (D(2026, 1, 1), D(2026, 1, 2)), (D(2026, 1, 2), D(2026, 1, 3))]
    )
    assert got == [(D(2026, 1, 1), D(2026, 1, 3)), (D(2026, 1, 5), D(2026, 1, 6))]


def test_explicit_range_needs_both_ends(common: types.ModuleType) -> None:
    assert common.explicit_range({"start": None, "end": None}) is None
    assert common.explicit_range({"start": "2026-01-01", "end": "2026-01-04"}) == (
        D(2026, 1, 1),
        D(2026, 1, 4),
    )
    with pytest.raises(ValueError, match="both start and end"):
        common.explicit_range({"start": "2026-01-01"})
    with pytest.raises(ValueError, match="must be after"):
        common.explicit_range({"start": "2026-01-04", "end": "2026-01-01"})


def test_params_path_env_then_repo(common: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_PARAMS", raising=False)
    assert common.params_path() == DAGS.parent / "params.yaml"
    monkeypatch.setenv("SLUICE_PARAMS", "/somewhere/params.yaml")
    assert common.params_path() == Path("/somewhere/params.yaml")


def test_asset_triggered_run_takes_dates_from_event_extras(
    common: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # three ingestion runs finished while features was busy: one run consumes all three events
    events = [
        _event(common.VALIDATED, common.range_extra(D(2026, 1, 3), D(2026, 1, 4))),
        _event(common.VALIDATED, common.range_extra(D(2026, 1, 1), D(2026, 1, 2))),
        _event(common.VALIDATED, common.range_extra(D(2026, 1, 2), D(2026, 1, 3))),
        _event(common.RETRAIN, {"start": "2025-01-01", "end": "2025-02-01"}),  # another asset: ignored
    ]
    _context(common, monkeypatch, events=events)
    assert common.run_ranges(common.VALIDATED) == [(D(2026, 1, 1), D(2026, 1, 4))]


def test_trigger_form_wins_and_no_dates_fails(
    common: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    events = [_event(common.VALIDATED, common.range_extra(D(2026, 1, 3), D(2026, 1, 4)))]
    _context(common, monkeypatch, events=events, params={"start": "2026-02-01", "end": "2026-02-03"})
    assert common.run_ranges(common.VALIDATED) == [(D(2026, 2, 1), D(2026, 2, 3))]
    # a manual run of an asset-scheduled DAG has an empty interval: refuse instead of guessing "today"
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    _context(common, monkeypatch, data_interval_start=now, data_interval_end=now)
    with pytest.raises(AirflowFailException, match="no dates"):
        common.run_ranges(common.VALIDATED)


def test_daily_run_uses_its_data_interval(common: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    _context(
        common,
        monkeypatch,
        data_interval_start=dt.datetime(2026, 1, 7, tzinfo=dt.UTC),
        data_interval_end=dt.datetime(2026, 1, 8, tzinfo=dt.UTC),
    )
    assert common.interval() == (D(2026, 1, 7), D(2026, 1, 8))


def test_training_range_precedence(
    common: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    params = make_project(tmp_path / "p", {"airflow": {"training_window_days": 10}})
    monkeypatch.setenv("SLUICE_PARAMS", str(params.root / "params.yaml"))
    _context(common, monkeypatch)  # manual, nothing given: params data range
    assert common.training_range() == (params.data.start, params.data.end)
    events = [_event(common.RETRAIN, {"start": "2026-01-03", "end": "2026-01-10", "reason": "drift"})]
    _context(common, monkeypatch, events=events)
    assert common.training_range() == (D(2026, 1, 3), D(2026, 1, 10))
    scheduled = types.SimpleNamespace(run_type=types.SimpleNamespace(value="scheduled"))
    end = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    _context(common, monkeypatch, dag_run=scheduled, data_interval_start=end, data_interval_end=end)
    assert common.training_range() == (D(2026, 1, 22), D(2026, 2, 1))


def _fake_stage(monkeypatch: pytest.MonkeyPatch, error: Exception | None) -> None:
    module = types.ModuleType("pipelines.fake_stage")

    def run(params: Any, start: dt.date, end: dt.date) -> dict[str, Any]:
        if error is not None:
            raise error
        return {"rows": 3, "path": params.paths.raw, "start": start}

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pipelines.fake_stage", module)


def test_run_stage_summary_is_json_and_sets_outlet_extra(
    common: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    params = make_project(tmp_path / "p")
    monkeypatch.setenv("SLUICE_PARAMS", str(params.root / "params.yaml"))
    outlet = types.SimpleNamespace(extra={})
    _context(common, monkeypatch, outlet_events={common.VALIDATED: outlet})
    _fake_stage(monkeypatch, None)
    got = common.run_stage("fake_stage", D(2026, 1, 1), D(2026, 1, 2), outlet=common.VALIDATED)
    assert got == {"rows": 3, "path": str(params.paths.raw), "start": "2026-01-01"}
    assert outlet.extra == {"start": "2026-01-01", "end": "2026-01-02"}


@pytest.mark.parametrize(
    "error", [GateFailed("validate: amount >= 0 failed on date=2026-01-02"), StageError("no rows")]
)
def test_stage_errors_fail_without_retry(
    common: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    params = make_project(tmp_path / "p")
    monkeypatch.setenv("SLUICE_PARAMS", str(params.root / "params.yaml"))
    outlet = types.SimpleNamespace(extra={})
    _context(common, monkeypatch, outlet_events={common.VALIDATED: outlet})
    _fake_stage(monkeypatch, error)
    with pytest.raises(AirflowFailException, match=type(error).__name__) as info:
        common.run_stage("fake_stage", D(2026, 1, 2), D(2026, 1, 3), outlet=common.VALIDATED)
    assert str(error) in str(info.value)
    assert outlet.extra == {}  # no asset event extra for a failed gate


def test_other_errors_are_left_to_retries(
    common: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    params = make_project(tmp_path / "p")
    monkeypatch.setenv("SLUICE_PARAMS", str(params.root / "params.yaml"))
    _context(common, monkeypatch)
    _fake_stage(monkeypatch, OSError("disk hiccup"))
    with pytest.raises(OSError, match="disk hiccup"):
        common.run_stage("fake_stage", D(2026, 1, 2), D(2026, 1, 3))


def test_extras_with_exact_ranges_are_not_spanned(common: types.ModuleType) -> None:
    # a landed run validated two separate days: the consumer must not process the days between them
    extra = {
        "start": "2026-01-03",
        "end": "2026-01-10",
        "ranges": [["2026-01-03", "2026-01-04"], ["2026-01-09", "2026-01-10"]],
    }
    assert common.ranges_from_extras([extra, {"start": "2026-01-04", "end": "2026-01-05"}, None]) == [
        (D(2026, 1, 3), D(2026, 1, 5)),
        (D(2026, 1, 9), D(2026, 1, 10)),
    ]


def _land(params: Any, *days: dt.date) -> None:
    """One landed event per day, written straight into the landing store."""
    from pipelines.contract import CANONICAL_COLUMNS
    from pipelines.ingestion import store
    from pipelines.ingestion.columns import to_micros

    conn = store.connect(params.resolve(params.ingest.landing.store), create=True)
    rows = []
    for day in days:
        at = dt.datetime(day.year, day.month, day.day, 9, tzinfo=dt.UTC)
        values = {
            "event_id": f"e-{day}",
            "entity_id": "card_1",
            "event_timestamp": to_micros(at),
            "amount": 5.0,
        }
        rows.append((*(values.get(c) for c in CANONICAL_COLUMNS), day.isoformat(), 0.0, None))
    conn.execute("BEGIN")
    store.insert_events(conn, rows)
    conn.execute("COMMIT")
    conn.close()


def test_ingest_ranges_dates_first_then_the_landing_store(
    common: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    params = make_project(tmp_path / "p")
    monkeypatch.setenv("SLUICE_PARAMS", str(params.root / "params.yaml"))
    # no dates and no landing store yet: nothing to do
    _context(common, monkeypatch)
    with pytest.raises(AirflowSkipException, match="nothing landed"):
        common.ingest_ranges()
    _land(params, D(2026, 1, 9), D(2026, 1, 3), D(2026, 1, 4))
    # what the landing flag's run (no data interval) takes: the pending days, contiguous ones joined
    assert common.ingest_ranges() == [(D(2026, 1, 3), D(2026, 1, 5)), (D(2026, 1, 9), D(2026, 1, 10))]
    # a daily run keeps its interval, a form range wins over both
    midnight = dt.datetime(2026, 1, 7, tzinfo=dt.UTC)
    _context(
        common, monkeypatch, data_interval_start=midnight, data_interval_end=midnight + dt.timedelta(days=1)
    )
    assert common.ingest_ranges() == [(D(2026, 1, 7), D(2026, 1, 8))]
    _context(common, monkeypatch, params={"start": "2026-02-01", "end": "2026-02-02"})
    assert common.ingest_ranges() == [(D(2026, 2, 1), D(2026, 2, 2))]
