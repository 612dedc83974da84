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
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from pipelines import io
from pipelines.config import Params
from pipelines.contract import OPTIONAL_COLUMNS
from pipelines.errors import GateFailed, StageError

log = logging.getLogger(__name__)

DOCS_SITE = "sluice_validation"
RESULT_FILE = "validation_result.json"


def load_suite(path: Path) -> dict[str, Any]:
    """The suite as a JSON mapping ({name, expectations: [{type, kwargs, meta}], meta})."""
    if not path.is_file():
        raise StageError(f"{path}: expectation suite not found (validate.suite in params.yaml)")
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StageError(f"{path}: expectation suite is not valid JSON: {err}") from None
    if (
        not isinstance(suite, dict)
        or not suite.get("name")
        or not isinstance(suite.get("expectations"), list)
    ):
        raise StageError(f"{path}: expected a GX suite object with 'name' and an 'expectations' list")
    return suite


def suite_for_columns(suite: dict[str, Any], columns: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The suite minus expectations on optional columns the partition lacks; also the skipped columns."""
    present = set(columns)
    skipped = sorted({c for c in OPTIONAL_COLUMNS if c not in present})
    kept = [e for e in suite["expectations"] if e.get("kwargs", {}).get("column") not in skipped]
    name = suite["name"] if not skipped else f"{suite['name']}__without_{'_'.join(skipped)}"
    return {**suite, "name": name, "expectations": kept}, skipped


def failed_expectations(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Failed expectations of a GX validation result dict: type, column and what was observed."""
    failed = []
    for r in result.get("results", []):
        if r.get("success"):
            continue
        cfg = r.get("expectation_config", {})
        res = r.get("result") or {}
        exc = r.get("exception_info") or {}
        # GX keys exception_info by metric id when a metric raised (e.g. a missing column)
        messages = [
            v.get("exception_message")
            for v in ([exc] if "raised_exception" in exc else exc.values())
            if isinstance(v, dict) and v.get("exception_message")
        ]
        detail: dict[str, Any] = {"type": cfg.get("type"), "column": cfg.get("kwargs", {}).get("column")}
        if messages:
            detail["error"] = str(messages[0]).splitlines()[0][:300]
        for key in ("observed_value", "unexpected_count", "unexpected_percent"):
            if key in res:
                detail[key] = res[key]
        failed.append(detail)
    return failed


def validate_frames(
    frames: dict[dt.date, pd.DataFrame],
    suite: dict[str, Any],
    parameters: dict[str, Any],
    docs_dir: Path | None = None,
    origin: str = "expectation suite",
) -> dict[dt.date, dict[str, Any]]:
    """Validate each partition frame with one ephemeral GX context; GX result dicts by date.

    `parameters` fills the suite's $PARAMETER placeholders. With `docs_dir`, GX data docs for every
    validation are built there (index.html, one page per validation and per suite).
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    for old in list(ctx.list_data_docs_sites()):
        ctx.delete_data_docs_site(old)  # the default site writes to a temp dir nobody reads
    if docs_dir is not None:
        # SiteBuilder takes show_how_to_buttons, which GX's TypedDict of site configs does not list
        site: dict[str, Any] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        ctx.add_data_docs_site(DOCS_SITE, site)  # type: ignore[arg-type]
    batch_def = (
        ctx.data_sources.add_pandas("raw")
        .add_dataframe_asset("transactions")
        .add_batch_definition_whole_dataframe("partition")
    )
    definitions: dict[str, Any] = {}  # one suite + validation definition per distinct column set
    results: dict[dt.date, dict[str, Any]] = {}
    run_time = dt.datetime.now(dt.UTC)
    for day, frame in sorted(frames.items()):
        sub, _ = suite_for_columns(suite, list(frame.columns))
        vd = definitions.get(sub["name"])
        if vd is None:
            gx_suite = ctx.suites.add(_gx_suite(gx, sub, origin))
            vd = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=f"validate {sub['name']}", data=batch_def, suite=gx_suite)
            )
            definitions[sub["name"]] = vd
        result = vd.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            # the run name shows the partition in data docs; one run time for the whole run
            run_id=RunIdentifier(run_name=f"date={day.isoformat()}", run_time=run_time),
        )
        results[day] = result.to_json_dict()
    if docs_dir is not None:
        ctx.build_data_docs(site_names=[DOCS_SITE])
    return results


def _gx_suite(gx: Any, suite: dict[str, Any], origin: str) -> Any:
    """gx.ExpectationSuite from the JSON, refusing entries GX would silently drop or cannot build."""
    try:
        built = gx.ExpectationSuite(**suite)
    except Exception as err:
        raise StageError(f"{origin}: not a valid GX expectation suite: {err}") from None
    if len(built.expectations) != len(suite["expectations"]):
        known = {e.expectation_type for e in built.expectations}
        bad = sorted({e.get("type", "?") for e in suite["expectations"]} - known)
        raise StageError(f"{origin}: invalid expectation(s) {bad} (unknown type or bad kwargs)")
    return built


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
    parameters = {
        "min_rows": params.validate_.min_rows,
        "max_rows": params.validate_.max_rows,
        "max_amount": params.validate_.max_amount,
    }
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
        raise GateFailed(
            f"validation failed for {len(failures)} of {len(parts)} partition(s) "
            f"(suite {suite_name}): " + "; ".join(failures) + f". Report: {summary['data_docs']}"
        )
    return summary


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

    stage_main(run, "validate")
