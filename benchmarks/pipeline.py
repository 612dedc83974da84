"""Per-stage wall time of the default-size pipeline, and the no-op `dvc repro` ratio.

Runs in a temp copy of the project (the repo's params.yaml unless --params is given), so it never
touches your data/ or mlflow.db:

    .venv/bin/python benchmarks/pipeline.py [--params params.yaml] [--keep]

Prints one line per stage (seconds), the full-run total, the second (no-op) `dvc repro` time and the
ratio no-op / full run (acceptance target: < 0.05).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _stages() -> list[str]:
    return list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


def _dvc(root: Path, *args: str) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--keep", action="store_true", help="keep the temp project and print its path")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="sluice-bench-")) / "project"
    root.mkdir()
    for name in ("pipelines", "expectations", "feature_repo"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(args.params, root / "params.yaml")
    _dvc(root, "init", "--no-scm", "-q")

    print(f"{'stage':<16}{'seconds':>10}")
    total = 0.0
    for stage in _stages():
        seconds = _dvc(root, "repro", "--single-item", stage)
        total += seconds
        print(f"{stage:<16}{seconds:>10.1f}", flush=True)
    print(f"{'full run':<16}{total:>10.1f}")
    noop = _dvc(root, "repro")
    print(f"{'no-op repro':<16}{noop:>10.1f}")
    print(f"ratio no-op / full run = {noop / total:.4f} (target < 0.05)")
    if args.keep:
        print(f"project kept at {root}")
    else:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
