"""pipeline heartbeat and log archive mark

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:02:11.512034
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = ("success", "failed", "cancelled")


def upgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("log_archived_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_pipelines_log_archived", ["log_archived_at", "status"])
    pipelines = sa.table(
        "pipelines",
        sa.column("status", sa.String),
        sa.column("finished_at", sa.DateTime(timezone=True)),
        sa.column("log_archived_at", sa.DateTime(timezone=True)),
    )
    # Pipelines that ended before this revision had their log archived with their status.
    op.execute(
        pipelines.update()
        .where(pipelines.c.status.in_(FINISHED))
        .values(log_archived_at=sa.func.coalesce(pipelines.c.finished_at, sa.func.now()))
    )


def downgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_index("ix_pipelines_log_archived")
        batch.drop_column("log_archived_at")
        batch.drop_column("heartbeat_at")
