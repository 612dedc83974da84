"""The Open Inference Protocol (KServe v2 REST) codec of the scoring service: bodies and tensor contract.

Framework-free: the web layer parses a body (`parse_request`), turns it into records (`records_from_request`),
scores them and answers `response_from_scores(...)`; every refusal is an `OIPError` (HTTP status, a message
naming the tensor and element), answered as `ErrorResponse`. JSON tensor data only: the binary-data and
shared-memory extensions are refused. The tensor contract is in `input_metadata` / `OUTPUTS`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

# $parameters: a JSON object whose values are strings, numbers or booleans (smart union keeps the JSON type)
Parameters = dict[str, bool | int | float | str]
Element = bool | int | float | str
M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    # forbid: a misspelt key ("input", "dtype") is refused instead of silently ignored
    model_config = ConfigDict(extra="forbid")


class TensorMetadata(_Body):
    """$metadata_tensor (and what every tensor body has): -1 marks a variable-size dimension."""

    name: str
    datatype: str
    shape: list[int]


class RequestInput(TensorMetadata):
    """$request_input: one input tensor; `data` is row-major, flat or nested (absent for binary data)."""

    parameters: Parameters | None = None
    data: list[Any] | None = None


class RequestOutput(_Body):
    """$request_output: one output the client asks for."""

    name: str
    parameters: Parameters | None = None


class InferenceRequest(_Body):
    """$inference_request: POST v2/models/<name>[/versions/<v>]/infer."""

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(TensorMetadata):
    """$response_output: one output tensor, data flat in row-major order."""

    parameters: Parameters | None = None
    data: list[Element]


class InferenceResponse(_Body):
    """$inference_response (serialize with `model_dump_json(exclude_none=True)`)."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class ModelMetadata(_Body):
    """$metadata_model_response: GET v2/models/<name>[/versions/<v>]."""

    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(_Body):
    """$metadata_server_response: GET v2."""

    name: str
    version: str
    extensions: list[str] = []


class ErrorResponse(_Body):
    """The error body of every v2 endpoint."""

    error: str


Loc = tuple[str | int, ...]


class OIPError(ValueError):
    """A request the protocol refuses: `status` (HTTP), `message` (names the tensor), `loc` (where)."""

    def __init__(self, message: str, loc: Loc = (), status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.status = status

    def to_body(self) -> ErrorResponse:
        """The JSON error body to answer with."""
        return ErrorResponse(error=self.message)


# accepted datatypes per Python type of a request field; the first one is what the metadata advertises
_DATATYPES: dict[type, tuple[str, ...]] = {
    str: ("BYTES",),
    dt.datetime: ("BYTES",),
    dt.date: ("BYTES",),
    float: ("FP64", "FP32"),
    int: ("INT64", "INT32"),
    bool: ("BOOL",),
}
_FLOATS = ("FP64", "FP32")
_EXPECTED = {"BYTES": "a string", "BOOL": "true or false", "INT64": "an integer", "INT32": "an integer"}
_JSON_KINDS: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}
_DYNAMIC = -1  # a variable-size dimension in tensor metadata

# the outputs of the scoring model, in the order answered when the request names none
OUTPUTS: tuple[tuple[str, str], ...] = (
    ("score", "FP64"),
    ("decision", "INT64"),
    ("label", "BYTES"),
    ("threshold", "FP64"),
    ("model_version", "BYTES"),
    ("arm", "BYTES"),
    ("features_fresh", "BOOL"),
    ("feature_source", "BYTES"),
    ("prediction_id", "BYTES"),
    ("cached", "BOOL"),
)
OUTPUT_NAMES: tuple[str, ...] = tuple(name for name, _ in OUTPUTS)
_IN_EXTENSIONS = ("binary_data_size", "shared_memory_region")
_OUT_EXTENSIONS = ("binary_data", "shared_memory_region", "classification")
_UNSUPPORTED = (
    "the binary data, shared memory and classification extensions are not supported: send and ask for "
    "JSON tensor data (tritonclient: set_data_from_numpy(arr, binary_data=False) and "
    "outputs=[InferRequestedOutput(name, binary_data=False) for each output])"
)


