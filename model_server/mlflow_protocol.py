"""MLflow's scoring protocol, so that a client of `mlflow models serve` switches by a URL.

`POST /invocations` asks the model when this server serves exactly one (as `mlflow models serve`
always does); with several, it answers 404 naming them, and `POST /models/{name}/invocations`
names the one to ask. `GET /ping` answers 200 once the served versions are loaded (503 before),
`GET /version` the MLflow version, as MLflow's server does (`/health` is the server's own probe).
Inference runs in the data plane with model_server/mlflow_codec.py; errors take MLflow's shape,
`{"error_code": ..., "message": ...}`, with the status the data plane gives the failure.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from mlflow.version import VERSION
from starlette.responses import Response

from mlops_core.prediction_log import REQUEST_ID_HEADER
from mlops_core.prediction_schema import json_request_body
from model_server.data_plane import DataPlane
from model_server.direct_route import DirectRoute
from model_server.http_io import answer, body_reader, error_answer
from model_server.inference_errors import Failure, InferenceError
from model_server.mlflow_codec import DATAFRAME_RECORDS, DATAFRAME_SPLIT, INSTANCES, MlflowCodec

# MLflow's error codes (its databricks_pb2 names) for each failure.
_ERROR_CODES = {
    Failure.UNAUTHORIZED: "UNAUTHENTICATED",
    Failure.NOT_SERVED: "RESOURCE_DOES_NOT_EXIST",
    Failure.NOT_LOADED: "TEMPORARILY_UNAVAILABLE",
    Failure.UNAVAILABLE: "TEMPORARILY_UNAVAILABLE",
}
_ROWS = {
    "type": "array",
    "minItems": 1,
    "items": {"anyOf": [{"type": "array"}, {"type": "object"}]},
}
INVOCATIONS_BODY = json_request_body(
    {
        "type": "object",
        "description": "Exactly one of `dataframe_split`, `dataframe_records`, `instances`, "
        "`inputs` (MLflow's scoring protocol); numbers must be finite.",
        "properties": {
            DATAFRAME_SPLIT: {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "data": _ROWS,
                },
            },
            DATAFRAME_RECORDS: {"type": "array", "minItems": 1, "items": {"type": "object"}},
            INSTANCES: {"anyOf": [_ROWS, {"type": "object"}]},
            "inputs": {"anyOf": [_ROWS, {"type": "object"}]},
        },
        "example": {"inputs": [[5.1, 3.5, 1.4, 0.2]]},
    }
)

# Every endpoint takes the request and returns a Response: direct routes throughout.
router = APIRouter(tags=["mlflow-scoring"], route_class=DirectRoute)


def _plane(request: Request) -> DataPlane:
    return request.app.state.data_plane


async def _invoke(request: Request, name: str | None) -> Response:
    plane = _plane(request)
    headers = request.headers
    try:
        if name is None:
            plane.authorize(headers.get("authorization"))
            name = plane.only_model()
        encoded = await plane.infer(
            name,
            None,
            MlflowCodec(headers.get("content-type")),
            body_reader(request, plane.settings.predict_max_body_bytes),
            authorization=headers.get("authorization"),
            presented_id=headers.get(REQUEST_ID_HEADER),
            headers=headers,
        )
    except InferenceError as exc:
        code = _ERROR_CODES.get(exc.failure, "BAD_REQUEST")
        return error_answer(exc, {"error_code": code, "message": exc.message})
    return answer(encoded)


@router.post("/invocations", openapi_extra=INVOCATIONS_BODY)
async def invocations(request: Request) -> Response:
    return await _invoke(request, None)


@router.post("/models/{name}/invocations", openapi_extra=INVOCATIONS_BODY)
async def model_invocations(request: Request, name: str) -> Response:
    return await _invoke(request, name)


@router.get("/ping")
async def ping(request: Request) -> Response:
    ready = _plane(request).is_ready
    return Response("\n", status_code=200 if ready else 503, media_type="application/json")


@router.get("/version")
async def version(request: Request) -> Response:
    return Response(VERSION, media_type="application/json")
