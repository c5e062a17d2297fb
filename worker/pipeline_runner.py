"""Runs a pipeline's phases in order and records each on the pipeline row and in its log.

Idempotent on the pipeline id: a finished pipeline is never run again; a pipeline found
`running` (its worker was killed, the task redelivered) runs again as a new attempt, and
reuses the model version an earlier attempt registered (looked up in MLflow by the pipeline
id tag) instead of registering a second one.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from sqlalchemy import select

from mlops_core.database import session_scope
from mlops_core.log_archive import archive_log
from mlops_core.log_events import LogPublisher
from mlops_core.schema import LogLine, Pipeline, PipelinePhase, utcnow
from mlops_core.secrets_box import SecretsBoxError, decrypt
from mlops_core.settings import Settings, get_settings
from mlops_core.states import PHASE_ORDER, Phase, PhaseStatus, PipelineStatus
from worker import local_tracking, tracking
from worker.cancel_watch import CancelWatcher
from worker.phases import deploy, execute, fetch, register, validate
from worker.phases.context import PhaseContext, PhaseFailed, PhaseSkipped, PipelineCancelled
from worker.run_lock import PipelineRunLock

logger = logging.getLogger(__name__)

PHASES: tuple[tuple[Phase, Callable[[PhaseContext], None]], ...] = (
    (Phase.FETCH, fetch.run),
    (Phase.VALIDATE, validate.run),
    (Phase.EXECUTE, execute.run),
    (Phase.REGISTER, register.run),
    (Phase.DEPLOY, deploy.run),
)


@dataclass
class Claim:
    """What the runner copied from the pipeline row when it took the pipeline."""

    attempt: int
    repo_url: str
    branch: str
    notebook_path: str
    commit_sha: str | None
    token_encrypted: str | None
    previous_run_id: str | None


def run_pipeline(pipeline_id: int, *, redelivered: bool = False) -> None:
    """Run one pipeline to a finished state (safe to call again for the same id)."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        wait = settings.pipeline_timeout_seconds + 300
        with PipelineRunLock(client, pipeline_id, wait_seconds=wait) as lock:
            if not lock.acquired:
                logger.warning("pipeline %s is still held by another worker", pipeline_id)
                return
            _run_owned(settings, client, pipeline_id, redelivered)
    finally:
        client.close()


def work_root(settings: Settings) -> Path:
    """Folder holding one work folder per running pipeline."""
    return settings.work_dir or settings.mlops_home / "work"


def _run_owned(
    settings: Settings, client: redis.Redis, pipeline_id: int, redelivered: bool
) -> None:
    publisher = LogPublisher(
        client,
        pipeline_id,
        max_lines=settings.log_replay_max_lines,
        ttl_seconds=settings.log_replay_ttl_seconds,
    )
    claim = _claim(settings, client, publisher, pipeline_id)
    if claim is None:
        return
    work_dir = work_root(settings).resolve() / f"pipeline-{pipeline_id}"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    with CancelWatcher(client, settings.database_url, pipeline_id) as watcher:
        ctx = PhaseContext(
            settings=settings,
            pipeline_id=pipeline_id,
            attempt=claim.attempt,
            redis=client,
            publisher=publisher,
            mlflow=MlflowClient(tracking_uri=settings.mlflow_tracking_uri),
            cancel_event=watcher.event,
            deadline=time.monotonic() + settings.pipeline_timeout_seconds,
            work_dir=work_dir,
            repo_url=claim.repo_url,
            branch=claim.branch,
            notebook_path=claim.notebook_path,
            commit_sha=claim.commit_sha,
            mlflow_run_id=claim.previous_run_id,
        )
        if claim.attempt > 1:
            how = "redelivered" if redelivered else "sent again"
            ctx.log(f"attempt {claim.attempt}: the task was {how} after an unfinished attempt")
        try:
            status, error = _run_phases(ctx, claim)
        except Exception as exc:  # the database or Redis failed under the runner itself
            logger.exception("pipeline %s: runner failed", pipeline_id)
            status = PipelineStatus.FAILED
            error = f"internal error: {type(exc).__name__}: {ctx.redact(str(exc))}"
        finally:
            register.stop_model_logger(ctx)
    _finish(ctx, status, error)
    if not settings.keep_work_dirs:
        shutil.rmtree(work_dir, ignore_errors=True)


