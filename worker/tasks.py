"""Celery tasks of the worker."""

from __future__ import annotations

from celery import Task

from mlops_core.task_queue import RUN_PIPELINE_TASK
from worker.celery_app import app
from worker.pipeline_runner import run_pipeline


@app.task(name=RUN_PIPELINE_TASK, bind=True)
def run_pipeline_task(self: Task, pipeline_id: int) -> None:
    """Run one pipeline; safe to receive twice (the runner is idempotent on the id)."""
    delivery = self.request.delivery_info or {}
    run_pipeline(int(pipeline_id), redelivered=bool(delivery.get("redelivered")))
