"""One attempt at a time per pipeline: taking it (`claim`), keeping it and ending it on time
(`RunLock`), all in the database (see mlops_core/pipeline_lease.py for why not in Redis).

Celery with late acks can hand a pipeline's task out twice: the backend queues a pipeline again
when its worker is lost, and Redis redelivers an unacked message after the visibility timeout.
A delivery that finds the pipeline running under a live attempt (fresh heartbeat) waits, as
long as it takes a dead holder's heartbeat to go stale, and then takes over or, if the holder
is still alive, drops the message; the holder finishes the pipeline.

Writes that decide the pipeline's record (phase rows, the end state) are fenced by the attempt
number (`pipeline_lease.owned_by`). The phases' own small writes (model name, metrics) are not:
an attempt that lost its pipeline notices it at its next heartbeat and stops.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from sqlalchemy import ColumnElement, func, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mlops_core import pipeline_lease
from mlops_core.database import session_scope
from mlops_core.schema import Pipeline, PipelinePhase, utcnow
from mlops_core.settings import Settings
from mlops_core.states import PHASE_ORDER, PhaseStatus, PipelineStatus
from worker.phases.context import PhaseContext

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """What the runner copied from the pipeline row when it took the pipeline."""

    attempt: int
    repo_url: str
    branch: str
    notebook_path: str
    commit_sha: str | None
    token_encrypted: str | None
    previous_run_id: str | None
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Ended:
    """The claim ended the pipeline without running it; the log should say so."""

    status: PipelineStatus
    message: str


class _Busy:
    """A live attempt holds the pipeline, or it changed under this claim: look again."""


BUSY: Final = _Busy()


def claim(settings: Settings, pipeline_id: int) -> Claim | Ended | None:
    """Take the pipeline as a new attempt; None when there is nothing for this delivery to do.

    Waits while a live attempt holds it: at most as long as a dead holder's heartbeat takes to
    go stale, plus two beats.
    """
    interval = pipeline_lease.heartbeat_interval(settings)
    give_up = time.monotonic() + pipeline_lease.stale_after(settings) + 2 * interval
    while True:
        with session_scope(settings.database_url) as session:
            outcome = _try_claim(session, settings, pipeline_id)
        if not isinstance(outcome, _Busy):
            return outcome
        if time.monotonic() >= give_up:
            logger.warning("pipeline %s is held by a live attempt; delivery dropped", pipeline_id)
            return None
        time.sleep(interval)


def _try_claim(
    session: Session, settings: Settings, pipeline_id: int
) -> Claim | Ended | _Busy | None:
    pipeline = session.get(Pipeline, pipeline_id)
    if pipeline is None:
        logger.warning("pipeline %s does not exist; task dropped", pipeline_id)
        return None
    status = PipelineStatus(pipeline.status)
    if status.finished:
        return None
    if status is PipelineStatus.RUNNING:
        if pipeline_lease.heartbeat_age(session, pipeline) < pipeline_lease.stale_after(settings):
            return BUSY
        if pipeline.cancel_requested or pipeline.attempts >= settings.max_pipeline_attempts:
            lost = pipeline_lease.settle_lost(session, pipeline, settings)
            return BUSY if lost is None else Ended(PipelineStatus(lost.outcome), lost.message)
    seen = (
        (Pipeline.id == pipeline_id)
        & (Pipeline.attempts == pipeline.attempts)
        & (Pipeline.status == status)
    )
    if status is PipelineStatus.RUNNING:
        seen = seen & pipeline_lease.stale_clause(session, settings)
    if pipeline.cancel_requested:
        return _cancel_before_start(session, pipeline, seen)
    taken = session.execute(
        update(Pipeline)
        .where(seen)
        .values(
            attempts=Pipeline.attempts + 1,
            status=PipelineStatus.RUNNING,
            started_at=func.coalesce(Pipeline.started_at, utcnow()),
            finished_at=None,
            error=None,
            heartbeat_at=func.now(),
        )
        .execution_options(synchronize_session=False)
    )
    if not taken.rowcount:  # type: ignore[attr-defined]
        return BUSY
    for phase in _phases(pipeline):
        phase.status = PhaseStatus.PENDING
        phase.started_at = phase.finished_at = phase.error = None
    return Claim(
        attempt=pipeline.attempts + 1,
        repo_url=pipeline.repo_url,
        branch=pipeline.branch,
        notebook_path=pipeline.notebook_path,
        commit_sha=pipeline.commit_sha,
        token_encrypted=pipeline.repo.token_encrypted if pipeline.repo else None,
        previous_run_id=pipeline.mlflow_run_id,
        parameters=dict(pipeline.parameters or {}),
    )


def _cancel_before_start(
    session: Session, pipeline: Pipeline, seen: ColumnElement[bool]
) -> Ended | _Busy:
    message = "cancelled before it started"
    done = session.execute(
        update(Pipeline)
        .where(seen)
        .values(status=PipelineStatus.CANCELLED, finished_at=utcnow(), error=message)
        .execution_options(synchronize_session=False)
    )
    if not done.rowcount:  # type: ignore[attr-defined]
        return BUSY
    _phases(pipeline)
    session.flush()
    pipeline_lease.end_open_phases(session, pipeline.id, failed_error=None)
    return Ended(PipelineStatus.CANCELLED, message)


def _phases(pipeline: Pipeline) -> list[PipelinePhase]:
    """The pipeline's phase rows, created on first use; a row for a phase added since an
    earlier attempt created them is added too, and all are put in today's order."""
    rows = {row.name: row for row in pipeline.phases}
    for i, phase in enumerate(PHASE_ORDER):
        row = rows.get(phase.value)
        if row is None:
            pipeline.phases.append(
                PipelinePhase(name=phase.value, position=i, status=PhaseStatus.PENDING)
            )
        else:
            row.position = i
    return pipeline.phases


