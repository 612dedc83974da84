"""The landing flag (pipelines.ingestion.notify): raised by the service after a commit that landed something
a partition will change for, never for duplicates alone or labels still waiting for their event; raised at
start when the store holds what no ingest run took; lowered by the triggerer, never by the service."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pipelines import ingest
from pipelines.config import Params
from pipelines.ingestion.notify import flag_path, raise_flag
from pipelines.ingestion.service import Ingestion
from tests.conftest import make_project

pytestmark = pytest.mark.integration
DAY = dt.date(2026, 1, 3)


def _event(i: int) -> dict[str, Any]:
    return {
        "event_id": f"n-{i}",
        "entity_id": "card_1",
        "event_timestamp": "2026-01-03T10:00:00Z",
        "amount": 9.5,
    }


def _label(event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "label": 1, "labelled_at": "2026-01-05T00:00:00Z"}


@pytest.fixture
def project(tmp_path: Path) -> Params:
    return make_project(tmp_path / "project")


def test_new_landings_raise_the_flag_duplicates_and_waiting_labels_do_not(project: Params) -> None:
    flag = flag_path(project.resolve(project.ingest.landing.store))
    assert flag.name == "landing.db.landed"
    ing = Ingestion(project)
    ing.start()
    try:
        assert not flag.exists()  # a new, empty store: nothing pending
        asyncio.run(ing.land_events(json.dumps([_event(1), _event(2)]).encode()))
        assert flag.is_file()
        flag.unlink()  # what the triggerer's FileDeleteTrigger does
        asyncio.run(ing.land_events(json.dumps(_event(1)).encode()))  # a retry: stored once, no flag
        assert not flag.exists()
        asyncio.run(ing.land_labels(json.dumps(_label("not-landed-yet")).encode()))
        assert not flag.exists()  # its event's landing will raise it
        asyncio.run(ing.land_labels(json.dumps(_label("n-1")).encode()))
        assert flag.is_file()
    finally:
        ing.close()


def test_a_restart_raises_the_flag_while_landed_data_waits(project: Params) -> None:
    """A worker killed between its commit and its flag: the next start raises it; once an ingest run took
    everything, a start does not."""
    flag = flag_path(project.resolve(project.ingest.landing.store))
    ing = Ingestion(project)
    ing.start()
    asyncio.run(ing.land_events(json.dumps(_event(1)).encode()))
    ing.close()
    flag.unlink()
    again = Ingestion(project)
    again.start()
    again.close()
    assert flag.is_file()
    flag.unlink()
    ingest.run(project, DAY, DAY + dt.timedelta(days=1))
    third = Ingestion(project)
    third.start()
    third.close()
    assert not flag.exists()


def test_a_flag_that_cannot_be_raised_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipelines.ingestion.notify"):
        raise_flag(tmp_path / "no" / "such" / "dir" / "landing.db.landed")
    assert "not raised" in caplog.text
