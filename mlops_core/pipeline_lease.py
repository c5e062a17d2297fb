"""Who runs a pipeline now, and what becomes of a pipeline whose worker is gone.

An attempt is claimed by bumping `pipelines.attempts`; that number is the attempt's fencing
token: every write of the attempt names it (`owned_by`), so once the pipeline was queued again,
taken by another attempt or ended for it, the old attempt's writes match no row and change
nothing. While it runs, the worker refreshes `heartbeat_at` every `heartbeat_interval`; a
running pipeline whose heartbeat is older than `stale_after` has lost its worker, and
`settle_lost` queues it again, or fails it with "worker lost during <phase> (attempt n of m)"
once MAX_PIPELINE_ATTEMPTS attempts were lost. With those two intervals a dead worker's pipeline
is queued again within 5/8 of PIPELINE_RECOVERY_SECONDS, before the budget runs out.

The heartbeat lives in the database, not in a Redis key with a TTL: a Redis restart wipes every
key at once, which would make every running pipeline look lost (and run twice while its worker
is alive), and while Redis is down nobody could tell a dead worker from a live one. The worker
needs the database for every step anyway. Times are the database's own clock (`now()`), so
workers and backends on hosts whose clocks disagree still agree on how old a heartbeat is.

Every change here is a conditional UPDATE on what the reader saw, so several backends (and a
redelivered task) may all find the same stale pipeline: exactly one of them acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from mlops_core.schema import Pipeline, PipelinePhase, utcnow
from mlops_core.settings import Settings
from mlops_core.states import PhaseStatus, PipelineStatus

# Added to PIPELINE_TIMEOUT_SECONDS and MLFLOW_RETRY_SECONDS to bound an attempt (`end_margin`):
# the HTTP timeouts of the last calls, the final writes and a heartbeat interval.
END_MARGIN_EXTRA_SECONDS = 60.0


def heartbeat_interval(settings: Settings) -> float:
    """How often a worker refreshes the heartbeat of the pipeline it runs (and the reaper looks)."""
    return max(0.2, settings.pipeline_recovery_seconds / 8)


def stale_after(settings: Settings) -> float:
    """Heartbeat age past which a running pipeline's worker counts as lost (4 missed beats)."""
    return settings.pipeline_recovery_seconds / 2


def end_margin(settings: Settings) -> float:
    """How long past PIPELINE_TIMEOUT_SECONDS an attempt may take to end, whatever is down.

    The phases stop at the deadline; what may still run after it is one MLflow retry window
    (deploy putting the previous version back) and the final writes. Past this margin the
    worker's own watchdog fails the attempt (worker/run_lock.py).
    """
    return settings.mlflow_retry_seconds + END_MARGIN_EXTRA_SECONDS


def db_now(session: Session) -> datetime:
    """The database's clock: the one every heartbeat is written and judged with."""
    return session.scalar(select(func.now()))  # type: ignore[return-value]


def owned_by(pipeline_id: int, attempt: int) -> ColumnElement[bool]:
    """WHERE clause true while `attempt` still runs the pipeline."""
    return (
        (Pipeline.id == pipeline_id)
        & (Pipeline.attempts == attempt)
        & (Pipeline.status == PipelineStatus.RUNNING)
    )


