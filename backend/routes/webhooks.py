"""POST /webhook/github: GitHub's push deliveries, guarded by their signature.

The route only reads the body, refusing it as soon as it is known to exceed the limit (from
Content-Length, else while streaming), and hands the rest to WebhookIntake in a worker thread.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from backend.dependencies import IntakeDep, SettingsDep
from backend.metrics import WEBHOOK_DELIVERIES
from mlops_core.request_limits import BodyTooLarge, JsonTooDeep, read_capped_body

router = APIRouter(tags=["webhooks"])


def _too_large(reason: str) -> JSONResponse:
    WEBHOOK_DELIVERIES.labels(outcome="too_large").inc()
    return JSONResponse(
        {"detail": f"payload too large: {reason}"},
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
    )


@router.post(
    "/webhook/github",
    responses={
        200: {"description": "ping answered, or the event is ignored (the body says why)"},
        202: {"description": "a pipeline was queued: {pipeline_id, status}"},
        400: {"description": "not JSON, nested over JSON_MAX_DEPTH, or not what GitHub sends"},
        401: {"description": "X-Hub-Signature-256 missing or wrong"},
        404: {"description": "push for a repository that is not registered"},
        413: {"description": "body over WEBHOOK_MAX_BODY_BYTES (25 MB, GitHub's cap)"},
    },
)
async def github_webhook(
    request: Request, settings: SettingsDep, intake: IntakeDep
) -> JSONResponse:
    """Verify and record a GitHub delivery; a push that changes the notebook queues a run."""
    limit = settings.webhook_max_body_bytes
    try:
        body = await read_capped_body(request, limit, "WEBHOOK_MAX_BODY_BYTES")
    except BodyTooLarge as exc:
        return _too_large(str(exc))
    except JsonTooDeep:
        WEBHOOK_DELIVERIES.labels(outcome="bad_request").inc()
        raise
    code, content = await run_in_threadpool(intake.handle, request.headers, body)
    return JSONResponse(content.model_dump(mode="json"), status_code=code)
