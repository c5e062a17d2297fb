"""prediction log, feedback and training references

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 10:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prediction_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("stream_id", sa.String(40), nullable=False, unique=True),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(50), nullable=False),
        sa.Column("commit_sha", sa.String(64), nullable=True),
        sa.Column("replica", sa.String(255), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("predictions", sa.JSON(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
    )
    op.create_index("ix_prediction_log_request_id", "prediction_log", ["request_id"])
    op.create_index("ix_prediction_log_model_at", "prediction_log", ["model_name", "at"])
    op.create_index("ix_prediction_log_at", "prediction_log", ["at"])
    op.create_table(
        "prediction_feedback",
        sa.Column("model_name", sa.String(255), primary_key=True),
        sa.Column("request_id", sa.String(200), primary_key=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "model_references",
        sa.Column("model_name", sa.String(255), primary_key=True),
        sa.Column("model_version", sa.String(50), primary_key=True),
        sa.Column("rows", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_references")
    op.drop_table("prediction_feedback")
    op.drop_table("prediction_log")
