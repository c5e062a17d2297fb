"""failed prediction requests per version (the model page's error rate)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prediction_errors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("stream_id", sa.String(40), nullable=False, unique=True),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(50), nullable=False),
        sa.Column("replica", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
    )
    op.create_index("ix_prediction_errors_model_at", "prediction_errors", ["model_name", "at"])
    op.create_index("ix_prediction_errors_at", "prediction_errors", ["at"])


def downgrade() -> None:
    op.drop_table("prediction_errors")
