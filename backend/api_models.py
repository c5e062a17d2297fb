"""Request and response bodies of the repos, webhook and pipelines APIs.

Responses are built from these models only, never from ORM rows directly, so a stored secret
cannot reach a response by accident: no response model has a field for one, except the
one-time `webhook_secret` of RepoCreated (and that one is never the shared GITHUB_WEBHOOK_SECRET).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from backend.watch_paths import MAX_WATCH_PATHS, validate_glob
from mlops_core.run_parameters import validate_commit_sha, validate_parameters
from mlops_core.states import PipelineStatus


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC, so say so in the output."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]

_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def validate_branch(value: str) -> str:
    """A branch name git accepts (`git check-ref-format --branch`); `refs/heads/` is dropped."""
    name = value.strip().removeprefix("refs/heads/")
    if not name:
        raise ValueError("branch must not be empty")
    problems = (
        _BAD_REF_CHARS.search(name)
        or ".." in name
        or "//" in name
        or "@{" in name
        or name == "@"
        or name.startswith(("-", "/"))
        or name.endswith(("/", ".", ".lock"))
        or any(part.startswith(".") for part in name.split("/"))
    )
    if problems:
        raise ValueError(f"branch {name!r} is not a valid git branch name")
    return name


def validate_notebook_path(value: str) -> str:
    """A path inside the repository to a notebook: relative, no `..`, ending in `.ipynb`."""
    text = value.strip()
    if not text:
        raise ValueError("notebook_path must not be empty")
    if "\\" in text:
        raise ValueError("notebook_path must use '/' as separator")
    path = PurePosixPath(text)
    if path.is_absolute():
        raise ValueError("notebook_path must be relative to the repository root, not absolute")
    if ".." in path.parts:
        raise ValueError("notebook_path must not contain '..'")
    if path.suffix != ".ipynb":
        raise ValueError("notebook_path must end in '.ipynb'")
    return path.as_posix()


class RepoCreate(BaseModel):
    """POST /repos."""

    model_config = ConfigDict(extra="forbid")

    github_url: str = Field(max_length=500)
    branch: str = Field(default="main", max_length=255)
    notebook_path: str = Field(default="notebooks/train.ipynb", max_length=500)
    github_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    # Globs of paths whose change retrains (null: the notebook, its requirements.txt, its folder).
    watch_paths: list[str] | None = Field(default=None, max_length=MAX_WATCH_PATHS)
    # Create the push webhook through GitHub's API (when a token applies to the repo).
    create_webhook: bool = True

    @field_validator("watch_paths")
    @classmethod
    def _watch_paths(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [validate_glob(glob) for glob in value]

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        return validate_branch(value)

    @field_validator("notebook_path")
    @classmethod
    def _notebook_path(cls, value: str) -> str:
        return validate_notebook_path(value)

    @field_validator("github_token", "webhook_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be blank; omit the field instead")
        return value


class RepoUpdate(BaseModel):
    """PATCH /repos/{id}: what may change after registration."""

    model_config = ConfigDict(extra="forbid")

    # null goes back to the default globs.
    watch_paths: list[str] | None = Field(max_length=MAX_WATCH_PATHS)

    @field_validator("watch_paths")
    @classmethod
    def _watch_paths(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [validate_glob(glob) for glob in value]


class TriggerRequest(BaseModel):
    """POST /repos/{id}/trigger: which commit (default: the branch head) and which parameters."""

    model_config = ConfigDict(extra="forbid")

    commit: str | None = Field(default=None, max_length=64)
    # Papermill parameters: injected after the notebook's `parameters` cell, so they override
    # its defaults (mlops_core/run_parameters.py says what is accepted).
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str | None) -> str | None:
        return None if value is None else validate_commit_sha(value)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return validate_parameters(value)


class PipelineBrief(BaseModel):
    """A repo's latest pipeline, as listed with the repo."""

    id: int
    status: PipelineStatus
    commit_sha: str | None
    created_at: UtcDatetime


