"""The GX expectation suite as data: reading it, fitting it to columns, running it, reading its failures.

Shared by the validate stage (each raw partition) and pipelines.ingestion (an uploaded batch as a whole,
and the per-event rules derived from the same suite). The suite file holds `{"$PARAMETER": ...}`
placeholders for the bounds that live in params.yaml (`suite_parameters`); expectations on optional
columns (contract.OPTIONAL_COLUMNS) are skipped for frames without them. GX is imported only when a
frame is validated (5-8 s).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.contract import OPTIONAL_COLUMNS
from pipelines.engines import gx_docs
from pipelines.errors import StageError
from pipelines.sections import ValidateParams

DOCS_SITE = "sluice_validation"


def suite_parameters(cfg: ValidateParams) -> dict[str, Any]:
    """Values of the suite's $PARAMETER placeholders, from params.yaml's validate section."""
    return {"min_rows": cfg.min_rows, "max_rows": cfg.max_rows, "max_amount": cfg.max_amount}


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
    frames: dict[Any, pd.DataFrame],
    suite: dict[str, Any],
    parameters: dict[str, Any],
    docs_dir: Path | None = None,
    origin: str = "expectation suite",
) -> dict[Any, dict[str, Any]]:
    """Validate each frame with one ephemeral GX context; GX result dicts by the frames' keys.

    A key is a partition's date (run name `date=YYYY-MM-DD` in data docs) or any other name (an uploaded
    batch's id). `parameters` fills the suite's $PARAMETER placeholders. With `docs_dir`, GX data docs
    for every validation are built there (index.html, one page per validation and per suite).
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
    results: dict[Any, dict[str, Any]] = {}
    run_time = dt.datetime.now(dt.UTC)
    for day, frame in sorted(frames.items(), key=lambda kv: str(kv[0])):
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
            run_id=RunIdentifier(run_name=_run_name(day), run_time=run_time),
        )
        results[day] = result.to_json_dict()
    if docs_dir is not None:
        ctx.build_data_docs(site_names=[DOCS_SITE])
        gx_docs.localize_site(docs_dir)  # GX's pages load their CDN assets: served from the site instead
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


def _run_name(key: Any) -> str:
    return f"date={key.isoformat()}" if isinstance(key, dt.date) else str(key)
