"""The landing flag: how Airflow learns that something landed, without asking the service.

The flag is an empty file beside the landing store (`<store>.landed`). The service raises it after every
commit that landed a new event or label (and once at start when the store holds data no ingest run has
taken: a worker killed between its commit and the flag). The `ingestion` DAG's schedule watches it with
Airflow's stock FileDeleteTrigger (an AssetWatcher, run by the triggerer): the trigger deletes the file and
emits an asset event, and the run it starts asks the store, never the flag, what to ingest
(`landed.pending_ranges`). The flag is raised after the commit, so a run started by its deletion always
sees that commit's rows; a flag raised twice, or lowered while more lands, costs at most one run with
nothing to do.

Standard library only: the DAG file imports this at parse time.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".landed"


def flag_path(store: Path) -> Path:
    """The flag file of the landing store at `store` (same directory, so the same filesystem)."""
    return store.with_name(store.name + SUFFIX)


def raise_flag(flag: Path) -> None:
    """Create the flag unless it is up already (a stat per request, a write only when it was taken).

    Never fails the caller: what landed is durable already and the daily ingestion run takes it anyway;
    a flag that cannot be written only delays the pick-up, so it is logged, not raised."""
    try:
        if not flag.exists():
            flag.touch()
    except OSError as err:
        log.warning(
            "landing flag %s not raised (Airflow picks the landing up at the next daily run): %s", flag, err
        )
