"""The Open Inference Protocol codec: bodies, the tensor contract, round trips and every refusal."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from pipelines.api.oip import (
    OUTPUT_NAMES,
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    OIPError,
    RequestOutput,
    ServerMetadata,
    input_metadata,
    output_metadata,
    parse_request,
    records_from_request,
    response_from_scores,
)

pytestmark = pytest.mark.unit

UTC = dt.UTC


class Event(BaseModel):
    """The scoring request's shape, numbers strict (as the service's model is becoming)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity_id: str = Field(min_length=1, max_length=256)
    amount: float = Field(ge=0, allow_inf_nan=False, strict=True)
    timestamp: dt.datetime | None = None
    merchant: str | None = Field(None, max_length=256)
    category: str | None = Field(None, max_length=256)
    latitude: float | None = Field(None, ge=-90, le=90, strict=True)
    longitude: float | None = Field(None, ge=-180, le=180, strict=True)
    merchant_latitude: float | None = Field(None, ge=-90, le=90, strict=True)
    merchant_longitude: float | None = Field(None, ge=-180, le=180, strict=True)
    event_id: str | None = Field(None, max_length=256)


@dataclass(frozen=True)
class Scored:
    """A ScoreResponse-like answer."""

    score: float
    decision: int
    threshold: float = 0.5
    model_version: str = "3"
    arm: str = "champion"
    features_fresh: bool = True
    feature_source: str = "online"
    prediction_id: str = "p"
    cached: bool = False


LABELS = ["legit", "fraud"]


