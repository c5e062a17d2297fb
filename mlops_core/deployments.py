"""The deployment history: one row per change of a model's served version.

The registry alias says what is served now; this table says how it got there, which is what a
rollback without an explicit version needs ("go back to what was served before").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from mlflow import MlflowClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mlops_core.canary import CanaryConfig
from mlops_core.canary_registry import clear_canary, serving_state, set_canary
from mlops_core.model_events import CHALLENGER_ACTIONS, DeploymentAction, ModelEvent, announce
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
    evidence: dict[str, Any] | None = None,
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
        evidence=evidence,
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
    is the best answer left. A challenger that ran and was aborted was never served: rows of
    CHALLENGER_ACTIONS are passed over.
    """
    rows = [
        row
        for row in deployment_history(session, model_name, limit=500)
        if row.action not in CHALLENGER_ACTIONS
    ]
    for row in rows:
        if row.version == current and row.previous_version not in (None, current):
            return row.previous_version
        if row.version == current:
            break
    for row in rows:
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
    evidence: dict[str, Any] | None = None,
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
        evidence=evidence,
    )
    session.commit()
    event = ModelEvent(action=action, model=model_name, version=version, alias=alias, actor=actor)
    return previous, _announce(redis_client, event)


def _announce(redis_client: redis.Redis | None, event: ModelEvent) -> bool:
    """Tell the replicas; a Redis failure is only logged (they reconcile with the registry)."""
    if redis_client is None:
        return False
    try:
        announce(redis_client, event)
    except redis.RedisError as exc:
        logger.warning(
            "%s of %s version %s is in the registry but the announcement failed (%s); "
            "model servers will pick it up at their next reconcile",
            event.action,
            event.model,
            event.version,
            exc,
        )
        return False
    return True


class CanaryRefused(ValueError):
    """A challenger cannot start: nothing is served beside which it could run, or it is the
    served version itself."""


class NoCanary(LookupError):
    """No challenger runs for the model: there is nothing to promote or abort."""


@dataclass(frozen=True)
class CanaryChange:
    """What a canary change did: the champion before it, the challenger it was about."""

    champion: str
    challenger: str
    announced: bool
    replaced: str | None = None  # start only: the challenger it replaced, if another ran


def start_canary(
    session: Session,
    registry: MlflowClient,
    redis_client: redis.Redis | None,
    *,
    model_name: str,
    config: CanaryConfig,
    serving_alias: str,
    challenger_alias: str,
    pipeline_id: int | None = None,
    reason: str | None = None,
) -> CanaryChange:
    """Run `config.version` as the challenger beside the served version (or change the running
    canary's weight, mode or sticky key): registry, history row, commit, announcement, in the
    order and with the failure rules of `change_served_version`."""
    state = serving_state(registry, model_name, serving_alias, challenger_alias)
    if state.champion is None:
        raise CanaryRefused(
            f"model {model_name!r} serves no version yet: a challenger needs a served version "
            "to run beside (deploy it instead)"
        )
    if state.champion == config.version:
        raise CanaryRefused(f"version {config.version} of {model_name!r} is the served version")
    running = state.canary.version if state.canary is not None else None
    set_canary(registry, model_name, config, challenger_alias)
    evidence: dict[str, Any] = {
        "weight": config.weight,
        "mode": config.mode.value,
        "sticky_key": config.sticky_key,
    }
    if running is not None and running != config.version:
        evidence["replaced"] = running
    _record_canary(
        session,
        model_name=model_name,
        action=DeploymentAction.CANARY,
        version=config.version,
        champion=state.champion,
        actor=config.actor,
        pipeline_id=pipeline_id,
        reason=reason,
        evidence=evidence,
    )
    event = ModelEvent(
        action=DeploymentAction.CANARY,
        model=model_name,
        version=config.version,
        alias=serving_alias,
        actor=config.actor,
    )
    announced = _announce(redis_client, event)
    return CanaryChange(state.champion, config.version, announced, evidence.get("replaced"))


def end_canary(
    session: Session,
    registry: MlflowClient,
    redis_client: redis.Redis | None,
    *,
    model_name: str,
    promote: bool,
    serving_alias: str,
    challenger_alias: str,
    actor: str,
    reason: str | None = None,
    evidence: dict[str, Any] | None = None,
    expected: str | None = None,
    pipeline_id: int | None = None,
) -> CanaryChange:
    """Promote the challenger to served version, or abort it; record why, with the evidence.

    `expected`: the challenger the caller judged; when another one runs by now (it was replaced
    meanwhile), NoCanary: a decision about one version must not end another.
    """
    state = serving_state(registry, model_name, serving_alias, challenger_alias)
    if state.canary is None or state.champion is None:
        raise NoCanary(f"model {model_name!r} has no challenger running")
    challenger = state.canary.version
    if expected is not None and expected != challenger:
        raise NoCanary(f"model {model_name!r} runs challenger v{challenger} now, not v{expected}")
    if promote:
        set_served_version(registry, model_name, challenger, serving_alias)
    clear_canary(registry, model_name, challenger_alias)
    action = DeploymentAction.PROMOTE if promote else DeploymentAction.ABORT
    _record_canary(
        session,
        model_name=model_name,
        action=action,
        version=challenger,
        champion=state.champion,
        actor=actor,
        pipeline_id=pipeline_id,
        reason=reason,
        evidence=evidence,
    )
    event = ModelEvent(
        action=action,
        model=model_name,
        version=challenger if promote else state.champion,
        alias=serving_alias,
        actor=actor,
    )
    return CanaryChange(state.champion, challenger, _announce(redis_client, event))


def _record_canary(
    session: Session,
    *,
    model_name: str,
    action: DeploymentAction,
    version: str,
    champion: str,
    actor: str,
    pipeline_id: int | None,
    reason: str | None,
    evidence: dict[str, Any] | None,
) -> None:
    """A history row about the challenger `version` (`previous_version`: the champion then)."""
    if pipeline_id is not None and session.get(Pipeline, pipeline_id) is None:
        pipeline_id = None
    record_deployment(
        session,
        model_name=model_name,
        action=action,
        version=version,
        previous_version=champion,
        pipeline_id=pipeline_id,
        actor=actor,
        reason=reason,
        evidence=evidence,
    )
    session.commit()
