"""The promotion policy's loop: every running canary judged on an interval, by one backend.

Every CANARY_CHECK_INTERVAL_SECONDS the backend holding the lease `canary-policy`
(mlops_core/service_lease.py) finds the models with a challenger in the registry and lets the
policy decide each (backend/canary_service.py). Several backends run the loop; the lease makes
one of them decide, so a canary is promoted or aborted once, not once per backend (a second
decision would also find no canary left: `end_canary` checks the challenger it judged).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import redis
from mlflow import MlflowClient

from backend.canary_service import CanaryService
from backend.canary_views import CanaryOutcome
from backend.periodic import every
from mlops_core.canary_registry import canaries
from mlops_core.database import session_factory
from mlops_core.deployments import NoCanary
from mlops_core.service_lease import hold, holder_id
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)

LEASE_NAME: Final = "canary-policy"


class CanaryWatch:
    """One backend's side of the policy loop: a pass under the lease."""

    def __init__(self, settings: Settings, registry: MlflowClient, announcer: redis.Redis):
        self._settings = settings
        self._registry = registry
        self._redis = announcer
        self._holder = holder_id()

    @property
    def lease_seconds(self) -> float:
        """How long the lease outlives a pass: many intervals, so a live holder keeps it; when
        the holder dies, another backend takes over within this time."""
        return max(30.0, 10 * self._settings.canary_check_interval_seconds)

    def run_once(self) -> list[CanaryOutcome]:
        """Judge every running canary if this backend holds the lease; the canaries ended."""
        settings = self._settings
        if not hold(settings.database_url, LEASE_NAME, self._holder, self.lease_seconds):
            return []
        running = canaries(self._registry, settings.serving_alias, settings.challenger_alias)
        ended: list[CanaryOutcome] = []
        for name, state in running.items():
            with session_factory(settings.database_url)() as session:
                service = CanaryService(settings, self._registry, self._redis, session)
                try:
                    outcome = service.apply_policy(name, state)
                except NoCanary as exc:  # ended by hand since it was read
                    logger.info("canary policy: %s", exc)
                    continue
                except Exception:  # one model's failure must not keep the others waiting
                    logger.exception("canary policy for %s failed; next pass retries", name)
                    continue
            if outcome is not None:
                ended.append(outcome)
        return ended


@asynccontextmanager
async def canary_policy_loop(
    settings: Settings, registry: MlflowClient, announcer: redis.Redis
) -> AsyncIterator[CanaryWatch]:
    """Run a policy pass every CANARY_CHECK_INTERVAL_SECONDS while the app runs."""
    watch = CanaryWatch(settings, registry, announcer)
    async with every(settings.canary_check_interval_seconds, watch.run_once, name="canary-policy"):
        yield watch
