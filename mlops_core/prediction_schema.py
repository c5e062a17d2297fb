"""The prediction request body as an OpenAPI `requestBody`, for the backend and the model server.

Both read the body themselves (size cap first, then the shapes of model_server/request_rows.py),
so FastAPI cannot derive it from a model; declaring it keeps the interactive docs and client
generators (and the schema fuzzer in the test suite) aware that a JSON body is expected. The
model server's Open Inference Protocol routes declare theirs with the same `json_request_body`.
"""

from __future__ import annotations

from typing import Any, Final

_VALUE: Final = {"anyOf": [{"type": "number"}, {"type": "string"}]}
_ROWS: Final = {
    "type": "array",
    "minItems": 1,
    "items": {"anyOf": [{"type": "array", "items": _VALUE}, {"type": "object"}]},
}


def json_request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A route's `openapi_extra` declaring a required JSON body of `schema` (it reads it itself)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


PREDICT_REQUEST_BODY: Final[dict[str, Any]] = json_request_body(
    {
        "type": "object",
        "description": (
            "Exactly one of: `data` or `instances` (rows as lists of feature values, "
            "or objects keyed by feature name), `features` (one row, or several), "
            "`records` (objects keyed by feature name). Numbers must be finite."
        ),
        "properties": {
            "data": _ROWS,
            "instances": _ROWS,
            "features": {"anyOf": [_ROWS, {"type": "array", "items": _VALUE}]},
            "records": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        },
        "example": {"data": [[5.1, 3.5, 1.4, 0.2]]},
    }
)
