"""Reading a request body under a size cap, shared by the backend and the model server.

The cap holds even without Content-Length (chunked uploads): the stream is counted while it
is read, so an oversized body is refused before it is held in memory whole.
"""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The request body is over the limit; the message names the limit and its setting."""


async def read_capped_body(request: Request, limit: int, setting: str) -> bytes:
    """The raw body, or BodyTooLarge as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body is {declared} bytes; the limit is {limit} ({setting})")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes ({setting})")
    return bytes(body)
