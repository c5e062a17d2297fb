"""Each pipeline reports to its commit on GitHub: pending, then success, failure or error.

The backend, not the worker, posts the statuses, from the pipeline rows: every way a pipeline
changes (the worker's phases, a cancel while queued, the reaper failing a pipeline whose worker
died) shows up there, and posting happens entirely off the pipeline's path, so a GitHub outage
neither fails nor slows a run. Each pass, every COMMIT_STATUS_INTERVAL_SECONDS, looks at the
pipelines whose final status GitHub does not have yet (`commit_status_settled_at` NULL):

1. Which repository on GITHUB_API_URL and which token (backend/github_api.py). None applies (no
   token, another host, a local repository): the pipeline is settled and nothing is posted.
2. What the pipeline should say now (`describe`): `pending` while queued and running (the
   phase), `success` ("v3 served · accuracy 0.933", or "v3 registered, not served: gate ..."),
   `failure` (the error: "execute: cell 10 (mlops:evaluation) raised ValueError: ..."), or
   `error` for a platform fault or a cancel. When that differs from the last status wanted, a
   new row is added to `commit_statuses`; an older one still waiting is superseded (GitHub
   shows the latest status of a context, so an outdated one is never posted late).
3. The latest waiting status is posted (context `mlops/<notebook path>`, target_url the
   pipeline's page under PUBLIC_BASE_URL). A failure that may pass later (GitHub unreachable,
   a 5xx, a rate limit) is retried with exponential backoff, or when GitHub's rate-limit
   headers say; one that will not (401, 403, 404, 422) is kept with GitHub's message. Either
   way the row, and so the pipeline's API and page, say what happened.
4. A finished pipeline whose last status is delivered (or given up), and still the one it
   calls for, is settled.

Only one backend posts at a time (a lease in the database, mlops_core/service_lease.py): two
posting the same pipeline could land its statuses on GitHub out of order.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from backend.api_models import as_utc
from backend.github_api import GitHubApi, GitHubError, GitHubRepo, github_repo
from backend.periodic import every
from mlops_core import secrets_box
from mlops_core.database import session_scope
from mlops_core.schema import CommitStatus, Pipeline, utcnow
from mlops_core.service_lease import hold, holder_id
from mlops_core.settings import Settings
from mlops_core.states import Phase, PhaseStatus, PipelineStatus

logger = logging.getLogger(__name__)

LEASE_NAME: Final = "commit-statuses"
BATCH: Final = 200
DESCRIPTION_LENGTH: Final = 140  # GitHub's limit
RETRY_BASE_SECONDS: Final = 1.0
RETRY_MAX_SECONDS: Final = 300.0
# A status GitHub has not taken after this long is given up (the commit has moved on).
GIVE_UP_AFTER: Final = timedelta(days=1)

WAITING: Final = "waiting"
POSTED: Final = "posted"
SUPERSEDED: Final = "superseded"
FAILED: Final = "failed"

# Errors that are the platform's fault, not the commit's: GitHub's `error` state.
PLATFORM_FAULTS: Final = (
    "internal error:",
    "worker lost",
    "MLflow unreachable",
    "no model server reported",
    "notebooks are not run:",
    "ENCRYPTION_KEY",
    "past PIPELINE_TIMEOUT_SECONDS",
)
_NOT_SERVED_TAIL = re.compile(r"[;:] [^;:]* version \S+ is registered, not served$")


def status_context(notebook_path: str) -> str:
    """The status's context: one line per notebook on the commit."""
    return f"mlops/{notebook_path}"


def pipeline_url(settings: Settings, pipeline_id: int) -> str:
    """The pipeline's page on the dashboard (the status's link)."""
    return f"{settings.public_base_url.rstrip('/')}/ui/pipelines/{pipeline_id}"


def _short(text: str) -> str:
    """The first line of `text`, within GitHub's 140 characters."""
    line = " ".join((text.strip().splitlines() or [""])[0].split())
    if len(line) <= DESCRIPTION_LENGTH:
        return line
    return line[: DESCRIPTION_LENGTH - 1].rstrip() + "…"


def _phase(pipeline: Pipeline, name: Phase) -> str | None:
    """The error (or skip reason) recorded on one phase of the pipeline."""
    return next((p.error for p in pipeline.phases if p.name == name.value), None)


