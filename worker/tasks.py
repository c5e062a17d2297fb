"""Celery tasks of the worker."""

from __future__ import annotations

from mlops_core.task_queue import RUN_PIPELINE_TASK
from worker.celery_app import app
from worker.pipeline_runner import run_pipeline


@app.task(name=RUN_PIPELINE_TASK, bind=True)
def run_pipeline_task(self, pipeline_id: int) -> None:  # type: ignore[no-untyped-def]
    """Run one pipeline; safe to receive twice (the runner is idempotent on the id)."""
    run_pipeline(pipeline_id, redelivered=bool(self.request.delivery_info.get("redelivered")))
