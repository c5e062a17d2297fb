"""Reading a JSON request body with a size limit that holds even without Content-Length.

Numbers must be finite: Python's json module reads `NaN`, `Infinity` and `-Infinity` (and turns
`1e999` into infinity), none of which is JSON, and a model fed them answers NaN or fails deep
inside numpy. They are refused with a 422 naming the value instead.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request

from mlops_core.request_limits import BodyTooLarge, JsonTooDeep, read_capped_body


class BodyError(Exception):
    """The body is too large (413), empty, not JSON or too deep (400), or not finite (422)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class _NonFinite(ValueError):
    """A number that is not finite: `NaN`, `Infinity`, `-Infinity`, or one too large."""


def _refuse_constant(name: str) -> float:
    raise _NonFinite(f"{name} is not a number JSON allows; send finite numbers only")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"{text} is too large to be a finite number")
    return value


def parse_finite_json(raw: bytes | str) -> Any:
    """`json.loads`, refusing non-finite numbers with BodyError(422)."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NonFinite as exc:
        raise BodyError(422, f"request body has a non-finite number: {exc}") from None


async def read_json_body(request: Request, limit: int) -> Any:
    """The parsed JSON body; refuses more than `limit` bytes before reading them all.

    Its nesting depth was measured as it arrived (JsonDepthLimit); RecursionError stays caught
    for bodies the byte-level measure cannot follow (JSON in UTF-16 or UTF-32).
    """
    try:
        raw = await read_capped_body(request, limit, "PREDICT_MAX_BODY_BYTES")
    except BodyTooLarge as exc:
        raise BodyError(413, str(exc)) from None
    except JsonTooDeep as exc:
        raise BodyError(400, exc.detail) from None
    if not raw.strip():
        raise BodyError(400, "request body is empty; send a JSON object")
    try:
        return parse_finite_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BodyError(400, "request body is nested too deeply to be read") from None
