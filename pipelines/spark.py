"""The one way stages get a SparkSession: master and conf from params, quiet, UTC, our interpreter."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from pipelines.config import SparkParams

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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
