"""Liveness, readiness and Prometheus metrics of the backend.

/health answers as long as the process serves requests (a restart would not help otherwise).
/ready checks what a pipeline needs end to end (database, Redis, MLflow, model server), all at
once with short timeouts, so a probe gets its answer in about two seconds even when a part
hangs. It also counts the Celery workers on the pipelines queue for the dashboard, without
making that a condition of readiness: a backend with no worker still accepts every webhook
(its pipelines wait queued), so restarting or unrouting it would only lose deliveries. That
count comes from memory (backend/worker_watch.py), with its age: asking the workers takes a
second-long broadcast, run in the background rather than per probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

import httpx
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

import backend.metrics  # noqa: F401  (registers the backend's metrics before the first scrape)
from backend.api_models import ReadyReport, WorkerReport
from backend.auth import require_metrics_token
from backend.dependencies import ProbeHttpDep, QueueDep, SettingsDep, WorkerWatchDep
from mlops_core.database import engine_for
from mlops_core.service_metrics import exposition, exposition_registry
from mlops_core.task_queue import PIPELINE_QUEUE, SANDBOX_OFF_STATE

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS: Final = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process is up and serving."""
    return {"status": "ok"}


def _describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:300]


async def _http_ok(client: httpx.AsyncClient, url: str) -> None:
    response = await client.get(url, timeout=CHECK_TIMEOUT_SECONDS)
    if response.status_code >= 400:
        raise RuntimeError(f"{url} answered HTTP {response.status_code}")


async def _any_replica_ok(client: httpx.AsyncClient, urls: list[str]) -> None:
    """Predictions can be forwarded while one replica of MODEL_SERVER_URL answers (the
    forwarder skips the others), so the backend is ready then; else say why each is not."""
    results = await asyncio.gather(
        *(_http_ok(client, f"{url}/health") for url in urls), return_exceptions=True
    )
    if all(isinstance(result, BaseException) for result in results):
        raise RuntimeError(
            "; ".join(
                f"{url}: {_describe(result)}"
                for url, result in zip(urls, results, strict=True)
                if isinstance(result, BaseException)
            )
        )


async def _mlflow_ok(client: httpx.AsyncClient, uri: str) -> None:
    """A tracking server must answer; a local store (file:, sqlite:) has no server to be down."""
    if uri.startswith(("http://", "https://")):
        await _http_ok(client, uri.rstrip("/") + "/health")


@router.get(
    "/ready",
    response_model=ReadyReport,
    responses={503: {"model": ReadyReport, "description": "some part is down (see `down`)"}},
)
async def ready(
    settings: SettingsDep, queue: QueueDep, worker_watch: WorkerWatchDep, http: ProbeHttpDep
) -> JSONResponse:
    """Readiness: 200 when every part answers, else 503 naming the parts that do not."""

    def database() -> None:
        with engine_for(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))

    checks: dict[str, Callable[[], Awaitable[object]]] = {
        "database": lambda: run_in_threadpool(database),
        "redis": lambda: run_in_threadpool(queue.redis.ping),
        "mlflow": lambda: _mlflow_ok(http, settings.mlflow_tracking_uri),
        "model_server": lambda: _any_replica_ok(http, settings.model_server_urls),
    }

    async def run(check: Callable[[], Awaitable[object]]) -> str:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS + 1)
        except Exception as exc:  # any failure means "down"; the message says which
            return _describe(exc)
        return "ok"

    results, workers = await asyncio.gather(
        asyncio.gather(*(run(check) for check in checks.values())), worker_watch.latest()
    )
    report = dict(zip(checks, results, strict=True))
    down = [name for name, result in report.items() if result != "ok"]
    report["worker"] = workers.state
    report["sandbox"] = sandbox_state(settings.kernel_sandbox, workers.isolation)
    body = ReadyReport(
        status="not ready" if down else "ready",
        checks=report,
        down=down,
        workers=WorkerReport(
            queue=PIPELINE_QUEUE,
            count=len(workers.nodes),
            nodes=workers.nodes,
            age_seconds=round(workers.age_seconds, 3),
        ),
    )
    return JSONResponse(body.model_dump(), status_code=503 if down else 200)


def sandbox_state(mode: str, reported: dict[str, str]) -> str:
    """Whether workers run notebooks contained: "ok", else which worker does not and why.

    Shown, never hidden, but not "down": a backend is still worth routing to. Without a worker
    report (none answering), the backend's own KERNEL_SANDBOX stands in.
    """
    if not reported:
        return SANDBOX_OFF_STATE if mode == "off" else "ok"
    problems = sorted(f"{node}: {state}" for node, state in reported.items() if state != "ok")
    return "; ".join(problems) or "ok"


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
def metrics() -> Response:
    """Prometheus exposition of this process's metrics."""
    body, content_type = exposition(exposition_registry())
    return Response(body, media_type=content_type)
