"""the commit's message, author and web link on each pipeline, and where a failed notebook raised

Revision ID: 0009_commit_failure
Revises: 0008_notebooks
Create Date: 2026-12-11 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_commit_failure"
down_revision: str | None = "0008_notebooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("commit_message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("commit_author", sa.String(255), nullable=True))
        batch.add_column(sa.Column("commit_url", sa.String(1000), nullable=True))
        batch.add_column(sa.Column("failure", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("failure")
        batch.drop_column("commit_url")
        batch.drop_column("commit_author")
        batch.drop_column("commit_message")
