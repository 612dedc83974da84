"""Print what a pipeline run produced and where to look at it (the tail of `make run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.config import load_params


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summarize(params_path: Path = Path("params.yaml")) -> str:
    """A human-readable account of the run's outputs under the project root."""
    params = load_params(params_path)
    paths = params.paths
    lines = [f"sluice run summary ({params.data.start} .. {params.data.end}, end exclusive)"]
    metrics = _read_json(paths.reports / "metrics.json")
    if metrics:
        shown = {k: metrics[k] for k in ("roc_auc", "pr_auc", "recall_at_fpr", "threshold") if k in metrics}
        lines.append(f"  test metrics      {json.dumps(shown)}  (reports/metrics.json)")
    registry = _read_json(paths.reports / "registry.json")
    if registry:
        lines.append(
            f"  registered        {registry.get('name')} version {registry.get('version')} "
            f"aliases {registry.get('aliases')}  (reports/registry.json)"
        )
    n_parts = len(list(paths.predictions.glob("date=*"))) if paths.predictions.is_dir() else 0
    lines.append(f"  predictions       {n_parts} date partitions in {paths.predictions}")
    quarantined = sorted(p.name for p in paths.quarantine.glob("date=*")) if paths.quarantine.is_dir() else []
    if quarantined:
        lines.append(
            f"  QUARANTINED       {', '.join(quarantined)}  (see data/quarantine/*/validation_result.json)"
        )
    lines.append(f"  data docs         {paths.reports / 'validation' / 'index.html'}")
    lines.append("  plots             dvc plots show   (reports/plots/*.csv)")
    lines.append(
        f"  MLflow UI         .venv/bin/mlflow ui --backend-store-uri {params.tracking_uri} "
        "--port 5000  -> http://127.0.0.1:5000"
    )
    return "\n".join(lines)


def main(params: Annotated[Path, typer.Option(help="params.yaml")] = Path("params.yaml")) -> None:
    """Print the run summary."""
    typer.echo(summarize(params))


if __name__ == "__main__":
    typer.run(main)
