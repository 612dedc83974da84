"""Validate: run the GX suite (expectations/<table>.json) on each raw partition of [start, end).

A passing partition is copied, byte for byte and atomically, to data/validated/date=D/. A failing one
is copied to data/quarantine/date=D/ with validation_result.json beside it (raw stays as ingest wrote
it: it is ingest's output, and keeping it lets a rerun with other bounds re-judge it), any stale
data/validated/date=D is removed, and once every partition has been checked GateFailed names each
failed partition and expectation. GX data docs (HTML) and summary.json go to reports/validation/.

The suite file holds `{"$PARAMETER": ...}` placeholders for the bounds that live in params.yaml
(validate.min_rows, validate.max_rows, validate.max_amount); their values are passed to GX at run time
as expectation parameters, so the JSON stays the one suite and params.yaml the one set of knobs.
Expectations on optional columns (contract.OPTIONAL_COLUMNS) are skipped for partitions without them.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from pipelines import io
from pipelines.config import Params
from pipelines.engines.gx_suite import (  # the suite's reading and GX runs, shared with pipelines.ingestion
    failed_expectations,
    load_suite,
    suite_for_columns,
    suite_parameters,
    validate_frames,
)
from pipelines.errors import GateFailed, StageError

log = logging.getLogger(__name__)
_SHOWN_FAILURES = 10  # failed partitions listed in the error; the rest are in summary.json

RESULT_FILE = "validation_result.json"


def _read_partition(part: Path) -> pd.DataFrame:
    return pq.read_table(part / io.PART_FILE).to_pandas()


def _rel(params: Params, path: Path) -> str:
    try:
        return str(path.relative_to(params.root))
    except ValueError:
        return str(path)


def _read_all(parts: list[Path]) -> tuple[dict[dt.date, pd.DataFrame], dict[dt.date, str]]:
    """Each partition's frame, or why it could not be read (a broken file fails its partition only)."""
    frames: dict[dt.date, pd.DataFrame] = {}
    unreadable: dict[dt.date, str] = {}
    for part in parts:
        day = io.partition_date(part)
        try:
            frames[day] = _read_partition(part)
        except Exception as err:  # a broken file is a failed partition, not a crash of the run
            unreadable[day] = f"{type(err).__name__}: {err}"
    return frames, unreadable


