"""422 responses that name the field and never echo what was sent.

FastAPI's default 422 body repeats the offending input, and for a missing field that input is
the whole request body: a `github_token` or `webhook_secret` sent beside a typo would come back
in the response (and land in any proxy's log). The handler keeps FastAPI's shape
(`detail: [{type, loc, msg}]`) without the `input`.
"""

from __future__ import annotations

from fastapi import HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Render a RequestValidationError like FastAPI does, minus the submitted values."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {key: value for key, value in error.items() if key not in {"input", "url"}}
        for error in exc.errors()
    ]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={"detail": jsonable_encoder(errors)},
    )


def field_error(field: str, message: str) -> HTTPException:
    """A 422 in the same shape as FastAPI's, for checks that need the app's settings."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"type": "value_error", "loc": ["body", field], "msg": message}],
    )
