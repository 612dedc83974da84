"""`python -m pipelines.<stage>`: a stage's `run(params, start, end)` as the command dvc.yaml calls."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.config import Params, ParamsError, load_params
from pipelines.errors import StageError

StageRun = Callable[..., dict[str, Any]]


def stage_main(run: StageRun, name: str) -> None:
    """Run a stage from the command line: `--params`, optional `--start/--end` override data.start/end."""

    def command(
        params: Annotated[Path, typer.Option(help="params.yaml; its directory is the project root")] = Path(
            "params.yaml"
        ),
        start: Annotated[str | None, typer.Option(help="first event date, YYYY-MM-DD")] = None,
        end: Annotated[str | None, typer.Option(help="end event date (exclusive), YYYY-MM-DD")] = None,
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            p: Params = load_params(params)
            s = dt.date.fromisoformat(start) if start else p.data.start
            e = dt.date.fromisoformat(end) if end else p.data.end
            summary = run(p, s, e)
        except (ParamsError, StageError, ValueError) as err:
            typer.echo(f"{name} failed: {err}", err=True)
            raise typer.Exit(code=1) from None
        typer.echo(json.dumps(summary, indent=2, default=str))

    typer.run(command)
