"""The bodies of POST /v1/ingest/events and POST /v1/labels, built from the suite's per-event rules.

pydantic models made per process from `RowRules` (rules.py), so the rules are enforced by one parser
and show in the OpenAPI document (types, required fields, bounds, sets). Strict like the scoring API:
numbers must be JSON numbers (no strings, no booleans, finite), integers integers, strings strings (an
integer id reads as its decimal spelling, as in a log; a float or a boolean is refused, which GX's
`object` type alone would let through), timestamps ISO 8601 strings (naive = UTC), unknown fields
refused. A body is one object or a list of up
to `ingest_service.max_events`; `parse_body` validates it whole and raises `InvalidBody` with every
problem located (`["body", index, field]`), so a request is landed or refused as one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from pipelines.contract import EVENT_ID, LABEL
from pipelines.ingestion.columns import Kind
from pipelines.ingestion.rules import ColumnRule, RowRules

_PYTHON: dict[Kind, type] = {
    "string": str,
    "number": float,
    "integer": int,
    "boolean": bool,
    "timestamp": dt.datetime,
}
_DESCRIPTIONS: dict[str, str] = {
    EVENT_ID: "Client event id: the idempotency key (a retried event is stored once).",
    LABEL: "Ground truth when already known (1 = positive); usually sent later to POST /v1/labels.",
}


class InvalidBody(ValueError):
    """A body that breaks the rules: `errors` as pydantic's (`loc`, `msg`, `type`), located in the body."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the body")
        self.errors = errors


def _iso_string(v: Any) -> Any:
    # pydantic would read a number as epoch seconds: a timestamp is a string on the wire
    if not isinstance(v, str | dt.datetime):
        raise ValueError("expected an ISO 8601 date-time string")
    return v


def _integer_spelling(v: Any) -> Any:
    # an integer id (a card number sent as a JSON number) becomes its decimal spelling, as the log's
    # integral ids are read (sources.log); a float or a boolean stays refused
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


# what a string column takes on the wire, as the OpenAPI document says it (see _integer_spelling)
_STRING_OR_INTEGER = WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}]})


# A timestamp outside [the Unix epoch, now + a day] is a client's bug, not an event: stored, it would make
# the ingest stage (and the DAG's pending days) write a partition for year 0001 or 9999
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
FUTURE_SLACK = dt.timedelta(days=1)


def _utc(v: dt.datetime) -> dt.datetime:
    try:
        utc = v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError("date-time out of range") from None
    if not EARLIEST <= utc <= dt.datetime.now(dt.UTC) + FUTURE_SLACK:
        raise ValueError(f"date-time must be between {EARLIEST:%Y-%m-%d} and tomorrow (UTC)")
    return utc


def _value_check(rule: ColumnRule) -> AfterValidator:
    def check(v: Any) -> Any:
        if (why := rule.problem(v)) is not None:
            raise PydanticCustomError("expectation", "{why}", {"why": why})
        return v

    return AfterValidator(check)


def _not_null(v: Any) -> Any:
    if v is None:
        raise PydanticCustomError("not_null", "must not be null (expect_column_values_to_not_be_null)")
    return v


def _schema_extra(rule: ColumnRule) -> dict[str, Any]:
    """The value rules as JSON-schema keywords (documentation; the check is `ColumnRule.problem`)."""
    extra: dict[str, Any] = {}
    for b in rule.bounds[:1]:
        if b.low is not None and rule.kind in ("number", "integer"):
            extra["exclusiveMinimum" if b.strict_low else "minimum"] = b.low
        if b.high is not None and rule.kind in ("number", "integer"):
            extra["exclusiveMaximum" if b.strict_high else "maximum"] = b.high
    if rule.value_set is not None:
        extra["enum"] = rule.value_set
    if rule.patterns:
        extra["pattern"] = rule.patterns[0]
    for b in rule.lengths[:1]:
        if b.low is not None and rule.kind == "string":
            extra["minLength"] = b.low
        if b.high is not None and rule.kind == "string":
            extra["maxLength"] = b.high
    if rule.expectations:
        extra["x-expectations"] = sorted(set(rule.expectations))
    return extra


def field_type(rule: ColumnRule) -> Any:
    """The annotation of one column's field: its JSON type, strict, with the suite's value rules."""
    base = _PYTHON[rule.kind]
    checks: list[Any]
    if rule.kind == "timestamp":
        checks = [BeforeValidator(_iso_string), AfterValidator(_utc)]
    elif rule.kind == "string":
        checks = [BeforeValidator(_integer_spelling), Field(strict=True), _STRING_OR_INTEGER]
    elif rule.kind == "number":
        checks = [Field(strict=True, allow_inf_nan=False)]
    else:
        checks = [Field(strict=True)]
    checks.append(_value_check(rule))
    if not rule.nullable:  # last: pydantic runs "before" validators last-declared first
        checks.append(BeforeValidator(_not_null))
    typed: Any = Annotated[(base, *checks)]
    return typed | None if rule.nullable else typed


