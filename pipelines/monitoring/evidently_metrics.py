"""The two Evidently metrics sluice adds to Evidently's own.

- `LivePrAuc`: PR AUC (average precision) of a classification task. Evidently 0.7 has precision, recall
  and ROC AUC but no PR AUC, the number the fraud model is gated on.
- `MonitorValue`: a figure the stage computed and Evidently has no metric for (traffic share, latency,
  the retrain decision, gate verdicts, offline metrics of a registered version). It reads its value from
  a small `facts` dataset (one row per figure, `facts_frame`), so the value is data and the metric's
  parameters (fact, model_version, arm: what dashboard panels select and label by) stay the same from run
  to run, which is what makes one line per figure across runs.

Evidently is imported at module level (the classes subclass it): import this module inside functions. A
saved snapshot keeps each metric's parameters and values only, so `evidently ui` reads the workspace
without this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset
from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric

FACT = "fact"
VERSION = "model_version"
ARM = "arm"
VALUE = "value"


class LivePrAuc(SingleValueMetric):
    """PR AUC (average precision) of the binary classification `classification_name` of the dataset."""

    classification_name: str = "default"


class LivePrAucCalculation(SingleValueCalculation[LivePrAuc]):
    def calculate(self, context: Any, current_data: Dataset, reference_data: Dataset | None) -> SingleValue:
        from sklearn.metrics import average_precision_score

        task = current_data.data_definition.get_classification(self.metric.classification_name)
        if task is None or not getattr(task, "prediction_probas", None):
            raise ValueError(f"no binary classification {self.metric.classification_name!r} with scores")
        frame = current_data.as_dataframe()
        return self.result(float(average_precision_score(frame[task.target], frame[task.prediction_probas])))

    def display_name(self) -> str:
        return f"PR AUC (average precision): {self.metric.classification_name}"


class MonitorValue(SingleValueMetric):
    """The `value` of the facts row (fact, model_version, arm); "" = not per version / arm."""

    fact: str
    model_version: str = ""
    arm: str = ""


class MonitorValueCalculation(SingleValueCalculation[MonitorValue]):
    def calculate(self, context: Any, current_data: Dataset, reference_data: Dataset | None) -> SingleValue:
        m = self.metric
        frame = current_data.as_dataframe()
        row = frame[(frame[FACT] == m.fact) & (frame[VERSION] == m.model_version) & (frame[ARM] == m.arm)]
        if row.empty:
            raise ValueError(f"no fact {m.fact!r} for version {m.model_version!r} arm {m.arm!r}")
        return self.result(float(row[VALUE].iloc[0]))

    def display_name(self) -> str:
        m = self.metric
        where = " ".join(p for p in (f"v{m.model_version}" if m.model_version else "", m.arm) if p)
        return f"{m.fact}: {where}" if where else m.fact


def facts_frame(facts: Iterable[tuple[str, str, str, float | int | bool | None]]) -> pd.DataFrame:
    """(fact, model_version, arm, value) rows as the facts dataset's frame; rows without a value (None,
    NaN) dropped: a missing point, not a NaN the UI cannot plot."""
    rows = [(f, v, a, float(x)) for f, v, a, x in facts if x is not None and not math.isnan(float(x))]
    return pd.DataFrame(rows, columns=[FACT, VERSION, ARM, VALUE])


def facts_metrics(frame: pd.DataFrame) -> tuple[Dataset, list[MonitorValue]]:
    """The Evidently dataset of a facts frame and one MonitorValue per row."""
    definition = DataDefinition(numerical_columns=[VALUE], categorical_columns=[FACT, VERSION, ARM])
    metrics = [
        MonitorValue(fact=f, model_version=v, arm=a)
        for f, v, a in frame[[FACT, VERSION, ARM]].itertuples(index=False)
    ]
    return Dataset.from_pandas(frame, data_definition=definition), metrics
