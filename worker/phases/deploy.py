"""deploy: serve the new version when it passes its gate, and finish only once it is served.

The registry alias is moved (with a deployment row and an announcement), then the phase waits
until a model server reports the version loaded. If none does within DEPLOY_WAIT_SECONDS, or one
reports it cannot load it, the alias goes back to the previous version, so what was served keeps
serving, and the phase fails. A version below its gate stays registered but unserved: the phase
is skipped with the gate's verdict and the pipeline still succeeds.
"""

from __future__ import annotations

from sqlalchemy import select

from mlops_core.deploy_gate import default_gate, evaluate_gate
from mlops_core.deployments import change_served_version
from mlops_core.model_events import MODEL_LOADED_CHANNEL, DeployWaitError, wait_until_loaded
from mlops_core.model_registry import get_version, served_version
from mlops_core.schema import Deployment
from worker.phases.context import PhaseContext, PhaseFailed, PhaseSkipped

AUTO_ACTION = "auto"
RESTORE_ACTION = "restore"


def run(ctx: PhaseContext) -> None:
    """Gate, move the alias, wait for a model server; restore the previous version on failure."""
    settings = ctx.settings
    name = ctx.model_name or (ctx.contract.model_name if ctx.contract else None)
    version = ctx.model_version
    if not name or not version:
        raise PhaseSkipped("no model version was registered")
    if not settings.auto_deploy_on_success:
        raise PhaseSkipped(
            f"AUTO_DEPLOY_ON_SUCCESS is off: {name} version {version} is registered, not served"
        )
    gate = ctx.gate or default_gate(settings.min_accuracy_threshold)
    metrics = ctx.metrics or get_version(ctx.mlflow, name, version).metrics
    verdict = evaluate_gate(gate, metrics, accuracy_floor=settings.accuracy_floor)
    ctx.log(verdict.reason)
    if not verdict.passed:
        raise PhaseSkipped(f"{verdict.reason}; {name} version {version} is registered, not served")

    alias = settings.serving_alias
    timeout = max(1.0, min(settings.deploy_wait_seconds, ctx.remaining()))
    subscription = ctx.redis.pubsub(ignore_subscribe_messages=True)
    subscription.subscribe(MODEL_LOADED_CHANNEL)  # before the alias moves: no report is missed
    try:
        previous = _point_alias(ctx, name, version, alias)
        ctx.log(
            f"serving alias {alias!r} of {name} moved to version {version} "
            f"(was {previous or 'none'}); waiting up to {timeout:g}s for a model server"
        )
        try:
            replica = wait_until_loaded(
                ctx.redis,
                alias,
                name,
                version,
                timeout_seconds=timeout,
                stale_after_seconds=settings.model_heartbeat_interval_seconds * 3,
                subscription=subscription,
                check=ctx.check_cancel,
            )
        except DeployWaitError as exc:
            _restore(ctx, name, version, previous, alias)
            raise PhaseFailed(
                f"{exc}; {name} stays on version {previous}"
                if previous
                else f"{exc}; {name} is not served"
            ) from None
        except BaseException:  # cancelled while waiting: the pipeline did not finish its deploy
            _restore(ctx, name, version, previous, alias)
            raise
    finally:
        subscription.close()
    ctx.update_pipeline(deployed=True)
    ctx.log(f"{name} version {version} is served (loaded by model server {replica})")


def _point_alias(ctx: PhaseContext, name: str, version: str, alias: str) -> str | None:
    """Move the alias once per pipeline: a redelivered task finds its own deployment row."""
    with ctx.session() as session:
        done = session.scalars(
            select(Deployment)
            .where(
                Deployment.model_name == name,
                Deployment.version == version,
                Deployment.pipeline_id == ctx.pipeline_id,
                Deployment.action == AUTO_ACTION,
            )
            .order_by(Deployment.id.desc())
        ).first()
        if done is not None and served_version(ctx.mlflow, name, alias) == version:
            return done.previous_version
        previous, _ = change_served_version(
            session,
            ctx.mlflow,
            ctx.redis,
            model_name=name,
            version=version,
            action=AUTO_ACTION,
            alias=alias,
            actor=f"pipeline {ctx.pipeline_id}",
            pipeline_id=ctx.pipeline_id,
        )
        return previous


def _restore(ctx: PhaseContext, name: str, version: str, previous: str | None, alias: str) -> None:
    """Give the alias back to what was served before, unless someone has moved it since."""
    if served_version(ctx.mlflow, name, alias) != version:
        return
    with ctx.session() as session:
        change_served_version(
            session,
            ctx.mlflow,
            ctx.redis,
            model_name=name,
            version=previous,
            action=RESTORE_ACTION,
            alias=alias,
            actor=f"pipeline {ctx.pipeline_id}",
            pipeline_id=ctx.pipeline_id,
        )
    ctx.log(f"restored {name} to version {previous}" if previous else f"{name} is not served")
