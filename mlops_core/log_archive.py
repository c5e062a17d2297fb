"""Durable copy of a pipeline's log: Redis keeps a replay window, the database keeps it all."""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mlops_core.database import session_scope
from mlops_core.log_events import FINISHED_STREAM, LogEvent, history_key
from mlops_core.schema import LogLine, Pipeline, utcnow
from mlops_core.states import PipelineStatus

logger = logging.getLogger(__name__)
FINISHED = tuple(status for status in PipelineStatus if status.finished)


def archive_log(session: Session, client: redis.Redis, pipeline_id: int) -> int:
    """Copy every event Redis still holds for the pipeline into `log_lines`; return the count.

    Safe to repeat (a retried task archives again): the rows Redis holds replace the stored ones
    from the first seq it still has, so nothing is duplicated, and lines already archived that
    Redis has since lost (expired, flushed, trimmed by the cap) are kept rather than wiped.
    """
    events = [
        LogEvent.model_validate_json(raw) for raw in client.lrange(history_key(pipeline_id), 0, -1)
    ]
    if not events:
        return 0
    session.execute(
        delete(LogLine).where(LogLine.pipeline_id == pipeline_id, LogLine.seq >= events[0].seq)
    )
    session.add_all(
        LogLine(
            pipeline_id=pipeline_id,
            seq=event.seq,
            ts=event.ts,
            phase=event.phase,
            cell=event.cell,
            stream=event.stream,
            text=event.text,
        )
        for event in events
    )
    return len(events)


def archive_pipeline_log(database_url: str, client: redis.Redis, pipeline_id: int) -> bool:
    """Archive an ended pipeline's log once, in its own transaction; False if Redis failed.

    Kept apart from the transaction that writes the pipeline's end state, so a Redis outage never
    holds that state back: the worker tries right after the end, and the backend retries
    (`pending_archives`) until it succeeds. Marking `log_archived_at` comes first in the same
    transaction, conditional on it being unset: of a worker and several backends trying at once,
    one copies the log and the others find it done.
    """
    try:
        with session_scope(database_url) as session:
            claimed = session.execute(
                update(Pipeline)
                .where(Pipeline.id == pipeline_id, Pipeline.log_archived_at.is_(None))
                .values(log_archived_at=utcnow())
            )
            if claimed.rowcount:  # type: ignore[attr-defined]
                archive_log(session, client, pipeline_id)
    except redis.RedisError as exc:
        logger.warning("log of pipeline %s not archived yet (Redis: %s)", pipeline_id, exc)
        return False
    return True


def pending_archives(
    session: Session, *, ended_before_seconds: float, limit: int = 100
) -> list[int]:
    """Ended pipelines whose log is still only in Redis, that ended over the given time ago.

    The wait leaves the worker that ended the pipeline time to publish its last lines and
    archive them itself.
    """
    cutoff = utcnow() - timedelta(seconds=ended_before_seconds)
    return list(
        session.scalars(
            select(Pipeline.id)
            .where(
                Pipeline.log_archived_at.is_(None),
                Pipeline.status.in_(FINISHED),
                Pipeline.finished_at < cutoff,
            )
            .order_by(Pipeline.id)
            .limit(limit)
        )
    )


def stored_log(
    session: Session, pipeline_id: int, after: int = 0, limit: int = 1000
) -> list[LogLine]:
    """The archived lines with seq > `after`, oldest first."""
    query = (
        select(LogLine)
        .where(LogLine.pipeline_id == pipeline_id, LogLine.seq > after)
        .order_by(LogLine.seq)
        .limit(limit)
    )
    return list(session.scalars(query))


def stored_events(
    session: Session,
    pipeline_id: int,
    *,
    pipeline_status: str | None,
    after: int = 0,
    limit: int = 1000,
) -> list[LogEvent]:
    """Archived lines as the events viewers receive live.

    The table has no status column, so the final status event gets the pipeline's own status
    back from its row.
    """
    return [
        LogEvent(
            seq=line.seq,
            ts=line.ts,
            pipeline_id=line.pipeline_id,
            phase=line.phase,
            cell=line.cell,
            stream=line.stream,
            text=line.text,
            status=pipeline_status if line.stream == FINISHED_STREAM else None,
        )
        for line in stored_log(session, pipeline_id, after, limit)
    ]
