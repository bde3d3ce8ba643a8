"""Signed hold commands: ids spent per customs key, the hold list's authenticated confirmation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

A database from before this revision keeps its holds; its list has no confirmation yet, so it is
stale (no automatic release) until customs' signed sync or an operator's import confirms it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "hold_commands",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("command_id", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "command_id"),
    )
    with op.batch_alter_table("holdlist_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("confirmed_by", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("out_of_step", sa.Boolean(), server_default=sa.false(), nullable=False))
    # "key:command id": a command id is unique per signing key, not across keys.
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.alter_column(
            "source_message_id",
            existing_type=sa.String(length=128),
            type_=sa.String(length=193),
            existing_nullable=True,
        )
        batch_op.alter_column(
            "release_source_message_id",
            existing_type=sa.String(length=128),
            type_=sa.String(length=193),
            existing_nullable=True,
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.alter_column(
            "release_source_message_id",
            existing_type=sa.String(length=193),
            type_=sa.String(length=128),
            existing_nullable=True,
        )
        batch_op.alter_column(
            "source_message_id",
            existing_type=sa.String(length=193),
            type_=sa.String(length=128),
            existing_nullable=True,
        )
    with op.batch_alter_table("holdlist_state", schema=None) as batch_op:
        batch_op.drop_column("out_of_step")
        batch_op.drop_column("confirmed_by")
        batch_op.drop_column("confirmed_at")
    op.drop_table("hold_commands")
