"""Bearer-token guard for REST calls that change state.

One shared token (API_TOKEN) rather than users and roles: the platform is run by one team, and
the webhook has its own guard (the repo's signature). Reads stay open so that dashboards and
monitors need no credentials; without API_TOKEN everything is open, and the backend says so
loudly at start.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import Depends, HTTPException, Request, status

from backend.dependencies import get_app_settings
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require_api_token(request: Request, settings: Settings = Depends(get_app_settings)) -> None:
    """FastAPI dependency: 401 unless `Authorization: Bearer <API_TOKEN>` matches (when set)."""
    expected = configured_token(settings)
    if expected is None:
        return
    header = request.headers.get("authorization")
    if not header:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API token: send the header 'Authorization: Bearer <API_TOKEN>'",
            headers=_CHALLENGE,
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid API token: send the header 'Authorization: Bearer <API_TOKEN>'",
            headers=_CHALLENGE,
        )


def configured_token(settings: Settings) -> str | None:
    """The API token, or None when unset or empty (an empty token would guard nothing)."""
    if settings.api_token is None:
        return None
    return settings.api_token.get_secret_value() or None


def warn_if_open(settings: Settings) -> None:
    """Log, at start, that state-changing calls are unauthenticated when API_TOKEN is unset."""
    if configured_token(settings) is None:
        logger.warning(
            "API_TOKEN is not set: anyone who can reach this backend can register repos, "
            "trigger and cancel pipelines and change served models. Set API_TOKEN to require "
            "'Authorization: Bearer <token>' on those calls."
        )
