"""GPU ÷ CPU speed ratios: XGBoost training, Spark batch inference, served requests/s.

    .venv/bin/python -m benchmarks.gpu [--rows 1000000] [--trees 200] [--master local[*]] [--serving]

For each workload the CPU side is always measured; the GPU side only when a CUDA device is visible
(engines.spark.gpu_addresses + torch.cuda). Without a GPU the script prints "no GPU: ratios not measured"
for every ratio and exits 0, so it doubles as a smoke test of the GPU code paths' CPU fallback.

- XGBoost training: pipelines.model.training.fit_release (the train stage's core) on `--rows` synthetic rows
  (benchmarks.batch_inference.make_frame), device cpu vs cuda, fixed tree count (no early stopping).
- Spark batch inference: pipelines.batch_predict.score_spark (mapInArrow) over `--rows` rows from
  Parquet, the release loaded in each Python worker with device cpu vs cuda (batch_predict.device), batch
  size batch_predict.batch_size vs gpu_batch_size. Spark is warmed up first (worker imports).
- Served req/s: benchmarks/serving.py has no device switch yet, so the GPU serving ratio is reported
  as skipped (run it on the GPU machine with the MLP champion to get the absolute GPU figure).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NO_GPU = "no GPU: ratios not measured"


def has_gpu() -> bool:
    """A CUDA device usable from this process (nvidia-smi lists one and torch can reach it)."""
    from pipelines.engines.spark import gpu_addresses

    if not gpu_addresses():
        return False
    import torch

    return bool(torch.cuda.is_available())


def bench_xgboost_training(rows: int, trees: int, devices: list[str]) -> dict[str, float]:
    """Seconds to fit an XGBoost release on `rows` rows per device (train stage core, no early stop)."""
    from benchmarks.batch_inference import make_frame, shipped_spec
    from pipelines.model.training import fit_release
    from pipelines.sections import TrainParams, XGBoostParams

    frame = make_frame(rows, seed=1)
    cut = int(rows * 0.85)
    # early stopping patience above the tree count: every device builds exactly `trees` trees
    cfg = TrainParams(
        model="xgboost", xgboost=XGBoostParams(n_estimators=trees, early_stopping_rounds=trees + 1)
    )
    out: dict[str, float] = {}
    for device in devices:
        t0 = time.perf_counter()
        fit_release(frame.iloc[:cut], frame.iloc[cut:], cfg, shipped_spec(), device)
        out[device] = time.perf_counter() - t0
        print(
            f"  xgboost training on {device}: {out[device]:.1f} s ({rows:,} rows, {trees} trees)", flush=True
        )
    return out


def bench_spark_inference(
    rows: int, trees: int, devices: list[str], master: str, work: Path
) -> dict[str, float]:
    """Rows/s of score_spark over `rows` Parquet rows per device (release logged in a temp MLflow store)."""
    import mlflow

    from benchmarks.batch_inference import KEEP, THRESHOLD, make_frame, train_release
    from pipelines.batch_predict import arrow_batch_size, score_spark
    from pipelines.engines.spark import get_spark
    from pipelines.model.packaging import log_release
    from pipelines.model.request_features import input_columns
    from pipelines.sections import BatchPredictParams, SparkParams

    frame = make_frame(rows, seed=2)
    data = work / "features.parquet"
    pq.write_table(
        pa.Table.from_pandas(frame.drop(columns=["label"]), preserve_index=False),
        data,
        row_group_size=65_536,
        compression="zstd",
    )
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    exp = mlflow.create_experiment("bench-gpu", artifact_location=(work / "artifacts").as_uri())
    release = train_release(frame.iloc[: min(rows, 100_000)], trees)
    with mlflow.start_run(experiment_id=exp):
        uri = log_release(release, frame.head(100)).model_uri
    cols = input_columns(release.feature_list)
    del frame

    defaults = BatchPredictParams()
    spark = get_spark(SparkParams(master=master), app_name="sluice-bench-gpu")
    out: dict[str, float] = {}
    for device in devices:
        batch = (defaults.gpu_batch_size or defaults.batch_size) if device == "cuda" else defaults.batch_size

        def run(limit: int | None = None, device: str = device, batch: int = batch) -> int:
            df = spark.read.parquet(str(data))
            df = df.limit(limit) if limit else df
            scored = score_spark(
                df, uri, THRESHOLD, batch, keep=KEEP, input_columns=cols, tracking_uri=tracking, device=device
            )
            with arrow_batch_size(spark, batch):
                scored.write.mode("overwrite").parquet(str(work / f"out-{device}"))
            return rows if limit is None else min(limit, rows)

        run(limit=20_000)  # warm-up: Python workers import xgboost and load the release
        t0 = time.perf_counter()
        n = run()
        took = time.perf_counter() - t0
        out[device] = n / took
        print(f"  spark batch inference on {device}: {n:,} rows in {took:.1f} s ({out[device]:,.0f} rows/s)")
    return out


def ratio_line(name: str, values: dict[str, float], higher_is_better: bool, unit: str) -> str:
    cpu = values.get("cpu")
    cpu_text = f"cpu {cpu:,.1f} {unit}" if cpu is not None else "cpu not measured"
    if "cuda" not in values or cpu is None:
        return f"{name}: {cpu_text}; {NO_GPU}"
    gpu = values["cuda"]
    ratio = gpu / cpu if higher_is_better else cpu / gpu  # always "how many times faster on the GPU"
    return f"{name}: {cpu_text}, gpu {gpu:,.1f} {unit}; GPU ÷ CPU speed = {ratio:.2f}x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--trees", type=int, default=200)
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--skip-spark", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    gpu = has_gpu()
    devices = ["cpu", "cuda"] if gpu else ["cpu"]
    print(
        f"GPU benchmark: {args.rows:,} rows, {args.trees} trees, {os.cpu_count()} cpus, gpu={gpu}", flush=True
    )
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sluice-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)

    lines = [
        ratio_line("xgboost training", bench_xgboost_training(args.rows, args.trees, devices), False, "s")
    ]
    if args.skip_spark:
        lines.append("spark batch inference: skipped (--skip-spark)")
    else:
        rates = bench_spark_inference(args.rows, args.trees, devices, args.master, work)
        lines.append(ratio_line("spark batch inference", rates, True, "rows/s"))
    serving = Path(__file__).with_name("serving.py")
    if not serving.is_file():
        lines.append("served req/s: skipped (benchmarks/serving.py not present)")
    elif not gpu:
        lines.append(f"served req/s: {NO_GPU} (CPU figures: python -m benchmarks.serving)")
    else:
        lines.append(
            "served req/s: skipped (benchmarks/serving.py has no device switch; run it on this host)"
        )
    print("\n== GPU ÷ CPU ==")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
