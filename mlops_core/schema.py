"""The database schema shared by the backend and the worker.

Statuses are plain strings (not DB enums) so that adding one is a code change, not a
PostgreSQL type migration. Pipelines copy the repo's URL, branch and notebook path when
they are created: a run stays reproducible even if the repo is edited or deleted later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Timezone-aware now, so SQLite and PostgreSQL rows compare the same way."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base for every table of the platform."""


class Repo(Base):
    """A git repository whose pushes run a notebook."""

    __tablename__ = "repos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    github_url: Mapped[str] = mapped_column(String(500), unique=True)
    branch: Mapped[str] = mapped_column(String(255), default="main")
    notebook_path: Mapped[str] = mapped_column(String(500), default="notebooks/train.ipynb")
    token_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The push webhook POST /repos created through GitHub's API (deleted with the repo).
    webhook_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    pipelines: Mapped[list[Pipeline]] = relationship(back_populates="repo", passive_deletes=True)
    # Every notebook the repo runs, oldest registration first; `notebook_path` above names the
    # first of them (the one the single-notebook API shows and changes).
    notebooks: Mapped[list[Notebook]] = relationship(
        back_populates="repo",
        order_by="Notebook.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Notebook(Base):
    """A notebook a repo runs: its own pipelines and model, watched paths and schedule.

    A push runs each notebook whose watched paths it touched (backend/watch_paths.py); a
    schedule (cron, UTC) runs the branch head at each slot. `schedule_next_at` is the next slot
    to fire: the backend that fires it moves it on with a conditional UPDATE in the transaction
    that creates the pipeline, so a slot fires once however many backends look
    (backend/schedule_runner.py).
    """

    __tablename__ = "notebooks"
    __table_args__ = (
        Index("ix_notebooks_repo_path", "repo_id", "notebook_path", unique=True),
        Index("ix_notebooks_schedule_next_at", "schedule_next_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"))
    notebook_path: Mapped[str] = mapped_column(String(500))
    # Globs of paths whose change retrains (backend/watch_paths.py); NULL: the default ones.
    watch_paths: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # A cron expression (5 fields, UTC) or NULL: no scheduled runs.
    schedule: Mapped[str | None] = mapped_column(String(100), nullable=True)
    schedule_next_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    repo: Mapped[Repo] = relationship(back_populates="notebooks")


class Pipeline(Base):
    """One run of a repo's notebook at one commit."""

    __tablename__ = "pipelines"
    __table_args__ = (
        Index("ix_pipelines_repo_created", "repo_id", "created_at"),
        Index("ix_pipelines_status_enqueued", "status", "enqueued_at"),
        Index("ix_pipelines_log_archived", "log_archived_at", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int | None] = mapped_column(
        ForeignKey("repos.id", ondelete="SET NULL"), nullable=True
    )
    repo_url: Mapped[str] = mapped_column(String(500))
    branch: Mapped[str] = mapped_column(String(255))
    notebook_path: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    trigger: Mapped[str] = mapped_column(String(20), default="push")
    commit_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The commit as people know it: from the push payload, or read from git by fetch (manual
    # runs); the link only when the repository has a web page for it (backend/push_commit.py).
    commit_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    commit_author: Mapped[str | None] = mapped_column(String(255), nullable=True)
    commit_url: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    delivery_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # Why it started, beyond `trigger`: the changed path a push matched, for instance.
    trigger_detail: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # Papermill parameters given by the trigger; they override the notebook's defaults.
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Set once GitHub has the pipeline's final commit status, or none applies (backend/
    # commit_statuses.py): the backend's status sync looks only at rows where it is NULL.
    commit_status_settled_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    # Set once the Celery message is on the broker; NULL rows are re-queued by the backend.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(50), nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    deployed: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Where a failed notebook raised: the user's frames with their cells' source around the
    # line, the exception and the library frames below (mlops_core/cell_traceback.py).
    failure: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The running attempt's worker refreshes this (database clock) to say it is alive; the
    # backend queues again or fails a running pipeline whose heartbeat went stale
    # (mlops_core/pipeline_lease.py).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the log was copied from Redis into `log_lines`. NULL on a finished pipeline means the
    # copy is still to be done (Redis was down when it ended); the backend retries it.
    log_archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    repo: Mapped[Repo | None] = relationship(back_populates="pipelines")
    phases: Mapped[list[PipelinePhase]] = relationship(
        back_populates="pipeline",
        order_by="PipelinePhase.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class PipelinePhase(Base):
    """One phase (fetch, validate, execute, register, deploy) of a pipeline."""

    __tablename__ = "pipeline_phases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(30))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    pipeline: Mapped[Pipeline] = relationship(back_populates="phases")


class LogLine(Base):
    """A pipeline's log kept durably once the pipeline ends (Redis keeps only a replay window)."""

    __tablename__ = "log_lines"

    pipeline_id: Mapped[int] = mapped_column(
        ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
    phase: Mapped[str | None] = mapped_column(String(30), nullable=True)
    cell: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stream: Mapped[str] = mapped_column(String(20), default="system")
    text: Mapped[str] = mapped_column(Text)


class Deployment(Base):
    """History of every change to which version of a model is served."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_model_created", "model_name", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(20))  # a DeploymentAction (model_events.py)
    version: Mapped[str | None] = mapped_column(String(50), nullable=True)
    previous_version: Mapped[str | None] = mapped_column(String(50), nullable=True)
    pipeline_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipelines.id", ondelete="SET NULL"), nullable=True
    )
    actor: Mapped[str] = mapped_column(String(100), default="system")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Why, when a person said so: a version below its gate deployed by hand carries the verdict
    # and the reason given (backend/deploy_confirmation.py); a pipeline's deploy, the verdict.
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What a canary change rested on: its weight and mode when started, the live comparison of
    # both versions when promoted or aborted (mlops_core/canary_policy.py: evidence_record).
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ModelOwner(Base):
    """The repository and notebook a registered model name belongs to.

    The first pipeline to pass validate with a MODEL_NAME claims it; a pipeline of another
    repository or notebook declaring the same name fails validate until an admin transfers the
    name (POST /models/{name}/owner). The owner is the repo URL and notebook path (what every
    pipeline copies from its repo), so the row outlives the repo row: deleting a repo sets
    `repo_id` to NULL and keeps the name reserved for that URL and notebook. Releasing it would
    let any other repository publish versions under a name clients already call; registering
    the same repository again picks the name up again, and an admin can transfer it.
    """

    __tablename__ = "model_owners"

    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    repo_id: Mapped[int | None] = mapped_column(
        ForeignKey("repos.id", ondelete="SET NULL"), nullable=True
    )
    repo_url: Mapped[str] = mapped_column(String(500))
    notebook_path: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When the current owner got the name (its claim, or the last transfer).
    owned_since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """Every GitHub delivery seen, keyed by X-GitHub-Delivery so redeliveries are recognised."""

    __tablename__ = "webhook_deliveries"

    delivery_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event: Mapped[str] = mapped_column(String(50))
    repo_id: Mapped[int | None] = mapped_column(
        ForeignKey("repos.id", ondelete="SET NULL"), nullable=True
    )
    pipeline_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipelines.id", ondelete="SET NULL"), nullable=True
    )
    outcome: Mapped[str] = mapped_column(String(20))  # accepted | ignored
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PredictionLogRow(Base):
    """One answered prediction request, from the model servers' prediction log stream.

    `stream_id` is the record's id in the Redis stream: a record read again after a backend
    died before acknowledging it is recognised and not stored twice.
    """

    __tablename__ = "prediction_log"
    __table_args__ = (
        Index("ix_prediction_log_model_at", "model_name", "at"),
        Index("ix_prediction_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(40), unique=True)
    request_id: Mapped[str] = mapped_column(String(200), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(50))
    commit_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    replica: Mapped[str] = mapped_column(String(255))
    inputs: Mapped[list[Any]] = mapped_column(JSON)
    predictions: Mapped[list[Any]] = mapped_column(JSON)
    probabilities: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    # A challenger's answer to a copy of the request (shadow mode): never returned to the
    # caller; the champion's answer to the same request id is logged beside it.
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class PredictionErrorRow(Base):
    """One prediction request to a served version that failed, from the same stream.

    A table of its own rather than columns of `prediction_log`: every reader of answered
    predictions (the log's API, feedback, live quality, drift) stays as it is, and the model
    page's error rate per version counts these rows against answered ones.
    """

    __tablename__ = "prediction_errors"
    __table_args__ = (
        Index("ix_prediction_errors_model_at", "model_name", "at"),
        Index("ix_prediction_errors_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(40), unique=True)
    request_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(50))
    replica: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(20))  # an ErrorReason (prediction_log.py)
    status: Mapped[int] = mapped_column(Integer)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class PredictionFeedback(Base):
    """The ground truth for a logged prediction request, sent later by whoever learns it.

    One row per request id and model: feedback sent again for a request replaces its labels.
    `labels` holds one label per row of the request.
    """

    __tablename__ = "prediction_feedback"

    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    labels: Mapped[list[Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelReference(Base):
    """The training rows a notebook saved to REFERENCE_DATA_PATH, kept with its version.

    The drift check compares live inputs with them (a sample of at most REFERENCE_MAX_ROWS
    rows, keyed like logged inputs: by column name). The same file is an artifact of the run.
    """

    __tablename__ = "model_references"

    model_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(50), primary_key=True)
    rows: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CommitStatus(Base):
    """A commit status a pipeline wants GitHub to show, and how its delivery went.

    One row per change of what the pipeline reports (state and description), numbered per
    pipeline by `position`; GitHub shows the latest one, so a row not yet posted when a newer
    one is wanted is superseded rather than posted late.
    """

    __tablename__ = "commit_statuses"
    __table_args__ = (Index("ix_commit_statuses_pipeline", "pipeline_id", "position", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    commit_sha: Mapped[str] = mapped_column(String(64))
    context: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(20))  # pending | success | failure | error
    description: Mapped[str] = mapped_column(String(140))
    target_url: Mapped[str] = mapped_column(String(1000))
    delivery: Mapped[str] = mapped_column(String(20))  # waiting | posted | superseded | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    wanted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ServiceLease(Base):
    """Which backend process does a job that must run in one place at a time.

    Held until `expires_at` (the database's clock) and renewed by its holder; once it expires,
    any other backend may take it (mlops_core/service_lease.py).
    """

    __tablename__ = "service_leases"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
