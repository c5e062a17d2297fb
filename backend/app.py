"""The backend's FastAPI application: control plane of the platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from mlops_core.database import upgrade_database
from mlops_core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` defaults to the environment's."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade_database(settings.database_url)
        async with AsyncExitStack() as stack:
            # Background services (re-queue loop, log fan-out, ...) register here.
            for start in app.state.background_services:
                await stack.enter_async_context(start(app))
            yield

    app = FastAPI(title="notebook-mlops", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.background_services = []
    return app
