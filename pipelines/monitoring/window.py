"""Which days a monitor run looks at, and why: recorded in summary.json and on the Evidently run.

`dvc repro` runs every stage over data.start..data.end, and the champion trained on that same range (its
train split, early stopping on the valid split). Monitoring it there compares the model with its own
training data: live PR AUC reads above the test PR AUC. So a run over exactly data.start..data.end, with
`monitor.window: test` (the default), monitors the test window instead: the whole days after
data/dataset's validation split, up to data.end, live metrics included. Any other range (`--start/--end`,
the Airflow data interval) is monitored as given.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.artifacts import read_json
from pipelines.errors import StageError

if TYPE_CHECKING:
    from pipelines.config import Params

DATASET_SUMMARY = "summary.json"  # data/dataset/summary.json, written by the dataset stage


@dataclass(frozen=True)
class MonitorWindow:
    """The monitored days [start, end), what kind of window it is and why it was chosen."""

    start: dt.date
    end: dt.date
    kind: str  # "test" | "data" | "given"
    reason: str
    # live metrics never look before this day (None: the trailing monitor.metrics_window_days)
    metrics_floor: dt.date | None = None


def monitor_window(params: Params, start: dt.date, end: dt.date) -> MonitorWindow:
    """The window a run over [start, end) monitors (see the module docstring)."""
    if (start, end) != (params.data.start, params.data.end):
        return MonitorWindow(
            start, end, "given", "the requested range (--start/--end or the Airflow interval)"
        )
    if params.monitor.window == "data":
        return MonitorWindow(
            start,
            end,
            "data",
            "monitor.window is data: data.start..data.end, days the champion trained on included",
        )
    return held_out_window(params, end)


def held_out_window(params: Params, end: dt.date) -> MonitorWindow:
    """The whole days after the dataset's validation split, up to `end` (at least the last day)."""
    path = params.paths.dataset / DATASET_SUMMARY
    summary = read_json(path, "dataset")
    try:
        valid_end = dt.datetime.fromisoformat(summary["splits"]["valid"]["end"])
    except (KeyError, TypeError, ValueError) as err:
        raise StageError(
            f"{path}: no splits.valid.end to find the test window from ({err!r}); rerun the dataset stage, "
            "or set monitor.window: data"
        ) from None
    # the day the validation split ends holds validation events too: the window starts the day after
    start = min(valid_end.date() + dt.timedelta(days=1), end - dt.timedelta(days=1))
    reason = (
        f"test window: days the champion did not train on (after the validation split, which ends "
        f"{valid_end.isoformat(timespec='seconds')})"
    )
    return MonitorWindow(start, end, "test", reason, metrics_floor=start)