def _headline(pipeline: Pipeline) -> str:
    """` · <gate metric> <value>` (accuracy when the gate's metric was not logged), or ''."""
    metrics = pipeline.metrics or {}
    gate = (pipeline.params or {}).get("gate") or {}
    for name in (gate.get("metric"), "accuracy"):
        value = metrics.get(name) if isinstance(name, str) else None
        if isinstance(value, int | float):
            return f" · {name} {value:.3g}"
    return ""


def describe(pipeline: Pipeline) -> tuple[str, str]:
    """The commit status (state, description) a pipeline row calls for now."""
    status = PipelineStatus(pipeline.status)
    if status is PipelineStatus.QUEUED:
        return "pending", "queued"
    if status is PipelineStatus.RUNNING:
        # Between two phases none is running: name the one about to start.
        phase = next(
            (p.name for p in pipeline.phases if p.status == PhaseStatus.RUNNING),
            next((p.name for p in pipeline.phases if p.status == PhaseStatus.PENDING), None),
        )
        return "pending", f"running: {phase}" if phase else "starting"
    if status is PipelineStatus.SUCCESS:
        version = pipeline.model_version
        if not version:
            return "success", "succeeded"
        if pipeline.deployed:
            return "success", _short(f"v{version} served{_headline(pipeline)}")
        canary = (pipeline.params or {}).get("canary")
        if isinstance(canary, dict):  # the deploy phase started it as the challenger
            return "success", _short(f"v{version} canary started beside v{canary.get('champion')}")
        reason = (_phase(pipeline, Phase.DEPLOY) or "not deployed").split("; ")[0]
        reason = _NOT_SERVED_TAIL.sub("", reason)
        return "success", _short(f"v{version} registered, not served: {reason}")
    error = pipeline.error or status.value
    if status is PipelineStatus.CANCELLED:
        return "error", _short(error if error.startswith("cancelled") else f"cancelled: {error}")
    state = "error" if any(marker in error for marker in PLATFORM_FAULTS) else "failure"
    return state, _short(error)


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: 1, 2, 4... up to 5 minutes."""
    return min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1))


@dataclass(frozen=True)
class Outgoing:
    """A status to post now."""

    row_id: int
    target: GitHubRepo
    sha: str
    state: str
    description: str
    context: str
    target_url: str


class CommitStatusReporter:
    """Brings GitHub's commit statuses up to date with the pipelines (see the module doc)."""

    def __init__(self, settings: Settings, api: GitHubApi | None = None) -> None:
        self._settings = settings
        self._api = api or GitHubApi()
        self._holder = holder_id()
        # Per token: monotonic time before which GitHub asked not to be called (rate limit).
        self._paused_until: dict[str, float] = {}

    @property
    def lease_seconds(self) -> float:
        """How long one pass may hold the lease: many intervals, so a live holder keeps it."""
        return max(30.0, 10 * self._settings.commit_status_interval_seconds)

    def close(self) -> None:
        self._api.close()

    def run_once(self) -> int:
        """One pass (when this backend holds the lease); return how many statuses were posted."""
        settings = self._settings
        if not hold(settings.database_url, LEASE_NAME, self._holder, self.lease_seconds):
            return 0
        # Stop well before the lease runs out, so no other backend takes over mid-pass.
        deadline = time.monotonic() + self.lease_seconds / 2
        with session_scope(settings.database_url) as session:
            ids = session.scalars(
                select(Pipeline.id)
                .where(Pipeline.commit_status_settled_at.is_(None))
                .order_by(Pipeline.id)
                .limit(BATCH)
            ).all()
        posted = 0
        for pipeline_id in ids:
            if time.monotonic() > deadline:
                break
            posted += self._sync(pipeline_id)
        return posted

    def _sync(self, pipeline_id: int) -> int:
        with session_scope(self._settings.database_url) as session:
            outgoing = self._plan(session, pipeline_id)
        if outgoing is None:
            return 0
        error = self._post(outgoing)
        # Settling is left to the next pass: the pipeline may have moved on while this posted.
        with session_scope(self._settings.database_url) as session:
            row = session.get(CommitStatus, outgoing.row_id)
            if row is not None:
                self._record(row, error)
        return 1 if error is None else 0

    def _target(self, pipeline: Pipeline) -> GitHubRepo | str:
        """Where the pipeline's statuses go, or why they go nowhere."""
        try:
            token = (
                secrets_box.decrypt(self._settings, pipeline.repo.token_encrypted)
                if pipeline.repo is not None and pipeline.repo.token_encrypted
                else None
            )
        except secrets_box.SecretsBoxError as exc:
            return f"the repo's token cannot be read: {exc}"
        return github_repo(pipeline.repo_url, repo_token=token, settings=self._settings)

    def _plan(self, session: Session, pipeline_id: int) -> Outgoing | None:
        """Record what the pipeline wants GitHub to show; return it if it is to be posted now."""
        pipeline = session.scalar(
            select(Pipeline)
            .where(Pipeline.id == pipeline_id)
            .options(selectinload(Pipeline.phases), selectinload(Pipeline.repo))
        )
        if pipeline is None:
            return None
        finished = PipelineStatus(pipeline.status).finished
        target = self._target(pipeline)
        if isinstance(target, str):
            self._settle(pipeline, f"no commit status ({target})")
            return None
        sha = pipeline.commit_sha
        if sha is None:  # a manual trigger's head is resolved by fetch
            if finished:
                self._settle(pipeline, "no commit status (no commit was resolved)")
            return None
        state, description = describe(pipeline)
        rows = session.scalars(
            select(CommitStatus)
            .where(CommitStatus.pipeline_id == pipeline_id)
            .order_by(CommitStatus.position)
        ).all()
        latest = rows[-1] if rows else None
        now = utcnow()
        if latest is None or (latest.state, latest.description) != (state, description):
            for row in rows:
                if row.delivery == WAITING:
                    row.delivery = SUPERSEDED
            latest = CommitStatus(
                pipeline_id=pipeline_id,
                position=latest.position + 1 if latest else 1,
                commit_sha=sha,
                context=status_context(pipeline.notebook_path),
                state=state,
                description=description,
                target_url=pipeline_url(self._settings, pipeline_id),
                delivery=WAITING,
                attempts=0,
                wanted_at=now,
                next_attempt_at=now,
            )
            session.add(latest)
            session.flush()
        if latest.delivery != WAITING:
            if finished:
                self._settle(pipeline, latest.description)
            return None
        due: datetime = as_utc(latest.next_attempt_at)  # type: ignore[assignment]
        if due > now or self._paused_until.get(target.token, 0.0) > time.monotonic():
            return None
        return Outgoing(
            latest.id, target, sha, state, description, latest.context, latest.target_url
        )

    def _post(self, outgoing: Outgoing) -> GitHubError | None:
        """Post one status; return the error if GitHub did not take it."""
        target = outgoing.target
        try:
            wait = self._api.create_status(
                target,
                outgoing.sha,
                state=outgoing.state,
                description=outgoing.description,
                context=outgoing.context,
                target_url=outgoing.target_url,
            )
        except GitHubError as exc:
            if exc.wait is not None:
                self._pause(target, exc.wait)
            logger.warning(
                "commit status %s for %s@%s not posted: %s",
                outgoing.state,
                target.full_name,
                outgoing.sha[:12],
                exc,
            )
            return exc
        if wait is not None:
            self._pause(target, wait)
        return None

    def _pause(self, target: GitHubRepo, seconds: float) -> None:
        logger.warning(
            "GitHub's rate limit for %s: pausing statuses %.0f s", target.token_source, seconds
        )
        self._paused_until[target.token] = time.monotonic() + seconds

    def _record(self, row: CommitStatus, error: GitHubError | None) -> None:
        """Write how the post went on the status's row."""
        now = utcnow()
        row.attempts += 1
        if error is None:
            row.delivery, row.posted_at, row.last_error = POSTED, now, None
            return
        row.last_error = str(error)
        wanted: datetime = as_utc(row.wanted_at)  # type: ignore[assignment]
        if not error.retriable or now - wanted > GIVE_UP_AFTER:
            row.delivery = FAILED
            return
        delay = error.wait if error.wait is not None else retry_delay(row.attempts)
        row.next_attempt_at = now + timedelta(seconds=delay)

    def _settle(self, pipeline: Pipeline, outcome: str) -> None:
        """GitHub has the pipeline's last status (or gets none): stop looking at it."""
        pipeline.commit_status_settled_at = utcnow()
        logger.debug("pipeline %s: commit status settled: %s", pipeline.id, outcome)


@asynccontextmanager
async def commit_status_loop(settings: Settings) -> AsyncIterator[None]:
    """Run a reporter pass every COMMIT_STATUS_INTERVAL_SECONDS."""
    reporter = CommitStatusReporter(settings)
    try:
        async with every(
            settings.commit_status_interval_seconds, reporter.run_once, name="commit-statuses"
        ):
            yield
    finally:
        reporter.close()
