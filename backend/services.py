"""The backend's long-lived parts, built in one place and held in one typed container.

Every client, pool and background loop the backend keeps for its lifetime is made here, in the
app's lifespan, in dependency order, and closed in reverse order by one `AsyncExitStack`:
nothing is made lazily on a first request or cached at module level where no one closes it.
Routes receive these parts through the `Annotated` dependencies of backend/dependencies.py.

Loops that act through a part (the re-queue loop and the pipeline watch through the queue)
start after it and stop before it closes. The settings are the exception: the app keeps them
from `create_app` on, because pages and the token guard need them even without a lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Final

import httpx
import redis
from mlflow import MlflowClient

from backend.canary_watch import canary_policy_loop
from backend.commit_statuses import commit_status_loop
from backend.drift import drift_watch_loop
from backend.log_fanout import LogFanout, running_log_fanout
from backend.model_forwarder import ModelForwarder, running_model_forwarder
from backend.pipeline_queue import PipelineQueue, requeue_loop
from backend.pipeline_watch import pipeline_watch_loop
from backend.prediction_store import prediction_log_consumer
from backend.registry_gate import RegistryGate, running_registry_gate
from backend.schedule_runner import schedule_loop
from backend.webhook_intake import WebhookIntake
from backend.worker_watch import WorkerWatch, running_worker_watch
from mlops_core.model_registry import registry_client
from mlops_core.settings import Settings

# Announcements of served-version changes and replica reports: short calls, never a long wait.
REDIS_TIMEOUT_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Services:
    """What the running backend holds; one instance per app, alive for its whole lifespan."""

    settings: Settings
    pipeline_queue: PipelineQueue
    webhook_intake: WebhookIntake
    registry: MlflowClient
    registry_gate: RegistryGate
    redis: redis.Redis
    log_fanout: LogFanout
    model_forwarder: ModelForwarder
    worker_watch: WorkerWatch
    # /ready's probes of MLflow and the model servers. One client for the app's life: making one
    # per probe (its TLS context) took longer than the probes themselves.
    probe_http: httpx.AsyncClient


@asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[Services]:
    """Build every part, start the background loops, and take it all down on exit."""
    async with AsyncExitStack() as stack:
        queue = PipelineQueue(settings)
        stack.callback(queue.close)
        announcer = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        stack.callback(announcer.close)
        services = Services(
            settings=settings,
            pipeline_queue=queue,
            webhook_intake=WebhookIntake(settings, queue),
            registry=registry_client(settings.mlflow_tracking_uri),
            registry_gate=await stack.enter_async_context(running_registry_gate(settings)),
            redis=announcer,
            log_fanout=await stack.enter_async_context(running_log_fanout(settings)),
            model_forwarder=await stack.enter_async_context(running_model_forwarder(settings)),
            worker_watch=await stack.enter_async_context(
                running_worker_watch(queue, settings.worker_check_interval_seconds)
            ),
            probe_http=await stack.enter_async_context(httpx.AsyncClient()),
        )
        await stack.enter_async_context(requeue_loop(settings, queue))
        await stack.enter_async_context(pipeline_watch_loop(settings, queue))
        await stack.enter_async_context(schedule_loop(settings, queue))
        await stack.enter_async_context(commit_status_loop(settings))
        await stack.enter_async_context(prediction_log_consumer(settings))
        await stack.enter_async_context(drift_watch_loop(settings))
        await stack.enter_async_context(canary_policy_loop(settings, services.registry, announcer))
        yield services
