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

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from backend.schedules import validate_schedule
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


def _globs(value: list[str] | None) -> list[str] | None:
    return None if value is None else [validate_glob(glob) for glob in value]


def _schedule(value: str | None) -> str | None:
    return None if value is None else validate_schedule(value)


# Notebooks one repository may register.
MAX_NOTEBOOKS = 50
Globs = Annotated[list[str] | None, Field(max_length=MAX_WATCH_PATHS), AfterValidator(_globs)]
Schedule = Annotated[str | None, Field(max_length=200), AfterValidator(_schedule)]


class NotebookSpec(BaseModel):
    """A notebook a repo runs: POST /repos/{id}/notebooks, and each of POST /repos' `notebooks`."""

    model_config = ConfigDict(extra="forbid")

    notebook_path: str = Field(max_length=500)
    # Globs of paths whose change retrains (null: the notebook, its requirements.txt, its folder).
    watch_paths: Globs = None
    # A cron expression (UTC) whose slots run the branch head; null: no scheduled runs.
    schedule: Schedule = None

    @field_validator("notebook_path")
    @classmethod
    def _notebook_path(cls, value: str) -> str:
        return validate_notebook_path(value)


class NotebookUpdate(BaseModel):
    """PATCH /repos/{id}/notebooks/{notebook_id} (and PATCH /repos/{id} for the repo's first
    notebook): only the fields given change; null puts a field back to its default."""

    model_config = ConfigDict(extra="forbid")

    watch_paths: Globs = None
    schedule: Schedule = None

    @model_validator(mode="after")
    def _something(self) -> NotebookUpdate:
        if not self.model_fields_set:
            raise ValueError("give watch_paths and/or schedule (null: back to the default)")
        return self


class RepoCreate(BaseModel):
    """POST /repos: one notebook (`notebook_path`, `watch_paths`, `schedule`), or several
    (`notebooks`, the first of which is the repo's `notebook_path`)."""

    model_config = ConfigDict(extra="forbid")

    github_url: str = Field(max_length=500)
    branch: str = Field(default="main", max_length=255)
    notebook_path: str = Field(default="notebooks/train.ipynb", max_length=500)
    github_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    # Globs of paths whose change retrains (null: the notebook, its requirements.txt, its folder).
    watch_paths: Globs = None
    # A cron expression (UTC) whose slots run the branch head; null: no scheduled runs.
    schedule: Schedule = None
    notebooks: list[NotebookSpec] | None = Field(
        default=None, min_length=1, max_length=MAX_NOTEBOOKS
    )
    # Create the push webhook through GitHub's API (when a token applies to the repo).
    create_webhook: bool = True

    @model_validator(mode="after")
    def _one_form(self) -> RepoCreate:
        if self.notebooks is None:
            return self
        single = sorted({"notebook_path", "watch_paths", "schedule"} & self.model_fields_set)
        if single:
            raise ValueError(
                f"give either notebooks or {', '.join(single)} (the fields of a single "
                "notebook), not both"
            )
        paths = [notebook.notebook_path for notebook in self.notebooks]
        twice = sorted({path for path in paths if paths.count(path) > 1})
        if twice:
            raise ValueError(f"notebooks lists {', '.join(twice)} more than once")
        return self

    def notebook_specs(self) -> list[NotebookSpec]:
        """The notebooks to register, the repo's own (`notebook_path`) first."""
        if self.notebooks is not None:
            return list(self.notebooks)
        return [
            NotebookSpec.model_construct(
                notebook_path=self.notebook_path,
                watch_paths=self.watch_paths,
                schedule=self.schedule,
            )
        ]

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


class TriggerRequest(BaseModel):
    """POST /repos/{id}/trigger: which commit (default: the branch head) and which parameters."""

    model_config = ConfigDict(extra="forbid")

    commit: str | None = Field(default=None, max_length=64)
    # Papermill parameters: injected after the notebook's `parameters` cell, so they override
    # its defaults (mlops_core/run_parameters.py says what is accepted).
    parameters: dict[str, Any] = Field(default_factory=dict)
    # Which of the repo's notebooks to run (default: its first, `notebook_path`).
    notebook_path: str | None = Field(default=None, max_length=500)

    @field_validator("notebook_path")
    @classmethod
    def _notebook_path(cls, value: str | None) -> str | None:
        return None if value is None else validate_notebook_path(value)

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


