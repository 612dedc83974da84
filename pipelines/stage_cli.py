"""`python -m pipelines.<stage>`: a stage's `run(params, start, end)` as the command dvc.yaml calls.

By default a stage prints one progress line (`✓ <stage>  <what it did>  <seconds>`) and libraries log
warnings only; `--verbose` gives every library's INFO log, `--json` prints the stage's whole summary (the
same dict Airflow tasks return) for scripts. A failure prints `✗ <stage> failed: <why>` and exits 1.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.config import Params, ParamsError, load_params
from pipelines.errors import StageError

StageRun = Callable[..., dict[str, Any]]
Describe = Callable[[dict[str, Any]], str]

# Loggers that speak at INFO about their own housekeeping (registry caches, table creation, plugin
# registration) or WARNING about choices we made on purpose (MLflow's note that a Python-object model
# is pickled, which is what a release is).
_CHATTY = {"mlflow": logging.ERROR, "py4j": logging.WARNING, "great_expectations": logging.WARNING}
NAME_WIDTH = 14


def quiet_libraries(verbose: bool) -> None:
    """Log setup for a stage process: our INFO only with `verbose`, libraries at WARNING, no progress bars.

    Set before the libraries are imported (the stage modules import them lazily), because tqdm and
    MLflow read their switches from the environment.
    """
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # the level on the handler too: some libraries set their own loggers to INFO when imported (GX's
    # data-context config module does), after this runs
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    if verbose:
        return
    # tqdm bars (Feast's materialization, GX) interleave with the progress lines; MLflow has its own switch
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow configures its logger from this at import, overriding a level set before
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    for name, lvl in _CHATTY.items():
        logging.getLogger(name).setLevel(lvl)
    # deprecations inside libraries (ibis on DuckDB's renamed calls, ...) are for their maintainers
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def progress_line(name: str, text: str, seconds: float) -> str:
    """`✓ features        128,922 rows in 59 days  (21.4 s)`: what a stage prints when it ends.

    A multi-line `text` (validate's short table) continues under the first line's text.
    """
    first, *rest = text.splitlines() or [""]
    indent = " " * (NAME_WIDTH + 3)
    return "\n".join([f"✓ {name:<{NAME_WIDTH}} {first}  ({seconds:.1f} s)", *(indent + r for r in rest)])


def stage_main(run: StageRun, name: str, describe: Describe | None = None) -> None:
    """Run a stage from the command line: `--params`, optional `--start/--end` override data.start/end.

    `describe` turns the stage's summary into the progress line's text (rows, verdicts, where it wrote).
    """

    def command(
        params: Annotated[Path, typer.Option(help="params.yaml; its directory is the project root")] = Path(
            "params.yaml"
        ),
        start: Annotated[str | None, typer.Option(help="first event date, YYYY-MM-DD")] = None,
        end: Annotated[str | None, typer.Option(help="end event date (exclusive), YYYY-MM-DD")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the whole summary as JSON")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="INFO logs of every library")] = False,
    ) -> None:
        quiet_libraries(verbose)
        t0 = time.perf_counter()
        try:
            p: Params = load_params(params)
            s = dt.date.fromisoformat(start) if start else p.data.start
            e = dt.date.fromisoformat(end) if end else p.data.end
            summary = run(p, s, e)
        except (ParamsError, StageError, ValueError) as err:
            typer.echo(f"✗ {name} failed after {time.perf_counter() - t0:.1f} s: {err}", err=True)
            raise typer.Exit(code=1) from None
        if as_json:
            typer.echo(json.dumps(summary, indent=2, default=str))
        else:
            text = describe(summary) if describe else "done"
            typer.echo(progress_line(name, text, time.perf_counter() - t0))

    typer.run(command)
