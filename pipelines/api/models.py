"""Model routes: GET /v1/models[/{name}], POST /v1/models/{name}/deploy, GET /v1/deployments[/{id}],
POST /v1/deployments/{id}/rollback.

Reads come from the registry through the engine's `ReleaseSet` (and what this process serves); deploy and
rollback go through `pipelines.ops.deploy`, which writes the same registry rollout tags the canary DAG
uses, so every serving worker picks the change up on its next refresh. Registry calls block: they run in
the thread pool.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path
from fastapi.concurrency import run_in_threadpool

from pipelines.api.bodies import Deployment, DeployRequest, ModelInfo, ModelList, RollbackRequest
from pipelines.api.catalog import model_info
from pipelines.api.runtime import Runtime, require_admin, runtime
from pipelines.serving.schema import ScoreRequest

NAME = Path(pattern=r"^[A-Za-z0-9_.\-]{1,128}$", description="The registered model name.")
DEPLOYMENT = Path(pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="A deployment id.")


def models_router(request_model: type[ScoreRequest]) -> APIRouter:
    """The model and deployment routes (one event's JSON schema shown as each release's input)."""
    router = APIRouter(prefix="/v1", tags=["v1"])
    schema = request_model.model_json_schema()

    def info(rt: Runtime) -> ModelInfo:
        engine = rt.ready_engine()
        return model_info(engine.releases.registry, engine.model_name, engine.routing, schema)

    def check_name(rt: Runtime, name: str) -> None:
        served = rt.params.register_.model_name
        if name != served:
            raise HTTPException(404, f"model {name!r} is not served here; served: {served!r}")

    @router.get("/models", response_model=ModelList)
    async def list_models(rt: Annotated[Runtime, Depends(runtime)]) -> ModelList:
        """The served model: its releases (version, aliases, traffic share, metrics...), alias history."""
        return ModelList(models=[await run_in_threadpool(info, rt)])

    @router.get("/models/{name}", response_model=ModelInfo)
    async def get_model(name: Annotated[str, NAME], rt: Annotated[Runtime, Depends(runtime)]) -> ModelInfo:
        """One model's releases and alias history."""
        check_name(rt, name)
        return await run_in_threadpool(info, rt)

    @router.post("/models/{name}/deploy", response_model=Deployment)
    async def deploy(
        name: Annotated[str, NAME],
        body: Annotated[DeployRequest, Body()],
        rt: Annotated[Runtime, Depends(runtime)],
        who: Annotated[str, Depends(require_admin)],
    ) -> dict[str, Any]:
        """Make `version` the challenger at `traffic_percentage` (admin key). It must have passed the
        offline gate, or `force` with a `reason`. Where Airflow is configured, the canary_rollout DAG
        continues the ramp with guardrails."""
        from pipelines.ops.deploy import deploy as do_deploy

        check_name(rt, name)
        return await run_in_threadpool(
            do_deploy,
            rt.params,
            name,
            body.version,
            body.traffic_percentage,
            body.reason,
            force=body.force,
            who=f"api:{who}",
        )

    @router.get("/deployments", response_model=list[Deployment])
    async def deployments(rt: Annotated[Runtime, Depends(runtime)]) -> list[dict[str, Any]]:
        """The model's deployments, newest first."""
        from pipelines.ops.deploy import list_deployments

        return await run_in_threadpool(list_deployments, rt.params, rt.params.register_.model_name)

    @router.get("/deployments/{deployment_id}", response_model=Deployment)
    async def get_deployment(
        deployment_id: Annotated[str, DEPLOYMENT], rt: Annotated[Runtime, Depends(runtime)]
    ) -> dict[str, Any]:
        """A deployment: its step, weight, guardrail readings and decision."""
        from pipelines.ops.deploy import get_deployment as get

        return await run_in_threadpool(get, rt.params, deployment_id)

    @router.post("/deployments/{deployment_id}/rollback", response_model=Deployment)
    async def rollback(
        deployment_id: Annotated[str, DEPLOYMENT],
        body: Annotated[RollbackRequest, Body()],
        rt: Annotated[Runtime, Depends(runtime)],
        who: Annotated[str, Depends(require_admin)],
    ) -> dict[str, Any]:
        """Roll the deployment's canary back: the challenger gets no traffic and loses its alias (admin)."""
        from pipelines.ops.deploy import rollback_deployment

        return await run_in_threadpool(
            rollback_deployment, rt.params, deployment_id, body.reason, who=f"api:{who}"
        )

    return router
