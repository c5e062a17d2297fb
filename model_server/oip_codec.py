"""The Open Inference Protocol (KServe V2) as a data-plane codec: tensors in, tensors out.

A model's inputs can be sent either as one tensor of shape [N, F] (any name) or as one tensor per
feature, named after the feature, each of shape [N] or [N, 1] (MLServer's pandas convention),
as JSON `data` or as binary data (model_server/binary_tensors.py). Outputs are `predict` and, for
classifiers, `predict_proba` (computed only when asked for), each as JSON or binary data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from model_server.binary_tensors import HEADER_LENGTH as BINARY_HEADER
from model_server.binary_tensors import (
    MEDIA_TYPE,
    NUMPY_DTYPES,
    split_body,
    tensor_bytes,
    tensor_values,
)
from model_server.data_plane import Answer, Decoded, Encoded, ServedModel
from model_server.feature_spec import STRING, FeatureSpec
from model_server.json_codec import dumps, loads
from model_server.request_rows import InputError, Rows, checked_matrix, rows_from_lists

NUMERIC_TYPES = frozenset(NUMPY_DTYPES) - {"BOOL"}
DATATYPES = frozenset(NUMPY_DTYPES) | {"BYTES"}
PREDICT, PREDICT_PROBA = "predict", "predict_proba"
_NUMBERS = frozenset({int, float})
# The Python types JSON `data` may hold for each kind of datatype.
_JSON_TYPES = {"BOOL": frozenset({bool}), "BYTES": frozenset({str})}


@dataclass
class _Tensor:
    name: str
    shape: list[int]
    datatype: str
    values: np.ndarray | list[Any]  # flat: float64 for numeric datatypes, else Python values


@dataclass
class _Outputs:
    """What the answer holds: (output name, as binary data) in the order asked, and the id."""

    wanted: list[tuple[str, bool]]
    body_id: str | None


class OipCodec:
    """One inference request's codec; `header_length` is its Inference-Header-Content-Length."""

    def __init__(self, header_length: str | None = None) -> None:
        self._header_length = header_length

    def parse(self, raw: bytes) -> tuple[Any, str | None]:
        text, binary = split_body(raw, self._header_length)
        body = loads(text)
        body_id = body.get("id") if isinstance(body, dict) else None
        named = body_id if isinstance(body_id, str) and body_id else None
        return (body, binary), named

    def body_object(self, parsed: Any) -> Any:
        return parsed[0]

    def decode(self, parsed: Any, model: ServedModel) -> Decoded:
        body, binary = parsed
        if not isinstance(body, dict):
            raise InputError("inference request must be a JSON object with 'inputs'")
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InputError("'inputs' must be a non-empty list of input tensors")
        tensors = _input_tensors(inputs, binary)
        if len(tensors) == 1:
            rows = _rows_from_matrix(tensors[0], model.features)
        else:
            rows = _rows_from_columns(tensors, model.features)
        wanted = _wanted_outputs(body, model)
        body_id = body.get("id")
        return Decoded(
            rows,
            probabilities=any(name == PREDICT_PROBA for name, _ in wanted),
            context=_Outputs(wanted, body_id if isinstance(body_id, str) and body_id else None),
        )

    def encode(self, answer: Answer) -> Encoded:
        context: _Outputs = answer.decoded.context
        prediction = answer.prediction
        outputs: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for name, binary in context.wanted:
            if name == PREDICT:
                values: Any = prediction.predictions
                shape, datatype = [len(values)], _datatype(values)
            elif prediction.probabilities is not None:
                values = prediction.probabilities
                shape, datatype = [len(values), len(values[0]) if values else 0], "FP64"
            else:
                continue
            output: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
            if binary:
                chunk = tensor_bytes(
                    np.asarray(values, dtype=np.float64) if name == PREDICT_PROBA else values,
                    datatype,
                )
                output["parameters"] = {"binary_data_size": len(chunk)}
                chunks.append(chunk)
            else:
                output["data"] = _json_data(values, datatype, flatten=name == PREDICT_PROBA)
            outputs.append(output)
        header = dumps(
            {
                "model_name": answer.model.name,
                "model_version": answer.model.version,
                "id": context.body_id or answer.request_id,
                "parameters": {},
                "outputs": outputs,
            }
        )
        if not chunks:
            return Encoded(header, "application/json")
        return Encoded(header + b"".join(chunks), MEDIA_TYPE, {BINARY_HEADER: str(len(header))})


