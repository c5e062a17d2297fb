"""deploy: serve the new version when it passes its gate, and finish only once it is served.

The registry alias is moved (with a deployment row and an announcement), then the phase waits
until a model server reports the version loaded. If none does within DEPLOY_WAIT_SECONDS, or one
reports it cannot load it, the alias goes back to the previous version, so what was served keeps
serving, and the phase fails. A version below its gate stays registered but unserved: the phase
is skipped with the gate's verdict and the pipeline still succeeds.

The gate includes the champion/challenger rule (mlops_core/deploy_gate.py): the version must not
be worse than the one served now by more than GATE_TOLERANCE. The verdict, with both numbers, is
kept on the pipeline row (`params["gate_verdict"]`) and on the registered version (tag
TAG_GATE_VERDICT), also when AUTO_DEPLOY_ON_SUCCESS is off: the model page marks a version below
its gate, and deploying one by hand asks for confirmation.

Redis only makes the wait prompt. When it is down, the alias still moves (the registry is the
truth; replicas reconcile against it) and the wait asks the replicas of MODEL_SERVER_URL what
they serve (`GET /models`) instead of reading their reports.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace

import httpx
import redis
from sqlalchemy import select

from mlops_core.deploy_gate import GateResult, ServedVersion, default_gate, evaluate_gate
from mlops_core.deployments import change_served_version
from mlops_core.model_events import (
    MODEL_LOADED_CHANNEL,
    DeploymentAction,
    DeployWaitError,
    wait_until_loaded,
)
from mlops_core.model_registry import TAG_GATE_VERDICT, get_version, served_version
from mlops_core.notebook_contract import GateComparison
from mlops_core.schema import Deployment, Pipeline
from worker.mlflow_retry import MlflowUnreachable
from worker.phases.context import PhaseContext, PhaseFailed, PhaseSkipped

logger = logging.getLogger(__name__)
# Each replica asked directly while Redis is down gets this long to answer.
REPLICA_TIMEOUT_SECONDS = 2.0


def run(ctx: PhaseContext) -> None:
    """Gate, move the alias, wait for a model server; restore the previous version on failure."""
    settings = ctx.settings
    name = ctx.model_name or (ctx.contract.model_name if ctx.contract else None)
    version = ctx.model_version
    if not name or not version:
        raise PhaseSkipped("no model version was registered")
    alias = settings.serving_alias
    verdict = judge(ctx, name, version, alias)
    if not settings.auto_deploy_on_success:
        raise PhaseSkipped(
            f"AUTO_DEPLOY_ON_SUCCESS is off: {name} version {version} is registered, not served"
        )
    if not verdict.passed:
        raise PhaseSkipped(f"{verdict.reason}; {name} version {version} is registered, not served")

    timeout = max(1.0, min(settings.deploy_wait_seconds, ctx.remaining()))
    subscription = _subscribe(ctx)  # before the alias moves: no report is missed
    try:
        previous = _point_alias(ctx, name, version, alias, verdict.reason)
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
                fallback=lambda: _replica_serving(ctx, name, version),
            )
        except DeployWaitError as exc:
            try:
                _restore(ctx, name, version, previous, alias)
            except MlflowUnreachable as down:
                raise PhaseFailed(
                    f"{exc}; {down}: the alias could not be moved back to version {previous}"
                ) from None
            raise PhaseFailed(
                f"{exc}; {name} stays on version {previous}"
                if previous
                else f"{exc}; {name} is not served"
            ) from None
        except BaseException:  # cancelled while waiting: the pipeline did not finish its deploy
            _restore(ctx, name, version, previous, alias)
            raise
    finally:
        if subscription is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                subscription.close()
    ctx.update_pipeline(deployed=True)
    ctx.log(f"{name} version {version} is served (loaded by model server {replica})")


def judge(ctx: PhaseContext, name: str, version: str, alias: str) -> GateResult:
    """The gate's verdict on `version` (its gate, the floor, the served version), logged and
    stored on the pipeline row and the registered version."""
    settings = ctx.settings
    gate = ctx.gate or default_gate(settings.min_accuracy_threshold)
    comparison = ctx.contract.comparison if ctx.contract else GateComparison()
    tolerance = settings.gate_tolerance if comparison.tolerance is None else comparison.tolerance
    metrics = ctx.metrics or get_version(ctx.mlflow, name, version).metrics
    served = _served(ctx, name, version, alias) if comparison.enabled else None
    verdict = evaluate_gate(
        gate, metrics, accuracy_floor=settings.accuracy_floor, served=served, tolerance=tolerance
    )
    if verdict.passed and not comparison.enabled:
        note = "not compared with the served version (GATE_COMPARE = False)"
        verdict = replace(verdict, reason=f"{verdict.reason}; {note}")
    ctx.log(verdict.reason)
    ctx.mlflow.set_model_version_tag(name, version, TAG_GATE_VERDICT, verdict.to_json())
    with ctx.session() as session:
        pipeline = session.get(Pipeline, ctx.pipeline_id)
        if pipeline is not None:
            pipeline.params = {**(pipeline.params or {}), "gate_verdict": verdict.as_dict()}
    return verdict


def _served(ctx: PhaseContext, name: str, version: str, alias: str) -> ServedVersion | None:
    """The version served now with its run's metrics; None when nothing else is served (this
    version itself is, when an earlier attempt of this pipeline got that far)."""
    current = served_version(ctx.mlflow, name, alias)
    if current is None or current == version:
        return None
    return ServedVersion(current, get_version(ctx.mlflow, name, current).metrics)


def _subscribe(ctx: PhaseContext) -> redis.client.PubSub | None:
    """A subscription to the replicas' reports, or None while Redis is down."""
    subscription = ctx.redis.pubsub(ignore_subscribe_messages=True)
    try:
        subscription.subscribe(MODEL_LOADED_CHANNEL)
    except redis.RedisError as exc:
        ctx.log(f"Redis unreachable ({exc}): asking the model servers directly")
        with contextlib.suppress(redis.RedisError, OSError):
            subscription.close()
        return None
    return subscription


