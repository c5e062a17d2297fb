"""The HTTP side of the data plane, shared by every protocol's routes.

Reading a prediction request's body under PREDICT_MAX_BODY_BYTES (the cap holds even without
Content-Length), and writing the data plane's answers and errors as responses. The reader is
handed to the data plane, which calls it once the request reached a served version, so that a
refused body is counted against that version; its refusals are InferenceErrors like any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mlops_core.request_limits import BodyTooLarge, JsonTooDeep, read_capped_body
from model_server.data_plane import Encoded
from model_server.inference_errors import Failure, InferenceError
from model_server.json_codec import dumps


def body_reader(request: Request, limit: int) -> Callable[[], Awaitable[bytes]]:
    """A coroutine function returning the raw body; refuses more than `limit` bytes before
    reading them all (413), and JSON nested deeper than JSON_MAX_DEPTH as it arrives (400)."""

    async def read() -> bytes:
        try:
            return await read_capped_body(request, limit, "PREDICT_MAX_BODY_BYTES")
        except BodyTooLarge as exc:
            raise InferenceError(Failure.TOO_LARGE, str(exc)) from None
        except JsonTooDeep as exc:
            raise InferenceError(Failure.MALFORMED, exc.detail) from None

    return read


def answer(encoded: Encoded) -> Response:
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


def error_answer(error: InferenceError, content: dict[str, Any]) -> Response:
    """An error in a protocol's own shape (`content`), with the one status its failure has."""
    return Response(
        dumps(content),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )
