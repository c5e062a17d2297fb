"""Creating pipeline rows and turning them into API bodies.

Webhook pushes, manual triggers and retries all create pipelines the same way: the repo's URL,
branch and notebook path are copied onto the row, so a run stays reproducible when the repo is
edited or deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from backend.api_models import CommitStatusOut, PhaseOut, PipelineDetail, PipelineSummary, as_utc
from mlops_core.cell_traceback import CellFailure
from mlops_core.commit_info import CommitInfo
from mlops_core.schema import CommitStatus, Pipeline, Repo
from mlops_core.states import PHASE_ORDER, PhaseStatus, PipelineStatus


def new_pipeline(
    repo: Repo,
    *,
    trigger: str,
    notebook_path: str | None = None,
    commit_sha: str | None = None,
    delivery_id: str | None = None,
    trigger_detail: str | None = None,
    parameters: dict[str, Any] | None = None,
    commit: CommitInfo | None = None,
) -> Pipeline:
    """A queued pipeline for one of `repo`'s notebooks (default: its first), not yet added to a
    session."""
    return Pipeline(
        repo_id=repo.id,
        repo_url=repo.github_url,
        branch=repo.branch,
        notebook_path=notebook_path or repo.notebook_path,
        status=PipelineStatus.QUEUED,
        trigger=trigger,
        commit_sha=commit_sha,
        commit_message=commit.message if commit else None,
        commit_author=commit.author if commit else None,
        commit_url=commit.url if commit else None,
        delivery_id=delivery_id,
        trigger_detail=trigger_detail,
        parameters=parameters or None,
        attempts=0,
        cancel_requested=False,
        metrics={},
        params={},
        deployed=False,
    )


def _duration(started: datetime | None, finished: datetime | None) -> float | None:
    start, end = as_utc(started), as_utc(finished)
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _failed_phase(pipeline: Pipeline) -> str | None:
    """The phase a failed pipeline stopped at: the worker's error names it first
    (`execute: cell 3 raised ...`, worker/pipeline_runner.py)."""
    if pipeline.status != PipelineStatus.FAILED or not pipeline.error:
        return None
    return next((p.value for p in PHASE_ORDER if pipeline.error.startswith(f"{p.value}: ")), None)


def pipeline_summary(pipeline: Pipeline) -> PipelineSummary:
    """The listed form of a pipeline."""
    return PipelineSummary(
        id=pipeline.id,
        repo_id=pipeline.repo_id,
        repo_url=pipeline.repo_url,
        branch=pipeline.branch,
        notebook_path=pipeline.notebook_path,
        status=PipelineStatus(pipeline.status),
        trigger=pipeline.trigger,
        trigger_detail=pipeline.trigger_detail,
        commit_sha=pipeline.commit_sha,
        commit_message=pipeline.commit_message,
        commit_author=pipeline.commit_author,
        commit_url=pipeline.commit_url,
        parameters=pipeline.parameters or {},
        metrics=pipeline.metrics or {},
        model_name=pipeline.model_name,
        model_version=pipeline.model_version,
        mlflow_run_id=pipeline.mlflow_run_id,
        deployed=pipeline.deployed,
        error=pipeline.error,
        failed_phase=_failed_phase(pipeline),
        attempts=pipeline.attempts,
        cancel_requested=pipeline.cancel_requested,
        created_at=pipeline.created_at,
        started_at=pipeline.started_at,
        finished_at=pipeline.finished_at,
        duration_seconds=_duration(pipeline.started_at, pipeline.finished_at),
    )


def _failure(stored: object) -> dict[str, Any] | None:
    """The stored failure, if it reads as one (a malformed row must not break the page)."""
    failure = CellFailure.from_json(stored)
    return failure.as_json() if failure is not None else None


def pipeline_detail(pipeline: Pipeline, statuses: Sequence[CommitStatus] = ()) -> PipelineDetail:
    """The full form of a pipeline, with the commit statuses it reported (oldest first); before
    the worker records phases, they are listed pending."""
    if pipeline.phases:
        phases = [
            PhaseOut(
                name=phase.name,
                status=phase.status,
                started_at=phase.started_at,
                finished_at=phase.finished_at,
                duration_seconds=_duration(phase.started_at, phase.finished_at),
                error=phase.error,
            )
            for phase in pipeline.phases
        ]
    else:
        planned = (
            PhaseStatus.CANCELLED
            if pipeline.status == PipelineStatus.CANCELLED
            else PhaseStatus.PENDING
        )
        phases = [
            PhaseOut(
                name=phase.value,
                status=planned,
                started_at=None,
                finished_at=None,
                duration_seconds=None,
                error=None,
            )
            for phase in PHASE_ORDER
        ]
    return PipelineDetail(
        **pipeline_summary(pipeline).model_dump(),
        params=pipeline.params or {},
        failure=_failure(pipeline.failure),
        phases=phases,
        commit_statuses=[
            CommitStatusOut(
                context=row.context,
                state=row.state,
                description=row.description,
                target_url=row.target_url,
                delivery=row.delivery,
                attempts=row.attempts,
                last_error=row.last_error,
                wanted_at=row.wanted_at,
                next_attempt_at=row.next_attempt_at,
                posted_at=row.posted_at,
            )
            for row in statuses
        ],
    )
