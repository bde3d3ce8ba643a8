"""Alerts before the officers (acknowledged, escalated) and the webhook's outbox.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("lane", sa.String(length=64), nullable=False),
        sa.Column("alarm", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("container", sa.String(length=11), nullable=True),
        sa.Column("visit", sa.String(length=40), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("repeats", sa.Integer(), server_default="1", nullable=False),
        sa.Column("level", sa.Integer(), server_default="0", nullable=False),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("announced", sa.Integer(), server_default="-1", nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_by", sa.String(length=64), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alerts_open", "alerts", ["acked_at", "raised_at"], unique=False)
    op.create_index("ix_alerts_dedupe", "alerts", ["dedupe_key", "acked_at"], unique=False)
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_pending", "webhook_outbox", ["node", "delivered_at", "seq"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_webhook_pending", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    op.drop_index("ix_alerts_dedupe", table_name="alerts")
    op.drop_index("ix_alerts_open", table_name="alerts")
    op.drop_table("alerts")
