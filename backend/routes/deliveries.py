"""The webhook deliveries a repo received, newest first: the repository page's "is my webhook
reaching the platform, and what did it do with each push" (ignored ones say why).

Every delivery whose repo was recognised is recorded (backend/webhook_intake.py), accepted or
ignored, so the list answers for GitHub's side of the webhook too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from backend.api_models import WebhookDeliveryOut
from backend.api_params import RowId
from backend.auth import require_read_token
from backend.dependencies import SessionDep
from backend.routes.repos import load_repo
from mlops_core.schema import WebhookDelivery

router = APIRouter(tags=["repos"])

MAX_DELIVERIES = 100


@router.get(
    "/repos/{repo_id}/deliveries",
    response_model=list[WebhookDeliveryOut],
    dependencies=[Depends(require_read_token)],
)
def list_deliveries(
    repo_id: RowId,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_DELIVERIES)] = 20,
) -> list[WebhookDeliveryOut]:
    """The repo's latest webhook deliveries (ping events are answered, not recorded)."""
    load_repo(session, repo_id)
    rows = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.repo_id == repo_id)
        .order_by(WebhookDelivery.received_at.desc())
        .limit(limit)
    )
    return [
        WebhookDeliveryOut(
            delivery_id=row.delivery_id,
            event=row.event,
            outcome=row.outcome,
            reason=row.reason,
            pipeline_id=row.pipeline_id,
            received_at=row.received_at,
        )
        for row in rows
    ]
