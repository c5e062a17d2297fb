"""The model server: serves the registry's served versions, hot-swapped with no dropped request.

Run with `uvicorn model_server.app:create_app --factory --port 8001`. It needs only MLflow (the
registry and artifacts) and Redis (model events and reports); it knows nothing of the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mlflow
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from mlops_core import sandbox
from mlops_core.prediction_log import REQUEST_ID_HEADER, ErrorReason
from mlops_core.prediction_log import request_id as new_request_id
from mlops_core.prediction_schema import PREDICT_REQUEST_BODY
from mlops_core.request_limits import JsonDepthLimit
from mlops_core.service_metrics import RequestMetrics, exposition, exposition_registry
from mlops_core.settings import Settings, get_settings
from model_server.access import require_metrics_token, require_predict_token, warn_if_open
from model_server.inference_protocol import router as inference_router
from model_server.loaded_model import LoadedModel
from model_server.metrics import record_error, record_prediction
from model_server.model_process import ModelProcessError
from model_server.model_store import ModelStore, why_not_served
from model_server.prediction_log import PredictionLog
from model_server.registry_sync import RegistrySync
from model_server.request_body import BodyError, read_json_body
from model_server.request_rows import InputError, rows_from_body

log = logging.getLogger("model_server")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the model-server app (uvicorn's `--factory` calls it with no arguments)."""
    settings = settings or get_settings()
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    replica_id = settings.model_server_replica_id or f"{socket.gethostname()}:{os.getpid()}"
    store = ModelStore()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        cache_dir = Path(tempfile.mkdtemp(prefix="mlops-model-cache-"))
        sync = RegistrySync(settings, store, replica_id, cache_dir)
        prediction_log = PredictionLog(settings, replica_id)
        app.state.sync = sync
        app.state.prediction_log = prediction_log
        await prediction_log.start()
        app.state.isolation = await asyncio.to_thread(_report_isolation, settings)
        await sync.start()
        log.info("model server replica %s following alias %r", replica_id, settings.serving_alias)
        warn_if_open(settings)
        try:
            yield
        finally:
            await sync.stop()
            await prediction_log.stop()
            shutil.rmtree(cache_dir, ignore_errors=True)

    app = FastAPI(title="notebook-mlops model server", version="0.1.0", lifespan=lifespan)
    app.add_middleware(JsonDepthLimit, max_depth=settings.json_max_depth)
    app.add_middleware(RequestMetrics)
    app.state.settings = settings
    app.state.store = store
    app.state.replica_id = replica_id
    app.include_router(inference_router)

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
        return JSONResponse(
            {
                "status": "ready",
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

    @app.post(
        "/predict/{name}",
        dependencies=[Depends(require_predict_token)],
        openapi_extra=PREDICT_REQUEST_BODY,
    )
    async def predict(name: str, request: Request) -> JSONResponse:
        request_id = new_request_id(request.headers.get(REQUEST_ID_HEADER))
        with _served(request, name).hold() as model:
            try:
                body = await read_json_body(request, settings.predict_max_body_bytes)
                rows = rows_from_body(body, model.features)
            except BodyError as exc:
                raise _failed(
                    request, model, request_id, ErrorReason.BAD_INPUT, exc.status_code, exc.message
                ) from None
            except InputError as exc:
                raise _failed(
                    request, model, request_id, ErrorReason.BAD_INPUT, 422, str(exc)
                ) from None
            model.requests += 1
            started = time.perf_counter()
            try:
                result = await model.predict_batched(rows)
            except ModelProcessError as exc:
                message = f"model {name} version {model.version} is unavailable: {exc}"
                raise _failed(
                    request, model, request_id, ErrorReason.UNAVAILABLE, 503, message
                ) from None
            except Exception as exc:
                message = (
                    f"model {name} version {model.version} could not predict these rows: {exc}"
                )
                raise _failed(
                    request, model, request_id, ErrorReason.MODEL_ERROR, 422, message
                ) from None
            seconds = time.perf_counter() - started
            record_prediction(name, model.version, seconds)
        request.app.state.prediction_log.record(
            request_id,
            name,
            model.version,
            model.features.names,
            rows,
            result.predictions,
            result.probabilities,
            round(seconds * 1000, 3),
        )
        content: dict[str, Any] = {
            "predictions": result.predictions,
            "model_name": model.name,
            "model_version": model.version,
            "processing_time_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": request_id,
        }
        if result.probabilities is not None:
            content["probabilities"] = result.probabilities
            content["classes"] = result.classes
        return JSONResponse(content, headers={REQUEST_ID_HEADER: request_id})

    return app


def _report_isolation(settings: Settings) -> str:
    """Say at start what contains model code, or why no model will load (the probe is cached)."""
    try:
        found = sandbox.ensure_available(settings)
    except sandbox.SandboxUnavailable as exc:
        log.error("model sandbox unavailable; no model will load until fixed: %s", exc)
        return f"unavailable: {exc}"
    log.info("model processes run in: %s", found.description)
    return found.description


def _failed(
    request: Request,
    model: LoadedModel,
    request_id: str,
    reason: ErrorReason,
    status: int,
    message: str,
) -> HTTPException:
    """Count a failed request to a served version, log it (the model page's error rate per
    version), and answer why, under the request's id so the caller can report it."""
    record_error(model.name, reason)
    request.app.state.prediction_log.record_error(
        request_id, model.name, model.version, reason, status
    )
    return HTTPException(status, message, headers={REQUEST_ID_HEADER: request_id})


def _served(request: Request, name: str) -> LoadedModel:
    """The one version that answers this request (looked up once), or a 404/503 naming why."""
    store: ModelStore = request.app.state.store
    model = store.get(name)
    if model is not None:
        return model
    loading = not request.app.state.sync.ready.is_set()
    code, message = why_not_served(store, name, loading=loading)
    raise HTTPException(code, message)
