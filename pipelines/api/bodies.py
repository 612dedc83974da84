"""The bodies of the public API: /v1 requests and answers, errors, and the model selector.

Request bodies are strict like `ScoreRequest` (unknown fields refused at every level). The ones that
carry events are built per process by `request_bodies(request_model, max_records)`, so the bounds of
params `serve.limits` show in the OpenAPI document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from pipelines.engines.registry import AliasMove
from pipelines.serving.schema import ScoreRequest

# "<name>", "<name>@<alias>" or "<name>/<version>"
SELECTOR = r"^[A-Za-z0-9_.\-]{1,128}(@[A-Za-z0-9_\-]{1,64}|/[0-9]{1,12})?$"
_SELECTOR_RE = re.compile(SELECTOR)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: what went wrong, and where (the field path) when it is one field."""

    error: str = Field(description="What went wrong and what was expected.")
    detail: list[dict[str, Any]] | None = Field(
        None, description="Per-field problems: `loc` (path of the field), `msg`, `type`."
    )
    request_id: str | None = Field(None, description="The X-Request-ID of the request.")


@dataclass(frozen=True)
class ModelSelector:
    """A parsed `model` field: the name, and an alias or a version (neither: the canary routing)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSelector:
        if not _SELECTOR_RE.match(text):
            raise ValueError(f"model {text!r}: expected <name>, <name>@<alias> or <name>/<version>")
        if "@" in text:
            name, alias = text.split("@", 1)
            return cls(name, alias=alias)
        if "/" in text:
            name, version = text.split("/", 1)
            return cls(name, version=version)
        return cls(text)


class Prediction(BaseModel):
    """One scored event (seed 000's shape, plus where its features came from and which release answered)."""

    prediction_id: str
    event_id: str | None = None
    entity_id: str
    prediction: float = Field(description="The model's probability of the positive class, in [0, 1].")
    label: str = Field(description="serve.labels[decision].")
    decision: int = Field(description="1 when prediction >= threshold, else 0.")
    confidence: float = Field(description="The probability of the returned label: p, or 1 - p.")
    threshold: float
    model_name: str
    model_version: str
    arm: Literal["champion", "challenger"]
    features_fresh: bool
    feature_source: Literal["online", "new_entity", "last_known", "default"]
    cached: bool
    challenger_fallback: bool
    latency_ms: float = Field(description="Server-side time of the batch this event was scored in.")


class Predictions(BaseModel):
    """The answer to `instances`: one prediction per instance, in order."""

    predictions: list[Prediction]


def request_bodies(request_model: type[ScoreRequest], max_records: int) -> type[BaseModel]:
    """The /v1/predict body for this process's request model: one event (`features`) or several
    (`instances`, at most serve.max_records), exactly one of the two."""

    def _one_of(self: Any) -> Any:
        if (self.features is None) == (self.instances is None):
            raise ValueError("give exactly one of `features` (one event) or `instances` (a list of events)")
        return self

    return create_model(
        "PredictRequest",
        __base__=Strict,
        __doc__="Score one event (`features`) or several (`instances`) with the model `model`.",
        __validators__={"one_of": model_validator(mode="after")(_one_of)},  # type: ignore[dict-item]
        model=(
            str,
            Field(
                pattern=SELECTOR,
                description="<name> (canary routing), <name>@<alias> (champion/challenger) or "
                "<name>/<version> (a served version).",
            ),
        ),
        features=(request_model | None, Field(None, description="One event.")),  # type: ignore[arg-type]
        instances=(  # type: ignore[arg-type]
            list[request_model] | None,  # type: ignore[valid-type]
            Field(None, min_length=1, max_length=max_records, description="Several events."),
        ),
    )


class TrainingWindow(BaseModel):
    start: str
    end: str


class ReleaseInfo(BaseModel):
    """A registered version of the model as served now (seed 000's model metadata)."""

    version: str
    aliases: list[str]
    arm: Literal["champion", "challenger"] | None = Field(description="The arm it answers, if served.")
    traffic_share: float = Field(description="Share of routed traffic it answers now, in [0, 1].")
    framework: str
    metrics: dict[str, float]
    threshold: float
    training_window: TrainingWindow
    created: str
    artifact_uri: str
    size_bytes: int | None
    fingerprint: str
    input_schema: dict[str, Any] = Field(description="JSON schema of one event (`features`).")
    gate_verdict: str | None = None
    loaded_at: str | None = None


class ModelInfo(BaseModel):
    name: str
    releases: list[ReleaseInfo]
    challenger_weight: float = Field(description="Percent of entities routed to the challenger.")
    alias_history: list[AliasMove] = Field(description="Alias moves, oldest first (who, when, why).")


class ModelList(BaseModel):
    models: list[ModelInfo]


class DeployRequest(Strict):
    version: str = Field(pattern=r"^[0-9]{1,12}$", description="The registered version to deploy.")
    traffic_percentage: float = Field(gt=0, le=100, allow_inf_nan=False)
    reason: str = Field("", max_length=1000)
    force: bool = Field(False, description="Deploy a version that did not pass the offline gate.")


class RollbackRequest(Strict):
    reason: str = Field(min_length=1, max_length=1000)


class BatchPredictRequest(Strict):
    model: str = Field(pattern=SELECTOR)
    input_uri: str = Field(
        min_length=1, max_length=4096, description="A .parquet/.csv under serve.job_roots."
    )
    output_uri: str | None = Field(None, min_length=1, max_length=4096)
    batch_size: int = Field(10_000, gt=0, le=1_000_000)


class BatchJob(BaseModel):
    """A batch scoring job (pipelines.ops.batch_jobs): state, progress from Spark's tasks, result."""

    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(description="Percent of the job's Spark tasks done, 0-100.")
    eta_seconds: float | None
    model: str
    model_version: str
    input_uri: str
    output_uri: str
    batch_size: int
    rows: int | None
    flagged: int | None
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class Deployment(BaseModel):
    """A deployment of a version as challenger (pipelines.ops.deploy): the request, its live state."""

    deployment_id: str
    name: str
    version: str
    traffic_percentage: float
    reason: str
    forced: bool
    gate_verdict: str | None
    who: str
    created_at: str
    model: str = Field(description="<name>@challenger: what /v1/predict pins to reach it.")
    endpoint: str
    status: Literal["ramping", "paused", "promoted", "rolled_back", "superseded"]
    live: bool
    step: int | None
    weight: float = Field(description="Percent of entities routed to it now.")
    decision: str | None
    started_at: str | None
    updated_at: str | None
    ended: dict[str, Any] | None
    airflow: dict[str, Any] | None = Field(description="The canary_rollout DAG run it triggered, if any.")
    rollback: dict[str, Any] | None
    guardrails: dict[str, Any] | None = Field(
        None, description="Live per-arm figures and the guardrails' verdict (GET of one deployment)."
    )
