"""FastAPI dependencies: the running app's settings, services and a DB session per request.

Routes name what they need with the `Annotated` aliases below; every part comes from the one
`Services` container the lifespan built (backend/services.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import httpx
import redis
from fastapi import Depends, HTTPException
from mlflow import MlflowClient
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from backend.log_fanout import LogFanout
from backend.model_forwarder import ModelForwarder
from backend.pipeline_queue import PipelineQueue
from backend.registry_gate import RegistryGate
from backend.services import Services
from backend.webhook_intake import WebhookIntake
from backend.worker_watch import WorkerWatch
from mlops_core.database import session_factory
from mlops_core.settings import Settings


async def get_app_settings(connection: HTTPConnection) -> Settings:
    """The Settings the app was created with (tests pass their own)."""
    return connection.app.state.settings


async def get_services(connection: HTTPConnection) -> Services:
    """The running app's services (HTTP requests and WebSockets alike)."""
    services: Services | None = getattr(connection.app.state, "services", None)
    if services is None:  # an app used without its lifespan (a test's bare TestClient)
        raise HTTPException(503, "the backend is not started: its services are not running")
    return services


def get_session(connection: HTTPConnection) -> Iterator[Session]:
    """A DB session per request, closed afterwards; routes commit explicitly."""
    session = session_factory(connection.app.state.settings.database_url)()
    try:
        yield session
    finally:
        session.close()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]


# Async: a plain attribute read needs no hop to the thread pool.
async def _queue(services: ServicesDep) -> PipelineQueue:
    return services.pipeline_queue


async def _intake(services: ServicesDep) -> WebhookIntake:
    return services.webhook_intake


async def _registry(services: ServicesDep) -> MlflowClient:
    return services.registry


async def _gate(services: ServicesDep) -> RegistryGate:
    return services.registry_gate


async def _redis(services: ServicesDep) -> redis.Redis:
    return services.redis


async def _fanout(services: ServicesDep) -> LogFanout:
    return services.log_fanout


async def _forwarder(services: ServicesDep) -> ModelForwarder:
    return services.model_forwarder


async def _worker_watch(services: ServicesDep) -> WorkerWatch:
    return services.worker_watch


async def _probe_http(services: ServicesDep) -> httpx.AsyncClient:
    return services.probe_http


QueueDep = Annotated[PipelineQueue, Depends(_queue)]
IntakeDep = Annotated[WebhookIntake, Depends(_intake)]
RegistryDep = Annotated[MlflowClient, Depends(_registry)]
GateDep = Annotated[RegistryGate, Depends(_gate)]
RedisDep = Annotated[redis.Redis, Depends(_redis)]
FanoutDep = Annotated[LogFanout, Depends(_fanout)]
ForwarderDep = Annotated[ModelForwarder, Depends(_forwarder)]
WorkerWatchDep = Annotated[WorkerWatch, Depends(_worker_watch)]
ProbeHttpDep = Annotated[httpx.AsyncClient, Depends(_probe_http)]
