"""Batch job routes: POST /v1/batch_predict (202), GET /v1/batch_predict[/{job_id}],
POST /v1/batch_predict/{job_id}/cancel.

The jobs run on Spark in their own process (`pipelines.ops.batch_jobs`): the same release and scoring path
as the batch_predict stage, point-in-time features per row. Every refusal (a missing input, a path
outside serve.job_roots, an unknown model version) is a 4xx at submit, never a failure found later.
Job state lives in files under data/serving_jobs/, so any serving worker answers for any job.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from pipelines.api.bodies import BatchJob, BatchPredictRequest
from pipelines.api.runtime import Runtime, caller, runtime

JOB_ID = Path(pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="A batch job id.")


def jobs_router() -> APIRouter:
    """The batch job routes."""
    router = APIRouter(prefix="/v1/batch_predict", tags=["v1"])

    @router.post("", status_code=202, response_model=BatchJob)
    async def submit(
        body: Annotated[BatchPredictRequest, Body()],
        request: Request,
        rt: Annotated[Runtime, Depends(runtime)],
    ) -> dict[str, Any]:
        """Score a Parquet/CSV file of events on Spark into `output_uri`; answers at once with the job."""
        from pipelines.ops.batch_jobs import submit as do_submit

        who = f"api:{caller(request)}"
        return await run_in_threadpool(
            do_submit, rt.params, body.model, body.input_uri, body.output_uri, body.batch_size, who=who
        )

    @router.get("", response_model=list[BatchJob])
    async def jobs(rt: Annotated[Runtime, Depends(runtime)]) -> list[dict[str, Any]]:
        """The latest jobs, newest first."""
        from pipelines.ops.batch_jobs import list_jobs

        return await run_in_threadpool(list_jobs, rt.params)

    @router.get("/{job_id}", response_model=BatchJob)
    async def status(
        job_id: Annotated[str, JOB_ID], rt: Annotated[Runtime, Depends(runtime)]
    ) -> dict[str, Any]:
        """A job's status, progress (percent, from Spark's task counts) and ETA."""
        from pipelines.ops.batch_jobs import status as get_status

        return await run_in_threadpool(get_status, rt.params, job_id)

    @router.post("/{job_id}/cancel", response_model=BatchJob)
    async def cancel(
        job_id: Annotated[str, JOB_ID], rt: Annotated[Runtime, Depends(runtime)]
    ) -> dict[str, Any]:
        """Cancel a queued or running job (its Spark jobs are cancelled; no output is published)."""
        from pipelines.ops.batch_jobs import cancel as do_cancel

        return await run_in_threadpool(do_cancel, rt.params, job_id)

    return router
