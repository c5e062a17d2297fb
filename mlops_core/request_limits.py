"""Limits on request bodies, shared by the backend and the model server.

The size cap holds even without Content-Length (chunked uploads): the stream is counted while it
is read, so an oversized body is refused before it is held in memory whole.

The depth cap (JSON_MAX_DEPTH) is checked on the raw bytes as they arrive, before any parser
sees them: Python's json module recurses once per nested array or object, so JSON nested a few
thousand levels deep would otherwise end in a RecursionError (a 500) wherever a body is parsed.
One ASGI middleware covers every endpoint, FastAPI's own body parsing included.
"""

from __future__ import annotations

import re

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Outside strings: a whole string, a bracket, or the opening quote of a string that runs past the
# end of the piece (the first alternative fails there). Every opening quote matches, so matching
# never restarts inside a string, and a piece costs time linear in its size.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}"]', re.DOTALL)
# The rest of a string from inside it, through its closing quote (escapes skipped).
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_QUOTE = ord('"')
_OPENING = frozenset(b"[{")
# The bytes that matter to depth, as a table: +1 opens, -1 closes, 2 a quote, 0 the rest.
_KIND = np.zeros(256, dtype=np.int8)
_KIND[list(b"[{")] = 1
_KIND[list(b"]}")] = -1
_KIND[_QUOTE] = 2
# Pieces at least this long take the vectorized path (below it, numpy's set-up costs more).
_VECTOR_BYTES = 2048
# Larger body pieces are measured in a worker thread, off the event loop (a webhook delivery may
# be 25 MB; measuring it costs about what parsing it does). Below, the hop costs more than
# measuring (a 22 KB prediction body takes ~0.08 ms).
_INLINE_BYTES = 64 * 1024


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


class JsonTooDeep(HTTPException):
    """A body nests arrays and objects deeper than the limit: 400, before it is parsed.

    An HTTPException because FastAPI passes those through unchanged when they are raised while it
    reads a body; anything else raised there becomes a generic "error parsing the body".
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            400, f"JSON is nested more than {limit} levels deep (the limit, JSON_MAX_DEPTH)"
        )


class JsonDepthGauge:
    """Follows the nesting depth of JSON text fed to it in pieces of any size.

    Brackets inside strings do not count; a piece may end anywhere, even inside an escape. Only
    structure is followed, not validity: the parser that reads the body afterwards judges that.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.depth = 0
        self._in_string = False
        self._escaped = False  # the previous piece ended with an escaping backslash

    def feed(self, piece: bytes) -> None:
        """Account for the next piece; JsonTooDeep as soon as the depth exceeds the limit."""
        if not piece:
            return
        if len(piece) >= _VECTOR_BYTES and not self._in_string and b"\\" not in piece:
            self._feed_without_escapes(piece)
        else:
            self._feed_scanning(piece)

    def _feed_without_escapes(self, piece: bytes) -> None:
        """The common case (numbers and plain strings), with numpy instead of a Python loop
        over every bracket: a 1,000-row body has 2,000 of them, ~0.5 ms scanned one by one.

        With no backslash, every quote opens or closes a string, so a byte is inside a string
        exactly when an odd number of quotes precede it (counting itself for an opening quote).
        """
        kinds = _KIND[np.frombuffer(piece, dtype=np.uint8)]
        marks = kinds[kinds != 0].astype(np.int32)  # the brackets and quotes, in order
        if not marks.size:
            return
        quote = marks == 2
        quotes = np.cumsum(quote)
        steps = np.where(quote | (quotes % 2 == 1), 0, marks)
        # The depth after each mark; a close at depth 0 is ignored, as in the scan below.
        running = self.depth + np.cumsum(steps)
        depth = running - np.minimum(np.minimum.accumulate(running), 0)
        if int(depth.max()) > self.limit:
            raise JsonTooDeep(self.limit)
        self.depth = int(depth[-1])
        self._in_string = bool(quotes[-1] % 2)
        self._escaped = False

    def _feed_scanning(self, piece: bytes) -> None:
        position = 0
        if self._in_string:
            position = 1 if self._escaped else 0
            rest = _STRING_REST.match(piece, position)
            if rest is None:  # the string goes on in the next piece
                self._escaped = _ends_in_escape(piece, position)
                return
            position = rest.end()
            self._in_string = False
        depth = self.depth
        for token in _TOKEN.finditer(piece, position):
            first = piece[token.start()]
            if first == _QUOTE:
                if token.end() - token.start() == 1:  # a string that goes on in the next piece
                    self._in_string = True
                    self._escaped = _ends_in_escape(piece, token.end())
                    break
            elif first in _OPENING:
                depth += 1
                if depth > self.limit:
                    raise JsonTooDeep(self.limit)
            elif depth:
                depth -= 1
        self.depth = depth


def _ends_in_escape(piece: bytes, start: int) -> bool:
    """Whether `piece`, inside a string from `start` on, ends with a backslash escaping on."""
    backslashes = len(piece) - max(len(piece.rstrip(b"\\")), start)
    return backslashes % 2 == 1


def check_json_depth(text: str | bytes, limit: int) -> None:
    """JsonTooDeep when `text` nests deeper than `limit` (for JSON found inside another body)."""
    JsonDepthGauge(limit).feed(text.encode() if isinstance(text, str) else text)


class JsonDepthLimit:
    """ASGI middleware: every HTTP request body is measured by a JsonDepthGauge as it is received.

    The check runs inside the app's `receive`, so whichever code reads the body (FastAPI's
    parsing, a capped reader, a proxy) meets JsonTooDeep on the piece that goes too deep. Bodies
    that are not JSON rarely hold a run of bare brackets; one that does is refused like JSON.
    A body that says its JSON ends early (the Open Inference Protocol's binary tensors follow
    the JSON its `Inference-Header-Content-Length` header measures) is measured that far only.
    """

    def __init__(self, app: ASGIApp, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gauge = JsonDepthGauge(self.max_depth)
        json_bytes = _json_length(scope)
        received = 0

        async def measured_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                piece = message.get("body", b"")
                if json_bytes is not None:
                    piece = piece[: max(json_bytes - received, 0)]
                    received += len(message.get("body", b""))
                if len(piece) > _INLINE_BYTES:
                    await run_in_threadpool(gauge.feed, piece)
                else:
                    gauge.feed(piece)
            return message

        await self.app(scope, measured_receive, send)


# The header of the Open Inference Protocol's binary tensor extension: the JSON's length.
_JSON_LENGTH_HEADER = b"inference-header-content-length"


def _json_length(scope: Scope) -> int | None:
    """How many leading bytes of the body are JSON, when a header says so."""
    for name, value in scope.get("headers", ()):
        if name == _JSON_LENGTH_HEADER and value.strip().isdigit():
            return int(value)
    return None
