"""Drift report time on 100k rows x 20 features, and how it grows with the number of features.

Evidently has shown superlinear growth with columns (evidently#763); the monitor stage sends one
DataDriftPreset over every model input, so the ratio time(40 features) / time(20 features) must stay
<= 2.3 (linear = 2.0). Both sizes run through `pipelines.monitoring.drift.drift_report` with the
params.yaml methods (large samples -> wasserstein / jensenshannon), after one warm-up run. The sizes
alternate and the ratio is of median CPU seconds (wall seconds are printed too): this machine is shared.

    .venv/bin/python benchmarks/monitoring.py [--rows 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import pandas as pd

from pipelines.monitoring.drift import drift_report
from pipelines.sections import MonitorParams

TARGET_RATIO = 2.3


def make(rows: int, features: int, seed: int, shift: float) -> pd.DataFrame:
    """`features` columns: 1 in 5 categorical (8 levels), the rest numeric with varied shapes."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for i in range(features):
        if i % 5 == 4:
            cols[f"cat_{i}"] = rng.choice([f"v{k}" for k in range(8)], size=rows)
        elif i % 2:
            cols[f"num_{i}"] = rng.lognormal(3 + shift, 0.8, size=rows)
        else:
            cols[f"num_{i}"] = rng.normal(shift, 1.0, size=rows)
    return pd.DataFrame(cols)


def time_report(ref: pd.DataFrame, cur: pd.DataFrame, cfg: MonitorParams) -> tuple[float, float]:
    """(wall, CPU) seconds of one drift report; CPU time is this process's only, so other jobs on a
    shared machine do not inflate it the way they inflate wall time."""
    categorical = [c for c in ref.columns if c.startswith("cat_")]
    w0, c0 = time.perf_counter(), time.process_time()
    drift_report(ref, cur, cfg, categorical)
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = MonitorParams()
    time_report(make(2_000, 5, 1, 0.0), make(2_000, 5, 2, 0.1), cfg)  # warm-up: imports, first calls
    frames = {n: (make(args.rows, n, 1, 0.0), make(args.rows, n, 2, 0.1)) for n in (20, 40)}
    # interleaved, so a burst of load on the machine hits both sizes alike; medians of each
    runs: dict[int, list[tuple[float, float]]] = {20: [], 40: []}
    for _ in range(args.repeats):
        for n in (20, 40):
            runs[n].append(time_report(*frames[n], cfg))
    wall = {n: statistics.median(r[0] for r in runs[n]) for n in runs}
    cpu = {n: statistics.median(r[1] for r in runs[n]) for n in runs}
    ratio = cpu[40] / cpu[20]
    print(
        json.dumps(
            {
                "rows": args.rows,
                "repeats": args.repeats,
                "wall_20_features_s": round(wall[20], 3),
                "wall_40_features_s": round(wall[40], 3),
                "cpu_20_features_s": round(cpu[20], 3),
                "cpu_40_features_s": round(cpu[40], 3),
                "wall_ratio_40_over_20": round(wall[40] / wall[20], 3),
                "ratio_40_over_20": round(ratio, 3),
                "target_ratio": TARGET_RATIO,
                "ok": ratio <= TARGET_RATIO,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
