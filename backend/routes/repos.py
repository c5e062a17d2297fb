"""Repos API: register the git repositories whose pushes run a notebook.

Handlers are plain `def`s: FastAPI runs them in its thread pool, so their database work (and
their calls to GitHub's API) never block the event loop.

Registering a repo on GitHub (GITHUB_API_URL) with a token that applies also creates its push
webhook there, after the repo row is committed: a refusal (no admin right, GitHub down) leaves
the repo registered and says why, and the user can still add the hook by hand.

A repo runs one notebook or several (backend/notebook_registry.py; more are added with
backend/routes/notebooks.py); the fields of the single-notebook form are its first one's.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from backend.api_models import (
    NotebookUpdate,
    PipelineBrief,
    RepoCreate,
    RepoCreated,
    RepoOut,
    WebhookSecretSource,
    WebhookSetup,
)
from backend.api_params import RowId
from backend.auth import require_api_token, require_read_token
from backend.dependencies import SessionDep, SettingsDep
from backend.github_api import GitHubApi, GitHubError, github_repo
from backend.notebook_registry import (
    new_notebook,
    notebook_out,
    own_notebook,
    own_notebook_out,
    update_notebook,
)
from backend.validation_errors import field_error
from mlops_core import secrets_box
from mlops_core.pipeline_lease import db_now
from mlops_core.repo_urls import RepoUrlError, normalize_repo_url
from mlops_core.schema import Pipeline, Repo
from mlops_core.settings import Settings
from mlops_core.states import PipelineStatus

logger = logging.getLogger(__name__)

router = APIRouter(tags=["repos"])

WEBHOOK_PATH = "/webhook/github"


def webhook_url(settings: Settings) -> str:
    """The Payload URL to enter in GitHub's webhook settings."""
    return settings.public_base_url.rstrip("/") + WEBHOOK_PATH


def _repo_out(repo: Repo, settings: Settings, last: Pipeline | None = None) -> RepoOut:
    first = own_notebook_out(repo)
    return RepoOut(
        id=repo.id,
        github_url=repo.github_url,
        branch=repo.branch,
        notebook_path=repo.notebook_path,
        created_at=repo.created_at,
        has_token=repo.token_encrypted is not None,
        webhook_url=webhook_url(settings),
        webhook_id=repo.webhook_id,
        watch_paths=first.watch_paths,
        schedule=first.schedule,
        next_run_at=first.next_run_at,
        notebooks=[notebook_out(notebook) for notebook in repo.notebooks],
        last_pipeline=(
            PipelineBrief(
                id=last.id,
                status=PipelineStatus(last.status),
                commit_sha=last.commit_sha,
                created_at=last.created_at,
            )
            if last is not None
            else None
        ),
    )


def _latest_pipelines(session: Session, repo_ids: list[int]) -> dict[int, Pipeline]:
    """Each repo's newest pipeline, in one query (ids grow with time)."""
    if not repo_ids:
        return {}
    newest = (
        select(func.max(Pipeline.id))
        .where(Pipeline.repo_id.in_(repo_ids))
        .group_by(Pipeline.repo_id)
        .scalar_subquery()
    )
    rows = session.scalars(select(Pipeline).where(Pipeline.id.in_(newest)))
    return {row.repo_id: row for row in rows if row.repo_id is not None}


def _choose_secret(body: RepoCreate, settings: Settings) -> tuple[str, WebhookSecretSource]:
    """The secret given, else GITHUB_WEBHOOK_SECRET, else a new random one; and which it is."""
    if body.webhook_secret is not None:
        return body.webhook_secret.get_secret_value(), WebhookSecretSource.GIVEN
    if settings.github_webhook_secret is not None:
        shared = settings.github_webhook_secret.get_secret_value()
        if shared:
            return shared, WebhookSecretSource.SHARED
    return secrets.token_hex(32), WebhookSecretSource.GENERATED


@router.post(
    "/repos",
    status_code=status.HTTP_201_CREATED,
    response_model=RepoCreated,
    dependencies=[Depends(require_api_token)],
)
def create_repo(
    body: RepoCreate,
    settings: SettingsDep,
    session: SessionDep,
) -> RepoCreated:
    """Register a repo; the response is the only place its own webhook secret is ever shown."""
    try:
        url = normalize_repo_url(
            body.github_url,
            allow_local=settings.allow_local_repos,
            allow_private_hosts=settings.allow_private_repo_hosts,
        )
    except RepoUrlError as exc:
        raise field_error("github_url", f"github_url: {exc}") from exc
    existing = session.scalar(select(Repo.id).where(Repo.github_url == url))
    if existing is not None:
        raise _duplicate(url, existing)
    secret, source = _choose_secret(body, settings)
    specs = body.notebook_specs()
    now = db_now(session)
    repo = Repo(
        github_url=url,
        branch=body.branch,
        notebook_path=specs[0].notebook_path,
        token_encrypted=(
            secrets_box.encrypt(settings, body.github_token.get_secret_value())
            if body.github_token is not None
            else None
        ),
        webhook_secret_encrypted=secrets_box.encrypt(settings, secret),
        notebooks=[new_notebook(spec, now) for spec in specs],
    )
    session.add(repo)
    try:
        session.commit()
    except IntegrityError as exc:  # registered concurrently by another request
        session.rollback()
        raced = session.scalar(select(Repo.id).where(Repo.github_url == url))
        raise _duplicate(url, raced) from exc
    logger.info("registered repo %s: %s (branch %s)", repo.id, url, repo.branch)
    token = body.github_token.get_secret_value() if body.github_token else None
    setup = (
        _create_webhook(settings, repo, token, secret)
        if body.create_webhook
        else WebhookSetup(created=False, reason="not asked for (create_webhook: false)")
    )
    if setup.id is not None:
        repo.webhook_id = setup.id
        session.commit()
    return RepoCreated(
        **_repo_out(repo, settings).model_dump(),
        webhook_secret=None if source == WebhookSecretSource.SHARED else secret,
        webhook_secret_source=source,
        webhook=setup,
    )


