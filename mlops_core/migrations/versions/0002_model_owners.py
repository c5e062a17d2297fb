"""model owners

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:12:40.118204
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_owners",
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=True),
        sa.Column("repo_url", sa.String(length=500), nullable=False),
        sa.Column("notebook_path", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owned_since", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("model_name"),
    )


def downgrade() -> None:
    op.drop_table("model_owners")