class RepoOut(BaseModel):
    """A registered repo as the API shows it (no token, no secret)."""

    id: int
    github_url: str
    branch: str
    notebook_path: str
    created_at: UtcDatetime
    has_token: bool
    webhook_url: str
    # The push webhook's id on GitHub, when POST /repos created it.
    webhook_id: int | None = None
    # What a push must change to retrain (the notebook always counts).
    watch_paths: list[str]
    last_pipeline: PipelineBrief | None = None


class WebhookSecretSource(StrEnum):
    """Where a new repo's webhook secret comes from, as RepoCreated says."""

    GENERATED = "generated"
    GIVEN = "given"
    SHARED = "shared GITHUB_WEBHOOK_SECRET"


class WebhookSetup(BaseModel):
    """Whether POST /repos created the push webhook through GitHub's API, and if not, why."""

    created: bool
    id: int | None = None
    reason: str | None = None


class RepoCreated(RepoOut):
    """The create response: the only time the repo's own webhook secret is shown.

    With the shared GITHUB_WEBHOOK_SECRET, `webhook_secret` is null: that secret is the
    operator's, and showing it would let every registrant sign deliveries for every repo that
    shares it. `webhook_secret_source` says which secret applies.
    """

    webhook_secret: str | None
    webhook_secret_source: WebhookSecretSource
    webhook: WebhookSetup


class PipelineAccepted(BaseModel):
    """A pipeline was created (or found, for a redelivery) and is queued."""

    pipeline_id: int
    status: PipelineStatus
    # For a push: the changed path that made it run (or why every path counted).
    matched: str | None = None


class WebhookIgnored(BaseModel):
    """A verified delivery that starts nothing, and why."""

    status: Literal["ignored"] = "ignored"
    reason: str


class WebhookPong(BaseModel):
    """Answer to GitHub's ping event."""

    status: Literal["pong"] = "pong"
    repo_id: int | None
    zen: str | None = None


class PhaseOut(BaseModel):
    """One phase of a pipeline."""

    name: str
    status: str
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    duration_seconds: float | None
    error: str | None


class PipelineSummary(BaseModel):
    """A pipeline as listed."""

    id: int
    repo_id: int | None
    repo_url: str
    branch: str
    notebook_path: str
    status: PipelineStatus
    trigger: str
    trigger_detail: str | None
    commit_sha: str | None
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    model_name: str | None
    model_version: str | None
    mlflow_run_id: str | None
    deployed: bool
    error: str | None
    attempts: int
    cancel_requested: bool
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    duration_seconds: float | None


class CommitStatusOut(BaseModel):
    """A commit status the pipeline reported to GitHub, and how its delivery went.

    `delivery`: waiting (to be posted, `next_attempt_at`), posted, superseded (a newer one was
    wanted before it could be posted) or failed (GitHub refused it, `last_error` says why).
    """

    context: str
    state: str
    description: str
    target_url: str
    delivery: str
    attempts: int
    last_error: str | None
    wanted_at: UtcDatetime
    next_attempt_at: UtcDatetime
    posted_at: UtcDatetime | None


class PipelineDetail(PipelineSummary):
    """A pipeline with its phases, parameters and commit statuses."""

    params: dict[str, Any]
    phases: list[PhaseOut]
    commit_statuses: list[CommitStatusOut] = Field(default_factory=list)


class PipelinePage(BaseModel):
    """One page of pipelines, newest first."""

    items: list[PipelineSummary]
    total: int
    page: int
    size: int


class CancelOutcome(BaseModel):
    """Result of POST /pipelines/{id}/cancel."""

    pipeline_id: int
    status: PipelineStatus
    cancel_requested: bool


class WorkerReport(BaseModel):
    """The Celery workers that answered a control request and consume the pipelines queue."""

    queue: str
    count: int
    nodes: list[str]


class ReadyReport(BaseModel):
    """GET /ready: each part's state ("ok" or why not) in `checks`; `down` names the required
    parts not answering (any → 503). The worker is reported in `checks` and `workers` but is
    not required: without one the backend still accepts webhooks and pipelines wait queued."""

    status: Literal["ready", "not ready"]
    checks: dict[str, str]
    down: list[str]
    workers: WorkerReport | None = None