def _claim(
    settings: Settings, client: redis.Redis, publisher: LogPublisher, pipeline_id: int
) -> Claim | None:
    """Move the pipeline to running as a new attempt; None when there is nothing to run."""
    with session_scope(settings.database_url) as session:
        pipeline = session.get(Pipeline, pipeline_id)
        if pipeline is None:
            logger.warning("pipeline %s does not exist; task dropped", pipeline_id)
            return None
        if PipelineStatus(pipeline.status).finished:
            if (
                session.scalar(select(LogLine.seq).where(LogLine.pipeline_id == pipeline_id))
                is None
            ):
                archive_log(session, client, pipeline_id)  # the previous attempt died before
            return None
        if pipeline.cancel_requested:
            pipeline.status = PipelineStatus.CANCELLED
            pipeline.finished_at = utcnow()
            pipeline.error = "cancelled before it started"
            for phase in _phases(pipeline):
                if phase.status in (PhaseStatus.PENDING, PhaseStatus.RUNNING):
                    phase.status = PhaseStatus.SKIPPED
            session.flush()
            _announce_end(publisher, PipelineStatus.CANCELLED)
            archive_log(session, client, pipeline_id)
            return None
        pipeline.attempts += 1
        pipeline.status = PipelineStatus.RUNNING
        pipeline.started_at = pipeline.started_at or utcnow()
        pipeline.finished_at = None
        pipeline.error = None
        for phase in _phases(pipeline):
            phase.status = PhaseStatus.PENDING
            phase.started_at = phase.finished_at = phase.error = None
        return Claim(
            attempt=pipeline.attempts,
            repo_url=pipeline.repo_url,
            branch=pipeline.branch,
            notebook_path=pipeline.notebook_path,
            commit_sha=pipeline.commit_sha,
            token_encrypted=pipeline.repo.token_encrypted if pipeline.repo else None,
            previous_run_id=pipeline.mlflow_run_id,
        )


def _phases(pipeline: Pipeline) -> list[PipelinePhase]:
    """The pipeline's phase rows, created on first use."""
    if not pipeline.phases:
        pipeline.phases = [
            PipelinePhase(name=phase.value, position=i, status=PhaseStatus.PENDING)
            for i, phase in enumerate(PHASE_ORDER)
        ]
    return pipeline.phases


def _run_phases(ctx: PhaseContext, claim: Claim) -> tuple[PipelineStatus, str | None]:
    """Run each phase in order; return the pipeline's final status and error."""
    try:
        ctx.repo_token = _token(ctx.settings, claim)
    except SecretsBoxError as exc:
        _set_phase(ctx, Phase.FETCH, PhaseStatus.FAILED, error=str(exc))
        return PipelineStatus.FAILED, f"fetch: {exc}"
    for phase, run in PHASES:
        ctx.phase = phase.value
        if ctx.cancelled:
            return PipelineStatus.CANCELLED, "cancelled by request"
        if phase is Phase.EXECUTE and _adopt_earlier_version(ctx):
            break
        started = time.monotonic()
        _set_phase(ctx, phase, PhaseStatus.RUNNING)
        ctx.log(f"phase {phase.value}: running")
        try:
            if phase is Phase.EXECUTE:
                tracking.start_run(ctx)
                execute.prepare(ctx)
                register.start_model_logger(ctx)
            run(ctx)
        except PhaseSkipped as exc:
            _end_phase(ctx, phase, PhaseStatus.SKIPPED, started, str(exc))
        except PhaseFailed as exc:
            _end_phase(ctx, phase, PhaseStatus.FAILED, started, str(exc))
            return PipelineStatus.FAILED, f"{phase.value}: {exc}"
        except PipelineCancelled:
            _end_phase(ctx, phase, PhaseStatus.CANCELLED, started, "cancelled by request")
            return PipelineStatus.CANCELLED, "cancelled by request"
        except Exception as exc:
            logger.exception("pipeline %s: %s phase crashed", ctx.pipeline_id, phase.value)
            message = f"internal error: {type(exc).__name__}: {ctx.redact(str(exc))}"
            _end_phase(ctx, phase, PhaseStatus.FAILED, started, message)
            return PipelineStatus.FAILED, f"{phase.value}: {message}"
        else:
            _end_phase(ctx, phase, PhaseStatus.SUCCESS, started)
        finally:
            if phase is Phase.EXECUTE:
                _log_execution_record(ctx)
    else:
        return PipelineStatus.SUCCESS, None
    return _deploy_only(ctx)


def _adopt_earlier_version(ctx: PhaseContext) -> bool:
    """On a retried attempt, reuse the version an earlier attempt registered, if there is one."""
    if ctx.attempt < 2:
        return False
    version = register.find_version(ctx)
    if version is None:
        return False
    register.adopt(ctx, version)
    for phase in (Phase.EXECUTE, Phase.REGISTER):
        _set_phase(ctx, phase, PhaseStatus.SUCCESS)
    return True


