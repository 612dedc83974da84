"""The schema of params.yaml: one frozen pydantic model per section (unknown keys are errors).

pipelines.config assembles them into `Params` and loads the file; each stage and library takes the
section it reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.contract import CANONICAL_COLUMNS, REQUIRED_COLUMNS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    """The event-date range `dvc repro` processes: [start, end), end exclusive (like Airflow intervals)."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> DataParams:
        if self.end <= self.start:
            raise ValueError(f"data.end ({self.end}) must be after data.start ({self.start})")
        return self


class SourceParams(Section):
    kind: Literal["synthetic", "csv", "parquet"] = "synthetic"
    path: str | None = None
    # canonical name -> column name in the user's log
    columns: dict[str, str] = Field(default_factory=dict)
    # strftime format of the timestamp column; None lets pandas infer ISO-8601 / common formats
    timestamp_format: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SourceParams:
        if self.kind != "synthetic" and not self.path:
            raise ValueError(f"ingest.source.path is required when ingest.source.kind is {self.kind!r}")
        unknown = set(self.columns) - set(CANONICAL_COLUMNS)
        if unknown:
            raise ValueError(
                f"ingest.source.columns has unknown canonical names {sorted(unknown)}; "
                f"expected a subset of {list(CANONICAL_COLUMNS)}"
            )
        if self.kind != "synthetic":
            missing = [c for c in REQUIRED_COLUMNS if c not in self.columns]
            if missing:
                raise ValueError(f"ingest.source.columns must map the required columns {missing}")
        return self


class DriftParams(Section):
    """Drift mode of the synthetic generator: from `start` on, the world changes (monitoring demo)."""

    enabled: bool = False
    start: dt.date | None = None
    amount_scale: float = 1.6
    new_merchant_share: float = 0.3
    new_fraud_pattern: bool = True


class SyntheticParams(Section):
    seed: int = 7
    n_entities: int = Field(1000, gt=0)
    n_merchants: int = Field(400, gt=0)
    txns_per_entity_per_day: float = Field(2.0, gt=0)
    fraud_rate: float = Field(0.01, gt=0, lt=0.5)
    # hours between an event and the arrival of its label (late labels for monitoring)
    label_delay_hours: float = Field(48.0, ge=0)
    drift: DriftParams = DriftParams()


class LandingParams(Section):
    """Events and labels posted to the ingestion service (pipelines/ingestion), landed in a store the ingest
    stage reads beside ingest.source: a day's raw partition is the source's events plus the day's landed
    ones (deduplicated by event_id)."""

    # the landing store: a SQLite file (relative to the project root); the ingestion service creates it
    store: str = "data/landing/landing.db"
    # false: the ingest stage reads the configured source only (the service can still land events)
    enabled: bool = True
    # the label of a landed event none has arrived for yet (POST /v1/labels): in card fraud, no chargeback
    # so far reads as legitimate. A later label replaces it when the day is ingested again
    unlabelled: int = 0


class IngestParams(Section):
    source: SourceParams = SourceParams()
    synthetic: SyntheticParams = SyntheticParams()
    landing: LandingParams = LandingParams()


class ValidateParams(Section):
    suite: str = "expectations/transactions.json"
    min_rows: int = Field(1, ge=0)
    max_rows: int = Field(5_000_000, gt=0)
    max_amount: float = Field(1_000_000.0, gt=0)


class SparkGpuParams(Section):
    """Spark GPU resources (engines.spark.gpu_conf), applied only when batch_predict.device asks for one."""

    # GPUs per executor and per task (a fraction lets tasks share one: 0.25 = 4 concurrent tasks per GPU)
    executor_amount: int = Field(1, gt=0)
    task_amount: float = Field(1.0, gt=0)
    # discovery script run on each executor host; None = pipelines/engines/gpu_discovery.sh (nvidia-smi)
    discovery_script: str | None = None


class SparkParams(Section):
    master: str = "local[*]"
    # extra spark conf, e.g. {"spark.executor.memory": "4g"}; wins over the GPU keys gpu_conf() derives
    conf: dict[str, str] = Field(default_factory=dict)
    gpu: SparkGpuParams = SparkGpuParams()


class FeatureParams(Section):
    # history used for "amount relative to the entity's usual spend"; also bounds the lookback a
    # ranged rerun needs, so one day's features can be recomputed from a bounded window
    history_days: int = Field(30, gt=0)


class FeatureStoreParams(Section):
    repo: str = "feature_repo"
    feature_service: str = "fraud_scorer_v1"
    # online store: "sqlite" (embedded default) or "redis"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "127.0.0.1:6379"


class DatasetParams(Section):
    valid_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


