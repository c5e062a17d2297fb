"""The backend's token guards: one FastAPI dependency per kind of call, and the log WebSocket's.

Which token opens which guard is decided in `mlops_core.access_tokens` (shared with the model
server); this module applies it to requests: `Authorization: Bearer <token>` on REST calls, and
on the WebSocket, which browsers cannot give headers, also the `bearer` subprotocol or a
`?token=` query parameter. The webhook has its own guard (the repo's signature), and /health
and /ready stay open for probes.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Final
from urllib.parse import unquote_plus

from fastapi import Depends, HTTPException, Request, WebSocket, status

from backend.dependencies import SettingsDep, get_app_settings
from mlops_core.access_tokens import (
    ADMIN,
    BEARER_PROTOCOL,
    CHALLENGE,
    CLOSE_UNAUTHORIZED,
    METRICS,
    PREDICT,
    READ,
    TOKEN_QUERY_PARAM,
    Guard,
    actor,
    bearer_token,
    guard_tokens,
    open_warning,
    refusal,
    subprotocol_token,
)
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)

# The guards the dashboard's calls meet: when one is set, its pages offer the token prompt.
PAGE_GUARDS: Final = (ADMIN, READ, PREDICT)


def _check(request: Request, settings: Settings, guard: Guard) -> None:
    refused = refusal(settings, guard, bearer_token(request.headers.get("authorization")))
    if refused is not None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, refused.http_detail, headers=CHALLENGE)


def require_api_token(request: Request, settings: SettingsDep) -> None:
    """Calls that change state: the admin token (API_TOKEN), when set."""
    _check(request, settings, ADMIN)


def request_actor(request: Request, settings: SettingsDep) -> str:
    """Who asks for a state change: the name of the admin token sent (API_TOKENS), "api" for
    API_TOKEN or an open guard. Used beside require_api_token, which has let the call in."""
    return actor(settings, bearer_token(request.headers.get("authorization")))


ActorDep = Annotated[str, Depends(request_actor)]


def require_read_token(request: Request, settings: SettingsDep) -> None:
    """Reads: API_READ_TOKEN or the admin token, when API_READ_TOKEN is set."""
    _check(request, settings, READ)


def require_predict_token(request: Request, settings: SettingsDep) -> None:
    """Predictions: PREDICT_TOKEN or the admin token, when PREDICT_TOKEN is set."""
    _check(request, settings, PREDICT)


def require_metrics_token(request: Request, settings: SettingsDep) -> None:
    """/metrics: METRICS_TOKEN or the admin token, when METRICS_TOKEN is set."""
    _check(request, settings, METRICS)


def websocket_token(websocket: WebSocket) -> str | None:
    """The token a WebSocket client sent: a header (CLI), a subprotocol (browser), or the query."""
    header = websocket.headers.get("authorization")
    if header is not None:
        return bearer_token(header)
    offered = subprotocol_token(websocket.scope.get("subprotocols", []))
    if offered is not None:
        return offered
    return websocket.query_params.get(TOKEN_QUERY_PARAM)


async def accept_reader(websocket: WebSocket) -> bool:
    """Accept a log viewer; True when the read guard lets it in.

    A refused viewer is accepted and then closed with CLOSE_UNAUTHORIZED and the reason:
    a browser is told neither the HTTP status of a refused handshake nor its reason. The
    answer names the "bearer" subprotocol whenever it was offered (a browser drops a connection
    whose answer names none of its offers, so browsers offer "bearer" beside the token), and
    never the token itself.
    """
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=BEARER_PROTOCOL if BEARER_PROTOCOL in offered else None)
    settings = await get_app_settings(websocket)
    refused = refusal(settings, READ, websocket_token(websocket))
    if refused is None:
        return True
    await websocket.close(CLOSE_UNAUTHORIZED, refused.websocket_reason)
    return False


def page_tokens_required(settings: Settings) -> bool:
    """Whether any call the dashboard makes needs a token (its pages then show the prompt)."""
    return any(guard_tokens(settings, guard) for guard in PAGE_GUARDS)


def warn_if_open(settings: Settings) -> None:
    """Log, at start, every kind of call that anyone who reaches the backend may make."""
    warning = open_warning(settings, (ADMIN, READ, PREDICT, METRICS), "this backend")
    if warning is not None:
        logger.warning(warning)


# uvicorn logs each request's path with its query string (the access log, and WebSocket
# handshakes in uvicorn.error), and at debug level the WebSocket request's headers.
_QUERY: Final = re.compile(r"\?(\S*)")
_SECRET_HEADERS: Final = frozenset({"authorization", "sec-websocket-protocol"})
REDACTED: Final = "[redacted]"


def redact_token_query(text: str) -> str:
    """`text` with the value of every `token` query parameter replaced (names compared decoded,
    as the server reads them, so `tok%65n=` is caught too)."""

    def redact(match: re.Match[str]) -> str:
        pairs = match.group(1).split("&")
        for index, pair in enumerate(pairs):
            if unquote_plus(pair.partition("=")[0]) == TOKEN_QUERY_PARAM:
                pairs[index] = f"{TOKEN_QUERY_PARAM}={REDACTED}"
        return "?" + "&".join(pairs)

    return _QUERY.sub(redact, text)


class TokenRedactor(logging.Filter):
    """Keeps tokens out of uvicorn's logs: query tokens, and secret headers at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            if len(args) == 2 and str(args[0]).lower() in _SECRET_HEADERS:
                args = (args[0], REDACTED)
            record.args = tuple(redact_token_query(a) if isinstance(a, str) else a for a in args)
        return True


def install_token_redaction() -> None:
    """Add the redactor to uvicorn's loggers once per process (tests build many apps)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        target = logging.getLogger(name)
        if not any(isinstance(existing, TokenRedactor) for existing in target.filters):
            target.addFilter(TokenRedactor())
