"""The public HTTP API of the scoring service: FastAPI routes over pipelines.serving, plus the wire codecs.

`build_app(params, runtime)` (app.py) is what the BentoML shell in bentos/fraud_scorer mounts; the
shell installs its engine and BentoML's adaptive batcher into the `Runtime` (runtime.py). Routers:
predict (/predict, /predict_batch, /v1/predict, /health/dependencies), models (/v1/models, deploy,
deployments), jobs (/v1/batch_predict), oip_routes (/v2, the Open Inference Protocol; codec in oip.py).
Bodies and errors: bodies.py; the OpenAPI document: openapi.py; model metadata: catalog.py.

The ingestion service's app (bentos/ingest_service) is its own: `ingest_app.build_ingest_app` over
pipelines.ingestion, routes in ingest_routes.py, answers in ingest_bodies.py; it shares the error
handlers (app.py) and the OpenAPI completion (openapi.py). Not imported here: the scoring shell never
loads it.
"""

from pipelines.api.app import build_app
from pipelines.api.runtime import Runtime, Score

__all__ = ["Runtime", "Score", "build_app"]
