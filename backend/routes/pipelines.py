"""Pipelines API: trigger, list, inspect, cancel and retry pipelines.

A manual trigger without a commit leaves `commit_sha` empty and the worker resolves the branch
head when it fetches: the backend then needs neither git, nor network access to the repo, nor
the repo's token, and a run queued behind others builds the head as it is when the run starts.
A trigger naming a commit runs exactly that one (a commit the repository lacks fails fetch,
saying so); its parameters reach the notebook as papermill parameters, and a retry keeps both.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from backend.api_models import (
    CancelOutcome,
    PipelineAccepted,
    PipelineDetail,
    PipelinePage,
    QueuedNotebook,
    TriggerRequest,
)
from backend.api_params import INT64_MAX, RowId
from backend.auth import require_api_token, require_read_token
from backend.dependencies import QueueDep, SessionDep
from backend.metrics import PIPELINES_CREATED
from backend.notebook_registry import find_notebook
from backend.pipeline_queue import PipelineQueue
from backend.pipeline_records import new_pipeline, pipeline_detail, pipeline_summary
from backend.routes.repos import load_repo
from backend.validation_errors import field_error
from mlops_core.commit_info import CommitInfo
from mlops_core.schema import CommitStatus, Pipeline, Repo, utcnow
from mlops_core.states import PipelineStatus, Trigger

logger = logging.getLogger(__name__)

router = APIRouter(tags=["pipelines"])

MAX_PAGE_SIZE = 100
# The row offset, (page - 1) * size, must fit the database's 64-bit integers.
MAX_PAGE = INT64_MAX // MAX_PAGE_SIZE


def _queue_new(
    session: Session, queue: PipelineQueue, pipeline: Pipeline, *, trigger: str
) -> JSONResponse:
    """Commit, then send: the row exists before any worker can look for it."""
    session.add(pipeline)
    session.commit()
    PIPELINES_CREATED.labels(trigger=trigger).inc()
    queue.enqueue(pipeline.id)
    logger.info("pipeline %s queued (%s) for %s", pipeline.id, trigger, pipeline.repo_url)
    body = PipelineAccepted(
        pipeline_id=pipeline.id,
        status=PipelineStatus.QUEUED,
        pipelines=[QueuedNotebook(pipeline_id=pipeline.id, notebook_path=pipeline.notebook_path)],
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/repos/{repo_id}/trigger",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PipelineAccepted,
    dependencies=[Depends(require_api_token)],
)
def trigger_repo(
    repo_id: RowId,
    session: SessionDep,
    queue: QueueDep,
    body: TriggerRequest | None = None,
) -> JSONResponse:
    """Run one of the repo's notebooks now (the "retrain" button; default: its first): at the
    head of its branch, or at `commit`, with `parameters` overriding the notebook's defaults."""
    request = body or TriggerRequest()
    repo = load_repo(session, repo_id)
    if request.notebook_path is not None and find_notebook(repo, request.notebook_path) is None:
        registered = ", ".join(n.notebook_path for n in repo.notebooks)
        raise field_error(
            "notebook_path",
            f"notebook_path: {request.notebook_path} is not a notebook of repo {repo.id} "
            f"(it runs {registered}; POST /repos/{repo.id}/notebooks adds one)",
        )
    pipeline = new_pipeline(
        repo,
        trigger=Trigger.MANUAL,
        notebook_path=request.notebook_path,
        commit_sha=request.commit,
        parameters=request.parameters,
    )
    return _queue_new(session, queue, pipeline, trigger=Trigger.MANUAL)


@router.get("/pipelines", response_model=PipelinePage, dependencies=[Depends(require_read_token)])
def list_pipelines(
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    repo_id: Annotated[RowId | None, Query()] = None,
    status_filter: Annotated[PipelineStatus | None, Query(alias="status")] = None,
    trigger: Annotated[Trigger | None, Query()] = None,
) -> PipelinePage:
    """Pipelines, newest first, optionally of one repo, in one status and/or started by one
    kind of trigger."""
    conditions = []
    if repo_id is not None:
        conditions.append(Pipeline.repo_id == repo_id)
    if status_filter is not None:
        conditions.append(Pipeline.status == status_filter.value)
    if trigger is not None:
        conditions.append(Pipeline.trigger == trigger.value)
    total = session.scalar(select(func.count()).select_from(Pipeline).where(*conditions)) or 0
    rows = session.scalars(
        select(Pipeline)
        .where(*conditions)
        .order_by(Pipeline.id.desc())  # ids grow with creation time, and are indexed
        .offset((page - 1) * size)
        .limit(size)
    )
    return PipelinePage(
        items=[pipeline_summary(row) for row in rows], total=total, page=page, size=size
    )


