"""The model server: serves the registry's served versions, hot-swapped with no dropped request.

Run with `python -m model_server.serve --port 8001` (MODEL_SERVER_WORKERS processes of this app
on one port, model_server/serve.py) or, one process, `uvicorn model_server.app:create_app
--factory --port 8001`. It needs only MLflow (the registry and artifacts) and Redis (model events
and reports); it knows nothing of the database.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mlflow
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, ORJSONResponse, Response

from mlops_core import sandbox
from mlops_core.prediction_log import REQUEST_ID_HEADER
from mlops_core.prediction_schema import PREDICT_REQUEST_BODY
from mlops_core.request_limits import JsonDepthLimit
from mlops_core.service_logging import configure_logging
from mlops_core.service_metrics import RequestMetrics, exposition, exposition_registry
from mlops_core.settings import Settings, get_settings
from model_server.access import require_metrics_token, require_predict_token, warn_if_open
from model_server.data_plane import DataPlane
from model_server.direct_route import DirectRoute
from model_server.heap import settle_heap
from model_server.http_io import answer, body_reader, error_answer
from model_server.inference_errors import InferenceError
from model_server.inference_protocol import infer_router
from model_server.inference_protocol import router as inference_router
from model_server.metrics import forget_dead_processes, forget_this_process
from model_server.mlflow_protocol import router as mlflow_router
from model_server.model_store import ModelStore
from model_server.predict_codec import PredictCodec
from model_server.prediction_log import PredictionLog
from model_server.process_group import ReplicaIdentity
from model_server.registry_sync import RegistrySync

log = logging.getLogger("model_server")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the model-server app (uvicorn's `--factory` calls it with no arguments)."""
    settings = settings or get_settings()
    configure_logging()
    identity = ReplicaIdentity.of_this_process(settings)
    replica_id = identity.replica
    store = ModelStore()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        cache_dir = Path(tempfile.mkdtemp(prefix="mlops-model-cache-"))
        forget_dead_processes()
        sync = RegistrySync(settings, store, identity, cache_dir)
        prediction_log = PredictionLog(settings, replica_id)
        app.state.sync = sync
        app.state.prediction_log = prediction_log
        app.state.data_plane = DataPlane(settings, store, prediction_log, sync.ready)
        await prediction_log.start()
        app.state.isolation = await asyncio.to_thread(_report_isolation, settings)
        await sync.start()
        marking = asyncio.create_task(_mark_when_ready(sync.ready, identity))
        log.info("model server replica %s following alias %r", replica_id, settings.serving_alias)
        warn_if_open(settings)
        try:
            yield
        finally:
            marking.cancel()
            identity.mark_ready(False)
            await sync.stop()
            await prediction_log.stop()
            shutil.rmtree(cache_dir, ignore_errors=True)
            forget_this_process()

    app = FastAPI(
        title="notebook-mlops model server",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    app.add_middleware(JsonDepthLimit, max_depth=settings.json_max_depth)
    app.add_middleware(RequestMetrics)
    app.state.settings = settings
    app.state.store = store
    app.state.replica_id = replica_id

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "replica": replica_id}

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        if not request.app.state.sync.ready.is_set():
            return JSONResponse(
                {"status": "starting", "detail": "first sync with the registry not done yet"},
                status_code=503,
            )
        ready_processes = identity.processes_ready()
        if ready_processes < identity.processes:
            detail = f"{ready_processes} of this server's {identity.processes} processes ready"
            return JSONResponse({"status": "starting", "detail": detail}, status_code=503)
        return JSONResponse(
            {
                "status": "ready",
                "replica": replica_id,
                "models": len(store.names()),
                "sandbox": request.app.state.isolation,
            }
        )

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
    async def metrics() -> Response:
        body, content_type = exposition(exposition_registry())
        return Response(body, media_type=content_type)

    @app.get("/models", dependencies=[Depends(require_predict_token)])
    async def models() -> dict[str, Any]:
        return {"replica": replica_id, "models": store.describe()}

    hot = APIRouter(route_class=DirectRoute)

    @hot.post("/predict/{name}", openapi_extra=PREDICT_REQUEST_BODY)
    async def predict(request: Request, name: str) -> Response:
        plane: DataPlane = request.app.state.data_plane
        headers = request.headers
        try:
            encoded = await plane.infer(
                name,
                None,
                PredictCodec(),
                body_reader(request, settings.predict_max_body_bytes),
                authorization=headers.get("authorization"),
                presented_id=headers.get(REQUEST_ID_HEADER),
                headers=headers,
            )
        except InferenceError as exc:
            return error_answer(exc, {"detail": exc.message})
        return answer(encoded)

    app.include_router(hot)
    app.include_router(inference_router)
    app.include_router(infer_router)
    app.include_router(mlflow_router)
    _hot_routes_first(app, HOT_ROUTES)
    return app


# Inference routes, matched before any other: Starlette tries routes in order, and FastAPI puts
# its documentation routes first.
HOT_ROUTES = ("/predict/{name}", "/v2/models/{name}/infer", "/invocations")


def _hot_routes_first(app: FastAPI, paths: tuple[str, ...]) -> None:
    routes = app.router.routes
    routes.sort(
        key=lambda route: paths.index(route.path)
        if getattr(route, "path", None) in paths
        else len(paths)
    )


async def _mark_when_ready(ready: asyncio.Event, identity: ReplicaIdentity) -> None:
    """Once the first sync is done (every served version loaded): settle the heap
    (model_server/heap.py) and tell this server's other processes."""
    await ready.wait()
    frozen = settle_heap()
    log.debug("heap settled: %d objects exempt from full collections", frozen)
    identity.mark_ready(True)


def _report_isolation(settings: Settings) -> str:
    """Say at start what contains model code, or why no model will load (the probe is cached)."""
    try:
        found = sandbox.ensure_available(settings)
    except sandbox.SandboxUnavailable as exc:
        log.error("model sandbox unavailable; no model will load until fixed: %s", exc)
        return f"unavailable: {exc}"
    log.info("model processes run in: %s", found.description)
    return found.description
