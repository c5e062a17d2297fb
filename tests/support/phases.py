"""Run one pipeline phase in the test process, with no Celery worker around it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import redis
from mlflow import MlflowClient

from mlops_core.log_events import LogPublisher
from mlops_core.settings import Settings
from worker.phases.context import PhaseContext


def phase_context(
    settings: Settings,
    client: redis.Redis,
    work_dir: Path,
    pipeline_id: int,
    *,
    phase: str,
    **fields: Any,
) -> PhaseContext:
    """A PhaseContext as the runner builds it, its log going to Redis (`ctx.publisher.history()`).

    `fields` sets the pipeline fields the runner copies from the row (repo_url, commit_sha,
    notebook_path, repo_token, ...) or earlier phases fill in (notebook_file, ...).
    """
    ctx = PhaseContext(
        settings=settings,
        pipeline_id=pipeline_id,
        attempt=1,
        redis=client,
        publisher=LogPublisher(client, pipeline_id),
        mlflow=MlflowClient(tracking_uri=settings.mlflow_tracking_uri),
        cancel_event=threading.Event(),
        deadline=time.monotonic() + 120,
        work_dir=work_dir,
        **fields,
    )
    ctx.phase = phase
    return ctx


def log_lines(ctx: PhaseContext) -> list[str]:
    """The text of every line the phase logged."""
    return [event.text for event in ctx.publisher.history()]
