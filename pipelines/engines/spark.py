"""The one way stages get a SparkSession: master and conf from params, quiet, UTC, our interpreter."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.sections import SparkParams

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


# the driver's log4j2 configuration (a JVM option: only read when this process starts the driver JVM)
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def get_spark(spark: SparkParams, app_name: str = "sluice") -> SparkSession:
    """Return (or reuse) a SparkSession for `spark.master`; Spark Connect when the master is `sc://`."""
    from pyspark.sql import SparkSession  # heavy import: only when a stage needs Spark

    # Python workers must run the venv's interpreter, or they miss our packages
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if spark.master.startswith("sc://"):
        builder = SparkSession.builder.remote(spark.master)
    else:
        builder = (
            SparkSession.builder.master(spark.master)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", os.environ.get("SLUICE_SPARK_DRIVER_MEMORY", "4g"))
            .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}")
        )
    builder = (
        builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.shuffle.partitions", "8")
    )
    for key, value in spark.conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if not spark.master.startswith("sc://"):
        session.sparkContext.setLogLevel("WARN")
    return session


# --- GPU resources (DESIGN.md section 6): used when present, never required --------------------------------

DISCOVERY_SCRIPT = Path(__file__).with_name("gpu_discovery.sh")


def gpu_addresses() -> list[str]:
    """Indices of the GPUs nvidia-smi lists on this host ([] without nvidia-smi or a GPU). Cheap: no torch."""
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


def wants_gpu(device: str, addresses: list[str] | None = None) -> bool:
    """True when `device` asks for a GPU: 'cuda' always, 'auto' only when this host has one."""
    if device == "cuda":
        return True
    if device == "auto":
        return bool(gpu_addresses() if addresses is None else addresses)
    return False


def gpu_conf(spark: SparkParams, device: str, addresses: list[str] | None = None) -> dict[str, str]:
    """Spark GPU resource conf for scoring on `device` (batch_predict.device); {} for the CPU path.

    Cluster masters (spark://, yarn, k8s://) get spark.executor.resource.gpu.{amount,discoveryScript} and
    spark.task.resource.gpu.amount from params.spark.gpu, so the scheduler hands each task a GPU. Local
    masters get nothing: the Python workers run on this host and see its GPUs directly (and local mode
    does not schedule custom resources). Spark Connect (sc://) sessions take resources from the server's
    own conf. Keys already in params.spark.conf win (get_spark applies that dict last).
    """
    master = spark.master
    if not wants_gpu(device, addresses) or master.startswith(("local", "sc://")):
        return {}
    script = spark.gpu.discovery_script or str(DISCOVERY_SCRIPT)
    return {
        "spark.executor.resource.gpu.amount": str(spark.gpu.executor_amount),
        "spark.executor.resource.gpu.discoveryScript": script,
        "spark.task.resource.gpu.amount": str(spark.gpu.task_amount),
    }


def with_gpu_conf(spark: SparkParams, device: str) -> SparkParams:
    """`spark` with gpu_conf() merged under its own conf (explicit params.spark.conf keys win)."""
    extra = gpu_conf(spark, device)
    if not extra:
        return spark
    return spark.model_copy(update={"conf": {**extra, **spark.conf}})


def pin_task_gpu() -> str | None:
    """Inside a Spark task that was given a GPU, make it this Python worker's only visible CUDA device.

    Spark assigns addresses but does not set CUDA_VISIBLE_DEVICES, so without this every task would use
    GPU 0. Must run before CUDA is initialised in the worker (i.e. before the model is loaded); a worker
    already pinned keeps its device. Returns the address, or None outside a GPU task.
    """
    try:
        from pyspark import TaskContext
    except ImportError:  # pragma: no cover - pyspark is a dependency
        return None
    ctx = TaskContext.get()
    if ctx is None:
        return None
    gpu = ctx.resources().get("gpu")
    if gpu is None or not gpu.addresses:
        return None
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", gpu.addresses[0])
    return os.environ["CUDA_VISIBLE_DEVICES"]
