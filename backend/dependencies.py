"""FastAPI dependencies: the settings and DB session of the running app."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from mlops_core.database import session_factory
from mlops_core.settings import Settings


def get_app_settings(request: Request) -> Settings:
    """The Settings the app was created with (tests pass their own)."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A DB session per request, closed afterwards; routes commit explicitly."""
    session = session_factory(request.app.state.settings.database_url)()
    try:
        yield session
    finally:
        session.close()
