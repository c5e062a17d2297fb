"""The backend's FastAPI application: control plane of the platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from backend.auth import install_token_redaction, warn_if_open
from backend.log_fanout import log_fanout_service
from backend.pages import mount_pages
from backend.pipeline_queue import install_pipeline_queue
from backend.routes import health, logs, models, pipelines, repos, webhooks
from backend.validation_errors import validation_error_handler
from mlops_core.database import upgrade_database
from mlops_core.request_limits import JsonDepthLimit
from mlops_core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` defaults to the environment's."""
    settings = settings or get_settings()
    install_token_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade_database(settings.database_url)
        warn_if_open(settings)
        async with AsyncExitStack() as stack:
            # Background services (re-queue loop, log fan-out, ...) register here.
            for start in app.state.background_services:
                await stack.enter_async_context(start(app))
            yield

    app = FastAPI(title="notebook-mlops", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.background_services = []
    install_pipeline_queue(app)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(JsonDepthLimit, max_depth=settings.json_max_depth)
    for router in (health.router, repos.router, pipelines.router, webhooks.router):
        app.include_router(router)
    app.state.background_services.append(log_fanout_service)
    app.include_router(logs.router)
    app.state.background_services.append(models.model_server_client)
    app.include_router(models.router)
    mount_pages(app)
    return app
