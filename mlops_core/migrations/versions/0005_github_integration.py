"""GitHub both ways: webhook id, watched paths, trigger parameters, commit statuses, leases

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("repos") as batch:
        batch.add_column(sa.Column("webhook_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("watch_paths", sa.JSON(), nullable=True))
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("trigger_detail", sa.String(500), nullable=True))
        batch.add_column(sa.Column("parameters", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("commit_status_settled_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_index("ix_pipelines_commit_status_settled_at", ["commit_status_settled_at"])
    pipelines = sa.table(
        "pipelines", sa.column("commit_status_settled_at", sa.DateTime(timezone=True))
    )
    # Pipelines from before commit statuses existed report nothing: GitHub would otherwise get
    # a burst of statuses for old commits on the first start.
    op.execute(pipelines.update().values(commit_status_settled_at=sa.func.now()))
    op.create_table(
        "commit_statuses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "pipeline_id",
            sa.Integer(),
            sa.ForeignKey("pipelines.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("commit_sha", sa.String(64), nullable=False),
        sa.Column("context", sa.String(255), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("description", sa.String(140), nullable=False),
        sa.Column("target_url", sa.String(1000), nullable=False),
        sa.Column("delivery", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("wanted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_commit_statuses_pipeline", "commit_statuses", ["pipeline_id", "position"], unique=True
    )
    op.create_table(
        "service_leases",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_leases")
    op.drop_table("commit_statuses")
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_index("ix_pipelines_commit_status_settled_at")
        batch.drop_column("commit_status_settled_at")
        batch.drop_column("parameters")
        batch.drop_column("trigger_detail")
    with op.batch_alter_table("repos") as batch:
        batch.drop_column("watch_paths")
        batch.drop_column("webhook_id")