def _load(session: Session, pipeline_id: int) -> Pipeline:
    pipeline = session.scalar(
        select(Pipeline).where(Pipeline.id == pipeline_id).options(selectinload(Pipeline.phases))
    )
    if pipeline is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"pipeline {pipeline_id} not found")
    return pipeline


@router.get(
    "/pipelines/{pipeline_id}",
    response_model=PipelineDetail,
    dependencies=[Depends(require_read_token)],
)
def get_pipeline(pipeline_id: RowId, session: SessionDep) -> PipelineDetail:
    """One pipeline with its phases, metrics, model version and commit statuses."""
    statuses = session.scalars(
        select(CommitStatus)
        .where(CommitStatus.pipeline_id == pipeline_id)
        .order_by(CommitStatus.position)
    ).all()
    return pipeline_detail(_load(session, pipeline_id), statuses)


@router.post(
    "/pipelines/{pipeline_id}/cancel",
    response_model=CancelOutcome,
    responses={
        200: {"description": "the pipeline was queued and is now cancelled"},
        202: {"description": "the pipeline is running; its worker has been asked to stop"},
        409: {"description": "the pipeline has already finished"},
    },
    dependencies=[Depends(require_api_token)],
)
def cancel_pipeline(
    pipeline_id: RowId,
    session: SessionDep,
    queue: QueueDep,
) -> JSONResponse:
    """Stop a pipeline: a queued one at once, a running one through its worker.

    Each change is a conditional UPDATE on the status the pipeline had, so a worker that picks
    the pipeline up at the same moment either finds it cancelled or is asked to stop.
    """
    _load(session, pipeline_id)
    cancelled = session.execute(
        update(Pipeline)
        .where(Pipeline.id == pipeline_id, Pipeline.status == PipelineStatus.QUEUED)
        .values(
            status=PipelineStatus.CANCELLED,
            cancel_requested=True,
            finished_at=utcnow(),
            error="cancelled before it started",
        )
    )
    session.commit()
    if cancelled.rowcount:
        logger.info("pipeline %s cancelled while queued", pipeline_id)
        return _cancel_answer(pipeline_id, PipelineStatus.CANCELLED, status.HTTP_200_OK)
    asked = session.execute(
        update(Pipeline)
        .where(Pipeline.id == pipeline_id, Pipeline.status == PipelineStatus.RUNNING)
        .values(cancel_requested=True)
    )
    session.commit()
    if asked.rowcount:
        queue.request_cancel(pipeline_id)
        logger.info("pipeline %s: cancel requested while running", pipeline_id)
        return _cancel_answer(pipeline_id, PipelineStatus.RUNNING, status.HTTP_202_ACCEPTED)
    current = session.scalar(select(Pipeline.status).where(Pipeline.id == pipeline_id))
    raise HTTPException(
        status.HTTP_409_CONFLICT, f"pipeline {pipeline_id} has already finished ({current})"
    )


def _cancel_answer(pipeline_id: int, state: PipelineStatus, code: int) -> JSONResponse:
    body = CancelOutcome(pipeline_id=pipeline_id, status=state, cancel_requested=True)
    return JSONResponse(body.model_dump(mode="json"), status_code=code)


@router.post(
    "/pipelines/{pipeline_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PipelineAccepted,
    responses={409: {"description": "the pipeline has not finished yet"}},
    dependencies=[Depends(require_api_token)],
)
def retry_pipeline(
    pipeline_id: RowId,
    session: SessionDep,
    queue: QueueDep,
) -> JSONResponse:
    """Run a finished pipeline again as a new pipeline, at the same commit (the "Run again")."""
    original = _load(session, pipeline_id)
    if not PipelineStatus(original.status).finished:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"pipeline {pipeline_id} is {original.status}; only a finished pipeline can be retried",
        )
    repo = session.get(Repo, original.repo_id) if original.repo_id is not None else None
    if repo is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"pipeline {pipeline_id}'s repo has been deleted; register it again to run it",
        )
    retry = new_pipeline(
        repo,
        trigger=Trigger.RETRY,
        notebook_path=original.notebook_path,
        commit_sha=original.commit_sha,
        parameters=original.parameters,
        commit=CommitInfo(original.commit_message, original.commit_author, original.commit_url),
    )
    return _queue_new(session, queue, retry, trigger=Trigger.RETRY)
