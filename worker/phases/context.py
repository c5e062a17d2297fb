"""What every phase of one pipeline attempt shares, and how a phase reports its outcome.

A phase is a function `run(ctx: PhaseContext) -> None`. It returns on success and raises
`PhaseFailed` (the pipeline fails with that message), `PhaseSkipped` (the phase is recorded
as skipped with the reason; the pipeline goes on) or `PipelineCancelled`. The runner records
the phase's status, times and error; phases only do their work and fill in the context.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from mlflow import MlflowClient
from sqlalchemy.orm import Session

from mlops_core.database import session_scope
from mlops_core.log_events import LogPublisher
from mlops_core.notebook_contract import GateSettings, NotebookContract
from mlops_core.notebook_runner import RunFolder
from mlops_core.schema import Pipeline
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)
# After a log line failed to reach Redis, lines are dropped for this long instead of each one
# waiting on a connection attempt (they would be lost anyway; the pipeline must not slow down).
LOG_PAUSE_SECONDS = 5.0


class PhaseFailed(Exception):
    """The phase failed; the message is shown to the user as the phase's and pipeline's error."""


class PhaseSkipped(Exception):
    """The phase did not apply; the message is the reason recorded on the phase."""


class PipelineCancelled(Exception):
    """The attempt must stop now (`ctx.stop_reason` says why: a cancel, or it lost its pipeline)."""


@dataclass
class PhaseContext:
    """One attempt of one pipeline, as the phases see it.

    Fixed at the start: settings, ids, clients, the cancel signal, the deadline and the work
    folder. Filled in as phases run: the commit, checkout, contract, MLflow run, model version.
    """

    settings: Settings
    pipeline_id: int
    attempt: int
    redis: redis.Redis
    publisher: LogPublisher
    mlflow: MlflowClient
    cancel_event: threading.Event
    deadline: float  # time.monotonic() value after which the pipeline is out of time
    work_dir: Path
    # Copied from the pipeline row at the start.
    repo_url: str = ""
    branch: str = ""
    notebook_path: str = ""
    commit_sha: str | None = None
    # Papermill parameters the trigger gave (worker/phases/execute.py injects them).
    parameters: dict[str, Any] = field(default_factory=dict)
    # The repo's own token (GITHUB_TOKEN stays in `settings`; fetch decides where each goes).
    repo_token: str | None = field(default=None, repr=False)
    # Filled in by the phases.
    phase: str | None = None
    checkout_dir: Path | None = None
    notebook_file: Path | None = None
    contract: NotebookContract | None = None
    mlflow_run_id: str | None = None
    # The installed packages of the notebook's requirements.txt (pip's prefix layout), from the
    # environment phase; the kernel and the model logger import from it, read-only.
    environment: Path | None = None
    # The run the sandboxed kernel logs to, in the work folder's own store (local_tracking).
    local_run_id: str | None = None
    executed_notebook: Path | None = None
    model_name: str | None = None
    model_version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    # The register phase's model-logging child, started early (see phases/register.py).
    model_logger: subprocess.Popen[str] | None = field(default=None, repr=False)
    # Why `cancel_event` is set: a user's cancel, or this attempt lost its pipeline
    # (worker/run_lock.py sets it before the event).
    stop_reason: str = "cancelled by request"
    _log_paused_until: float = field(default=0.0, repr=False)

    @property
    def model_output_path(self) -> Path:
        """Where the notebook's export cell must write the model (injected as MODEL_OUTPUT_PATH)."""
        return RunFolder(self.work_dir).model_output_path

    @property
    def reference_data_path(self) -> Path:
        """Where a notebook may save its training rows, as CSV (injected as REFERENCE_DATA_PATH)."""
        return RunFolder(self.work_dir).reference_data_path

    @property
    def gate(self) -> GateSettings | None:
        """The deploy gate the notebook declared (or the default one)."""
        return self.contract.gate if self.contract else None

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancel(self) -> None:
        """Raise PipelineCancelled if a cancel was requested."""
        if self.cancel_event.is_set():
            raise PipelineCancelled

    def remaining(self) -> float:
        """Seconds left before PIPELINE_TIMEOUT_SECONDS runs out (may be negative)."""
        return self.deadline - time.monotonic()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A short database transaction (committed on exit)."""
        with session_scope(self.settings.database_url) as session:
            yield session

    def update_pipeline(self, **fields: Any) -> None:
        """Set columns of the pipeline row in their own transaction."""
        with self.session() as session:
            pipeline = session.get(Pipeline, self.pipeline_id)
            if pipeline is None:
                raise PhaseFailed(f"pipeline {self.pipeline_id} was deleted while running")
            for name, value in fields.items():
                setattr(pipeline, name, value)

    def log(self, text: str, *, stream: str = "system", cell: int | None = None) -> None:
        """Publish one log line for the current phase; a Redis outage never fails a pipeline.

        While Redis is unreachable lines are dropped (see LOG_PAUSE_SECONDS), not queued: the
        pipeline's own record (status, phases, errors) is in the database.
        """
        if time.monotonic() < self._log_paused_until:
            return
        for line in text.splitlines() or [""]:
            try:
                self.publisher.publish(line, phase=self.phase, cell=cell, stream=stream)
            except redis.RedisError as exc:
                logger.warning(
                    "pipeline %s: log lines dropped for %g s, Redis unreachable (%s): %s",
                    self.pipeline_id,
                    LOG_PAUSE_SECONDS,
                    exc,
                    line,
                )
                self._log_paused_until = time.monotonic() + LOG_PAUSE_SECONDS
                return

    def redact(self, text: str) -> str:
        """Remove the repo token and GITHUB_TOKEN from text that might echo them (git errors)."""
        github_token = self.settings.github_token
        for token in (self.repo_token, github_token.get_secret_value() if github_token else None):
            if token:
                text = text.replace(token, "***")
        return text