def _scalar_type(annotation: Any) -> type:
    """The Python type of a field's values: `X | None` and Annotated unwrapped, Literal of strings = str."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"no tensor datatype for the union {annotation!r}")
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        annotation = kinds.pop() if len(kinds) == 1 else None
    if annotation not in _DATATYPES:
        raise TypeError(f"no tensor datatype for the field type {annotation!r}")
    return typing.cast(type, annotation)


@dataclass(frozen=True)
class _Contract:
    """The input tensors of a request model: accepted datatypes per tensor, the required ones, a validator."""

    datatypes: dict[str, tuple[str, ...]]
    required: frozenset[str]
    adapter: TypeAdapter[list[Any]]


@functools.cache
def _contract(request_model: type[BaseModel]) -> _Contract:
    # tensor names are the keys the model validates (the alias when it has one)
    fields = {(f.alias or name): f for name, f in request_model.model_fields.items()}
    return _Contract(
        datatypes={name: _DATATYPES[_scalar_type(f.annotation)] for name, f in fields.items()},
        required=frozenset(name for name, f in fields.items() if f.is_required()),
        adapter=TypeAdapter(list[request_model]),  # type: ignore[valid-type]
    )


def input_metadata(request_model: type[BaseModel]) -> list[TensorMetadata]:
    """The input tensors of the scoring model: one per request field, shape [-1] (n records)."""
    return [
        TensorMetadata(name=name, datatype=kinds[0], shape=[_DYNAMIC])
        for name, kinds in _contract(request_model).datatypes.items()
    ]


def output_metadata() -> list[TensorMetadata]:
    """The output tensors of the scoring model, each shape [-1] (one element per record)."""
    return [TensorMetadata(name=name, datatype=kind, shape=[_DYNAMIC]) for name, kind in OUTPUTS]


def _where(loc: Sequence[str | int], raw: Any) -> str:
    """A pydantic loc of the body as text: `inputs[amount].shape` when the tensor's name is readable."""
    text = ""
    for i, part in enumerate(loc):
        if not isinstance(part, int):
            text += f".{part}" if text else part
            continue
        try:  # the raw body is whatever the client sent: any lookup may fail
            name = raw[loc[i - 1]][part]["name"]
        except (KeyError, IndexError, TypeError):
            name = None
        text += f"[{name}]" if isinstance(name, str) else f"[{part}]"
    return text


def parse_request(body: bytes | str, header_length: int | None = None) -> InferenceRequest:
    """The inference request in a body; OIPError (400) on bad JSON or a body not of the v2 shape.
    `header_length`: the Inference-Header-Content-Length header, sent with binary data after the JSON
    (then the JSON part is read, for a refusal that names the binary tensor)."""
    if header_length is not None and isinstance(body, bytes):
        body = body[:header_length]
    try:
        # json accepts NaN/Infinity (tritonclient writes them bare), so they get a message naming the tensor
        raw = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: arrays nested past the parser's depth
        raise OIPError(f"the request body is not valid JSON: {e}", ("body",)) from None
    try:
        return InferenceRequest.model_validate(raw)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = _where(err["loc"], raw) or "request body"
        raise OIPError(f"{where}: {err['msg']}", ("body", *err["loc"])) from None


def _check_extensions(req: InferenceRequest) -> None:
    """Refuse a request that asks for an extension this server lacks (binary data, shared memory, ...)."""
    # the request-wide `binary_data_output` (tritonclient's default when no outputs are named) is a
    # preference: answered in JSON, which every client reads; binary INPUT data cannot be read: refused
    places: list[tuple[Loc, Parameters | None, tuple[str, ...]]] = [
        (("inputs", t.name), t.parameters, _IN_EXTENSIONS) for t in req.inputs
    ]
    places += [(("outputs", o.name), o.parameters, _OUT_EXTENSIONS) for o in req.outputs or ()]
    for at, params, keys in places:
        # tritonclient sends "binary_data": false in JSON mode: only a value that asks for one is refused
        asked = [k for k in keys if (params or {}).get(k, False) is not False]
        if asked:
            where = f"{at[0]}[{at[1]}].parameters" if at else "parameters"
            raise OIPError(f"{where}.{asked[0]}: {_UNSUPPORTED}", (*at, "parameters", asked[0]))


