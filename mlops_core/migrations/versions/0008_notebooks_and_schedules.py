"""several notebooks per repository, each with its watched paths and cron schedule

Every existing repo gets one notebook row: its notebook_path and watch_paths (the column moves
from repos to notebooks).

Revision ID: 0008_notebooks
Revises: 0007
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_notebooks"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notebooks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "repo_id", sa.Integer(), sa.ForeignKey("repos.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("notebook_path", sa.String(500), nullable=False),
        sa.Column("watch_paths", sa.JSON(), nullable=True),
        sa.Column("schedule", sa.String(100), nullable=True),
        sa.Column("schedule_next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_notebooks_repo_path", "notebooks", ["repo_id", "notebook_path"], unique=True
    )
    op.create_index("ix_notebooks_schedule_next_at", "notebooks", ["schedule_next_at"])
    op.execute(
        "INSERT INTO notebooks (repo_id, notebook_path, watch_paths, created_at) "
        "SELECT id, notebook_path, watch_paths, created_at FROM repos"
    )
    # Not batch mode: on SQLite it copies `repos` into a new table and drops the old one, and
    # with foreign keys on that drop empties `notebooks` (cascade) and unlinks every pipeline.
    # SQLite (3.35+) and PostgreSQL both drop a column in place.
    op.execute("ALTER TABLE repos DROP COLUMN watch_paths")


def downgrade() -> None:
    op.add_column("repos", sa.Column("watch_paths", sa.JSON(), nullable=True))
    # Each repo keeps the watched paths of its first notebook; other notebooks are dropped.
    op.execute(
        "UPDATE repos SET watch_paths = (SELECT n.watch_paths FROM notebooks n "
        "WHERE n.repo_id = repos.id AND n.notebook_path = repos.notebook_path)"
    )
    op.drop_table("notebooks")