def _deploy_only(ctx: PhaseContext) -> tuple[PipelineStatus, str | None]:
    ctx.phase = Phase.DEPLOY.value
    started = time.monotonic()
    _set_phase(ctx, Phase.DEPLOY, PhaseStatus.RUNNING)
    try:
        deploy.run(ctx)
    except PhaseSkipped as exc:
        _end_phase(ctx, Phase.DEPLOY, PhaseStatus.SKIPPED, started, str(exc))
    except PhaseFailed as exc:
        _end_phase(ctx, Phase.DEPLOY, PhaseStatus.FAILED, started, str(exc))
        return PipelineStatus.FAILED, f"deploy: {exc}"
    except PipelineCancelled:
        _end_phase(ctx, Phase.DEPLOY, PhaseStatus.CANCELLED, started, "cancelled by request")
        return PipelineStatus.CANCELLED, "cancelled by request"
    else:
        _end_phase(ctx, Phase.DEPLOY, PhaseStatus.SUCCESS, started)
    return PipelineStatus.SUCCESS, None


def _log_execution_record(ctx: PhaseContext) -> None:
    """Keep the executed notebook and the metrics in MLflow and on the pipeline, success or not."""
    try:
        local_tracking.import_runs(ctx)
        if ctx.executed_notebook and ctx.mlflow_run_id:
            ctx.mlflow.log_artifact(ctx.mlflow_run_id, str(ctx.executed_notebook), "notebook")
        tracking.collect_metrics(ctx)
    except Exception:
        logger.exception("pipeline %s: could not store the execution record", ctx.pipeline_id)
        ctx.log("could not store the executed notebook or metrics in MLflow", stream="error")


def _token(settings: Settings, claim: Claim) -> str | None:
    """The repo's own token, if it has one (the fetch phase decides where a token may go)."""
    return decrypt(settings, claim.token_encrypted) if claim.token_encrypted else None


def _set_phase(
    ctx: PhaseContext,
    phase: Phase,
    status: PhaseStatus,
    *,
    error: str | None = None,
) -> None:
    with ctx.session() as session:
        pipeline = session.get(Pipeline, ctx.pipeline_id)
        if pipeline is None:
            return
        row = next(p for p in _phases(pipeline) if p.name == phase.value)
        row.status = status
        row.error = error
        if status is PhaseStatus.RUNNING:
            row.started_at, row.finished_at = utcnow(), None
        elif status is not PhaseStatus.PENDING:
            row.finished_at = utcnow()
            row.started_at = row.started_at or row.finished_at


def _end_phase(
    ctx: PhaseContext, phase: Phase, status: PhaseStatus, started: float, error: str | None = None
) -> None:
    _set_phase(ctx, phase, status, error=error)
    took = time.monotonic() - started
    ctx.log(
        f"phase {phase.value}: {status.value} in {took:.2f} s" + (f" ({error})" if error else ""),
        stream="error" if status is PhaseStatus.FAILED else "system",
    )


def _finish(ctx: PhaseContext, status: PipelineStatus, error: str | None) -> None:
    """End the MLflow run to match, announce the outcome, store the status and the log."""
    if ctx.mlflow_run_id:
        final = {
            PipelineStatus.SUCCESS: RunStatus.FINISHED,
            PipelineStatus.FAILED: RunStatus.FAILED,
            PipelineStatus.CANCELLED: RunStatus.KILLED,
        }[status]
        tracking.end_run(ctx, ctx.mlflow_run_id, final)
    ctx.phase = None
    if error:
        ctx.log(f"pipeline {status.value}: {error}", stream="error")
    _announce_end(ctx.publisher, status)
    with ctx.session() as session:
        pipeline = session.get(Pipeline, ctx.pipeline_id)
        if pipeline is None:
            return
        pipeline.status = status
        pipeline.error = error
        pipeline.finished_at = utcnow()
        for phase in _phases(pipeline):
            if phase.status in (PhaseStatus.PENDING, PhaseStatus.RUNNING):
                phase.status = PhaseStatus.SKIPPED
        session.flush()
        archive_log(session, ctx.redis, ctx.pipeline_id)


def _announce_end(publisher: LogPublisher, status: PipelineStatus) -> None:
    try:
        publisher.publish(f"pipeline {status.value}", stream="status", status=status.value)
    except redis.RedisError:
        logger.warning("could not publish the final log event")
