"""The Open Inference Protocol (KServe V2) over HTTP/REST, so KServe and Triton clients work.

Routes only: inference runs in the data plane (model_server/data_plane.py) with the protocol's
codec (model_server/oip_codec.py), binary tensors included (model_server/binary_tensors.py).
Errors follow the protocol: `{"error": "..."}` with the status the data plane gives the failure.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse
from starlette.responses import Response

from mlops_core.prediction_log import REQUEST_ID_HEADER
from mlops_core.prediction_schema import json_request_body
from model_server.binary_tensors import EXTENSION, HEADER_LENGTH
from model_server.data_plane import DataPlane
from model_server.direct_route import DirectRoute
from model_server.http_io import answer, body_reader, error_answer
from model_server.inference_errors import Failure, InferenceError
from model_server.oip_codec import DATATYPES, OipCodec, metadata

SERVER_NAME = "notebook-mlops-model-server"
SERVER_VERSION = "0.1.0"

# The inference request as an OpenAPI requestBody (the route reads the body itself, size cap
# first), so that docs, client generators and the test suite's schema fuzzer know its shape.
# A tensor's values are its `data`, or binary data after the JSON (`binary_data_size`).
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "data": {"type": "array"},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
    },
}
INFER_REQUEST_BODY = json_request_body(
    {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {"binary_data_output": {"type": "boolean"}},
            },
            "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data": {"type": "boolean"}},
                        },
                    },
                },
            },
        },
    }
)

router = APIRouter(prefix="/v2", tags=["open-inference-protocol"])
# Inference itself: a direct route (model_server/direct_route.py).
infer_router = APIRouter(prefix="/v2", tags=["open-inference-protocol"], route_class=DirectRoute)


def _plane(request: Request) -> DataPlane:
    return request.app.state.data_plane


def _error(error: InferenceError) -> Response:
    return error_answer(error, {"error": error.message})


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": [EXTENSION]}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def server_ready(request: Request) -> Response:
    ready = _plane(request).is_ready
    return ORJSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    """The token is checked first, so that a caller without it cannot tell served names apart."""
    plane = _plane(request)
    try:
        plane.authorize(request.headers.get("authorization"))
        return ORJSONResponse(metadata(plane.served(name, version)))
    except InferenceError as exc:
        return _error(exc)


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    plane = _plane(request)
    try:
        plane.authorize(request.headers.get("authorization"))
        plane.served(name, version)
    except InferenceError as exc:
        if exc.failure is Failure.NOT_LOADED:
            return ORJSONResponse({"name": name, "ready": False}, status_code=exc.status)
        return _error(exc)
    return ORJSONResponse({"name": name, "ready": True})


@infer_router.post("/models/{name}/infer", openapi_extra=INFER_REQUEST_BODY)
@infer_router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_REQUEST_BODY)
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    plane = _plane(request)
    headers = request.headers
    try:
        encoded = await plane.infer(
            name,
            version,
            OipCodec(headers.get(HEADER_LENGTH)),
            body_reader(request, plane.settings.predict_max_body_bytes),
            authorization=headers.get("authorization"),
            presented_id=headers.get(REQUEST_ID_HEADER),
            headers=headers,
        )
    except InferenceError as exc:
        return _error(exc)
    return answer(encoded)