class RunLock:
    """Keeps one attempt's claim alive, notices losing it, and ends the attempt on time.

    A daemon thread refreshes the heartbeat every `heartbeat_interval`. When the refresh finds
    the attempt no longer owns the pipeline, or the attempt is still running
    PIPELINE_TIMEOUT_SECONDS + `end_margin` after it started (a call hung past every bound),
    it records why in `lost`, sets `ctx.stop_reason` and `ctx.cancel_event` so the phases stop,
    and in the second case fails the pipeline itself: the thread runs whatever the runner's
    thread is stuck in.
    """

    def __init__(self, ctx: PhaseContext) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._hard_deadline = ctx.deadline + pipeline_lease.end_margin(ctx.settings)
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._keep, name=f"run-lock-{ctx.pipeline_id}", daemon=True
        )
        self.lost: str | None = None

    def __enter__(self) -> RunLock:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def record_end(self, status: PipelineStatus, error: str | None) -> bool:
        """Write the attempt's end state (no Redis, no MLflow); False if it lost the pipeline."""
        ctx = self._ctx
        with session_scope(self._settings.database_url) as session:
            ended = session.execute(
                update(Pipeline)
                .where(pipeline_lease.owned_by(ctx.pipeline_id, ctx.attempt))
                .values(status=status, error=error, finished_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if not ended.rowcount:  # type: ignore[attr-defined]
                return False
            failed = error if status is PipelineStatus.FAILED else None
            pipeline_lease.end_open_phases(session, ctx.pipeline_id, failed_error=failed)
        # Ended: nothing is left to keep. A beat from here on could only refresh a row someone
        # set running again (a redelivery's takeover would then wait out a heartbeat that this
        # attempt, busy archiving its log, keeps fresh).
        self._done.set()
        return True

    def _keep(self) -> None:
        ctx = self._ctx
        interval = pipeline_lease.heartbeat_interval(self._settings)
        while not self._done.wait(interval):
            if time.monotonic() >= self._hard_deadline:
                self._time_out()
                return
            try:
                with session_scope(self._settings.database_url) as session:
                    owned = pipeline_lease.beat(session, ctx.pipeline_id, ctx.attempt)
            except SQLAlchemyError as exc:
                logger.warning("pipeline %s: heartbeat not written (%s)", ctx.pipeline_id, exc)
                continue
            if not owned:
                self._stop(
                    f"attempt {ctx.attempt} no longer owns the pipeline (it was ended, or "
                    "queued again after its heartbeat went stale)"
                )
                return

    def _time_out(self) -> None:
        settings = self._settings
        phase = self._ctx.phase or "start"
        error = (
            f"{phase}: still running {pipeline_lease.end_margin(settings):g} s past "
            f"PIPELINE_TIMEOUT_SECONDS={settings.pipeline_timeout_seconds} (a call hung past "
            "its own time limits)"
        )
        try:
            self.record_end(PipelineStatus.FAILED, error)
        except SQLAlchemyError:
            logger.exception("pipeline %s: could not record the time-out", self._ctx.pipeline_id)
        self._stop(error)

    def _stop(self, reason: str) -> None:
        logger.warning("pipeline %s: stopping attempt: %s", self._ctx.pipeline_id, reason)
        self.lost = reason
        self._ctx.stop_reason = reason
        self._ctx.cancel_event.set()