def beat(session: Session, pipeline_id: int, attempt: int) -> bool:
    """Refresh the heartbeat; False when the attempt no longer owns the pipeline."""
    result = session.execute(
        update(Pipeline).where(owned_by(pipeline_id, attempt)).values(heartbeat_at=func.now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def heartbeat_age(session: Session, pipeline: Pipeline) -> float:
    """Seconds since the pipeline's worker last said it was alive (by the database's clock)."""
    last = pipeline.heartbeat_at or pipeline.started_at or pipeline.created_at
    now = db_now(session)
    if (now.tzinfo is None) != (last.tzinfo is None):  # SQLite keeps no zone; both are UTC
        now, last = now.replace(tzinfo=None), last.replace(tzinfo=None)
    return (now - last).total_seconds()


def _last_sign() -> ColumnElement[Any]:
    """When a pipeline's worker last said it was alive (a row from before heartbeats: its start)."""
    return func.coalesce(Pipeline.heartbeat_at, Pipeline.started_at, Pipeline.created_at)


def stale_clause(session: Session, settings: Settings) -> ColumnElement[bool]:
    """WHERE clause true while the heartbeat is older than `stale_after`.

    A range, not equality with the value read: SQLite stores `now()` with whole seconds and
    Python values with microseconds, so a value read back does not compare equal as text.
    """
    return _last_sign() < db_now(session) - timedelta(seconds=stale_after(settings))


def stale_running(session: Session, settings: Settings, limit: int = 100) -> list[Pipeline]:
    """Running pipelines whose heartbeat is older than `stale_after`, oldest first."""
    return list(
        session.scalars(
            select(Pipeline)
            .where(Pipeline.status == PipelineStatus.RUNNING, stale_clause(session, settings))
            .order_by(_last_sign())
            .limit(limit)
        )
    )


def lost_phase(pipeline: Pipeline) -> str:
    """The phase a lost attempt was in: the running one, else the last one that started."""
    started = [p for p in pipeline.phases if p.started_at is not None]
    running = [p for p in pipeline.phases if p.status == PhaseStatus.RUNNING]
    if running:
        return running[-1].name
    if started:
        return max(started, key=lambda p: p.position).name
    return "start"


def lost_error(phase: str, attempt: int, max_attempts: int) -> str:
    """The error of a pipeline failed because its worker died once too often."""
    return f"worker lost during {phase} (attempt {attempt} of {max_attempts})"


class Settled(StrEnum):
    """What `settle_lost` did with a pipeline whose worker was lost."""

    REQUEUED = "requeued"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class LostPipeline:
    """A pipeline `settle_lost` acted on, and what the log should say about it."""

    pipeline_id: int
    outcome: Settled
    message: str


def settle_lost(session: Session, pipeline: Pipeline, settings: Settings) -> LostPipeline | None:
    """Queue again, fail or cancel a running pipeline whose worker is lost; None if it moved.

    The UPDATE is conditional on the attempt this caller read and on the heartbeat still being
    stale, so a worker that beats in the meantime, or another backend settling it first, makes
    this a no-op. A
    pipeline queued again keeps its attempt count; the next claim starts attempt n + 1.
    The caller commits, then sends a queued pipeline to the broker.
    """
    phase = lost_phase(pipeline)
    attempt, limit = pipeline.attempts, settings.max_pipeline_attempts
    if pipeline.cancel_requested:
        outcome, message = Settled.CANCELLED, f"cancelled (its worker was lost during {phase})"
        values: dict[str, Any] = {"status": PipelineStatus.CANCELLED}
    elif attempt >= limit:
        outcome, message = Settled.FAILED, lost_error(phase, attempt, limit)
        values = {"status": PipelineStatus.FAILED}
    else:
        outcome = Settled.REQUEUED
        message = f"{lost_error(phase, attempt, limit)}; queued again"
        values = {"status": PipelineStatus.QUEUED, "enqueued_at": None}
    finished = outcome is not Settled.REQUEUED
    if finished:
        values.update(error=message, finished_at=utcnow())
    result = session.execute(
        update(Pipeline)
        .where(owned_by(pipeline.id, attempt), stale_clause(session, settings))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    if finished:
        end_open_phases(session, pipeline.id, failed_error=f"worker lost (attempt {attempt})")
    return LostPipeline(pipeline.id, outcome, message)


def end_open_phases(session: Session, pipeline_id: int, *, failed_error: str | None) -> None:
    """Close the phases an ended pipeline left open: the running one failed, pending skipped."""
    now = utcnow()
    session.execute(
        update(PipelinePhase)
        .where(
            PipelinePhase.pipeline_id == pipeline_id,
            PipelinePhase.status == PhaseStatus.RUNNING,
        )
        .values(
            status=PhaseStatus.FAILED if failed_error else PhaseStatus.SKIPPED,
            error=failed_error,
            finished_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(PipelinePhase)
        .where(
            PipelinePhase.pipeline_id == pipeline_id,
            PipelinePhase.status == PhaseStatus.PENDING,
        )
        .values(status=PhaseStatus.SKIPPED)
        .execution_options(synchronize_session=False)
    )
