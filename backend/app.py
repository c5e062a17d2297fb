"""The backend's FastAPI application: control plane of the platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from backend.auth import install_token_redaction, warn_if_open
from backend.commit_statuses import commit_status_service
from backend.drift import drift_watch_service
from backend.log_fanout import log_fanout_service
from backend.model_forwarder import model_forwarder_service
from backend.pages import mount_pages
from backend.pipeline_queue import install_pipeline_queue
from backend.prediction_store import prediction_log_service
from backend.registry_gate import registry_gate_service
from backend.routes import drift, health, logs, models, pipelines, predictions, repos, webhooks
from backend.validation_errors import validation_error_handler
from mlops_core.database import upgrade_database
from mlops_core.request_limits import JsonDepthLimit
from mlops_core.service_metrics import RequestMetrics
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
    app.add_middleware(RequestMetrics)
    for router in (health.router, repos.router, pipelines.router, webhooks.router):
        app.include_router(router)
    app.state.background_services.append(commit_status_service)
    app.state.background_services.append(log_fanout_service)
    app.include_router(logs.router)
    app.state.background_services.append(registry_gate_service)
    app.state.background_services.append(model_forwarder_service)
    app.include_router(models.router)
    app.state.background_services.append(prediction_log_service)
    app.include_router(predictions.router)
    app.state.background_services.append(drift_watch_service)
    app.include_router(drift.router)
    mount_pages(app)
    return app
