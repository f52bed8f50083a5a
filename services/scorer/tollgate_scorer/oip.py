"""Open Inference Protocol (KServe v2) REST, including Triton's binary tensor extension.

Pure translation, no I/O: an inference request becomes instances for :mod:`tollgate_scorer.core`, and
scored rows become output tensors. What a model takes and gives is advertised by its metadata:

* inputs: one tensor per contract feature, named after it, shape ``[-1]`` (``[N]`` or ``[N, 1]`` accepted);
  ``FP64`` for numbers, ``INT64`` for integers, ``BOOL`` for booleans, ``BYTES`` for categories. The entity
  id (sticky canary routing) and the contract's attributes may be sent as ``BYTES`` inputs too; nullable
  features may be left out. Values are checked against the dataset contract like every other request.
  Binary tensor data has no null, so NaN in an ``FP32``/``FP64`` tensor is one (a nullable integer
  feature may come as ``FP64`` for that reason). Tensors are read as columns, never turned into one
  object per row on the way to the model (:class:`~tollgate_scorer.instances.ColumnBatch`).
* outputs: ``prediction`` (the class label, typed like the classes, or the regression value), and for
  classifiers ``score`` (``FP64 [N]``) and ``probabilities`` (``FP64 [N, C]``, columns in the order of the
  ``classes`` metadata parameter).

A request is routed as a whole (by its first instance's entity id), so ``model_version`` names the one
version that answered; ``parameters`` carries the route and the per-instance request ids that the
inference log records. A request with ``parameters: {"explain": true}`` gets ``parameters.explanations``,
one per instance (every feature's attribution, see :mod:`tollgate_scorer.explain`), or
``parameters.explanation_error`` saying why the version has none. Tensor data may come as JSON ``data`` (flat or nested, row-major) or as binary after
the JSON header (``Inference-Header-Content-Length``); outputs are binary when the request asks
(``binary_data_output`` or an output's ``binary_data``), which is what ``tritonclient`` does by default.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from tollgate_core.contracts import DatasetContract, FieldType
from tollgate_scorer.core import Scored
from tollgate_scorer.instances import ColumnBatch
from tollgate_scorer.model import ServingModel

_LENGTH = struct.Struct("<I")
_NUMPY = {
    "BOOL": np.dtype("?"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_DATATYPES = {
    FieldType.NUMBER: "FP64",
    FieldType.INTEGER: "INT64",
    FieldType.BOOLEAN: "BOOL",
    FieldType.CATEGORY: "BYTES",
    FieldType.STRING: "BYTES",
}


class OipError(ValueError):
    """A malformed inference request (400)."""


def datatype_of(kind: FieldType) -> str:
    return _DATATYPES[kind]


def _prediction_datatype(model: ServingModel) -> str:
    if model.task != "classification":
        return "FP64"
    first = model.classes[0]
    if isinstance(first, bool):
        return "BOOL"
    return "INT64" if isinstance(first, int) else "BYTES"


def output_specs(model: ServingModel) -> list[dict[str, Any]]:
    outputs = [{"name": "prediction", "datatype": _prediction_datatype(model), "shape": [-1]}]
    if model.task == "classification":
        outputs.append({"name": "score", "datatype": "FP64", "shape": [-1]})
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, len(model.classes)]})
    return outputs


def model_metadata(name: str, models: Sequence[ServingModel], shown: ServingModel) -> dict[str, Any]:
    contract: DatasetContract = shown.contract
    optional = [contract.entity_id, *contract.attributes]
    return {
        "name": name,
        "versions": [m.version for m in models],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": f.name, "datatype": datatype_of(f.type), "shape": [-1]} for f in contract.features
        ],
        "outputs": output_specs(shown),
        "parameters": {
            "version": shown.version,
            "contract": contract.schema_id,
            "task": shown.task,
            "classes": list(shown.class_keys),
            "entity_id": contract.entity_id.name,
            "nullable_inputs": [f.name for f in contract.features if f.nullable],
            "optional_inputs": [
                {"name": f.name, "datatype": datatype_of(f.type), "shape": [-1]} for f in optional
            ],
        },
    }


def parse_request(body: bytes, header_length: int | None) -> tuple[dict[str, Any], ColumnBatch]:
    """The request document and its instances, kept as the columns the input tensors are (binary tensor
    data stays a numpy array over the body's bytes)."""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise OipError(
                f"Inference-Header-Content-Length {header_length} does not fit a {len(body)}-byte body"
            )
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        document = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise OipError(f"the inference request is not JSON: {exc}") from None
    if type(document) is not dict or type(document.get("inputs")) is not list or not document["inputs"]:
        raise OipError("an inference request is an object with a non-empty 'inputs' list")
    columns: dict[str, np.ndarray | list[Any]] = {}
    rows: int | None = None
    offset = 0
    for tensor in document["inputs"]:
        if type(tensor) is not dict:
            raise OipError("each input is an object with name, shape, datatype and data")
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if type(name) is not str or not name:
            raise OipError("an input has no name")
        if name in columns:
            raise OipError(f"input {name!r} is given twice")
        if (
            type(shape) is not list
            or not 1 <= len(shape) <= 2
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise OipError(f"input {name!r}: shape must be [N] or [N, 1], got {shape!r}")
        if len(shape) == 2 and shape[1] != 1:
            raise OipError(f"input {name!r}: one value per instance, so shape [N] or [N, 1], got {shape!r}")
        if datatype != "BYTES" and datatype not in _NUMPY:
            raise OipError(f"input {name!r}: unsupported datatype {datatype!r}")
        count = shape[0]
        if rows is None:
            rows = count
        elif count != rows:
            raise OipError(f"input {name!r} has {count} rows, an earlier input has {rows}")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise OipError(f"input {name!r}: binary_data_size {size!r} runs past the end of the body")
            values = _from_binary(binary[offset : offset + size], datatype, name)
            offset += size
        else:
            if "data" not in tensor:
                raise OipError(f"input {name!r} has neither data nor binary_data_size")
            values = _flatten(tensor["data"])  # JSON values as they are: the contract check types them
        if len(values) != count:
            raise OipError(f"input {name!r}: shape {shape} says {count} values, the data has {len(values)}")
        columns[name] = values
    if offset != len(binary):
        raise OipError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    assert rows is not None
    return document, ColumnBatch(columns, rows)


def _flatten(data: Any) -> list[Any]:
    if type(data) is not list:
        return [data]
    if data and type(data[0]) is list:
        flat: list[Any] = []
        for item in data:
            flat.extend(_flatten(item))
        return flat
    return data


def _from_binary(data: memoryview, datatype: str, name: str) -> np.ndarray | list[Any]:
    if datatype == "BYTES":
        values: list[Any] = []
        position = 0
        while position < len(data):
            if position + 4 > len(data):
                raise OipError(f"input {name!r}: truncated BYTES element")
            (length,) = _LENGTH.unpack_from(data, position)
            position += 4
            if position + length > len(data):
                raise OipError(f"input {name!r}: truncated BYTES element")
            raw = bytes(data[position : position + length])
            try:
                values.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise OipError(f"input {name!r}: BYTES elements must be UTF-8 text") from None
            position += length
        return values
    dtype = _NUMPY[datatype]
    if len(data) % dtype.itemsize:
        raise OipError(f"input {name!r}: {len(data)} bytes is not a whole number of {datatype} values")
    return np.frombuffer(data, dtype=dtype)


def build_response(
    name: str,
    document: dict[str, Any],
    scored: Scored,
    binary_default: bool,
) -> tuple[bytes, int | None]:
    """Body and, when some tensor is binary, the JSON header length for ``Inference-Header-Content-Length``."""
    (part,) = scored.parts  # OIP requests are routed as a whole
    model, out = part.model, part.outputs
    # Arrays, as onnxruntime gave them: binary outputs are their bytes, JSON ones their lists.
    tensors: dict[str, tuple[str, list[int], np.ndarray]] = {}
    n = len(out)
    tensors["prediction"] = (_prediction_datatype(model), [n], out.prediction_array())
    if model.task == "classification":
        assert out.matrix is not None
        tensors["score"] = ("FP64", [n], out.score_array())
        tensors["probabilities"] = ("FP64", [n, len(model.classes)], out.matrix)
    wanted = document.get("outputs")
    request_binary = bool((document.get("parameters") or {}).get("binary_data_output", binary_default))
    selection: list[tuple[str, bool]] = []
    if wanted is None:
        selection = [(key, request_binary) for key in tensors]
    else:
        if type(wanted) is not list:
            raise OipError("'outputs' must be a list of {name, parameters}")
        for item in wanted:
            key = item.get("name") if type(item) is dict else None
            if key not in tensors:
                raise OipError(f"unknown output {key!r}; this model gives {', '.join(tensors)}")
            parameters = item.get("parameters") or {}
            selection.append((key, bool(parameters.get("binary_data", request_binary))))
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for key, binary in selection:
        datatype, shape, data = tensors[key]
        spec: dict[str, Any] = {"name": key, "datatype": datatype, "shape": shape}
        if binary:
            blob = _to_binary(datatype, data, shape)
            spec["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            spec["data"] = _json_values(datatype, data)
        outputs.append(spec)
    answered: dict[str, Any] = {"route": part.route, "request_ids": scored.request_ids}
    if explain_requested(document):
        if part.explanations is not None:
            answered["explanations"] = [e.as_dict() for e in part.explanations]
        else:
            answered["explanation_error"] = part.explain_error or model.explain_error
    response: dict[str, Any] = {
        "model_name": name,
        "model_version": model.version,
        "parameters": answered,
        "outputs": outputs,
    }
    if "id" in document:
        response["id"] = document["id"]
    head = orjson.dumps(response)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def explain_requested(document: dict[str, Any]) -> bool:
    """The request's ``parameters.explain`` (false when absent); anything but a boolean is refused."""
    parameters = document.get("parameters")
    if type(parameters) is not dict or "explain" not in parameters:
        return False
    explain = parameters["explain"]
    if type(explain) is not bool:
        raise OipError("parameters.explain is true or false")
    return explain


def _json_values(datatype: str, data: np.ndarray) -> list[Any]:
    """A tensor's values, flat and row-major, as JSON takes them (FP64 outputs as doubles)."""
    flat = data.ravel()
    if datatype == "FP64":
        flat = flat.astype(np.float64, copy=False)
    return flat.tolist()


def _to_binary(datatype: str, data: np.ndarray, shape: list[int]) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for value in data.tolist():
            raw = str(value).encode("utf-8")
            parts += (_LENGTH.pack(len(raw)), raw)
        return b"".join(parts)
    return np.asarray(data, dtype=_NUMPY[datatype]).reshape(shape).tobytes()
