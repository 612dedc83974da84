"""Per-event checks derived from the GX suite: the suite's row-level expectations, applied to one event.

Running GX on every request would cost ~100 ms each; the row-level expectations are predicates on one
value, so they are compiled once, at start-up, into a rule per column (and from the rules the pydantic
bodies of models.py). tests/test_ingestion_rules.py runs GX and these rules on the same good and bad rows
and checks that they agree.

Expectation -> what it asks of one event's field:

- expect_column_to_exist -> the field must be sent
- expect_column_type_to_be / expect_column_values_to_be_of_type -> the JSON type (object/str: a string,
  float64: a number, int64: an integer, datetime64[...]: an ISO 8601 string, bool: a boolean)
- expect_column_values_to_not_be_null -> the field must be sent and not null (the partition will have the
  column, and an event without the value is a null there)
- expect_column_values_to_be_between -> bounds (inclusive unless strict_min / strict_max)
- expect_column_values_to_be_in_set / _not_in_set -> membership
- expect_column_values_to_match_regex / _not_match_regex -> `re.search`, as GX's pandas engine
- expect_column_value_lengths_to_be_between -> the string's length
- expect_column_values_to_be_unique -> unique within a request (a repeated id across requests is a retry,
  stored once)

Table-level and aggregate expectations (row counts, means, ...) and any with `mostly` < 1 or a
`row_condition` judge a partition, not an event: they stay with the validate stage (`partition_only`).
An expectation type unknown here is an error at start-up rather than a silent gap. Columns the
configured source does not carry (params' column mapping) are not accepted at all, and their
expectations are dropped as validate drops them (engines.gx_suite.suite_for_columns).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelines.contract import EVENT_ID, LABEL
from pipelines.engines.gx_suite import suite_for_columns
from pipelines.errors import StageError
from pipelines.ingestion.columns import KINDS, Kind

# GX type names (expect_column_type_to_be's type_) -> the JSON kind of one value
_TYPE_KINDS: dict[str, Kind] = {
    "object": "string",
    "str": "string",
    "string": "string",
    "float": "number",
    "float64": "number",
    "float32": "number",
    "int": "integer",
    "int64": "integer",
    "int32": "integer",
    "Int64": "integer",
    "bool": "boolean",
    "boolean": "boolean",
}
# judged on a whole partition: left to the validate stage
PARTITION_ONLY_TYPES = frozenset(
    {
        "expect_table_row_count_to_be_between",
        "expect_table_row_count_to_equal",
        "expect_table_column_count_to_be_between",
        "expect_table_column_count_to_equal",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_columns_to_match_set",
        "expect_column_mean_to_be_between",
        "expect_column_median_to_be_between",
        "expect_column_stdev_to_be_between",
        "expect_column_sum_to_be_between",
        "expect_column_min_to_be_between",
        "expect_column_max_to_be_between",
        "expect_column_unique_value_count_to_be_between",
        "expect_column_proportion_of_unique_values_to_be_between",
        "expect_column_distinct_values_to_be_in_set",
        "expect_column_distinct_values_to_contain_set",
        "expect_column_distinct_values_to_equal_set",
        "expect_compound_columns_to_be_unique",
    }
)
# a label may come later than its event (POST /v1/labels): its existence and not-null rules are met by
# the ingest stage (ingest.landing.unlabelled), its type and value rules still apply when one is sent
DEFERRED: tuple[str, ...] = (LABEL,)


@dataclass(frozen=True)
class Bound:
    """One between-expectation: low/high (None = open), strict or inclusive."""

    low: Any = None
    high: Any = None
    strict_low: bool = False
    strict_high: bool = False

    def problem(self, v: Any) -> str | None:
        if self.low is not None and (v <= self.low if self.strict_low else v < self.low):
            return f"must be {'>' if self.strict_low else '>='} {self.low}"
        if self.high is not None and (v >= self.high if self.strict_high else v > self.high):
            return f"must be {'<' if self.strict_high else '<='} {self.high}"
        return None


@dataclass
class ColumnRule:
    """What the suite asks of one column, for one event's value."""

    column: str
    kind: Kind
    required: bool = False
    nullable: bool = True
    unique: bool = False
    bounds: list[Bound] = field(default_factory=list)
    value_set: list[Any] | None = None
    forbidden: list[Any] | None = None
    patterns: list[str] = field(default_factory=list)
    anti_patterns: list[str] = field(default_factory=list)
    lengths: list[Bound] = field(default_factory=list)
    expectations: list[str] = field(default_factory=list)

    def problem(self, v: Any) -> str | None:
        """Why a (non-null, well-typed) value breaks the column's value rules, naming the expectation."""
        for b in self.bounds:
            if (why := b.problem(v)) is not None:
                return f"{why} (expect_column_values_to_be_between)"
        if self.value_set is not None and v not in self.value_set:
            return f"must be one of {self.value_set} (expect_column_values_to_be_in_set)"
        if self.forbidden is not None and v in self.forbidden:
            return f"must not be one of {self.forbidden} (expect_column_values_to_not_be_in_set)"
        for p in self.patterns:
            if not re.search(p, str(v)):
                return f"must match {p!r} (expect_column_values_to_match_regex)"
        for p in self.anti_patterns:
            if re.search(p, str(v)):
                return f"must not match {p!r} (expect_column_values_to_not_match_regex)"
        for b in self.lengths:
            if (why := b.problem(len(str(v)))) is not None:
                return f"length {why} (expect_column_value_lengths_to_be_between)"
        return None


