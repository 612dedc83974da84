"""The answers of the ingestion service (the request bodies are built from the suite: pipelines.ingestion)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pipelines.api.bodies import ErrorBody


class EventsLanded(BaseModel):
    """202: every event of the request is durable (stored now, or already stored by an earlier request)."""

    event_ids: list[str] = Field(description="The request's event ids, in order.")
    landed: int = Field(description="How many were stored by this request.")
    duplicates: list[str] = Field(
        description="Ids stored before (a retry): kept once, as first received; not an error."
    )
    request_id: str | None = None


class LabelsLanded(BaseModel):
    """202: every label of the request is durable."""

    event_ids: list[str]
    landed: int = Field(description="How many were stored by this request.")
    duplicates: list[str] = Field(description="(event_id, labelled_at) pairs stored before: kept once.")
    pending: list[str] = Field(
        description="Labels whose event has not landed: kept, and joined when the event arrives."
    )
    request_id: str | None = None


class BatchValidation(BaseModel):
    suite: str = Field(description="The GX suite the batch passed (validate.suite).")
    success: bool
    evaluated: int = Field(description="Expectations evaluated.")
    skipped_optional_columns: list[str]


class BatchLanded(BaseModel):
    """202: the upload passed the suite as a whole and all its rows are durable (one transaction)."""

    batch_id: str
    name: str
    format: str
    rows: int
    landed: int = Field(description="Rows stored by this upload.")
    duplicates: int = Field(description="Rows whose event_id was stored before (kept once).")
    days: dict[str, int] = Field(description="Rows per event date (the raw partitions they belong to).")
    validation: BatchValidation
    request_id: str | None = None


class BatchRefusedBody(ErrorBody):
    """422 of an upload: nothing landed; `detail` lists the failed expectations."""

    # absent when the upload is refused before it becomes a batch (an empty body)
    batch_id: str | None = None
    quarantine: str | None = Field(None, description="Where the file and its validation_result.json are kept")


class DayStats(BaseModel):
    date: str
    events_landed: int = Field(description="Landed events with this event date.")
    events_ingested: int = Field(description="Of them, taken into the raw partition by an ingest run.")
    events_pending: int = Field(description="Of them, not taken yet.")
    labels_arrived: int = Field(description="Labels received this day (service clock).")
    batches_refused: int = Field(description="Uploads refused this day (service clock).")
    rows_quarantined: int = Field(description="Rows of those uploads.")
    partition_quarantined: bool = Field(description="The validate stage quarantined this date's partition.")
    last_run: str | None = Field(description="When an ingest run last took this date's landed events.")


class IngestStats(BaseModel):
    """Per day, and the store's watermarks (a sensor's 'what landed since')."""

    days: list[DayStats]
    totals: dict[str, int]
    watermarks: dict[str, int] = Field(
        description="events_seq / labels_seq: the last landed; ingested_seq: the last an ingest run took."
    )
    pending_days: list[str] = Field(
        description="Dates whose raw partition lacks landed events or labels: what the next ingest run needs."
    )
