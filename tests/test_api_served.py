"""The public API of a real `bentoml serve` process (what `make serve` runs), called as clients call it:
a schema fuzzer (schemathesis) over its OpenAPI document, the standard Open Inference Protocol client
(tritonclient), and concurrent valid traffic with out-of-range requests mixed in.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service_fixtures import ADMIN_KEY, record
from tests.serving_world import API_KEY, MODEL, World, bentoml_served

pytestmark = pytest.mark.integration

# examples per operation: bounded for CI (about 20 s for the whole document); `schemathesis run` by hand
# with a larger -n for a deeper search
FUZZ_EXAMPLES = 8


@pytest.fixture(scope="module")
def served(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("api_served")
    with bentoml_served(world, workdir, extra_env={"SLUICE_ADMIN_KEYS": ADMIN_KEY}) as url:
        yield url


def test_schema_fuzzer_finds_no_failure(served: str, tmp_path: Path) -> None:
    """schemathesis over /docs.json: no 5xx, every status and body as documented, no invalid request
    accepted (every check but `positive_data_acceptance`: a schema-valid body may still name a model,
    a file or a deployment that does not exist)."""
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is a dev dependency (uv sync)"
    cmd = [
        exe,
        "run",
        f"{served}/docs.json",
        "-H",
        f"X-API-Key: {ADMIN_KEY}",
        "-n",
        str(FUZZ_EXAMPLES),
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-deterministic",
        "--report-dir",
        str(tmp_path),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failure" not in run.stdout.split("SUMMARY")[-1]


def test_tritonclient_speaks_the_open_inference_protocol(served: str, world: World) -> None:
    import tritonclient.http as triton

    auth = {"X-API-Key": API_KEY}
    client = triton.InferenceServerClient(url=served.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL, headers=auth)
    meta = client.get_model_metadata(MODEL, headers=auth)
    assert world.champion in meta["versions"]
    entities = np.array([str(e) for e in world.events["entity_id"].iloc[:3]], dtype=object)
    columns = {
        "entity_id": ("BYTES", entities),
        "amount": ("FP64", np.array([12.5, 480.0, 3.25])),
        "timestamp": ("BYTES", np.array(["2026-01-07T12:00:00Z"] * 3, dtype=object)),
    }
    inputs = []
    for name, (dtype, values) in columns.items():
        tensor = triton.InferInput(name, list(values.shape), dtype)
        tensor.set_data_from_numpy(values, binary_data=False)
        inputs.append(tensor)
    # tritonclient's default call (no outputs named: it asks for binary outputs) is answered in JSON
    result = client.infer(MODEL, inputs, model_version=world.champion, headers=auth)
    scores = result.as_numpy("score")
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
    assert [str(v) for v in result.as_numpy("model_version")] == [world.champion] * 3
    same = httpx.post(
        f"{served}/v1/predict",
        json={"model": MODEL, "features": record(str(entities[1]), 480.0)},
        headers=auth,
        timeout=10,
    ).json()
    assert scores[1] == pytest.approx(same["prediction"])
    bad = triton.InferInput("amount", [1], "BYTES")
    bad.set_data_from_numpy(np.array(["lots"], dtype=object), binary_data=False)
    with pytest.raises(triton.InferenceServerException, match="amount"):
        client.infer(MODEL, [inputs[0], bad], headers=auth)


def test_out_of_range_requests_mixed_into_concurrent_traffic(served: str, world: World) -> None:
    """60 valid requests sent concurrently with 24 out-of-range ones: every valid one is a 200."""
    entities = [str(e) for e in world.events["entity_id"].unique()[:60]]
    valid = [{"model": MODEL, "features": record(e, 50.0 + i)} for i, e in enumerate(entities)]
    bad_fields: list[dict[str, Any]] = [
        {"timestamp": "9999-12-31T23:59:59Z"},
        {"timestamp": "0001-01-01T00:00:00Z"},
        {"amount": 1e308},
        {"amount": "12.5"},
        {"latitude": 1000.0},
        {"amount": True},
    ]
    bad = [{"model": MODEL, "features": record("card_x", 1.0) | f} for f in bad_fields * 4]

    async def send_all() -> list[tuple[int, int]]:
        async with httpx.AsyncClient(base_url=served, headers={"X-API-Key": API_KEY}, timeout=30) as c:

            async def one(payload: dict[str, Any], want: int) -> tuple[int, int]:
                return (await c.post("/v1/predict", json=payload)).status_code, want

            jobs = [one(p, 200) for p in valid] + [one(p, 422) for p in bad]
            return await asyncio.gather(*jobs[::2], *jobs[1::2])

    codes = asyncio.run(send_all())
    assert [got for got, _ in codes] == [want for _, want in codes]


def test_batch_predict_job_over_http(served: str, world: World) -> None:
    """A job submitted over HTTP runs on Spark to the end; every bad submit is a 4xx naming the field."""
    import time

    import pandas as pd

    data = world.params.paths.data
    src = data / "api_job_input.parquet"
    world.events.head(300).drop(columns=["label"]).to_parquet(src)
    out = data / "api_job_output.parquet"
    auth = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=served, headers=auth, timeout=30) as c:
        for bad, field in [
            ({"input_uri": "/etc/passwd"}, "input_uri"),
            ({"input_uri": "data/missing.parquet"}, "input_uri"),
            ({"input_uri": str(src), "model": f"{MODEL}/999"}, "model"),
            ({"input_uri": str(src), "output_uri": "../outside.parquet"}, "output_uri"),
        ]:
            resp = c.post("/v1/batch_predict", json={"model": MODEL, **bad})
            assert 400 <= resp.status_code < 500 and field in resp.json()["error"], resp.text
        job = c.post(
            "/v1/batch_predict", json={"model": MODEL, "input_uri": str(src), "output_uri": str(out)}
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        deadline = time.monotonic() + 240
        state = job.json()
        while state["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(1)
            state = c.get(f"/v1/batch_predict/{job_id}").json()
        assert state["status"] == "succeeded", state
        assert state["progress"] == 100 and state["rows"] == 300 and state["model_version"] == world.champion
    scored = pd.read_parquet(out)
    assert len(scored) == 300 and scored["score"].between(0, 1).all()
