"""The Open Inference Protocol (KServe V2) over HTTP/REST, so KServe and MLServer clients work.

A model's inputs can be sent either as one tensor of shape [N, F] (any name) or as one tensor per
feature, named after the feature, each of shape [N] or [N, 1] (MLServer's pandas convention).
Outputs are `predict` and, for classifiers, `predict_proba`. Errors follow the protocol:
`{"error": "..."}` with a 4xx status.
"""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mlops_core.access_tokens import CHALLENGE
from mlops_core.prediction_log import REQUEST_ID_HEADER, ErrorReason
from mlops_core.prediction_log import request_id as new_request_id
from mlops_core.prediction_schema import json_request_body
from model_server.access import predict_refusal
from model_server.feature_spec import STRING, FeatureSpec
from model_server.loaded_model import LoadedModel
from model_server.metrics import record_error, record_prediction
from model_server.model_process import ModelProcessError
from model_server.model_store import ModelStore, why_not_served
from model_server.request_body import BodyError, read_json_body
from model_server.request_rows import InputError, rows_from_lists

SERVER_NAME = "notebook-mlops-model-server"
SERVER_VERSION = "0.1.0"

NUMERIC_TYPES = {
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
}
DATATYPES = NUMERIC_TYPES | {"BOOL", "BYTES"}

# The inference request as an OpenAPI requestBody (the route reads the body itself, size cap
# first), so that docs, client generators and the test suite's schema fuzzer know its shape.
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "data": {"type": "array"},
    },
}
INFER_REQUEST_BODY = json_request_body(
    {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
            "outputs": {
                "type": "array",
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        },
    }
)

router = APIRouter(prefix="/v2", tags=["open-inference-protocol"])


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _failed(
    request: Request,
    model: LoadedModel,
    request_id: str,
    reason: ErrorReason,
    status: int,
    message: str,
) -> JSONResponse:
    """Count a failed request to a served version, log it (the model page's error rate per
    version), and answer the protocol's error under the request's id."""
    record_error(model.name, reason)
    request.app.state.prediction_log.record_error(
        request_id, model.name, model.version, reason, status
    )
    return JSONResponse(
        {"error": message}, status_code=status, headers={REQUEST_ID_HEADER: request_id}
    )


def _store(request: Request) -> ModelStore:
    return request.app.state.store


def _resolve(request: Request, name: str, version: str | None) -> LoadedModel | JSONResponse:
    """The model a per-model call is about, or the protocol's error answer.

    The token is checked first, so that a caller without it cannot tell served names apart.
    """
    refused = predict_refusal(request)
    if refused is not None:
        return JSONResponse({"error": refused.http_detail}, status_code=401, headers=CHALLENGE)
    model = _store(request).get(name)
    if model is None:
        loading = not request.app.state.sync.ready.is_set()
        return _error(*why_not_served(_store(request), name, loading=loading))
    if version is not None and version != model.version:
        failure = _store(request).failure(name)
        if failure is not None and failure.version == version:
            # The registry serves it, this replica could not load it: unavailable, not unknown.
            return _error(503, f"model '{name}' version {version} is not loadable: {failure.error}")
        return _error(
            404, f"model '{name}' version {version} is not served here (serving {model.version})"
        )
    return model


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": []}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def server_ready(request: Request) -> JSONResponse:
    ready = request.app.state.sync.ready.is_set()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(request: Request, name: str, version: str | None = None) -> Any:
    model = _resolve(request, name, version)
    if isinstance(model, JSONResponse):
        return model
    return metadata(model)


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str | None = None) -> Any:
    model = _resolve(request, name, version)
    if isinstance(model, JSONResponse):
        if model.status_code == 503:
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        return model
    return {"name": name, "ready": True}


@router.post("/models/{name}/infer", openapi_extra=INFER_REQUEST_BODY)
@router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_REQUEST_BODY)
async def infer(request: Request, name: str, version: str | None = None) -> Any:
    resolved = _resolve(request, name, version)
    if isinstance(resolved, JSONResponse):
        return resolved
    with resolved.hold() as model:
        presented = request.headers.get(REQUEST_ID_HEADER)
        try:
            body = await read_json_body(request, request.app.state.settings.predict_max_body_bytes)
        except BodyError as exc:
            request_id = new_request_id(presented)
            return _failed(
                request, model, request_id, ErrorReason.BAD_INPUT, exc.status_code, exc.message
            )
        body_id = body.get("id") if isinstance(body, dict) else None
        request_id = new_request_id(body_id if isinstance(body_id, str) and body_id else presented)
        try:
            rows, wanted = parse_infer_request(body, model)
        except InputError as exc:
            return _failed(request, model, request_id, ErrorReason.BAD_INPUT, 400, str(exc))
        model.requests += 1
        started = time.perf_counter()
        try:
            result = await model.predict_batched(rows)
        except ModelProcessError as exc:
            message = f"model {name} version {model.version} is unavailable: {exc}"
            return _failed(request, model, request_id, ErrorReason.UNAVAILABLE, 503, message)
        except Exception as exc:
            message = f"the model could not predict these inputs: {exc}"
            return _failed(request, model, request_id, ErrorReason.MODEL_ERROR, 400, message)
        seconds = time.perf_counter() - started
        record_prediction(model.name, model.version, seconds)
    request.app.state.prediction_log.record(
        request_id,
        model.name,
        model.version,
        model.features.names,
        rows,
        result.predictions,
        result.probabilities,
        round(seconds * 1000, 3),
    )
    outputs = []
    if "predict" in wanted:
        outputs.append(_tensor("predict", result.predictions, [len(result.predictions)]))
    if "predict_proba" in wanted and result.probabilities is not None:
        flat = [p for row in result.probabilities for p in row]
        shape = [len(result.probabilities), len(result.probabilities[0])]
        outputs.append(_tensor("predict_proba", flat, shape, "FP64"))
    return JSONResponse(
        {
            "model_name": model.name,
            "model_version": model.version,
            "id": body_id if isinstance(body_id, str) and body_id else request_id,
            "parameters": {},
            "outputs": outputs,
        },
        headers={REQUEST_ID_HEADER: request_id},
    )


