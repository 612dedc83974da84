"""The `sluice` operator CLI: registry status and history, promotion, rollback, the gate, the canary.

Stage commands (`python -m pipelines.<stage>`) live in pipelines.stage_cli; this module is above the
stages and may call them, they never import it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.config import ParamsError, load_params
from pipelines.errors import StageError

app = typer.Typer(
    help="sluice operations: registry status, history, promotion, rollback.", no_args_is_help=True
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml of the project")]


def _registry(params_path: Path) -> tuple[Any, str]:
    from pipelines.engines.registry import open_registry

    try:
        p = load_params(params_path)
    except ParamsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(code=2) from None
    return open_registry(p), p.register_.model_name


@app.command()
def status(params: ParamsOpt = Path("params.yaml")) -> None:
    """Who is champion / challenger / previous, the canary weight and the last alias moves."""
    reg, name = _registry(params)
    aliases = reg.aliases(name)
    if not aliases:
        typer.echo(f"{name}: no registered release yet (run the pipeline: make run)")
        return
    for alias in ("champion", "challenger", "previous"):
        version = aliases.get(alias)
        line = f"{alias:<11} {'v' + version if version else '-'}"
        if version:
            tags = reg.get_version(name, version).tags
            trained = f"{tags.get('train_start', '?')}..{tags.get('train_end', '?')}"
            line += f"  threshold={tags.get('threshold', '?')}  trained {trained}"
        typer.echo(line)
    state = reg.get_rollout_state(name)
    typer.echo(
        f"canary      weight={state.challenger_weight:g}% step={state.step} decision={state.decision or '-'}"
    )
    for move in reg.history(name)[-5:]:
        typer.echo(f"  {move.when} {move.who}: {move.alias} -> {move.version or '(removed)'} ({move.why})")


@app.command()
def history(
    params: ParamsOpt = Path("params.yaml"),
    alias: Annotated[str | None, typer.Option(help="only moves of this alias")] = None,
) -> None:
    """Every alias move with who / when / why / previous version, oldest first."""
    reg, name = _registry(params)
    for m in reg.history(name, alias=alias):
        typer.echo(
            f"#{m.seq:<4} {m.when}  {m.alias:<11} {m.previous or '-':>4} -> {m.version or '(removed)':<4} "
            f"by {m.who}: {m.why}"
        )


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="model version to make champion")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the registry)")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Make VERSION champion now; the old champion becomes `previous` (the rollback target)."""
    reg, name = _registry(params)
    move = reg.promote(name, version, why=reason)
    typer.echo(f"champion {move.previous or '-'} -> {move.version} ({reason})")


@app.command()
def rollback(
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the registry)")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Champion <- previous in one step; `previous` then points at the version rolled back from."""
    reg, name = _registry(params)
    previous = reg.alias_version(name, "previous")
    if previous is None:
        typer.echo(f"{name}: no `previous` alias to roll back to", err=True)
        raise typer.Exit(code=1)
    move = reg.promote(name, previous, why=f"rollback: {reason}")
    typer.echo(f"champion {move.previous} -> {move.version} (rollback: {reason})")


@app.command()
def gate(
    version: Annotated[str | None, typer.Argument(help="model version (default: the challenger)")] = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="a data refresh of the same model: pass when not worse than the champion by more than "
            "rollout.gate.refresh_tolerance, instead of beating it by rollout.gate.margin",
        ),
    ] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Offline gate of VERSION vs the champion on data/dataset (what the champion_gate stage runs).

    Writes reports/champion_gate.json and the version's gate.* tags; a failure removes `challenger` from
    it and exits 1."""
    from pipelines.champion_gate import run_gate

    reg, _ = _registry(params)
    try:
        out = run_gate(load_params(params), version, refresh=refresh, reg=reg)
    except StageError as err:  # GateFailed included: the reasons are in the message
        typer.echo(str(err), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps(out, default=str))


canary_app = typer.Typer(
    help="canary rollout of the challenger (the same functions as the canary_rollout DAG)."
)
app.add_typer(canary_app, name="canary")


def _canary_call(params_path: Path, action: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> None:

    reg, _ = _registry(params_path)
    try:
        out = action(load_params(params_path), *args, reg=reg, **kwargs)
    except StageError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps(out, default=str))


@canary_app.command("start")
def canary_start(params: ParamsOpt = Path("params.yaml")) -> None:
    """Route the first step's share to the challenger (resumes a paused canary at its step).

    The ramp itself (hold, guardrails, promotion) is the canary_rollout DAG's job.
    """
    from pipelines.ops.rollout import start_canary

    _canary_call(params, start_canary)


@canary_app.command("pause")
def canary_pause(
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the registry)")] = "by operator",
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Freeze the ramp at the current weight (guardrails still apply); `canary start` resumes."""
    from pipelines.ops.rollout import pause_canary

    _canary_call(params, pause_canary, why=reason)


@canary_app.command("abort")
def canary_abort(
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the registry)")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Weight 0 and alias `challenger` removed now; the champion serves everything."""
    from pipelines.ops.rollout import rollback_canary

    _canary_call(params, rollback_canary, f"aborted: {reason}")


@app.command("deploy")
def deploy_version(
    version: Annotated[str, typer.Argument(help="model version to deploy as the challenger")],
    weight: Annotated[float, typer.Option("--weight", help="challenger traffic, percent in (0, 100]")],
    reason: Annotated[str, typer.Option("--reason", help="why (required with --force)")] = "",
    force: Annotated[bool, typer.Option("--force", help="deploy without a passing champion gate")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """What `POST /v1/models/{name}/deploy` does: challenger at WEIGHT, then the canary DAG ramps it."""
    from pipelines.ops.deploy import deploy

    def call(p: Any, reg: Any) -> dict[str, Any]:
        return deploy(p, p.register_.model_name, version, weight, reason, force=force, reg=reg)

    _canary_call(params, call)


@app.command("deployments")
def deployments(
    deployment_id: Annotated[str | None, typer.Argument(help="one deployment (default: all)")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Deployments newest first (status, weight), or one with its guardrail readings, as JSON."""
    from pipelines.ops.deploy import get_deployment, list_deployments

    if deployment_id is None:
        _canary_call(params, lambda p, reg: {"deployments": list_deployments(p, p.register_.model_name, reg)})
    else:
        _canary_call(params, get_deployment, deployment_id)


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