def _create_webhook(settings: Settings, repo: Repo, token: str | None, secret: str) -> WebhookSetup:
    """Create the repo's push webhook on GitHub, or say why it was not created."""
    target = github_repo(repo.github_url, repo_token=token, settings=settings)
    if isinstance(target, str):
        return WebhookSetup(created=False, reason=target)
    api = GitHubApi()
    try:
        hook_id = api.create_push_hook(target, url=webhook_url(settings), secret=secret)
    except GitHubError as exc:
        reason = (
            f"GitHub answered 404: {target.token_source} needs admin:repo_hook on "
            f"{target.full_name} (or cannot see the repository)"
            if exc.status == 404
            else str(exc)
        )
        logger.warning("repo %s: webhook not created: %s", repo.id, reason)
        return WebhookSetup(created=False, reason=reason)
    finally:
        api.close()
    logger.info("repo %s: push webhook %s created on %s", repo.id, hook_id, target.full_name)
    return WebhookSetup(created=True, id=hook_id)


def _delete_webhook(settings: Settings, repo: Repo) -> None:
    """Delete the webhook POST /repos created; a failure is logged, never blocks the delete."""
    if repo.webhook_id is None:
        return
    try:
        token = (
            secrets_box.decrypt(settings, repo.token_encrypted) if repo.token_encrypted else None
        )
    except secrets_box.SecretsBoxError as exc:
        logger.warning("repo %s: webhook %s left on GitHub: %s", repo.id, repo.webhook_id, exc)
        return
    target = github_repo(repo.github_url, repo_token=token, settings=settings)
    if isinstance(target, str):
        logger.warning("repo %s: webhook %s left on GitHub: %s", repo.id, repo.webhook_id, target)
        return
    api = GitHubApi()
    try:
        deleted = api.delete_hook(target, repo.webhook_id)
    except GitHubError as exc:
        logger.warning("repo %s: webhook %s left on GitHub: %s", repo.id, repo.webhook_id, exc)
        return
    finally:
        api.close()
    logger.info(
        "repo %s: webhook %s %s",
        repo.id,
        repo.webhook_id,
        "deleted on GitHub" if deleted else "was already gone from GitHub",
    )


def _duplicate(url: str, repo_id: int | None) -> HTTPException:
    which = f" as repo {repo_id}" if repo_id is not None else ""
    return HTTPException(
        status.HTTP_409_CONFLICT, f"github_url: {url} is already registered{which}"
    )


@router.get("/repos", response_model=list[RepoOut], dependencies=[Depends(require_read_token)])
def list_repos(settings: SettingsDep, session: SessionDep) -> list[RepoOut]:
    """Every registered repo with its latest pipeline, oldest registration first."""
    repos = list(
        session.scalars(select(Repo).options(selectinload(Repo.notebooks)).order_by(Repo.id))
    )
    latest = _latest_pipelines(session, [repo.id for repo in repos])
    return [_repo_out(repo, settings, latest.get(repo.id)) for repo in repos]


def load_repo(session: Session, repo_id: int) -> Repo:
    """The repo with that id, or a 404 naming it."""
    repo = session.get(Repo, repo_id)
    if repo is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"repo {repo_id} not found")
    return repo


@router.get("/repos/{repo_id}", response_model=RepoOut, dependencies=[Depends(require_read_token)])
def get_repo(
    repo_id: RowId,
    settings: SettingsDep,
    session: SessionDep,
) -> RepoOut:
    """One repo with its latest pipeline."""
    repo = load_repo(session, repo_id)
    return _repo_out(repo, settings, _latest_pipelines(session, [repo.id]).get(repo.id))


@router.delete(
    "/repos/{repo_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(require_api_token)],
)
def delete_repo(
    repo_id: RowId,
    settings: SettingsDep,
    session: SessionDep,
) -> Response:
    """Forget a repo and delete the webhook POST /repos created; its pipelines stay as history
    (they copied what they need)."""
    repo = load_repo(session, repo_id)
    _delete_webhook(settings, repo)
    session.delete(repo)
    session.commit()
    logger.info("deleted repo %s: %s", repo_id, repo.github_url)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch("/repos/{repo_id}", response_model=RepoOut, dependencies=[Depends(require_api_token)])
def update_repo(
    repo_id: RowId,
    body: NotebookUpdate,
    settings: SettingsDep,
    session: SessionDep,
) -> RepoOut:
    """Change what a push must touch to retrain (`watch_paths`; null: the default globs) and
    when the notebook runs on its own (`schedule`, cron in UTC; null: never), for the repo's
    first notebook (PATCH /repos/{id}/notebooks/{notebook_id} for the others)."""
    repo = load_repo(session, repo_id)
    update_notebook(session, own_notebook(repo), body)
    session.commit()
    return _repo_out(repo, settings, _latest_pipelines(session, [repo.id]).get(repo.id))