def _entry(
    day: dt.date,
    frames: dict[dt.date, pd.DataFrame],
    unreadable: dict[dt.date, str],
    results: dict[dt.date, dict[str, Any]],
    suite: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary entry, GX result) of one partition."""
    if day in unreadable:
        failed: list[dict[str, Any]] = [
            {"type": "readable_parquet", "column": None, "error": unreadable[day]}
        ]
        result: dict[str, Any] = {"success": False, "results": []}
    else:
        result = results[day]
        failed = failed_expectations(result)
    _, skipped = suite_for_columns(suite, list(frames[day].columns)) if day in frames else (None, [])
    entry: dict[str, Any] = {
        "success": bool(result["success"]) and not failed,
        "rows": len(frames[day]) if day in frames else None,
        "evaluated": len(result.get("results", [])),
        "skipped_optional_columns": skipped,
        "failed": failed,
    }
    return entry, result


def _route(
    params: Params, part: Path, entry: dict[str, Any], result: dict[str, Any], suite_path: Path
) -> str | None:
    """Publish a passing partition to validated/, quarantine a failing one; the failure line, if any."""
    paths, day = params.paths, io.partition_date(part)
    if entry["success"]:
        entry["output"] = _rel(params, _publish(part, paths.validated, paths.quarantine, day))
        return None
    report = {"partition": _rel(params, part), "suite": _rel(params, suite_path), **entry}
    dest = _quarantine(part, paths.validated, paths.quarantine, day, report, result)
    entry["output"] = _rel(params, dest)
    what = ", ".join(f"{f['type']}({f['column']})" if f["column"] else f["type"] for f in entry["failed"])
    return f"date={day.isoformat()} [{what}] -> {_rel(params, dest)}"


def run(params: Params, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Validate raw partitions of [start, end); route them to validated/ or quarantine/; gate."""
    paths = params.paths
    suite_path = params.resolve(params.validate_.suite)
    suite = load_suite(suite_path)
    parts = io.existing_partitions(paths.raw, start, end)
    if not parts:
        raise StageError(
            f"{paths.raw}: no raw partitions for [{start}, {end}); run ingest for this range first"
        )
    parameters = suite_parameters(params.validate_)
    frames, unreadable = _read_all(parts)
    report_dir = paths.reports / "validation"
    partitions: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    with io.atomic_dir(report_dir) as tmp_docs:
        suite_name = _rel(params, suite_path)
        results = validate_frames(frames, suite, parameters, tmp_docs, suite_name) if frames else {}
        for part in parts:
            entry, result = _entry(io.partition_date(part), frames, unreadable, results, suite)
            if (failure := _route(params, part, entry, result, suite_path)) is not None:
                failures.append(failure)
            partitions[io.partition_date(part).isoformat()] = entry
        summary = {
            "suite": suite_name,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "parameters": parameters,
            "partitions": partitions,
            "passed": sum(e["success"] for e in partitions.values()),
            "failed": len(failures),
            "data_docs": _rel(params, report_dir / "index.html"),
        }
        io.atomic_write_json(tmp_docs / "summary.json", summary)

    log.info("validate: %d passed, %d failed", summary["passed"], summary["failed"])
    if failures:
        shown = failures[:_SHOWN_FAILURES]
        if len(failures) > _SHOWN_FAILURES:
            shown.append(f"... and {len(failures) - _SHOWN_FAILURES} more in {report_dir / 'summary.json'}")
        raise GateFailed(
            f"validation failed for {len(failures)} of {len(parts)} partition(s) (suite {suite_name}), "
            "quarantined:\n  " + "\n  ".join(shown) + f"\nReport: {summary['data_docs']}"
        )
    return summary


def describe(summary: dict[str, Any]) -> str:
    """The validation summary as a short table: days and rows passed (all of them: a failure raises)."""
    entries = summary["partitions"].values()
    rows = sum(e["rows"] or 0 for e in entries)
    expectations = max((e["evaluated"] for e in entries), default=0)
    skipped = sorted({c for e in entries for c in e["skipped_optional_columns"]})
    lines = [
        f"{summary['passed']} of {len(entries)} days passed {expectations} expectations, {rows:,} rows",
        f"report {summary['data_docs']} (full results: summary.json beside it)",
    ]
    if skipped:
        lines.append(f"optional columns absent, their expectations skipped: {', '.join(skipped)}")
    return "\n".join(lines)


def _publish(part: Path, validated: Path, quarantine: Path, day: dt.date) -> Path:
    """Copy a passing partition to validated/ (same bytes) and clear a stale quarantine entry."""
    dest = io.partition_dir(validated, day)
    with io.atomic_dir(dest) as tmp:
        shutil.copyfile(part / io.PART_FILE, tmp / io.PART_FILE)
    stale = io.partition_dir(quarantine, day)
    if stale.exists():
        shutil.rmtree(stale)
    return dest


def _quarantine(
    part: Path,
    validated: Path,
    quarantine: Path,
    day: dt.date,
    report: dict[str, Any],
    result: dict[str, Any],
) -> Path:
    """Copy a failing partition and its validation result to quarantine/; drop a stale validated copy."""
    dest = io.partition_dir(quarantine, day)
    with io.atomic_dir(dest) as tmp:
        for f in part.iterdir():
            if f.is_file():
                shutil.copyfile(f, tmp / f.name)
        io.atomic_write_json(tmp / RESULT_FILE, {**report, "gx_result": result})
    stale = io.partition_dir(validated, day)
    if stale.exists():
        shutil.rmtree(stale)
    return dest


if __name__ == "__main__":
    from pipelines.stage_cli import stage_main

    stage_main(run, "validate", describe)