def output_names(requested: Sequence[RequestOutput] | None) -> list[str]:
    """The outputs to answer, in order: those requested (known, no repeats), else all of them."""
    if not requested:
        return list(OUTPUT_NAMES)
    names: list[str] = []
    for o in requested:
        if o.name not in OUTPUT_NAMES:
            msg = f"outputs[{o.name}]: unknown output, expected one of {', '.join(OUTPUT_NAMES)}"
            raise OIPError(msg, ("outputs", o.name))
        if o.name in names:
            raise OIPError(f"outputs[{o.name}]: requested twice", ("outputs", o.name))
        names.append(o.name)
    return names


def _flat(data: list[Any]) -> list[Any]:
    """Row-major data: nested ([[a], [b]] for shape [n, 1]) flattened one level, as deep as a 2-d shape
    goes (a deeper array is then refused as an element)."""
    if not any(isinstance(v, list) for v in data):
        return data
    return [x for v in data for x in (v if isinstance(v, list) else [v])]


def _kind(v: Any) -> str:
    """The JSON type of a value, for messages (bool first: a JSON true is a Python int)."""
    if isinstance(v, bool | int | float):
        return "a boolean" if isinstance(v, bool) else "a number"
    return _JSON_KINDS.get(type(v), type(v).__name__)


def _element(v: Any, datatype: str) -> Any:
    """One element checked against its datatype (null passes: absent for the row); floats come out float.
    ValueError says what was expected (the caller names the element: only on failure, it is per element)."""
    if v is None:
        return None
    if datatype == "BYTES":
        ok = isinstance(v, str)
    elif datatype == "BOOL":
        ok = isinstance(v, bool)
    else:
        ok = isinstance(v, int if datatype in ("INT64", "INT32") else int | float) and not isinstance(v, bool)
    if not ok:
        raise ValueError(f"expected {_EXPECTED.get(datatype, 'a number')} ({datatype}), got {_kind(v)}")
    if datatype in _FLOATS:
        if not math.isfinite(v):
            raise ValueError(f"expected a finite number ({datatype}), got {_short(v)}")
        return float(v)
    return v


def _column(t: RequestInput, kinds: tuple[str, ...], max_records: int) -> list[Any]:
    """The n checked elements of one input tensor."""
    at: Loc = ("inputs", t.name)
    if t.datatype not in kinds:
        msg = f"inputs[{t.name}].datatype: expected {' or '.join(kinds)}, got {t.datatype!r}"
        raise OIPError(msg, (*at, "datatype"))
    s = t.shape
    if not (len(s) == 1 or (len(s) == 2 and s[1] == 1)) or s[0] < 0:
        raise OIPError(f"inputs[{t.name}].shape: expected [n] or [n, 1], got {s}", (*at, "shape"))
    if s[0] > max_records:
        msg = f"inputs[{t.name}].shape: {s[0]} records, at most {max_records} per request"
        raise OIPError(msg, (*at, "shape"), status=413)
    if t.data is None:
        raise OIPError(f"inputs[{t.name}]: no data (send the tensor's elements in 'data')", (*at, "data"))
    data = _flat(t.data)
    if len(data) != s[0]:
        msg = f"inputs[{t.name}]: shape {s} holds {s[0]} elements, data has {len(data)}"
        raise OIPError(msg, (*at, "data"))
    out = []
    for i, v in enumerate(data):
        try:
            out.append(_element(v, t.datatype))
        except ValueError as e:
            raise OIPError(f"inputs[{t.name}].data[{i}]: {e}", (*at, "data", i)) from None
    return out


def _columns(req: InferenceRequest, contract: _Contract, max_records: int) -> dict[str, list[Any]]:
    """Every input tensor checked alone and against the others (names, repeats, n, required ones)."""
    columns: dict[str, list[Any]] = {}
    for t in req.inputs:
        if t.name not in contract.datatypes:
            msg = f"inputs[{t.name}]: unknown input, expected some of {', '.join(contract.datatypes)}"
            raise OIPError(msg, ("inputs", t.name))
        if t.name in columns:
            raise OIPError(f"inputs[{t.name}]: sent twice", ("inputs", t.name))
        columns[t.name] = _column(t, contract.datatypes[t.name], max_records)
        first, n = next(iter(columns)), len(columns[t.name])
        if n != len(columns[first]):
            msg = f"inputs[{t.name}]: {n} records, inputs[{first}] has {len(columns[first])}"
            raise OIPError(msg, ("inputs", t.name, "shape"))
    missing = [name for name in contract.datatypes if name in contract.required and name not in columns]
    if missing:
        raise OIPError(f"inputs[{missing[0]}]: required input missing", ("inputs", missing[0]))
    if not columns or not next(iter(columns.values())):
        raise OIPError("inputs: no records (n = 0)", ("inputs",))
    return columns