def metadata(model: ServedModel) -> dict[str, Any]:
    """The model metadata response: one [-1, F] input tensor and the outputs it can produce."""
    features = model.features
    input_type = "BYTES" if features.kinds and STRING in features.kinds else "FP64"
    outputs = [{"name": PREDICT, "datatype": _datatype(model.classes or []), "shape": [-1]}]
    if model.has_proba:
        outputs.append(
            {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(model.classes or [])]}
        )
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "sklearn_sklearn" if model.flavor == "sklearn" else "mlflow_pyfunc",
        "inputs": [
            {"name": "input-0", "datatype": input_type, "shape": [-1, features.count or -1]}
        ],
        "outputs": outputs,
    }


def _input_tensors(inputs: list[Any], binary: memoryview) -> list[_Tensor]:
    """Each input checked, its values taken from `data` or from the binary data in order."""
    tensors: list[_Tensor] = []
    offset = 0
    for index, item in enumerate(inputs):
        tensor, size = _input_tensor(item, index, binary[offset:])
        offset += size
        tensors.append(tensor)
    if offset != len(binary):
        raise InputError(
            f"the body has {len(binary) - offset} bytes of binary data that no input's "
            "binary_data_size accounts for"
        )
    return tensors


def _input_tensor(item: Any, index: int, binary: memoryview) -> tuple[_Tensor, int]:
    """The tensor, and how many bytes of binary data it took."""
    if not isinstance(item, dict):
        raise InputError(f"inputs[{index}] must be an object with name, shape, datatype and data")
    for key in ("name", "shape", "datatype"):
        if key not in item:
            raise InputError(f"inputs[{index}] is missing '{key}'")
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    if not isinstance(name, str):
        raise InputError(f"inputs[{index}].name must be a string")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InputError(f"input '{name}': shape must be a list of non-negative integers")
    if datatype not in DATATYPES:
        raise InputError(
            f"input '{name}': unknown datatype {datatype!r} (one of {', '.join(sorted(DATATYPES))})"
        )
    count = math.prod(shape)
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InputError(f"input '{name}': parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in item:
            raise InputError(f"input '{name}': send either 'data' or binary_data_size, not both")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > len(binary):
            raise InputError(
                f"input '{name}': binary_data_size {size!r} does not fit the {len(binary)} "
                f"bytes of binary data left in the body (is {BINARY_HEADER} set?)"
            )
        values = tensor_values(binary[:size], datatype, count, name)
        if datatype in NUMERIC_TYPES:
            values = values.astype(np.float64, copy=False)
        elif datatype == "BOOL":  # checked like JSON booleans: no model feature takes them
            values = values.tolist()
        return _Tensor(name, shape, datatype, values), size
    if "data" not in item:
        raise InputError(f"inputs[{index}] is missing 'data'")
    data = item["data"]
    if not isinstance(data, list):
        raise InputError(f"input '{name}': data must be a list")
    flat = _flatten(data, name)
    if len(flat) != count:
        raise InputError(
            f"input '{name}': shape {shape} needs {count} values, data has {len(flat)}"
        )
    return _Tensor(name, shape, datatype, _json_values(flat, datatype, name)), 0


def _flatten(data: list[Any], name: str) -> list[Any]:
    """Nested lists → one flat list, a level at a time (each level flattened in C)."""
    while data and type(data[0]) is list:
        if not all(type(item) is list for item in data):
            raise InputError(f"input '{name}': data mixes lists and values at one level")
        data = list(chain.from_iterable(data))
    return data


def _json_values(flat: list[Any], datatype: str, name: str) -> np.ndarray | list[Any]:
    """JSON values checked against the datatype in one scan; numbers become one float64 array."""
    allowed = _JSON_TYPES.get(datatype, _NUMBERS)
    if not set(map(type, flat)) <= allowed:
        for position, value in enumerate(flat):
            if type(value) not in allowed:
                raise InputError(
                    f"input '{name}': value {value!r} at position {position} is not {datatype}"
                )
    if datatype in NUMERIC_TYPES:
        try:
            return np.array(flat, dtype=np.float64)
        except OverflowError:
            raise InputError(f"input '{name}': an integer is too large for {datatype}") from None
    return flat


def _rows_from_matrix(tensor: _Tensor, features: FeatureSpec) -> Rows:
    shape, values = tensor.shape, tensor.values
    if len(shape) == 1:
        count, width = (len(values), 1) if features.count == 1 else (1, len(values))
        if not len(values):
            count = 0
    elif len(shape) == 2:
        count, width = shape
    else:
        raise InputError(f"input '{tensor.name}': shape must be [rows, features], got {shape}")
    if isinstance(values, np.ndarray):
        return checked_matrix(values.reshape(count, width), features)
    if count == 0:
        raise InputError("empty batch: the input tensor has no rows")
    rows = [values[i * width : (i + 1) * width] for i in range(count)]
    return rows_from_lists(rows, features, key="inputs")


def _rows_from_columns(tensors: list[_Tensor], features: FeatureSpec) -> Rows:
    for tensor in tensors:
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InputError(
                f"input '{tensor.name}': with one input per feature each must have shape "
                f"[rows] or [rows, 1], got {tensor.shape}"
            )
    lengths = {t.name: t.shape[0] for t in tensors}
    if len(set(lengths.values())) > 1:
        raise InputError(f"inputs have different numbers of rows: {lengths}")
    by_name = {t.name: t for t in tensors}
    if len(by_name) != len(tensors):
        raise InputError("two inputs have the same name")
    if features.names is not None:
        missing = [n for n in features.names if n not in by_name]
        unknown = sorted(set(by_name) - set(features.names))
        if missing:
            raise InputError(f"missing inputs for features: {', '.join(missing)}")
        if unknown:
            raise InputError(f"unknown inputs: {', '.join(unknown)}")
        ordered = [by_name[n] for n in features.names]
    else:
        ordered = tensors
    columns = [t.values for t in ordered]
    if all(isinstance(c, np.ndarray) for c in columns):
        return checked_matrix(np.column_stack(columns), features)
    listed = [c.tolist() if isinstance(c, np.ndarray) else c for c in columns]
    rows = [list(row) for row in zip(*listed, strict=True)]
    if not rows:
        raise InputError("empty batch: the input tensor has no rows")
    return rows_from_lists(rows, features, key="inputs")


def _wanted_outputs(body: dict[str, Any], model: ServedModel) -> list[tuple[str, bool]]:
    """The outputs to answer with, in the order asked, each as binary data or not."""
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InputError("'parameters' must be an object")
    all_binary = parameters.get("binary_data_output", False)
    if not isinstance(all_binary, bool):
        raise InputError("parameter 'binary_data_output' must be true or false")
    available = [PREDICT, PREDICT_PROBA] if model.has_proba else [PREDICT]
    requested = body.get("outputs")
    if requested is None:
        return [(name, all_binary) for name in available]
    if not isinstance(requested, list):
        raise InputError("'outputs' must be a list of {\"name\": ...} objects")
    wanted: dict[str, bool] = {}
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in available:
            raise InputError(
                f"unknown output {name!r}; this model produces: {', '.join(sorted(available))}"
            )
        options = item.get("parameters") or {}
        if not isinstance(options, dict):
            raise InputError(f"output '{name}': parameters must be an object")
        if options.get("classification"):
            raise InputError(
                f"output '{name}': the classification extension is not supported; "
                f"ask for '{PREDICT_PROBA}' for the probability of every class"
            )
        binary = options.get("binary_data", all_binary)
        if not isinstance(binary, bool):
            raise InputError(f"output '{name}': binary_data must be true or false")
        wanted.setdefault(name, binary)
    return list(wanted.items())


def _datatype(values: list[Any]) -> str:
    kinds = set(map(type, values))
    if not kinds:
        return "FP64"
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int}:
        return "INT64"
    if kinds <= _NUMBERS:
        return "FP64"
    return "BYTES"


def _json_data(values: list[Any], datatype: str, *, flatten: bool) -> list[Any]:
    if flatten:
        return list(chain.from_iterable(values))
    if datatype == "BYTES":
        return [v if isinstance(v, str) else str(v) for v in values]
    return values
