"""Fires notebooks' cron schedules from the backend's periodic loop: one run per slot.

Every SCHEDULE_INTERVAL_SECONDS each backend asks for the `schedules` lease
(mlops_core/service_lease.py); the holder looks for notebooks whose next slot has come
(`schedule_next_at` <= the database's clock) and, for each, in one transaction: moves
`schedule_next_at` on with a conditional UPDATE on the value it read, and creates the pipeline
(trigger `schedule`, no commit: the worker runs the branch head). Only the transaction whose
UPDATE matched creates one, so a slot fires once even when a lease changes hands mid-pass (a
holder that stalled past its lease while another took over). The pipeline is sent to the
broker after the commit; a failed send is left to the re-queue loop, as for webhooks.

After downtime a notebook fires once, for the latest slot that passed, and its trigger detail
says how many earlier slots were missed (backend/schedules.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Final

from sqlalchemy import or_, select, update
from sqlalchemy.orm import selectinload

from backend.metrics import PIPELINES_CREATED
from backend.periodic import every
from backend.pipeline_queue import PipelineQueue
from backend.pipeline_records import new_pipeline
from backend.schedules import describe, plan
from mlops_core.database import session_scope
from mlops_core.pipeline_lease import db_now
from mlops_core.schema import Notebook
from mlops_core.service_lease import hold, holder_id
from mlops_core.settings import Settings
from mlops_core.states import Trigger

logger = logging.getLogger(__name__)

LEASE_NAME: Final = "schedules"
BATCH: Final = 200


class ScheduleRunner:
    """One backend's side of the schedules: a pass under the lease, and the firing itself."""

    def __init__(self, settings: Settings, queue: PipelineQueue) -> None:
        self._settings = settings
        self._queue = queue
        self._holder = holder_id()

    @property
    def lease_seconds(self) -> float:
        """How long the lease outlives a pass: many intervals, so a live holder keeps it; when
        the holder dies, another backend takes over within this time."""
        return max(30.0, 10 * self._settings.schedule_interval_seconds)

    def run_once(self) -> list[int]:
        """One pass: fire what is due if this backend holds the lease; the pipelines created."""
        if not hold(self._settings.database_url, LEASE_NAME, self._holder, self.lease_seconds):
            return []
        return self.fire_due()

    def fire_due(self) -> list[int]:
        """Create a pipeline for each notebook whose slot has come; each slot fires once."""
        database_url = self._settings.database_url
        with session_scope(database_url) as session:
            now = db_now(session)
            due = session.scalars(
                select(Notebook)
                .options(selectinload(Notebook.repo))
                .where(
                    Notebook.schedule.is_not(None),
                    or_(Notebook.schedule_next_at.is_(None), Notebook.schedule_next_at <= now),
                )
                .order_by(Notebook.schedule_next_at)
                .limit(BATCH)
            ).all()
        fired = [pipeline_id for notebook in due if (pipeline_id := self._fire(notebook, now))]
        for pipeline_id in fired:
            self._queue.enqueue(pipeline_id)
        return fired

    def _fire(self, notebook: Notebook, now: datetime) -> int | None:
        """Move the notebook's next slot on and, when a slot was due, create its pipeline, in one
        transaction that commits only if no one moved it first; the pipeline's id or None."""
        assert notebook.schedule is not None
        firing = plan(notebook.schedule, notebook.schedule_next_at, now)
        seen = (
            Notebook.schedule_next_at.is_(None)
            if notebook.schedule_next_at is None
            else Notebook.schedule_next_at == notebook.schedule_next_at
        )
        with session_scope(self._settings.database_url) as session:
            moved = session.execute(
                update(Notebook)
                .where(Notebook.id == notebook.id, Notebook.schedule == notebook.schedule, seen)
                .values(schedule_next_at=firing.next_at)
                .execution_options(synchronize_session=False)
            )
            if not moved.rowcount or firing.slot is None:  # type: ignore[attr-defined]
                return None
            pipeline = new_pipeline(
                notebook.repo,
                trigger=Trigger.SCHEDULE,
                notebook_path=notebook.notebook_path,
                trigger_detail=describe(firing, notebook.schedule),
            )
            session.add(pipeline)
            session.flush()
            pipeline_id = pipeline.id
        PIPELINES_CREATED.labels(trigger=Trigger.SCHEDULE).inc()
        logger.info(
            "schedule %r of repo %s notebook %s: pipeline %s queued (%s)",
            notebook.schedule,
            notebook.repo_id,
            notebook.notebook_path,
            pipeline_id,
            pipeline.trigger_detail,
        )
        return pipeline_id


@asynccontextmanager
async def schedule_loop(settings: Settings, queue: PipelineQueue) -> AsyncIterator[None]:
    """Run a schedule pass every SCHEDULE_INTERVAL_SECONDS."""
    runner = ScheduleRunner(settings, queue)
    async with every(settings.schedule_interval_seconds, runner.run_once, name="schedules"):
        yield