@dataclass(frozen=True)
class RowRules:
    """The suite's per-event rules: one per column an event may carry (the source's columns, in order)."""

    columns: dict[str, ColumnRule]
    partition_only: tuple[str, ...]


def derive_rules(suite: dict[str, Any], parameters: dict[str, Any], columns: Iterable[str]) -> RowRules:
    """The per-event rules of `suite` for events with `columns`; $PARAMETER values from `parameters`."""
    allowed = list(columns)
    fitted, _ = suite_for_columns(suite, allowed)
    rules = {c: ColumnRule(c, KINDS[c]) for c in allowed}
    partition_only: list[str] = []
    for exp in fitted["expectations"]:
        etype = str(exp.get("type", ""))
        kwargs = {k: _resolve(v, parameters, etype) for k, v in (exp.get("kwargs") or {}).items()}
        col = kwargs.get("column")
        if etype in PARTITION_ONLY_TYPES or kwargs.get("mostly", 1) < 1 or kwargs.get("row_condition"):
            partition_only.append(f"{etype}({col})" if col else etype)
            continue
        if col not in rules:
            raise StageError(f"suite {suite.get('name')!r}: {etype} names {col!r}, not an event column")
        _apply(rules[col], etype, kwargs)
    rules[EVENT_ID].required = True  # the idempotency key: a retried event is recognised by it
    rules[EVENT_ID].nullable = False
    for c in DEFERRED:
        if c in rules:
            rules[c].required, rules[c].nullable = False, True
    return RowRules(rules, tuple(partition_only))


def _resolve(value: Any, parameters: dict[str, Any], etype: str) -> Any:
    if isinstance(value, dict) and "$PARAMETER" in value:
        name = value["$PARAMETER"]
        if name not in parameters:
            raise StageError(f"{etype}: suite parameter {name!r} has no value (validate section of params)")
        return parameters[name]
    return value


def _apply(rule: ColumnRule, etype: str, kw: dict[str, Any]) -> None:
    """Fold one row-level expectation into its column's rule."""
    rule.expectations.append(etype)
    if etype == "expect_column_to_exist":
        rule.required = True
    elif etype in ("expect_column_type_to_be", "expect_column_values_to_be_of_type"):
        rule.kind = _kind(str(kw.get("type_")), rule.column)
    elif etype == "expect_column_values_to_not_be_null":
        rule.required, rule.nullable = True, False
    elif etype == "expect_column_values_to_be_unique":
        rule.unique = True
    elif etype == "expect_column_values_to_be_between":
        low, high = _bound(kw.get("min_value"), rule.kind), _bound(kw.get("max_value"), rule.kind)
        rule.bounds.append(Bound(low, high, bool(kw.get("strict_min")), bool(kw.get("strict_max"))))
    elif etype == "expect_column_values_to_be_in_set":
        rule.value_set = list(kw.get("value_set") or [])
    elif etype == "expect_column_values_to_not_be_in_set":
        rule.forbidden = list(kw.get("value_set") or [])
    elif etype == "expect_column_values_to_match_regex":
        rule.patterns.append(str(kw["regex"]))
    elif etype == "expect_column_values_to_not_match_regex":
        rule.anti_patterns.append(str(kw["regex"]))
    elif etype == "expect_column_value_lengths_to_be_between":
        rule.lengths.append(Bound(kw.get("min_value"), kw.get("max_value")))
    else:
        raise StageError(
            f"{etype}({rule.column}): no per-event check is known for this expectation; the ingestion "
            "service cannot promise the suite's verdict (add it to pipelines/ingestion/rules.py, or give "
            "it `mostly` < 1 to leave it to the validate stage)"
        )


def _kind(type_name: str, column: str) -> Kind:
    if type_name.startswith("datetime64"):
        return "timestamp"
    if type_name not in _TYPE_KINDS:
        raise StageError(f"expect_column_type_to_be({column}): type {type_name!r} has no JSON equivalent")
    return _TYPE_KINDS[type_name]


def _bound(value: Any, kind: Kind) -> Any:
    """A between bound in the value's own terms (a timestamp bound may be written as a string)."""
    if value is None or kind != "timestamp" or isinstance(value, dt.datetime):
        return value
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed
