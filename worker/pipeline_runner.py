"""Runs a pipeline's phases in order and records each on the pipeline row and in its log.

Idempotent on the pipeline id (worker/run_lock.py): a finished pipeline is never run again; a
pipeline whose attempt was lost runs again as a new attempt, which reuses the model version an
earlier attempt registered (looked up in MLflow by the pipeline id tag) instead of registering a
second one.

Each phase is a `Step`: its work, what it needs around it, and whether an earlier attempt
already did it; the runner is one loop over the steps with one table of outcomes (`_run_step`).
Each phase's duration and each pipeline's end state are counted for Prometheus (worker/metrics.py).
The end state is written to the database first and alone (`RunLock.record_end`): the log
archive (Redis) and the MLflow run's status come after it, each on its own, so neither an
outage of Redis nor of MLflow can hold it back.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis
from mlflow.entities import RunStatus
from sqlalchemy import select

from mlops_core import pipeline_lease
from mlops_core.database import session_scope
from mlops_core.log_archive import archive_pipeline_log
from mlops_core.log_events import LogPublisher
from mlops_core.schema import PipelinePhase, utcnow
from mlops_core.secrets_box import SecretsBoxError, decrypt
from mlops_core.settings import Settings, get_settings
from mlops_core.states import Phase, PhaseStatus, PipelineStatus
from worker import local_tracking, metrics, tracking
from worker.cancel_watch import CancelWatcher
from worker.mlflow_retry import PatientMlflow, configure_http
from worker.phases import deploy, environment, execute, fetch, register, validate
from worker.phases.context import PhaseContext, PhaseFailed, PhaseSkipped, PipelineCancelled
from worker.run_lock import Claim, Ended, RunLock, claim

logger = logging.getLogger(__name__)
# The worker's Redis calls (log lines, cancel, model events) give up after this long, so a Redis
# that stops answering (not just refusing) costs seconds, not the pipeline.
REDIS_TIMEOUT_SECONDS: Final = 5.0


def _start_execution(ctx: PhaseContext) -> None:
    """Before the kernel: this attempt's MLflow run, the sandbox's folder, the model logger."""
    tracking.start_run(ctx)
    execute.prepare(ctx)
    register.start_model_logger(ctx)


def _log_execution_record(ctx: PhaseContext) -> None:
    """Keep the executed notebook and the metrics in MLflow and on the pipeline, success or not."""
    try:
        local_tracking.import_runs(ctx)
        if ctx.executed_notebook and ctx.mlflow_run_id:
            ctx.mlflow.log_artifact(ctx.mlflow_run_id, str(ctx.executed_notebook), "notebook")
        tracking.collect_metrics(ctx)
    except Exception as exc:
        logger.exception("pipeline %s: could not store the execution record", ctx.pipeline_id)
        ctx.log(
            f"could not store the executed notebook or metrics in MLflow: {exc}", stream="error"
        )


@dataclass(frozen=True)
class Step:
    """One phase as the runner drives it."""

    phase: Phase
    run: Callable[[PhaseContext], None]
    # Runs first, as part of the phase (its failure is the phase's).
    setup: Callable[[PhaseContext], None] | None = None
    # Runs last whatever happened; its own failure is logged, never raised.
    teardown: Callable[[PhaseContext], None] | None = None
    # True when an earlier attempt already did the phase's work: recorded as done, not run.
    done_before: Callable[[PhaseContext], bool] | None = None


STEPS: tuple[Step, ...] = (
    Step(Phase.FETCH, fetch.run),
    Step(Phase.VALIDATE, validate.run),
    Step(Phase.ENVIRONMENT, environment.run, done_before=register.reuse_earlier_version),
    Step(
        Phase.EXECUTE,
        execute.run,
        setup=_start_execution,
        teardown=_log_execution_record,
        done_before=register.reuse_earlier_version,
    ),
    Step(Phase.REGISTER, register.run, done_before=register.reuse_earlier_version),
    Step(Phase.DEPLOY, deploy.run),
)


def run_pipeline(pipeline_id: int, *, redelivered: bool = False) -> None:
    """Run one pipeline to a finished state (safe to call again for the same id)."""
    settings = get_settings()
    configure_http()
    claimed = claim(settings, pipeline_id)
    if claimed is None:
        return
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        publisher = LogPublisher(
            client,
            pipeline_id,
            max_lines=settings.log_replay_max_lines,
            ttl_seconds=settings.log_replay_ttl_seconds,
        )
        if isinstance(claimed, Ended):
            _announce_end(publisher, claimed.status, claimed.message)
            archive_pipeline_log(settings.database_url, client, pipeline_id)
            return
        _run_claimed(settings, client, publisher, pipeline_id, claimed, redelivered)
    finally:
        client.close()


def work_root(settings: Settings) -> Path:
    """Folder holding one work folder per running pipeline."""
    return settings.work_dir or settings.mlops_home / "work"


def _run_claimed(
    settings: Settings,
    client: redis.Redis,
    publisher: LogPublisher,
    pipeline_id: int,
    claimed: Claim,
    redelivered: bool,
) -> None:
    work_dir = work_root(settings).resolve() / f"pipeline-{pipeline_id}"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    with CancelWatcher(client, settings.database_url, pipeline_id) as watcher:
        ctx = PhaseContext(
            settings=settings,
            pipeline_id=pipeline_id,
            attempt=claimed.attempt,
            redis=client,
            publisher=publisher,
            mlflow=PatientMlflow(
                settings.mlflow_tracking_uri,
                retry_seconds=settings.mlflow_retry_seconds,
                stop=watcher.event,
            ),
            cancel_event=watcher.event,
            deadline=time.monotonic() + settings.pipeline_timeout_seconds,
            work_dir=work_dir,
            repo_url=claimed.repo_url,
            branch=claimed.branch,
            notebook_path=claimed.notebook_path,
            commit_sha=claimed.commit_sha,
            parameters=claimed.parameters,
            mlflow_run_id=claimed.previous_run_id,
        )
        with RunLock(ctx) as lock:
            if claimed.attempt > 1:
                how = "redelivered" if redelivered else "sent again"
                ctx.log(
                    f"attempt {claimed.attempt} of {settings.max_pipeline_attempts}: the task "
                    f"was {how} after an unfinished attempt"
                )
            try:
                status, error = _run_phases(ctx, claimed)
            except Exception as exc:  # the database failed under the runner itself
                logger.exception("pipeline %s: runner failed", pipeline_id)
                status = PipelineStatus.FAILED
                error = f"internal error: {type(exc).__name__}: {ctx.redact(str(exc))}"
            finally:
                register.stop_model_logger(ctx)
            _finish(ctx, lock, status, error)
    if not settings.keep_work_dirs:
        shutil.rmtree(work_dir, ignore_errors=True)


def _run_phases(ctx: PhaseContext, claimed: Claim) -> tuple[PipelineStatus, str | None]:
    """Run each step in order; return the pipeline's final status and error."""
    try:
        ctx.repo_token = (
            decrypt(ctx.settings, claimed.token_encrypted) if claimed.token_encrypted else None
        )
    except SecretsBoxError as exc:
        _set_phase(ctx, Phase.FETCH, PhaseStatus.FAILED, error=str(exc))
        return PipelineStatus.FAILED, f"fetch: {exc}"
    for step in STEPS:
        ctx.phase = step.phase.value
        if ctx.cancelled:
            return PipelineStatus.CANCELLED, ctx.stop_reason
        status, error = _run_step(ctx, step)
        if status is PhaseStatus.FAILED:
            return PipelineStatus.FAILED, f"{step.phase.value}: {error}"
        if status is PhaseStatus.CANCELLED:
            return PipelineStatus.CANCELLED, error
    return PipelineStatus.SUCCESS, None


def _run_step(ctx: PhaseContext, step: Step) -> tuple[PhaseStatus, str | None]:
    """Run one step and record its outcome on its phase row and in the log."""
    phase = step.phase
    if step.done_before is not None and step.done_before(ctx):
        _set_phase(ctx, phase, PhaseStatus.SUCCESS)
        ctx.log(f"phase {phase.value}: done by an earlier attempt")
        return PhaseStatus.SUCCESS, None
    started = time.monotonic()
    _set_phase(ctx, phase, PhaseStatus.RUNNING)
    ctx.log(f"phase {phase.value}: running")
    status, error = PhaseStatus.SUCCESS, None
    try:
        if step.setup is not None:
            step.setup(ctx)
        step.run(ctx)
    except PhaseSkipped as exc:
        status, error = PhaseStatus.SKIPPED, str(exc)
    except PhaseFailed as exc:
        status, error = PhaseStatus.FAILED, str(exc)
    except PipelineCancelled:
        status, error = PhaseStatus.CANCELLED, ctx.stop_reason
    except Exception as exc:
        logger.exception("pipeline %s: %s phase crashed", ctx.pipeline_id, phase.value)
        status = PhaseStatus.FAILED
        error = f"internal error: {type(exc).__name__}: {ctx.redact(str(exc))}"
    finally:
        if step.teardown is not None:
            step.teardown(ctx)
    seconds = time.monotonic() - started
    metrics.record_phase(phase, seconds)
    _set_phase(ctx, phase, status, error=error)
    ctx.log(
        f"phase {phase.value}: {status.value} in {seconds:.2f} s"
        + (f" ({headline(error)})" if error else ""),
        stream="error" if status is PhaseStatus.FAILED else "system",
    )
    return status, error