def metadata(model: LoadedModel) -> dict[str, Any]:
    """The model metadata response: one [-1, F] input tensor and the outputs it can produce."""
    features = model.features
    input_type = "BYTES" if features.kinds and STRING in features.kinds else "FP64"
    outputs = [{"name": "predict", "datatype": _datatype(model.classes or []), "shape": [-1]}]
    if model.has_proba:
        outputs.append(
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(model.classes or [])]}
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


def parse_infer_request(body: Any, model: LoadedModel) -> tuple[list[list[Any]], set[str]]:
    """Validated rows and the set of requested output names."""
    if not isinstance(body, dict):
        raise InputError("inference request must be a JSON object with 'inputs'")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError("'inputs' must be a non-empty list of input tensors")
    tensors = [_input_tensor(item, index) for index, item in enumerate(inputs)]
    if len(tensors) == 1:
        rows = _rows_from_matrix(tensors[0], model.features)
    else:
        rows = _rows_from_columns(tensors, model.features)
    if not rows:
        raise InputError("empty batch: the input tensor has no rows")
    rows = rows_from_lists(rows, model.features, key="inputs")
    available = {"predict", "predict_proba"} if model.has_proba else {"predict"}
    requested = body.get("outputs")
    if requested is None:
        return rows, available
    if not isinstance(requested, list):
        raise InputError("'outputs' must be a list of {\"name\": ...} objects")
    wanted: set[str] = set()
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in available:
            raise InputError(
                f"unknown output {name!r}; this model produces: {', '.join(sorted(available))}"
            )
        wanted.add(name)
    return rows, wanted


class _Tensor:
    def __init__(self, name: str, shape: list[int], datatype: str, data: list[Any]) -> None:
        self.name, self.shape, self.datatype, self.data = name, shape, datatype, data


def _input_tensor(item: Any, index: int) -> _Tensor:
    if not isinstance(item, dict):
        raise InputError(f"inputs[{index}] must be an object with name, shape, datatype and data")
    for field in ("name", "shape", "datatype", "data"):
        if field not in item:
            raise InputError(f"inputs[{index}] is missing '{field}'")
    name, shape, datatype, data = item["name"], item["shape"], item["datatype"], item["data"]
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
    if not isinstance(data, list):
        raise InputError(f"input '{name}': data must be a list")
    flat = _flatten(data)
    expected = math.prod(shape)
    if len(flat) != expected:
        raise InputError(
            f"input '{name}': shape {shape} needs {expected} values, data has {len(flat)}"
        )
    for position, value in enumerate(flat):
        ok = (
            isinstance(value, bool)
            if datatype == "BOOL"
            else isinstance(value, str)
            if datatype == "BYTES"
            else isinstance(value, int | float) and not isinstance(value, bool)
        )
        if not ok:
            raise InputError(
                f"input '{name}': value {value!r} at position {position} is not {datatype}"
            )
    return _Tensor(name, shape, datatype, flat)


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _rows_from_matrix(tensor: _Tensor, features: FeatureSpec) -> list[list[Any]]:
    shape = tensor.shape
    if len(shape) == 1:
        if features.count == 1:
            return [[value] for value in tensor.data]
        return [tensor.data] if tensor.data else []
    if len(shape) != 2:
        raise InputError(f"input '{tensor.name}': shape must be [rows, features], got {shape}")
    rows, width = shape
    return [tensor.data[i * width : (i + 1) * width] for i in range(rows)]


def _rows_from_columns(tensors: list[_Tensor], features: FeatureSpec) -> list[list[Any]]:
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
    count = tensors[0].shape[0]
    return [[t.data[i] for t in ordered] for i in range(count)]


def _datatype(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    if not values:
        return "FP64"
    return "BYTES"


def _tensor(name: str, data: list[Any], shape: list[int], datatype: str | None = None) -> dict:
    datatype = datatype or _datatype(data)
    if datatype == "BYTES":
        data = [v if isinstance(v, str) else str(v) for v in data]
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}