def _short(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, str | int | float | bool) or v is None else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _record_error(e: ValidationError, tensors: dict[str, list[Any]]) -> OIPError:
    """The request model's first complaint, mapped back to its tensor and element (row)."""
    errors = e.errors(include_url=False)
    err, more = errors[0], (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    row, field = err["loc"][0], (err["loc"][1] if len(err["loc"]) > 1 else None)
    if isinstance(field, str) and field in tensors:
        # a missing key here is a null element of a required field (nulls are dropped from the record)
        got = "null" if err["type"] == "missing" else _short(err["input"])
        msg = "a value is required" if err["type"] == "missing" else err["msg"]
        where = f"inputs[{field}].data[{row}]"
        return OIPError(f"{where}: {msg}, got {got}{more}", ("inputs", field, "data", row))
    return OIPError(f"record {row}: {err['msg']}{more}", ("inputs", row))


def records_from_request(req: InferenceRequest, request_model: type[M], max_records: int) -> list[M]:
    """The request's records, validated by `request_model` (its bounds, its strictness): OIPError naming the
    tensor (and element) of the first problem; 413 past `max_records`."""
    _check_extensions(req)
    output_names(req.outputs)  # an unknown output is refused before anything is scored
    contract = _contract(request_model)
    columns = _columns(req, contract, max_records)
    n = len(next(iter(columns.values())))
    # a null element leaves its field out of the record: the model's default, or its "required" complaint
    rows = [{k: col[i] for k, col in columns.items() if col[i] is not None} for i in range(n)]
    try:
        # JSON mode: tensor elements are JSON values, so a strict model still takes ISO strings for datetimes
        return typing.cast(list[M], contract.adapter.validate_json(json.dumps(rows, allow_nan=False)))
    except ValidationError as e:
        raise _record_error(e, columns) from None


def response_from_scores(
    responses: Sequence[Any],
    model_name: str,
    requested_outputs: Sequence[RequestOutput] | None,
    labels: Sequence[str],
    request_id: str | None = None,
) -> InferenceResponse:
    """The inference response for scored events (ScoreResponse-like: attributes named as the outputs),
    one element per event in each output, shape [n]; `label` is labels[decision]. OIPError for an unknown
    requested output."""
    return InferenceResponse.model_validate(
        response_document(responses, model_name, requested_outputs, labels, request_id)
    )


def response_document(
    responses: Sequence[Any],
    model_name: str,
    requested_outputs: Sequence[RequestOutput] | None,
    labels: Sequence[str],
    request_id: str | None = None,
) -> dict[str, Any]:
    """`response_from_scores` as the JSON document itself (what the service sends: built from validated
    answers, it skips a pydantic model per output tensor, a quarter of a v2 request's Python time)."""
    if len(labels) < 2:
        raise ValueError(f"labels: one class name per decision (0, 1), got {list(labels)}")
    kinds = dict(OUTPUTS)
    cast: dict[str, type] = {"FP64": float, "INT64": int, "BOOL": bool, "BYTES": str}
    outputs = []
    for name in output_names(requested_outputs):
        if name == "label":
            data: list[Element] = [labels[int(r.decision)] for r in responses]
        else:
            data = [cast[kinds[name]](getattr(r, name)) for r in responses]
        outputs.append({"name": name, "datatype": kinds[name], "shape": [len(responses)], "data": data})
    versions = {r.model_version for r in responses}
    doc: dict[str, Any] = {"model_name": model_name}
    if len(versions) == 1:  # one version answered (the champion alone); mixed arms: per event
        doc["model_version"] = versions.pop()
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = outputs
    return doc
