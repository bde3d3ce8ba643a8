"""Each node its own outbox and counters, so several nodes can share one database.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

The outbox gets a ``node`` column in its key (each node's seq is gap-free on its own); rows stored
before are marked ``''`` and the counters keep their old names until the first node to start
adopts both (``Store.next_boot``), so that node's boot and seq go on where they were.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Constant column names (no input reaches these statements).
COLUMNS = "seq, topic, payload, qos, retain, created_at, delivered_at, is_reading"


def _outbox(name: str, *, with_node: bool) -> None:
    columns = [sa.Column("node", sa.String(length=64), nullable=False)] if with_node else []
    op.create_table(
        name,
        *columns,
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("qos", sa.Integer(), nullable=False),
        sa.Column("retain", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_reading", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*(["node", "seq"] if with_node else ["seq"]), name=f"{name}_pkey"),
    )


def _indexes(*, with_node: bool) -> None:
    op.create_index("ix_outbox_delivered", "outbox", ["delivered_at"], unique=False)
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["node", "seq"] if with_node else ["seq"],
        unique=False,
        sqlite_where=sa.text("delivered_at IS NULL"),
        postgresql_where=sa.text("delivered_at IS NULL"),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("node_counters", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=32), type_=sa.String(length=100))
    _outbox("outbox_per_node", with_node=True)
    op.execute(f"INSERT INTO outbox_per_node (node, {COLUMNS}) SELECT '', {COLUMNS} FROM outbox")  # noqa: S608
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_index("ix_outbox_delivered", table_name="outbox")
    op.drop_table("outbox")
    op.rename_table("outbox_per_node", "outbox")
    _indexes(with_node=True)


def downgrade() -> None:
    """Downgrade schema (every node's rows but the adopting one's are dropped: one outbox again)."""
    _outbox("outbox_single", with_node=False)
    op.execute(
        f"INSERT INTO outbox_single ({COLUMNS}) SELECT {COLUMNS} FROM outbox WHERE node = "  # noqa: S608
        "(SELECT MIN(node) FROM outbox)"
    )
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_index("ix_outbox_delivered", table_name="outbox")
    op.drop_table("outbox")
    op.rename_table("outbox_single", "outbox")
    _indexes(with_node=False)
    op.execute("DELETE FROM node_counters WHERE name LIKE '%@%'")
    with op.batch_alter_table("node_counters", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=100), type_=sa.String(length=32))