def tensor(name: str, datatype: str, data: list[Any], shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


def body(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Two valid events unless inputs are given."""
    inputs = inputs or (
        tensor("entity_id", "BYTES", ["c1", "c2"]),
        tensor("amount", "FP64", [12.5, 3]),
    )
    return {"inputs": list(inputs), **extra}


def records(doc: dict[str, Any] | str | bytes, max_records: int = 100) -> list[Event]:
    raw = doc if isinstance(doc, str | bytes) else json.dumps(doc)
    return records_from_request(parse_request(raw), Event, max_records)


def refusal(doc: dict[str, Any] | str | bytes, max_records: int = 100) -> OIPError:
    with pytest.raises(OIPError) as e:
        records(doc, max_records)
    return e.value


def test_metadata_follows_the_request_model() -> None:
    ins = {t.name: (t.datatype, t.shape) for t in input_metadata(Event)}
    assert list(ins) == list(Event.model_fields)
    assert ins["entity_id"] == ins["timestamp"] == ins["merchant"] == ("BYTES", [-1])
    assert ins["amount"] == ins["latitude"] == ("FP64", [-1])
    outs = {t.name: t.datatype for t in output_metadata()}
    assert list(outs) == list(OUTPUT_NAMES)
    assert outs == {
        "score": "FP64",
        "decision": "INT64",
        "label": "BYTES",
        "threshold": "FP64",
        "model_version": "BYTES",
        "arm": "BYTES",
        "features_fresh": "BOOL",
        "feature_source": "BYTES",
        "prediction_id": "BYTES",
        "cached": "BOOL",
    }
    meta = ModelMetadata(
        name="fraud", platform="sluice", inputs=input_metadata(Event), outputs=output_metadata()
    )
    assert ModelMetadata.model_validate_json(meta.model_dump_json(exclude_none=True)) == meta
    assert ServerMetadata(name="sluice", version="1").model_dump() == {
        "name": "sluice",
        "version": "1",
        "extensions": [],
    }


def test_every_field_round_trips_shapes_n_and_n_by_1() -> None:
    doc = body(
        tensor("entity_id", "BYTES", ["c1", "c2"]),
        tensor("amount", "FP64", [12.5, 3], shape=[2, 1]),
        tensor("timestamp", "BYTES", ["2026-01-05 10:00:00", "2026-01-05T11:00:00+01:00"]),
        tensor("merchant", "BYTES", [["m1"], ["m2"]], shape=[2, 1]),  # nested data is row-major too
        tensor("category", "BYTES", ["food", "travel"]),
        tensor("latitude", "FP32", [40.099998474121094, -3.5]),
        tensor("longitude", "FP64", [-73.9, 2.0]),
        tensor("merchant_latitude", "FP64", [40.2, -3.6]),
        tensor("merchant_longitude", "FP64", [-74.0, 2.1]),
        tensor("event_id", "BYTES", ["e1", "e2"]),
    )
    first, second = records(doc)
    assert first == Event(
        entity_id="c1",
        amount=12.5,
        timestamp=dt.datetime(2026, 1, 5, 10),  # naive: the request model decides what naive means
        merchant="m1",
        category="food",
        latitude=40.099998474121094,
        longitude=-73.9,
        merchant_latitude=40.2,
        merchant_longitude=-74.0,
        event_id="e1",
    )
    assert second.amount == 3.0 and isinstance(second.amount, float)  # a JSON integer is a number
    assert second.timestamp == dt.datetime(2026, 1, 5, 10, tzinfo=UTC)


def test_optional_tensors_may_be_omitted_and_null_means_absent_for_the_row() -> None:
    doc = body(
        tensor("amount", "FP64", [1.0, 2.0]),
        tensor("entity_id", "BYTES", ["c1", "c2"]),
        tensor("merchant", "BYTES", ["m1", None]),
        tensor("latitude", "FP64", [None, 10.0]),
    )
    first, second = records(doc)
    assert (first.merchant, first.latitude, first.timestamp) == ("m1", None, None)
    assert (second.merchant, second.latitude, second.category) == (None, 10.0, None)


def test_a_request_as_tritonclient_writes_it_parses() -> None:
    # the exact bytes of tritonclient.http (2.73) InferenceServerClient.generate_request_body for
    # InferInput(...).set_data_from_numpy(arr, binary_data=False) (object arrays; a datetime goes as str(),
    # a [2, 1] FP32 array flat) and InferRequestedOutput(name, binary_data=False), request_id="r-1"
    raw = (
        b'{"id":"r-1","inputs":[{"name":"entity_id","shape":[2],"datatype":"BYTES","data":["c1","c2"]},'
        b'{"name":"amount","shape":[2],"datatype":"FP64","data":[12.5,3.0]},'
        b'{"name":"timestamp","shape":[2],"datatype":"BYTES",'
        b'"data":["2026-01-05 10:00:00","2026-01-05T11:00:00Z"]},'
        b'{"name":"latitude","shape":[2,1],"datatype":"FP32","data":[40.099998474121094,41.20000076293945]},'
        b'{"name":"merchant","shape":[2],"datatype":"BYTES","data":["m1","m2"]}],'
        b'"outputs":[{"name":"score","parameters":{"binary_data":false}},'
        b'{"name":"label","parameters":{"binary_data":false}}]}'
    )
    req = parse_request(raw)
    assert req.id == "r-1" and [o.name for o in req.outputs or ()] == ["score", "label"]
    got = records_from_request(req, Event, 10)
    assert [(r.entity_id, r.amount, r.merchant) for r in got] == [("c1", 12.5, "m1"), ("c2", 3.0, "m2")]
    assert got[1].timestamp == dt.datetime(2026, 1, 5, 11, tzinfo=UTC)
    # tritonclient writes NaN bare (rapidjson): refused by the codec, naming the element, not as bad JSON
    nan = raw.replace(b"[12.5,3.0]", b"[12.5,NaN]")
    assert str(refusal(nan)) == "inputs[amount].data[1]: expected a finite number (FP64), got NaN"


TWO = tensor("entity_id", "BYTES", ["c1", "c2"])
REFUSALS: list[tuple[str, dict[str, Any], str, tuple[Any, ...]]] = [
    (
        "unknown tensor",
        body(TWO, tensor("amount", "FP64", [1.0, 2.0]), tensor("amt", "FP64", [1.0, 2.0])),
        "inputs[amt]: unknown input, expected some of entity_id, amount,",
        ("inputs", "amt"),
    ),
    (
        "duplicate tensor",
        body(TWO, tensor("amount", "FP64", [1.0, 2.0]), tensor("amount", "FP64", [1.0, 2.0])),
        "inputs[amount]: sent twice",
        ("inputs", "amount"),
    ),
    (
        "wrong datatype",
        body(TWO, tensor("amount", "BYTES", ["1", "2"])),
        "inputs[amount].datatype: expected FP64 or FP32, got 'BYTES'",
        ("inputs", "amount", "datatype"),
    ),
    (
        "string tensor as a number",
        body(tensor("entity_id", "INT64", [1, 2]), tensor("amount", "FP64", [1.0, 2.0])),
        "inputs[entity_id].datatype: expected BYTES, got 'INT64'",
        ("inputs", "entity_id", "datatype"),
    ),
    (
        "shape/data mismatch",
        body(TWO, tensor("amount", "FP64", [1.0, 2.0, 3.0], shape=[2])),
        "inputs[amount]: shape [2] holds 2 elements, data has 3",
        ("inputs", "amount", "data"),
    ),
    (
        "shape not [n] or [n, 1]",
        body(TWO, tensor("amount", "FP64", [1.0, 2.0], shape=[1, 2])),
        "inputs[amount].shape: expected [n] or [n, 1], got [1, 2]",
        ("inputs", "amount", "shape"),
    ),
    (
        "negative shape",
        body(TWO, tensor("amount", "FP64", [], shape=[-1])),
        "inputs[amount].shape: expected [n] or [n, 1], got [-1]",
        ("inputs", "amount", "shape"),
    ),
    (
        "n differs",
        body(TWO, tensor("amount", "FP64", [1.0, 2.0, 3.0])),
        "inputs[amount]: 3 records, inputs[entity_id] has 2",
        ("inputs", "amount", "shape"),
    ),
    (
        "missing required tensor",
        body(tensor("amount", "FP64", [1.0]), tensor("merchant", "BYTES", ["m"])),
        "inputs[entity_id]: required input missing",
        ("inputs", "entity_id"),
    ),
    (
        "no data",
        body(TWO, {"name": "amount", "shape": [2], "datatype": "FP64"}),
        "inputs[amount]: no data",
        ("inputs", "amount", "data"),
    ),
    (
        "a string for a number",
        body(TWO, tensor("amount", "FP64", [1.0, "2.5"])),
        "inputs[amount].data[1]: expected a number (FP64), got a string",
        ("inputs", "amount", "data", 1),
    ),
    (
        "a boolean for a number",
        body(TWO, tensor("amount", "FP64", [True, 2.0])),
        "inputs[amount].data[0]: expected a number (FP64), got a boolean",
        ("inputs", "amount", "data", 0),
    ),
    (
        "nested deeper than the shape",
        body(TWO, tensor("amount", "FP64", [[1.0], [[2.0]]], shape=[2, 1])),
        "inputs[amount].data[1]: expected a number (FP64), got an array",
        ("inputs", "amount", "data", 1),
    ),
    (
        "a number for a string",
        body(tensor("entity_id", "BYTES", ["c1", 7]), tensor("amount", "FP64", [1.0, 2.0])),
        "inputs[entity_id].data[1]: expected a string (BYTES), got a number",
        ("inputs", "entity_id", "data", 1),
    ),
    (
        "an object element",
        body(tensor("entity_id", "BYTES", ["c1", {"a": 1}]), tensor("amount", "FP64", [1.0, 2.0])),
        "inputs[entity_id].data[1]: expected a string (BYTES), got an object",
        ("inputs", "entity_id", "data", 1),
    ),
    (
        "out of the model's bounds",
        body(TWO, tensor("amount", "FP64", [1.0, -2.0])),
        "inputs[amount].data[1]: Input should be greater than or equal to 0, got -2.0",
        ("inputs", "amount", "data", 1),
    ),
    (
        "out of bounds, an optional tensor",
        body(TWO, tensor("amount", "FP64", [1.0, 2.0]), tensor("latitude", "FP64", [91.0, 0.0])),
        "inputs[latitude].data[0]: Input should be less than or equal to 90, got 91.0",
        ("inputs", "latitude", "data", 0),
    ),
    (
        "bad timestamp",
        body(TWO, tensor("amount", "FP64", [1.0, 2.0]), tensor("timestamp", "BYTES", ["2026-01-05", "x"])),
        "inputs[timestamp].data[1]: Input should be a valid datetime",
        ("inputs", "timestamp", "data", 1),
    ),
    (
        "empty string for the entity",
        body(tensor("entity_id", "BYTES", ["c1", ""]), tensor("amount", "FP64", [1.0, 2.0])),
        'inputs[entity_id].data[1]: String should have at least 1 character, got ""',
        ("inputs", "entity_id", "data", 1),
    ),
    (
        "null for a required field",
        body(tensor("entity_id", "BYTES", [None, "c2"]), tensor("amount", "FP64", [1.0, 2.0])),
        "inputs[entity_id].data[0]: a value is required, got null",
        ("inputs", "entity_id", "data", 0),
    ),
    (
        "no records",
        body(tensor("entity_id", "BYTES", []), tensor("amount", "FP64", [])),
        "inputs: no records (n = 0)",
        ("inputs",),
    ),
    (
        "binary input data",
        body(
            TWO, {"name": "amount", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}
        ),
        "inputs[amount].parameters.binary_data_size: the binary data, shared memory and classification "
        "extensions are not supported",
        ("inputs", "amount", "parameters", "binary_data_size"),
    ),
    (
        "a binary output",
        body(outputs=[{"name": "score", "parameters": {"binary_data": True}}]),
        "outputs[score].parameters.binary_data: the binary data",
        ("outputs", "score", "parameters", "binary_data"),
    ),
    (
        "shared memory",
        body(outputs=[{"name": "score", "parameters": {"shared_memory_region": "r", "binary_data": False}}]),
        "outputs[score].parameters.shared_memory_region: ",
        ("outputs", "score", "parameters", "shared_memory_region"),
    ),
    (
        "unknown output",
        body(outputs=[{"name": "scores"}]),
        "outputs[scores]: unknown output, expected one of score, decision, label,",
        ("outputs", "scores"),
    ),
    (
        "output twice",
        body(outputs=[{"name": "score"}, {"name": "score"}]),
        "outputs[score]: requested twice",
        ("outputs", "score"),
    ),
]


@pytest.mark.parametrize(("doc", "message", "loc"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_every_refusal_names_the_tensor(doc: dict[str, Any], message: str, loc: tuple[Any, ...]) -> None:
    err = refusal(doc)
    assert str(err).startswith(message), str(err)
    assert err.loc == loc and err.status == 400
    assert ErrorResponse.model_validate_json(err.to_body().model_dump_json()).error == str(err)


def test_binary_output_preference_is_answered_in_json() -> None:
    """tritonclient's `infer` without `outputs` asks binary_data_output for all: answered in JSON."""
    assert [e.entity_id for e in records(body(parameters={"binary_data_output": True}))] == ["c1", "c2"]


def test_nan_and_infinity_are_refused() -> None:
    for literal, shown in (("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity")):
        raw = json.dumps(body()).replace("[12.5, 3]", f"[12.5, {literal}]")
        err = refusal(raw)
        assert str(err) == f"inputs[amount].data[1]: expected a finite number (FP64), got {shown}"


def test_too_many_records_is_413_before_any_element_is_read() -> None:
    doc = body(tensor("entity_id", "BYTES", ["c"] * 5), tensor("amount", "FP64", ["not even a number"] * 5))
    err = refusal(doc, max_records=4)
    assert (str(err), err.status) == ("inputs[entity_id].shape: 5 records, at most 4 per request", 413)
    assert len(records(body(), max_records=2)) == 2


def test_several_model_complaints_report_the_first_and_count_the_rest() -> None:
    err = refusal(body(TWO, tensor("amount", "FP64", [-1.0, -2.0])))
    assert str(err).endswith("got -1.0 (and 1 more)")


def test_body_errors_name_the_tensor_when_they_can() -> None:
    assert str(refusal("{not json")).startswith("the request body is not valid JSON")
    assert str(refusal({"input": []})).startswith("inputs: Field required")
    shape = body(TWO, {"name": "amount", "shape": "2", "datatype": "FP64", "data": [1.0, 2.0]})
    err = refusal(shape)
    assert str(err) == "inputs[amount].shape: Input should be a valid list"
    assert err.loc == ("body", "inputs", 1, "shape")
    nameless = refusal(body({"shape": [1], "datatype": "FP64", "data": [1.0]}))
    assert str(nameless) == "inputs[0].name: Field required"
    deep = json.dumps(body()).replace("[12.5, 3]", "[" * 100_000 + "1" + "]" * 100_000)
    assert str(refusal(deep)).startswith("the request body is not valid JSON: maximum recursion depth")
    typo = refusal(body(TWO, {**tensor("amount", "FP64", [1.0, 2.0]), "dtype": "FP64"}))
    assert str(typo) == "inputs[amount].dtype: Extra inputs are not permitted"


def test_binary_requests_are_read_up_to_the_json_header() -> None:
    doc = body(
        TWO, {"name": "amount", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}
    )
    header = json.dumps(doc).encode()
    req = parse_request(header + b"\x00" * 16, header_length=len(header))
    with pytest.raises(OIPError, match=r"^inputs\[amount\]\.parameters\.binary_data_size: "):
        records_from_request(req, Event, 10)


def test_response_has_every_output_by_default() -> None:
    scored = [Scored(0.1, 0, prediction_id="p0"), Scored(0.9, 1, prediction_id="p1", cached=True)]
    resp = response_from_scores(scored, "fraud", None, LABELS, "r-1")
    assert (resp.model_name, resp.model_version, resp.id) == ("fraud", "3", "r-1")
    out = {o.name: (o.datatype, o.shape, o.data) for o in resp.outputs}
    assert list(out) == list(OUTPUT_NAMES)
    assert out["score"] == ("FP64", [2], [0.1, 0.9])
    assert out["decision"] == ("INT64", [2], [0, 1])
    assert out["label"] == ("BYTES", [2], ["legit", "fraud"])
    assert out["features_fresh"] == ("BOOL", [2], [True, True])
    assert out["cached"] == ("BOOL", [2], [False, True])
    assert out["prediction_id"] == ("BYTES", [2], ["p0", "p1"])
    # what goes on the wire parses back, JSON types kept (a 0/1 decision stays an integer, flags booleans)
    wire = json.loads(resp.model_dump_json(exclude_none=True))
    assert InferenceResponse.model_validate(wire) == resp
    outputs = {o["name"]: o["data"] for o in wire["outputs"]}
    assert outputs["decision"] == [0, 1] and outputs["cached"] == [False, True]


def test_response_has_only_the_requested_outputs_in_their_order() -> None:
    scored = [Scored(0.7, 1, model_version="3"), Scored(0.2, 0, model_version="4", arm="challenger")]
    wanted = [RequestOutput(name="label"), RequestOutput(name="score", parameters={"binary_data": False})]
    resp = response_from_scores(scored, "fraud", wanted, LABELS, None)
    assert [(o.name, o.data) for o in resp.outputs] == [("label", ["fraud", "legit"]), ("score", [0.7, 0.2])]
    assert resp.model_version is None and resp.id is None  # two versions answered: per event only
    with pytest.raises(OIPError, match=r"^outputs\[nope\]: unknown output") as e:
        response_from_scores(scored, "fraud", [RequestOutput(name="nope")], LABELS, None)
    assert e.value.loc == ("outputs", "nope")
    with pytest.raises(ValueError, match="labels"):
        response_from_scores(scored, "fraud", None, ["only one"], None)


def test_end_to_end_request_to_response() -> None:
    req = InferenceRequest.model_validate(body(outputs=[{"name": "decision"}], id="x"))
    got = records_from_request(req, Event, 10)
    scored = [replace(Scored(0.3, 0), prediction_id=r.entity_id) for r in got]
    resp = response_from_scores(scored, "fraud", req.outputs, LABELS, req.id)
    assert resp.model_dump(exclude_none=True) == {
        "model_name": "fraud",
        "model_version": "3",
        "id": "x",
        "outputs": [{"name": "decision", "datatype": "INT64", "shape": [2], "data": [0, 0]}],
    }


def test_the_service_schema_fits_the_codec() -> None:
    from pipelines.serving.schema import ScoreRequest, ScoreResponse

    names = [t.name for t in input_metadata(ScoreRequest)]
    assert names == list(ScoreRequest.model_fields) and "entity_id" in names and "amount" in names
    (record,) = records_from_request(
        InferenceRequest.model_validate(
            body(tensor("entity_id", "BYTES", ["c1"]), tensor("amount", "FP64", [5.0]))
        ),
        ScoreRequest,
        10,
    )
    assert (record.entity_id, record.amount) == ("c1", 5.0)
    answer = ScoreResponse(
        prediction_id="p",
        entity_id="c1",
        score=0.2,
        decision=0,
        threshold=0.5,
        model_name="fraud",
        model_version="7",
        arm="champion",
        features_fresh=False,
        feature_source="default",
        latency_ms=1.0,
    )
    resp = response_from_scores([answer], "fraud", None, LABELS, None)
    assert {o.name: o.data for o in resp.outputs}["feature_source"] == ["default"]