class XGBoostParams(Section):
    n_estimators: int = Field(300, gt=0)
    max_depth: int = Field(6, gt=0)
    learning_rate: float = Field(0.1, gt=0)
    subsample: float = Field(0.9, gt=0, le=1)
    colsample_bytree: float = Field(0.9, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(30, gt=0)


class MLPParams(Section):
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    dropout: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(15, gt=0)
    batch_size: int = Field(1024, gt=0)
    learning_rate: float = Field(1e-3, gt=0)


class TrainParams(Section):
    model: Literal["xgboost", "mlp"] = "xgboost"
    # the request-time features the model computes (data a data scientist edits; stored in the release)
    request_features: str = "feature_repo/request_features.yaml"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 42
    xgboost: XGBoostParams = XGBoostParams()
    mlp: MLPParams = MLPParams()


class GateParams(Section):
    roc_auc_min: float = Field(0.8, ge=0, le=1)
    pr_auc_min: float = Field(0.2, ge=0, le=1)
    recall_at_fpr_min: float = Field(0.2, ge=0, le=1)


class EvaluateParams(Section):
    # recall is reported at this false-positive rate, and the decision threshold is chosen there
    max_fpr: float = Field(0.01, gt=0, lt=1)
    gates: GateParams = GateParams()


class RegisterParams(Section):
    model_name: str = "fraud_scorer"


class BatchPredictParams(Section):
    alias: str = "champion"
    # rows per Arrow batch handed to the model inside Spark workers (benchmarks/batch_inference.py:
    # 50k cuts per-call overhead ~15% against 10k; larger gains nothing)
    batch_size: int = Field(50_000, gt=0)
    # model device in the Spark Python workers: cpu (default, the tested path) | auto (GPU when the worker
    # has one) | cuda (require it; on a cluster also sets spark.*.resource.gpu.* from spark.gpu)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    # rows per model call when a GPU is used (larger batches keep it busy); None = batch_size
    gpu_batch_size: int | None = Field(262_144, gt=0)


class AirflowParams(Section):
    """Schedules of the Airflow DAGs in dags/; no stage reads this section (dvc.yaml lists it nowhere)."""

    # first daily interval of the ingestion DAG's catchup; None = data.start
    start_date: dt.date | None = None
    # cron or preset ("@weekly") for the training DAG; None = manual runs and the retrain asset only
    training_schedule: str | None = None
    # scheduled trainings use [interval end - N days, interval end): a trailing window, never "today"
    training_window_days: int = Field(60, gt=0)
    # how often the triggerer looks for the landing flag the ingestion service raises (a file's stat):
    # the ingestion DAG then ingests the days with landed events or labels no run has taken
    landing_poke_s: float = Field(10.0, gt=0)


class InputLimits(Section):
    """Bounds of scoring-request fields beyond their types: a request outside them is a 422 naming the
    field, refused before it reaches a batch."""

    max_amount: float = Field(10_000_000.0, gt=0)
    # event timestamps are accepted from (now - max_age_days) to (now + max_future_s)
    max_age_days: int = Field(3650, gt=0)
    max_future_s: float = Field(300.0, ge=0)


class ServeParams(Section):
    """Online serving (bentos/fraud_scorer, pipelines/serving.py); defaults from benchmarks/serving.py."""

    host: str = "127.0.0.1"
    port: int = Field(3000, gt=0, lt=65536)
    # BentoML worker processes; 1 per core the server may use
    workers: int = Field(1, gt=0)
    # adaptive batching of POST /predict. A small max_latency_ms makes BentoML's batcher shed load as 503
    # (it drops queued requests whose projected wait exceeds it; STACK.md): keep it generous
    batching: bool = True
    max_batch_size: int = Field(64, gt=1)
    max_latency_ms: int = Field(1000, gt=0)
    # records per /predict_batch call (and per /predict call)
    max_records: int = Field(1000, gt=0)
    # prediction cache keyed by (release version, canonical request); 0 disables it
    cache_ttl_s: float = Field(30.0, ge=0)
    cache_size: int = Field(10_000, ge=0)
    # how often aliases and the challenger weight are re-read from the registry (no restart needed)
    refresh_s: float = Field(10.0, gt=0)
    # online store: per-lookup timeout and circuit breaker (opens after N consecutive failures)
    feature_timeout_ms: float = Field(250.0, gt=0)
    breaker_failures: int = Field(3, gt=0)
    breaker_reset_s: float = Field(10.0, gt=0)
    # last-known features kept in process, per entity, for when the online store is unreachable
    last_known_size: int = Field(100_000, ge=0)
    # challenger scoring slower than this (or failing) -> the champion answers
    challenger_timeout_ms: float = Field(200.0, gt=0)
    # security: API keys come from this env var (comma-separated); unset/empty = no auth
    api_key_env: str = "SLUICE_API_KEYS"
    rate_limit_per_s: float = Field(2000.0, gt=0)
    rate_limit_burst: int = Field(4000, gt=0)
    max_request_bytes: int = Field(1_048_576, gt=0)
    # prediction log (JSONL under data/prediction_log/): rotated by size; flushed by a background thread
    log_enabled: bool = True
    log_rotate_bytes: int = Field(64 * 1024 * 1024, gt=0)
    log_flush_s: float = Field(1.0, gt=0)
    # the public API (pipelines.api): field bounds, the names of decision 0 and 1 (/v1 `label`),
    # browser origins allowed by CORS, admin keys (deploy / rollback), the OpenAPI document without a key
    limits: InputLimits = Field(default_factory=InputLimits)
    labels: tuple[str, str] = ("negative", "positive")
    cors_origins: list[str] = Field(default_factory=list)
    admin_key_env: str = "SLUICE_ADMIN_KEYS"
    docs_public: bool = True
    # /v1/batch_predict: input and output files must lie under one of these (relative to the project)
    job_roots: list[str] = Field(default_factory=lambda: ["data"])
    # where deploy continues the ramp: Airflow's API server (None = the registry tags only); the
    # credentials come from these env vars
    airflow_url: str | None = None
    airflow_user_env: str = "SLUICE_AIRFLOW_USER"
    airflow_password_env: str = "SLUICE_AIRFLOW_PASSWORD"


class IngestServiceParams(Section):
    """The ingestion service (bentos/ingest_service, pipelines/api/ingest_app.py); it lands events and
    labels in ingest.landing.store, checked by validate.suite."""

    host: str = "127.0.0.1"
    port: int = Field(3001, gt=0, lt=65536)
    # BentoML worker processes (each commits to the one landing store)
    workers: int = Field(1, gt=0)
    # events or labels per POST (a list); a request is landed or refused whole
    max_events: int = Field(1000, gt=0)
    # security, as serve: API keys from this env var (comma-separated; unset/empty = no auth), a token
    # bucket per key, body limits (JSON routes; POST /v1/ingest/batch uploads)
    api_key_env: str = "SLUICE_API_KEYS"
    rate_limit_per_s: float = Field(5000.0, gt=0)
    rate_limit_burst: int = Field(10000, gt=0)
    max_request_bytes: int = Field(1_048_576, gt=0)
    max_batch_bytes: int = Field(256 * 1024 * 1024, gt=0)
    # group commit: requests waiting for the landing store beyond this many -> 503 (Retry-After); at most
    # commit_group requests share one commit (1 = a commit, an fsync, per request: benchmarks/ingest.py)
    max_pending: int = Field(20_000, gt=0)
    commit_group: int = Field(2_000, gt=0)
    # a request whose commit takes longer than this -> 503 (it may still land: retrying is safe)
    commit_timeout_s: float = Field(30.0, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    docs_public: bool = True


class MonitorParams(Section):
    """Monitoring (pipelines/monitor.py, dags/monitoring.py): drift methods/thresholds, live-quality gates,
    retrain decision and its cooldown."""

    # cron or preset of the monitoring DAG (read by dags/ only)
    schedule: str = "@daily"
    # what a run over exactly data.start..data.end (what `dvc repro` passes) monitors: `test` = the days after
    # data/dataset's validation split (the champion neither trained nor early-stopped on them), live
    # metrics included; `data` = the whole range, training days included. Any other range (--start/--end,
    # the Airflow data interval) is monitored as given.
    window: Literal["test", "data"] = "test"
    # the Evidently workspace each run is added to (`make monitor-ui`), relative to the project root
    workspace: str = "reports/monitoring/workspace"
    # live metrics join predictions of the N days before the window end with the labels arrived by then
    metrics_window_days: int = Field(14, gt=0)
    # hours until a label arrives; None = ingest.synthetic.label_delay_hours
    label_delay_hours: float | None = Field(None, ge=0)
    # reference/current are sampled down to this many rows each (seeded) to bound the drift report's time
    max_rows: int = Field(100_000, gt=0)
    seed: int = 0
    # Evidently's own rule: statistical tests on small samples, distances on large ones (p-values of
    # KS/chi2 flag negligible shifts once samples reach thousands of rows)
    large_sample_rows: int = Field(1000, gt=0)
    num_method_small: str = "ks"
    num_method_large: str = "wasserstein"
    cat_method_small: str = "chisquare"
    cat_method_large: str = "jensenshannon"
    # per method: p-value below it (ks, chisquare, ...) or distance at/above it (wasserstein, psi, ...)
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {
            "ks": 0.05,
            "chisquare": 0.05,
            "z": 0.05,
            "wasserstein": 0.1,
            "jensenshannon": 0.1,
            "psi": 0.1,
        }
    )
    # model inputs left out of drift: day_of_week of a one-day window always "drifts" from a training window
    exclude_features: list[str] = Field(default_factory=lambda: ["day_of_week"])
    # dataset drift = share of drifted features at or above this
    drift_share: float = Field(0.3, gt=0, le=1)
    retrain_on_prediction_drift: bool = True
    # data-quality checks against the reference
    max_missing_increase: float = Field(0.1, ge=0, le=1)
    max_out_of_range_share: float = Field(0.05, ge=0, le=1)
    # live quality gates, checked only with enough arrived labels
    min_labels: int = Field(200, gt=0)
    min_positives: int = Field(5, gt=0)
    pr_auc_min: float = Field(0.2, ge=0, le=1)
    recall_min: float = Field(0.2, ge=0, le=1)
    calibration_bins: int = Field(10, gt=1)
    # at most one retrain per cooldown (data time of the monitored window's end)
    cooldown_days: float = Field(7.0, ge=0)
    # a retrain trains on the N days before the monitored window's end
    retrain_window_days: int = Field(60, gt=0)


class GuardrailParams(Section):
    """Live guardrails of a canary step (pipelines/ops/rollout.py); any breach rolls the challenger back."""

    # challenger-routed requests that failed (answered by the champion's fallback) / all routed to it
    max_error_rate: float = Field(0.02, ge=0, le=1)
    # challenger error rate above N x the champion's (only when the champion has errors at all)
    max_error_ratio_vs_champion: float | None = Field(2.0, gt=0)
    # p99 latency of challenger-routed requests, milliseconds
    p99_budget_ms: float = Field(250.0, gt=0)
    # challenger p99 above N x the champion's p99 in the same window (null = off)
    max_p99_ratio_vs_champion: float | None = Field(None, gt=0)
    # PSI of challenger scores vs champion scores in the same window (null = off)
    max_psi: float | None = Field(0.25, gt=0)


class ChampionGateParams(Section):
    """Offline gate: challenger vs champion on the same test window (pipelines/champion_gate.py)."""

    metric: Literal["roc_auc", "pr_auc", "recall_at_fpr"] = "pr_auc"
    # the challenger must beat the champion by at least this much ...
    margin: float = Field(0.0, ge=0)
    # ... or, for a change marked as a refresh, not be worse by more than this
    refresh_tolerance: float = Field(0.01, ge=0)
    # behavioural test cases (invariance, directional, minimum functionality), data a data scientist edits
    behaviour_cases: str = "expectations/behaviour.yaml"
    # behavioural tests: |score change| allowed by the invariance cases
    invariance_tolerance: float = Field(1e-6, ge=0)
    # directional cases: share of rows whose score may drop by more than the file's max_drop
    directional_max_violations: float = Field(0.05, ge=0, le=1)
    # minimum functionality: share of the file's obvious positives flagged / obvious negatives flagged
    mft_min_fraud_flagged: float = Field(0.5, ge=0, le=1)
    mft_max_legit_flagged: float = Field(0.1, ge=0, le=1)


class RolloutParams(Section):
    """Canary rollout (pipelines/ops/rollout.py, dags/canary_rollout.py, `sluice canary`)."""

    # challenger traffic weights (percent) the canary ramps through; the last must be 100
    steps: list[float] = Field(default_factory=lambda: [5.0, 20.0, 50.0, 100.0])
    # healthy time at a step before advancing (minutes in production, seconds in tests)
    hold_s: float = Field(600.0, ge=0)
    # challenger-routed requests in a step before any decision (no decision on 3 requests)
    min_requests: int = Field(200, gt=0)
    # a step still short of min_requests after this long rolls back (not enough traffic to judge)
    max_wait_s: float = Field(3600.0, gt=0)
    # how often the live figures are re-read during a step
    poll_s: float = Field(10.0, gt=0)
    guardrails: GuardrailParams = GuardrailParams()
    gate: ChampionGateParams = ChampionGateParams()

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < w <= 100 for w in v) or v != sorted(set(v)) or v[-1] != 100:
            raise ValueError(f"rollout.steps must be increasing percents in (0, 100] ending at 100, got {v}")
        return v


class MlflowParams(Section):
    # None -> sqlite:///<root>/mlflow.db; the MLFLOW_TRACKING_URI env var wins over both
    tracking_uri: str | None = None
    experiment: str = "sluice-fraud"
