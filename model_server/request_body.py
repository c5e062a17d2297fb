"""Reading a JSON request body with a size limit that holds even without Content-Length."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from mlops_core.request_limits import BodyTooLarge, read_capped_body


class BodyError(Exception):
    """The body is too large (413), empty or not JSON (400)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


async def read_json_body(request: Request, limit: int) -> Any:
    """The parsed JSON body; refuses more than `limit` bytes before reading them all."""
    try:
        raw = await read_capped_body(request, limit, "PREDICT_MAX_BODY_BYTES")
    except BodyTooLarge as exc:
        raise BodyError(413, str(exc)) from None
    if not raw.strip():
        raise BodyError(400, "request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(400, f"request body is not valid JSON: {exc}") from None
