"""Monitoring library: drift of the model inputs and scores, live quality from late labels, the retrain
decision, and what people look at (summary, Prometheus gauges, dashboard).

One concern per module; the `monitor` stage (pipelines/monitor.py) wires them to files and the registry:

- `inputs`: the frames to compare: the current window (prediction log, else batch predictions joined to
  their events and point-in-time features), the champion's reference (its training window) and the
  champion itself from the registry (via pipelines.artifacts);
- `drift`: Evidently drift report, per-column method choice, dataset-level verdict, data-quality checks;
- `live`: late labels (arrived by the as-of time) joined to predictions, live metrics per version and arm;
- `decision`: the retrain decision with its cooldown, its state file and the retrain asset's extra;
- `report`: the day's summary.json and the stage's return value, the run history;
- `dashboard`: Prometheus textfile gauges and the static HTML dashboard rendered from summaries.

The model's request-time features and categorical columns are arguments here (the stage passes the
model's), never imported. Nothing imports a stage module; Evidently, MLflow, scikit-learn and
prometheus_client are imported inside the functions that need them.
"""

from __future__ import annotations

# Columns of a prediction frame (the prediction log's and data/predictions' names) the monitor reads.
SCORE = "score"
DECISION = "decision"
MODEL_VERSION = "model_version"
ARM = "arm"
