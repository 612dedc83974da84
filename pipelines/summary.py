"""Print what a pipeline run produced and where to look at it (the tail of `make run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.config import Params, load_params


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _rel(root: Path, path: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def _model_line(params: Params) -> str | None:
    """`fraud_scorer v3 (champion): test PR AUC 0.853, ROC AUC 0.978`, from the stages' reports."""
    registry = _read_json(params.paths.reports / "registry.json")
    metrics = _read_json(params.paths.reports / "metrics.json") or {}
    if not registry:
        return None
    aliases = ", ".join(registry.get("aliases") or []) or "no alias"
    figures = ", ".join(
        f"{label} {metrics[key]:.3f}"
        for key, label in (("pr_auc", "PR AUC"), ("roc_auc", "ROC AUC"))
        if key in metrics
    )
    return f"{registry.get('name')} v{registry.get('version')} ({aliases}): test {figures}"


def summarize(params_path: Path = Path("params.yaml")) -> str:
    """A short account of the run's outputs under the project root, and the commands that show them."""
    params = load_params(params_path)
    paths = params.paths

    def rel(path: Path) -> Path:
        return _rel(params.root, path)

    lines = [f"==> done: events of {params.data.start} to {params.data.end} (end exclusive)"]
    if (model := _model_line(params)) is not None:
        lines.append(f"  model        {model}  (reports/metrics.json)")
    n_parts = len(list(paths.predictions.glob("date=*"))) if paths.predictions.is_dir() else 0
    lines.append(f"  predictions  {n_parts} days in {rel(paths.predictions)}/")
    quarantined = sorted(p.name for p in paths.quarantine.glob("date=*")) if paths.quarantine.is_dir() else []
    if quarantined:
        lines.append(
            f"  QUARANTINED  {', '.join(quarantined)}  ({rel(paths.quarantine)}/*/validation_result.json)"
        )
    lines += [
        "  look at      data docs   " + str(rel(paths.reports / "validation" / "index.html")),
        "               monitoring  make monitor-ui   (Evidently: drift, live metrics, training history)",
        "               registry    make mlflow-ui    (MLflow: runs, registered models, aliases)",
        "               plots       dvc plots show",
        "  dvc.lock     records the inputs and outputs of this run: commit it with params.yaml to version "
        "the experiment; `dvc status` shows what changed since",
    ]
    return "\n".join(lines)


def main(params: Annotated[Path, typer.Option(help="params.yaml")] = Path("params.yaml")) -> None:
    """Print the run summary."""
    typer.echo(summarize(params))


if __name__ == "__main__":
    typer.run(main)