def _field(rule: ColumnRule, required: bool | None = None) -> tuple[Any, Any]:
    must = rule.required if required is None else required
    info = Field(
        ... if must else None,
        description=_DESCRIPTIONS.get(rule.column),
        json_schema_extra=_schema_extra(rule),
    )
    return field_type(rule), info


def event_model(rules: RowRules) -> type[BaseModel]:
    """One event: the source's canonical columns, each with the suite's rules."""
    fields = {name: _field(rule) for name, rule in rules.columns.items()}
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        "IngestEvent",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__="One event in canonical columns (those of the configured source), checked by the suite's "
        "per-event rules. `label` may be left out and sent later to POST /v1/labels.",
        **fields,
    )
    return model


def label_model(rules: RowRules) -> type[BaseModel]:
    """One label: the event id, the label (the suite's rules for the label column) and when it was known."""
    if LABEL not in rules.columns:
        raise ValueError("the event columns have no label column")
    # a label must be sent here, and not null: the deferral of rules.DEFERRED is for events only
    label_rule = replace(rules.columns[LABEL], required=True, nullable=False)
    model: type[BaseModel] = create_model(
        "IngestLabel",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__="Ground truth for an event, known at `labelled_at` (delayed: chargebacks). A label for an "
        "event not landed yet is kept and joined when the event arrives.",
        event_id=_field(rules.columns[EVENT_ID], required=True),
        label=_field(label_rule),
        labelled_at=(
            Annotated[dt.datetime, BeforeValidator(_iso_string), AfterValidator(_utc)],
            Field(description="When the label became known, ISO 8601 (naive = UTC); with event_id, its key."),
        ),
    )
    return model


class BodyParser:
    """Parses a JSON body that is one `model` object or a list of 1..`max_items` of them."""

    def __init__(self, model: type[BaseModel], max_items: int, unique: tuple[str, ...] = (EVENT_ID,)) -> None:
        self.model = model
        self.one: TypeAdapter[Any] = TypeAdapter(model)
        bounded: Any = Annotated[list[model], Field(min_length=1, max_length=max_items)]  # type: ignore[valid-type]
        self.many: TypeAdapter[list[Any]] = TypeAdapter(bounded)
        self.max_items = max_items
        self.unique = unique

    def parse(self, body: bytes) -> list[BaseModel]:
        """The items of the body, or InvalidBody naming every field that breaks a rule."""
        is_list = body.lstrip()[:1] == b"["
        try:
            items = self.many.validate_json(body) if is_list else [self.one.validate_json(body)]
        except ValidationError as err:
            raise InvalidBody([_located(e) for e in err.errors(include_url=False)]) from None
        if self.unique and is_list:
            _check_unique(items, self.unique)
        return items

    def schema(self, ref: str) -> dict[str, Any]:
        """The request body's JSON schema: one object, or a list of them (`ref` names the object)."""
        one = {"$ref": ref}
        return {"oneOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": self.max_items}]}


def _located(e: Any) -> dict[str, Any]:
    loc = ["body", *e.get("loc", ())]
    return {"loc": loc, "msg": e.get("msg", ""), "type": e.get("type", "")}


def _check_unique(items: list[BaseModel], names: tuple[str, ...]) -> None:
    """Items of one request repeating a key (`names`' values) are refused: a list lands as one set."""
    first: dict[Any, int] = {}
    errors = []
    shown = ", ".join(names)
    for i, item in enumerate(items):
        key = tuple(getattr(item, n) for n in names)
        if key in first:
            errors.append(
                {
                    "loc": ["body", i, names[0]],
                    "msg": f"repeats body[{first[key]}]: ({shown}) must be unique in a request"
                    + (" (expect_column_values_to_be_unique)" if names == (EVENT_ID,) else ""),
                    "type": "value_error",
                }
            )
        else:
            first[key] = i
    if errors:
        raise InvalidBody(errors)


def event_parser(rules: RowRules, max_items: int) -> BodyParser:
    """Events: unique by event_id within a request (the suite's uniqueness; across requests, a retry)."""
    return BodyParser(event_model(rules), max_items, (EVENT_ID,))


def label_parser(rules: RowRules, max_items: int) -> BodyParser:
    """Labels: keyed by (event_id, labelled_at), so one event may get several over time."""
    return BodyParser(label_model(rules), max_items, (EVENT_ID, "labelled_at"))
