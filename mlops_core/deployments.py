"""The deployment history: one row per change of a model's served version.

The registry alias says what is served now; this table says how it got there, which is what a
rollback without an explicit version needs ("go back to what was served before").
"""

from __future__ import annotations

import logging

import redis
from mlflow import MlflowClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mlops_core.model_events import DeploymentAction, ModelEvent, announce
from mlops_core.model_registry import clear_served_version, served_version, set_served_version
from mlops_core.schema import Deployment, Pipeline

logger = logging.getLogger(__name__)


def record_deployment(
    session: Session,
    *,
    model_name: str,
    action: DeploymentAction,
    version: str | None,
    previous_version: str | None,
    pipeline_id: int | None = None,
    actor: str = "system",
    reason: str | None = None,
) -> Deployment:
    """Add a history row; the caller owns the transaction (`change_served_version` commits it)."""
    row = Deployment(
        model_name=model_name,
        action=action,
        version=version,
        previous_version=previous_version,
        pipeline_id=pipeline_id,
        actor=actor,
        reason=reason,
    )
    session.add(row)
    session.flush()
    return row


def deployment_history(session: Session, model_name: str, limit: int = 100) -> list[Deployment]:
    """A model's changes, newest first."""
    stmt = (
        select(Deployment)
        .where(Deployment.model_name == model_name)
        .order_by(Deployment.created_at.desc(), Deployment.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def previously_served_version(session: Session, model_name: str, current: str | None) -> str | None:
    """The version served before the current one, as the history tells it.

    The newest change that put `current` in place names what it replaced; when the registry was
    moved outside the platform (no such row), the newest recorded version other than `current`
    is the best answer left.
    """
    for row in deployment_history(session, model_name, limit=500):
        if row.version == current and row.previous_version not in (None, current):
            return row.previous_version
        if row.version == current:
            break
    for row in deployment_history(session, model_name, limit=500):
        for candidate in (row.version, row.previous_version):
            if candidate is not None and candidate != current:
                return candidate
    return None


def change_served_version(
    session: Session,
    registry: MlflowClient,
    redis_client: redis.Redis | None,
    *,
    model_name: str,
    version: str | None,
    action: DeploymentAction,
    alias: str,
    actor: str,
    pipeline_id: int | None = None,
    reason: str | None = None,
) -> tuple[str | None, bool]:
    """Move the serving alias, record the change and commit, then announce it to the replicas.

    Returns (previous version, announced). This function owns the transaction: it commits.
    The alias moves before the history row is written, so that a failing registry call leaves
    no row behind and no database lock is held while MLflow answers (or, in an outage, while
    the worker's client retries). The announcement comes last so that a replica acting on it
    reads the new alias. A Redis failure does not undo the change: every replica picks it up
    at its next reconcile, so it is only logged.
    """
    previous = served_version(registry, model_name, alias)
    if version is None:
        clear_served_version(registry, model_name, alias)
    else:
        set_served_version(registry, model_name, version, alias)
    if pipeline_id is not None and session.get(Pipeline, pipeline_id) is None:
        pipeline_id = None  # the version came from elsewhere (another platform, a test)
    record_deployment(
        session,
        model_name=model_name,
        action=action,
        version=version,
        previous_version=previous,
        pipeline_id=pipeline_id,
        actor=actor,
        reason=reason,
    )
    session.commit()
    announced = False
    if redis_client is not None:
        event = ModelEvent(
            action=action, model=model_name, version=version, alias=alias, actor=actor
        )
        try:
            announce(redis_client, event)
            announced = True
        except redis.RedisError as exc:
            logger.warning(
                "served version of %s changed to %s but the announcement failed (%s); "
                "model servers will pick it up at their next reconcile",
                model_name,
                version,
                exc,
            )
    return previous, announced
