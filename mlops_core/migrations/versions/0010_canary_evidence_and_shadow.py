"""canary and shadow traffic: the evidence of each canary decision, shadow answers in the log

Revision ID: 0010_canary_shadow
Revises: 0009_commit_failure
Create Date: 2026-12-12 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_canary_shadow"
down_revision: str | None = "0009_commit_failure"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))
    for table in ("prediction_log", "prediction_errors"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false())
            )


def downgrade() -> None:
    for table in ("prediction_errors", "prediction_log"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("shadow")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("evidence")
