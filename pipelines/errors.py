"""Errors a stage raises when it refuses its input or a gate fails."""


class StageError(RuntimeError):
    """A stage refused its input or failed a gate; the message names the file/field/partition and why."""


class GateFailed(StageError):
    """An offline quality gate (validation suite, metric thresholds) did not pass."""
