"""Notebooks API: the notebooks a registered repo runs, beyond the one it was registered with.

Each notebook has its own pipelines and model, watched paths and schedule
(backend/notebook_registry.py). A push that touches several of them queues one pipeline each.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy.exc import IntegrityError

from backend.api_models import NotebookOut, NotebookSpec, NotebookUpdate
from backend.api_params import RowId
from backend.auth import require_api_token
from backend.dependencies import SessionDep
from backend.notebook_registry import find_notebook, new_notebook, notebook_out, update_notebook
from backend.routes.repos import load_repo
from mlops_core.pipeline_lease import db_now
from mlops_core.schema import Notebook, Repo

logger = logging.getLogger(__name__)

router = APIRouter(tags=["repos"])


def _load(repo: Repo, notebook_id: int) -> Notebook:
    found = next((n for n in repo.notebooks if n.id == notebook_id), None)
    if found is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"notebook {notebook_id} of repo {repo.id} not found"
        )
    return found


def _already(repo: Repo, notebook_path: str) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        f"notebook_path: {notebook_path} is already registered for repo {repo.id}",
    )


@router.post(
    "/repos/{repo_id}/notebooks",
    status_code=status.HTTP_201_CREATED,
    response_model=NotebookOut,
    dependencies=[Depends(require_api_token)],
)
def add_notebook(repo_id: RowId, body: NotebookSpec, session: SessionDep) -> NotebookOut:
    """Run another notebook of the repo: on pushes touching its watched paths, on its schedule."""
    repo = load_repo(session, repo_id)
    if find_notebook(repo, body.notebook_path) is not None:
        raise _already(repo, body.notebook_path)
    notebook = new_notebook(body, db_now(session))
    repo.notebooks.append(notebook)
    try:
        session.commit()
    except IntegrityError as exc:  # added concurrently by another request
        session.rollback()
        raise _already(repo, body.notebook_path) from exc
    logger.info("repo %s: notebook %s registered", repo.id, notebook.notebook_path)
    return notebook_out(notebook)


@router.patch(
    "/repos/{repo_id}/notebooks/{notebook_id}",
    response_model=NotebookOut,
    dependencies=[Depends(require_api_token)],
)
def change_notebook(
    repo_id: RowId, notebook_id: RowId, body: NotebookUpdate, session: SessionDep
) -> NotebookOut:
    """Change a notebook's watched paths and/or schedule (null: back to the default)."""
    notebook = _load(load_repo(session, repo_id), notebook_id)
    update_notebook(session, notebook, body)
    session.commit()
    return notebook_out(notebook)


@router.delete(
    "/repos/{repo_id}/notebooks/{notebook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "the repo's last notebook (remove the repo instead)"}},
    dependencies=[Depends(require_api_token)],
)
def remove_notebook(repo_id: RowId, notebook_id: RowId, session: SessionDep) -> Response:
    """Stop running a notebook; its pipelines and models stay. When it was the repo's first,
    the next one becomes the repo's `notebook_path`."""
    repo = load_repo(session, repo_id)
    notebook = _load(repo, notebook_id)
    if len(repo.notebooks) == 1:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"notebook {notebook_id} is the only one repo {repo.id} runs: remove the repo "
            f"instead (DELETE /repos/{repo.id})",
        )
    repo.notebooks.remove(notebook)
    if repo.notebook_path == notebook.notebook_path:
        repo.notebook_path = repo.notebooks[0].notebook_path
    session.commit()
    logger.info("repo %s: notebook %s removed", repo.id, notebook.notebook_path)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
