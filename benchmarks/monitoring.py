"""Drift report time on 100k rows x 20 features, and how it grows with the number of features.

Evidently has shown superlinear growth with columns (evidently#763); the monitor stage sends one
DataDriftPreset over every model input, so the ratio time(40 features) / time(20 features) must stay
<= 2.3 (linear = 2.0). Both sizes run through `pipelines.monitor.drift_report` with the params.yaml
methods (large samples -> wasserstein / jensenshannon), after one warm-up run (imports, numba-free).

    .venv/bin/python benchmarks/monitoring.py [--rows 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from pipelines import monitor
from pipelines.config import MonitorParams

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


def time_report(rows: int, features: int, repeats: int, cfg: MonitorParams) -> float:
    ref, cur = make(rows, features, 1, 0.0), make(rows, features, 2, 0.1)
    categorical = [c for c in ref.columns if c.startswith("cat_")]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        monitor.drift_report(ref, cur, cfg, categorical)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = MonitorParams()
    time_report(2_000, 5, 1, cfg)  # warm-up: Evidently import and first-call costs
    t20 = time_report(args.rows, 20, args.repeats, cfg)
    t40 = time_report(args.rows, 40, args.repeats, cfg)
    ratio = t40 / t20
    print(
        json.dumps(
            {
                "rows": args.rows,
                "time_20_features_s": round(t20, 3),
                "time_40_features_s": round(t40, 3),
                "ratio_40_over_20": round(ratio, 3),
                "target_ratio": TARGET_RATIO,
                "ok": ratio <= TARGET_RATIO,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
