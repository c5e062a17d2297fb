"""The backend's FastAPI application: control plane of the platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline

from backend.api_docs import DocsPolicy
from backend.auth import install_token_redaction, warn_if_open
from backend.pages import mount_pages
from backend.routes import (
    canary,
    deliveries,
    drift,
    health,
    logs,
    models,
    notebooks,
    pipelines,
    predictions,
    repos,
    webhooks,
)
from backend.services import running_services
from backend.validation_errors import validation_error_handler
from mlops_core.database import upgrade_database
from mlops_core.request_limits import JsonDepthLimit
from mlops_core.service_logging import configure_logging
from mlops_core.service_metrics import RequestMetrics
from mlops_core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` defaults to the environment's."""
    settings = settings or get_settings()
    configure_logging()
    install_token_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade_database(settings.database_url)
        warn_if_open(settings)
        async with running_services(settings) as services:
            app.state.services = services
            try:
                yield
            finally:
                del app.state.services

    # /docs and /redoc load Swagger UI and ReDoc from this server, not from a CDN (offline sites).
    app = FastAPIOffline(title="notebook-mlops", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(JsonDepthLimit, max_depth=settings.json_max_depth)
    app.add_middleware(RequestMetrics)
    app.add_middleware(DocsPolicy)
    for module in (
        health,
        repos,
        notebooks,
        deliveries,
        pipelines,
        webhooks,
        logs,
        models,
        canary,
        predictions,
        drift,
    ):
        app.include_router(module.router)
    mount_pages(app)
    return app