class NotebookOut(BaseModel):
    """A notebook a repo runs, as the API shows it."""

    id: int
    notebook_path: str
    # What a push must change to retrain it (the notebook always counts).
    watch_paths: list[str]
    # Its cron expression (UTC) and the next slot that runs it, if scheduled.
    schedule: str | None = None
    next_run_at: UtcDatetime | None = None


class RepoOut(BaseModel):
    """A registered repo as the API shows it (no token, no secret).

    `notebook_path`, `watch_paths`, `schedule` and `next_run_at` are those of the repo's first
    notebook (the single-notebook form); `notebooks` lists every one.
    """

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
    schedule: str | None = None
    next_run_at: UtcDatetime | None = None
    notebooks: list[NotebookOut] = Field(default_factory=list)
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


class QueuedNotebook(BaseModel):
    """One notebook's pipeline of a push."""

    pipeline_id: int
    notebook_path: str
    # The changed path that made it run (or why every path counted).
    matched: str | None = None


class PipelineAccepted(BaseModel):
    """A pipeline was created (or found, for a redelivery) and is queued.

    A push that touched several notebooks of the repo queues one pipeline each, all listed in
    `pipelines`; `pipeline_id` and `matched` are the first one's.
    """

    pipeline_id: int
    status: PipelineStatus
    # For a push: the changed path that made it run (or why every path counted).
    matched: str | None = None
    pipelines: list[QueuedNotebook] = Field(default_factory=list)


class WebhookIgnored(BaseModel):
    """A verified delivery that starts nothing, and why."""

    status: Literal["ignored"] = "ignored"
    reason: str


class WebhookPong(BaseModel):
    """Answer to GitHub's ping event."""

    status: Literal["pong"] = "pong"
    repo_id: int | None
    zen: str | None = None


class WebhookDeliveryOut(BaseModel):
    """A webhook delivery a repo received: what it was, and whether it started a pipeline."""

    delivery_id: str
    event: str
    outcome: str  # accepted | ignored
    reason: str | None
    pipeline_id: int | None
    received_at: UtcDatetime


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
    # The commit's message and author (from the push, or read from git for a manual run) and
    # its web page, when the repository has one.
    commit_message: str | None = None
    commit_author: str | None = None
    commit_url: str | None = None
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    model_name: str | None
    model_version: str | None
    mlflow_run_id: str | None
    deployed: bool
    error: str | None
    # The phase a failed run stopped at (what its error names first), so a list can say
    # "no metrics (failed at execute)" without the phases.
    failed_phase: str | None = None
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


class FailureSourceLine(BaseModel):
    number: int
    text: str


class FailureFrame(BaseModel):
    """A frame of the notebook's own code: its cell (numbered from 1), the line that ran and the
    cell's source around it."""

    cell: int
    tag: str | None
    line: int
    function: str | None
    source: list[FailureSourceLine]


class PipelineFailure(BaseModel):
    """Where a notebook raised (mlops_core/cell_traceback.py): the cell the run stopped at, the
    exception, the user's frames (outermost first) and the library frames below them."""

    cell: int | None
    tag: str | None
    exception: str
    frames: list[FailureFrame]
    library_frames: list[str]


class PipelineDetail(PipelineSummary):
    """A pipeline with its phases, parameters and commit statuses."""

    params: dict[str, Any]
    # Set when a cell raised: the user's line, shown outside the log.
    failure: PipelineFailure | None = None
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
    """The Celery workers that answered a control request and consume the pipelines queue.

    Asked in the background every WORKER_CHECK_INTERVAL_SECONDS; `age_seconds` says how long
    ago the answer shown was received."""

    queue: str
    count: int
    nodes: list[str]
    age_seconds: float


class ReadyReport(BaseModel):
    """GET /ready: each part's state ("ok" or why not) in `checks`; `down` names the required
    parts not answering (any → 503). The worker is reported in `checks` and `workers` but is
    not required: without one the backend still accepts webhooks and pipelines wait queued."""

    status: Literal["ready", "not ready"]
    checks: dict[str, str]
    down: list[str]
    workers: WorkerReport | None = None
