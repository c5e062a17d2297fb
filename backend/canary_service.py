"""Canary and shadow traffic from the control plane, with no HTTP in it (the routes translate).

Starting, promoting and aborting a challenger change the registry (mlops_core/canary_registry.py)
and leave a deployment-history row with their evidence, announced to the replicas like deploys
(mlops_core/deployments.py). The status compares both versions live (backend/canary_evidence.py)
and shows what the promotion policy (mlops_core/canary_policy.py) would decide on those figures.
Every method blocks on MLflow and the database: callers run them on the registry gate's threads.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime

import redis
from mlflow import MlflowClient
from sqlalchemy.orm import Session

from backend.canary_evidence import gather
from backend.canary_views import (
    CanaryOutcome,
    CanaryStatus,
    CheckView,
    PolicyView,
    VersionFiguresView,
)
from backend.model_service import ModelNotFound
from mlops_core.canary import CanaryConfig, CanaryMode
from mlops_core.canary_policy import (
    CanaryPolicy,
    Verdict,
    VersionFigures,
    decide,
    evidence_record,
)
from mlops_core.canary_registry import Serving, serving_state
from mlops_core.deployments import end_canary, start_canary
from mlops_core.model_events import DeploymentAction, replica_versions
from mlops_core.model_registry import model_exists, version_exists
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)


class CanaryService:
    """One request's (or one policy pass's) view of canaries: registry, session, announcer."""

    def __init__(
        self, settings: Settings, registry: MlflowClient, announcer: redis.Redis, session: Session
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._redis = announcer
        self._session = session
        self.policy = CanaryPolicy.from_settings(settings)

    def start(
        self,
        name: str,
        version: str,
        *,
        weight: float | None,
        mode: CanaryMode,
        sticky_key: str | None,
        actor: str,
    ) -> CanaryStatus:
        """Run `version` as the challenger (CanaryRefused when nothing else is served or it is
        the served version); starting again changes the running canary."""
        if not model_exists(self._registry, name):
            raise ModelNotFound(f"model {name!r} is not registered")
        if not version_exists(self._registry, name, version):
            raise ModelNotFound(f"model {name!r} has no version {version}")
        config = CanaryConfig(
            version=version,
            weight=self._settings.canary_weight if weight is None else weight,
            mode=mode,
            sticky_key=sticky_key,
            actor=actor,
        )
        change = start_canary(
            self._session,
            self._registry,
            self._redis,
            model_name=name,
            config=config,
            serving_alias=self._settings.serving_alias,
            challenger_alias=self._settings.challenger_alias,
        )
        logger.info(
            "canary of %s: v%s beside v%s, %s %g%%%s",
            name,
            version,
            change.champion,
            config.mode,
            config.weight,
            f" (replaces v{change.replaced})" if change.replaced else "",
        )
        return self.status(name)

    def status(self, name: str) -> CanaryStatus:
        """The running canary with both versions' live figures, or `active: false`."""
        state = self._state(name)
        if state.canary is None or state.champion is None:
            return CanaryStatus(name=name, active=False, champion=state.champion)
        canary = state.canary
        evidence = gather(self._settings, name, state.champion, canary)
        decision = decide(evidence, self.policy)
        return CanaryStatus(
            name=name,
            active=True,
            champion=state.champion,
            challenger=canary.version,
            weight=canary.weight,
            mode=canary.mode,
            sticky_key=canary.sticky_key,
            started_at=datetime.fromtimestamp(canary.started_at, UTC),
            started_by=canary.actor,
            elapsed_seconds=round(evidence.elapsed_seconds, 1),
            versions=[
                _figures_view(evidence.champion, "champion"),
                _figures_view(evidence.challenger, "challenger"),
            ],
            agreement=evidence.agreement,
            compared=evidence.compared,
            policy=PolicyView(
                verdict=decision.verdict,
                reason=decision.reason,
                checks=[CheckView(**asdict(check)) for check in decision.checks],
            ),
            replicas=self._replicas(name),
        )

    def promote(self, name: str, *, actor: str) -> CanaryOutcome:
        """Serve the challenger (NoCanary when none runs); the comparison now is the evidence."""
        return self._end(name, promote=True, actor=actor)

    def abort(self, name: str, *, actor: str) -> CanaryOutcome:
        """Stop the challenger: the served version answers every request again."""
        return self._end(name, promote=False, actor=actor)

    def apply_policy(self, name: str, state: Serving) -> CanaryOutcome | None:
        """Let the policy decide one running canary; acts on promote and abort, None on wait."""
        assert state.canary is not None and state.champion is not None
        evidence = gather(self._settings, name, state.champion, state.canary)
        decision = decide(evidence, self.policy)
        logger.info(
            "canary policy for %s v%s: %s (%s)",
            name,
            state.canary.version,
            decision.verdict,
            decision.reason,
        )
        if decision.verdict == Verdict.WAIT:
            return None
        return self._finish(
            name,
            promote=decision.verdict == Verdict.PROMOTE,
            actor="canary policy",
            reason=f"canary policy: {decision.reason}",
            evidence=evidence_record(decision, evidence, self.policy),
            expected=state.canary.version,
        )

    def _end(self, name: str, *, promote: bool, actor: str) -> CanaryOutcome:
        state = self._state(name)
        evidence: dict[str, object] | None = None
        reason = f"{'promoted' if promote else 'aborted'} by {actor}"
        if state.canary is not None and state.champion is not None:
            found = gather(self._settings, name, state.champion, state.canary)
            decision = decide(found, self.policy)
            evidence = evidence_record(decision, found, self.policy)
            reason = f"{reason} (the policy would {decision.verdict}: {decision.reason})"
        return self._finish(
            name,
            promote=promote,
            actor=actor,
            reason=reason,
            evidence=evidence,
            expected=state.canary.version if state.canary else None,
        )

    def _finish(
        self,
        name: str,
        *,
        promote: bool,
        actor: str,
        reason: str,
        evidence: dict[str, object] | None,
        expected: str | None,
    ) -> CanaryOutcome:
        change = end_canary(
            self._session,
            self._registry,
            self._redis,
            model_name=name,
            promote=promote,
            serving_alias=self._settings.serving_alias,
            challenger_alias=self._settings.challenger_alias,
            actor=actor,
            reason=reason,
            evidence=evidence,
            expected=expected,
        )
        action = "promoted" if promote else "aborted"
        logger.info("canary of %s: v%s %s by %s", name, change.challenger, action, actor)
        return CanaryOutcome(
            name=name,
            action=DeploymentAction.PROMOTE if promote else DeploymentAction.ABORT,
            served_version=change.challenger if promote else change.champion,
            challenger=change.challenger,
            previous_version=change.champion,
            announced=change.announced,
            evidence=evidence,
        )

    def _state(self, name: str) -> Serving:
        if not model_exists(self._registry, name):
            raise ModelNotFound(f"model {name!r} is not registered")
        return serving_state(
            self._registry, name, self._settings.serving_alias, self._settings.challenger_alias
        )

    def _replicas(self, name: str) -> dict[str, str] | None:
        try:
            return replica_versions(
                self._redis,
                self._settings.challenger_alias,
                name,
                self._settings.model_heartbeat_interval_seconds * 3,
            )
        except redis.RedisError:
            return None


def _figures_view(figures: VersionFigures, role: str) -> VersionFiguresView:
    return VersionFiguresView(
        role=role,  # type: ignore[arg-type]
        error_rate=figures.error_rate,
        **asdict(figures),
    )