def _replica_serving(ctx: PhaseContext, name: str, version: str) -> str | None:
    """A replica of MODEL_SERVER_URL that says it serves `version` of `name`, asked over HTTP."""
    token = ctx.settings.predict_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    for url in ctx.settings.model_server_urls:
        try:
            answer = httpx.get(f"{url}/models", headers=headers, timeout=REPLICA_TIMEOUT_SECONDS)
            answer.raise_for_status()
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            logger.info("model server %s did not say what it serves: %s", url, exc)
            continue
        for model in body.get("models", []):
            if model.get("name") == name and str(model.get("version")) == version:
                return f"{body.get('replica', url)} (asked at {url}: Redis unreachable)"
    return None


def _point_alias(ctx: PhaseContext, name: str, version: str, alias: str, reason: str) -> str | None:
    """Move the alias once per pipeline: a redelivered task finds its own deployment row."""
    with ctx.session() as session:
        done = session.scalars(
            select(Deployment)
            .where(
                Deployment.model_name == name,
                Deployment.version == version,
                Deployment.pipeline_id == ctx.pipeline_id,
                Deployment.action == DeploymentAction.AUTO,
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
            action=DeploymentAction.AUTO,
            alias=alias,
            actor=f"pipeline {ctx.pipeline_id}",
            pipeline_id=ctx.pipeline_id,
            reason=reason,
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
            action=DeploymentAction.RESTORE,
            alias=alias,
            actor=f"pipeline {ctx.pipeline_id}",
            pipeline_id=ctx.pipeline_id,
        )
    ctx.log(f"restored {name} to version {previous}" if previous else f"{name} is not served")
