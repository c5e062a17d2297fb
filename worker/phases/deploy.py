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

With DEPLOY_STRATEGY `canary` or `shadow` (the setting, or the config cell's), a version that
passes its gate starts as the challenger beside the served version instead, at CANARY_WEIGHT
(mlops_core/canary.py); the phase waits the same way for a model server to load it (aborting
the canary when none does) and ends "canary started". The backend's promotion policy then
promotes or aborts it on live evidence. With nothing served yet, there is nothing to compare
with: the version is served directly.

Redis only makes the wait prompt. When it is down, the alias still moves (the registry is the
truth; replicas reconcile against it) and the wait asks the replicas of MODEL_SERVER_URL what
they serve (`GET /models`) instead of reading their reports.
"""

from __future__ import annotations

import contextlib
import logging

import httpx
import redis
from sqlalchemy import select

from mlops_core import served_gate
from mlops_core.canary import CanaryConfig, CanaryMode, DeployStrategy
from mlops_core.canary_registry import serving_state
from mlops_core.deploy_gate import GateResult, default_gate
from mlops_core.deployments import NoCanary, change_served_version, end_canary, start_canary
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
    strategy = strategy_of(ctx)
    if strategy is not DeployStrategy.DIRECT:
        champion = served_version(ctx.mlflow, name, alias)
        if champion is not None and champion != version:
            start_challenger(ctx, name, version, champion, strategy, verdict.reason)
            return
        ctx.log(
            f"DEPLOY_STRATEGY {strategy}: no other version of {name} is served to compare with, "
            f"so version {version} is served directly"
        )

    timeout = max(1.0, min(settings.deploy_wait_seconds, ctx.remaining()))
    subscription = _subscribe(ctx)  # before the alias moves: no report is missed
    try:
        previous = _point_alias(ctx, name, version, alias, verdict.reason)
        ctx.log(
            f"serving alias {alias!r} of {name} moved to version {version} "
            f"(was {previous or 'none'}); waiting up to {timeout:g}s for a model server"
        )
        try:
            replica = _wait_loaded(ctx, alias, name, version, timeout, subscription)
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


def strategy_of(ctx: PhaseContext) -> DeployStrategy:
    """The config cell's DEPLOY_STRATEGY, else the setting's."""
    chosen = ctx.contract.deploy_strategy if ctx.contract else None
    return chosen if chosen is not None else ctx.settings.deploy_strategy


def start_challenger(
    ctx: PhaseContext,
    name: str,
    version: str,
    champion: str,
    strategy: DeployStrategy,
    reason: str,
) -> None:
    """Start `version` as the challenger and wait until a model server has loaded it; abort
    the canary (the champion alone keeps serving) when none does."""
    settings = ctx.settings
    mode = CanaryMode.SHADOW if strategy is DeployStrategy.SHADOW else CanaryMode.SPLIT
    config = CanaryConfig(
        version=version,
        weight=settings.canary_weight,
        mode=mode,
        actor=f"pipeline {ctx.pipeline_id}",
    )
    timeout = max(1.0, min(settings.deploy_wait_seconds, ctx.remaining()))
    subscription = _subscribe(ctx)  # before the alias moves: no report is missed
    try:
        _point_challenger(ctx, name, config, reason)
        ctx.log(
            f"{name} version {version} starts as the challenger beside version {champion} "
            f"({mode}, {config.weight:g}% of requests); waiting up to {timeout:g}s for a "
            "model server"
        )
        try:
            replica = _wait_loaded(
                ctx, settings.challenger_alias, name, version, timeout, subscription
            )
        except DeployWaitError as exc:
            _abort_challenger(ctx, name, version, str(exc))
            raise PhaseFailed(
                f"{exc}; the canary was aborted, {name} stays on version {champion}"
            ) from None
        except BaseException:
            _abort_challenger(ctx, name, version, "the pipeline stopped while waiting")
            raise
    finally:
        if subscription is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                subscription.close()
    with ctx.session() as session:
        pipeline = session.get(Pipeline, ctx.pipeline_id)
        if pipeline is not None:
            canary = {"champion": champion, "mode": mode.value, "weight": config.weight}
            pipeline.params = {**(pipeline.params or {}), "canary": canary}
    ctx.log(
        f"canary started: {name} version {version} "
        + (
            f"answers {config.weight:g}% of requests"
            if mode is CanaryMode.SPLIT
            else f"shadows {config.weight:g}% of requests"
        )
        + f" beside version {champion} (loaded by model server {replica}); the promotion policy "
        "promotes or aborts it on live evidence"
    )


def _point_challenger(ctx: PhaseContext, name: str, config: CanaryConfig, reason: str) -> None:
    """Start the canary once per pipeline: a redelivered task finds it running."""
    settings = ctx.settings
    with ctx.session() as session:
        done = session.scalars(
            select(Deployment).where(
                Deployment.model_name == name,
                Deployment.version == config.version,
                Deployment.pipeline_id == ctx.pipeline_id,
                Deployment.action == DeploymentAction.CANARY,
            )
        ).first()
        state = serving_state(ctx.mlflow, name, settings.serving_alias, settings.challenger_alias)
        if done is not None and state.canary is not None and state.canary.version == config.version:
            return
        start_canary(
            session,
            ctx.mlflow,
            ctx.redis,
            model_name=name,
            config=config,
            serving_alias=settings.serving_alias,
            challenger_alias=settings.challenger_alias,
            pipeline_id=ctx.pipeline_id,
            reason=reason,
        )


def _abort_challenger(ctx: PhaseContext, name: str, version: str, why: str) -> None:
    """End the canary this pipeline started, unless another challenger replaced it."""
    settings = ctx.settings
    with ctx.session() as session, contextlib.suppress(NoCanary):
        end_canary(
            session,
            ctx.mlflow,
            ctx.redis,
            model_name=name,
            promote=False,
            serving_alias=settings.serving_alias,
            challenger_alias=settings.challenger_alias,
            actor=f"pipeline {ctx.pipeline_id}",
            reason=why,
            expected=version,
            pipeline_id=ctx.pipeline_id,
        )
    ctx.log(f"canary of {name} version {version} aborted: {why}")


def judge(ctx: PhaseContext, name: str, version: str, alias: str) -> GateResult:
    """The gate's verdict on `version` (its gate, the floor, the served version), logged and
    stored on the pipeline row and the registered version."""
    settings = ctx.settings
    verdict = served_gate.judge(
        ctx.mlflow,
        name,
        ctx.gate or default_gate(settings.min_accuracy_threshold),
        ctx.metrics or get_version(ctx.mlflow, name, version).metrics,
        comparison=ctx.contract.comparison if ctx.contract else GateComparison(),
        settings=settings,
        alias=alias,
        version=version,
    )
    ctx.log(verdict.reason)
    ctx.mlflow.set_model_version_tag(name, version, TAG_GATE_VERDICT, verdict.to_json())
    with ctx.session() as session:
        pipeline = session.get(Pipeline, ctx.pipeline_id)
        if pipeline is not None:
            pipeline.params = {**(pipeline.params or {}), "gate_verdict": verdict.as_dict()}
    return verdict


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


def _wait_loaded(
    ctx: PhaseContext,
    alias: str,
    name: str,
    version: str,
    timeout: float,
    subscription: redis.client.PubSub | None,
) -> str:
    """Wait for a model server to serve `version` under `alias`; the id of the one that does."""
    return wait_until_loaded(
        ctx.redis,
        alias,
        name,
        version,
        timeout_seconds=timeout,
        stale_after_seconds=ctx.settings.model_heartbeat_interval_seconds * 3,
        subscription=subscription,
        check=ctx.check_cancel,
        fallback=lambda: _replica_serving(ctx, name, version),
    )


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
            challenger = (model.get("challenger") or {}).get("version")
            if model.get("name") == name and version in (str(model.get("version")), challenger):
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