def headline(error: str) -> str:
    """An error's first line: what the phase and pipeline outcome lines say. The lines after it
    (where a cell raised) were logged by the phase itself, and are kept with the error."""
    return error.split("\n", 1)[0]


def _set_phase(
    ctx: PhaseContext, phase: Phase, status: PhaseStatus, *, error: str | None = None
) -> None:
    """Record a phase's status, fenced: an attempt that lost its pipeline changes nothing."""
    with session_scope(ctx.settings.database_url) as session:
        if not pipeline_lease.beat(session, ctx.pipeline_id, ctx.attempt):
            return
        row = session.scalars(
            select(PipelinePhase).where(
                PipelinePhase.pipeline_id == ctx.pipeline_id, PipelinePhase.name == phase.value
            )
        ).one()
        row.status = status
        row.error = error
        if status is PhaseStatus.RUNNING:
            row.started_at, row.finished_at = utcnow(), None
        elif status is not PhaseStatus.PENDING:
            row.finished_at = utcnow()
            row.started_at = row.started_at or row.finished_at


_RUN_STATUS: Final = {
    PipelineStatus.SUCCESS: RunStatus.FINISHED,
    PipelineStatus.FAILED: RunStatus.FAILED,
    PipelineStatus.CANCELLED: RunStatus.KILLED,
}


def _finish(ctx: PhaseContext, lock: RunLock, status: PipelineStatus, error: str | None) -> None:
    """End the MLflow run, announce the outcome, write it to the database, archive the log.

    The end state is written in a transaction of its own that needs nothing but the database:
    the MLflow run's status before it is tried once (it is cosmetic), and the log archive after
    it is retried by the backend when Redis is down.
    """
    ctx.phase = None
    if lock.lost is not None:
        ctx.log(f"attempt {ctx.attempt} stopped: {lock.lost}", stream="error")
        return
    if ctx.mlflow_run_id:
        tracking.end_run(ctx, ctx.mlflow_run_id, _RUN_STATUS[status])
    if error:
        ctx.log(f"pipeline {status.value}: {headline(error)}", stream="error")
    _announce_end(ctx.publisher, status)
    if not lock.record_end(status, error):
        logger.warning(
            "pipeline %s: attempt %s lost it before its end", ctx.pipeline_id, ctx.attempt
        )
        return
    metrics.record_finished(status)  # counted once: only the attempt that wrote the end
    archive_pipeline_log(ctx.settings.database_url, ctx.redis, ctx.pipeline_id)


def _announce_end(
    publisher: LogPublisher, status: PipelineStatus, message: str | None = None
) -> None:
    """Publish the final status event live viewers wait for (viewers fall back on the DB)."""
    with contextlib.suppress(redis.RedisError):
        if message:
            publisher.publish(f"pipeline {status.value}: {message}", stream="error")
        publisher.publish(f"pipeline {status.value}", stream="status", status=status.value)
