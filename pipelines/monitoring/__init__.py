"""Monitoring library: drift of the model inputs and scores, live quality from late labels, the retrain
decision, and what people look at (summary, Prometheus gauges, Evidently's UI).

One concern per module; the `monitor` stage (pipelines/monitor.py) wires them to files and the registry:

- `window`: which days a run monitors and why (the test window by default under `dvc repro`);
- `inputs`: the frames to compare: the current window (prediction log, else batch predictions joined to
  their events and point-in-time features), the champion's reference (its training window), the
  champion itself and every registered version (training history) from the registry (via
  pipelines.artifacts);
- `drift`: Evidently drift report, per-column method choice, dataset-level verdict, data-quality checks;
- `live`: late labels (arrived by the as-of time) joined to predictions, live metrics per version and arm,
  traffic and serving health per arm;
- `decision`: the retrain decision with its cooldown, its state file and the retrain asset's extra;
- `report`: the day's summary.json and the stage's return value;
- `prometheus`: Prometheus textfile gauges rendered from the summary;
- `runs`, `evidently_metrics`: the day's Evidently run (drift, quality, live metrics per version and arm,
  facts) and a run per registered version; the two metrics sluice adds to Evidently's;
- `workspace`, `panels`: the Evidently workspace the runs go to (atomically, one run per day), its
  project and dashboard, shown by `make monitor-ui` (`evidently ui`).

The model's request-time features and categorical columns are arguments here (the stage passes the
model's), never imported. Nothing imports a stage module; Evidently, MLflow, scikit-learn and
prometheus_client are imported inside the functions that need them (`evidently_metrics`, which subclasses
Evidently's, is itself imported inside functions).
"""

from __future__ import annotations

# Columns of a prediction frame (the prediction log's and data/predictions' names) the monitor reads.
SCORE = "score"
DECISION = "decision"
MODEL_VERSION = "model_version"
ARM = "arm"
