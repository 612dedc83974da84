"""GPU paths on a CPU machine: Spark GPU resource conf from params, discovery script, clean CPU fallback."""

from __future__ import annotations

import json
import subprocess

import pytest

from pipelines.engines import spark as sp
from pipelines.sections import SparkGpuParams, SparkParams
from tests.conftest import make_project

pytestmark = pytest.mark.unit

CLUSTER = SparkParams(master="spark://10.0.0.1:7077", gpu=SparkGpuParams(task_amount=0.25))


def test_cluster_gets_gpu_resources_when_cuda_requested() -> None:
    conf = sp.gpu_conf(CLUSTER, "cuda", addresses=[])
    assert conf == {
        "spark.executor.resource.gpu.amount": "1",
        "spark.executor.resource.gpu.discoveryScript": str(sp.DISCOVERY_SCRIPT),
        "spark.task.resource.gpu.amount": "0.25",
    }


def test_auto_uses_gpu_only_when_one_exists() -> None:
    assert sp.gpu_conf(CLUSTER, "auto", addresses=[]) == {}
    assert sp.gpu_conf(CLUSTER, "auto", addresses=["0"])["spark.task.resource.gpu.amount"] == "0.25"
    assert sp.gpu_conf(CLUSTER, "cpu", addresses=["0"]) == {}


def test_local_and_connect_masters_need_no_resource_conf() -> None:
    for master in ("local[*]", "local[2]", "sc://host:15002"):
        assert sp.gpu_conf(SparkParams(master=master), "cuda", addresses=["0"]) == {}


def test_explicit_conf_wins_and_cpu_path_is_unchanged() -> None:
    params = SparkParams(
        master="spark://h:7077",
        conf={"spark.task.resource.gpu.amount": "0.5"},
        gpu=SparkGpuParams(discovery_script="/opt/gpu.sh"),
    )
    merged = sp.with_gpu_conf(params, "cuda")
    assert merged.conf["spark.task.resource.gpu.amount"] == "0.5"
    assert merged.conf["spark.executor.resource.gpu.discoveryScript"] == "/opt/gpu.sh"
    assert sp.with_gpu_conf(params, "cpu") is params


def test_discovery_script_prints_spark_resource_json() -> None:
    out = subprocess.run([str(sp.DISCOVERY_SCRIPT)], capture_output=True, text=True, check=True, timeout=30)
    doc = json.loads(out.stdout)
    assert doc["name"] == "gpu"
    assert doc["addresses"] == sp.gpu_addresses()  # [] on a CPU machine


def test_pin_task_gpu_outside_spark_is_a_noop() -> None:
    assert sp.pin_task_gpu() is None


def test_params_defaults_keep_cpu(tmp_path) -> None:
    params = make_project(tmp_path / "p")
    assert params.batch_predict.device == "cpu"
    assert params.spark.gpu.executor_amount == 1
    custom = make_project(
        tmp_path / "q", {"batch_predict": {"device": "auto"}, "spark": {"gpu": {"task_amount": 0.5}}}
    )
    assert custom.batch_predict.device == "auto" and custom.spark.gpu.task_amount == 0.5


def test_bad_gpu_params_fail_clearly(tmp_path) -> None:
    from pipelines.config import ParamsError

    with pytest.raises(ParamsError, match=r"batch_predict\.device"):
        make_project(tmp_path / "p", {"batch_predict": {"device": "tpu"}})
    with pytest.raises(ParamsError, match=r"spark\.gpu\.task_amount"):
        make_project(tmp_path / "q", {"spark": {"gpu": {"task_amount": 0}}})


def test_cuda_without_gpu_is_a_clear_error_auto_falls_back() -> None:
    from pipelines.errors import StageError
    from pipelines.model.release import resolve_device

    if sp.gpu_addresses():
        pytest.skip("a GPU is present: the fallback path is not reachable here")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(StageError, match="no CUDA device"):
        resolve_device("cuda")
