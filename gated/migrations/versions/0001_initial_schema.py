"""The initial schema: what ``metadata.create_all`` made before migrations existed.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "audit",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "cancelled_cards",
        sa.Column("card_id", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=True),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("card_id"),
    )
    op.create_table(
        "cancelled_list_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("list_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=True),
        sa.CheckConstraint("id = 1", name="ck_cancelled_list_state_single_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("visit", sa.String(length=40), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("lane", sa.String(length=64), nullable=False),
        sa.Column("container", sa.String(length=11), nullable=True),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("visit", "slot", name="uq_decision_visit_slot"),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decisions_container"), ["container"], unique=False)

    op.create_table(
        "holdlist_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("loaded", sa.Boolean(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name="ck_holdlist_state_single_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("container", sa.String(length=11), nullable=True),
        sa.Column("bill_of_lading", sa.String(length=35), nullable=True),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("hold_type", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=True),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("source_message_id", sa.String(length=128), nullable=True),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("release_code", sa.String(length=16), nullable=True),
        sa.Column("release_reference", sa.String(length=128), nullable=True),
        sa.Column("release_source_message_id", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "container IS NOT NULL OR bill_of_lading IS NOT NULL", name="ck_holds_container_or_bill"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_message_id"),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index("ix_holds_bill_of_lading", ["bill_of_lading"], unique=False)
        batch_op.create_index("ix_holds_container", ["container"], unique=False)
        batch_op.create_index(
            "ix_holds_release_source_message_id", ["release_source_message_id"], unique=False
        )

    op.create_table(
        "manifest",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("container", sa.String(length=11), nullable=False),
        sa.Column("bill_of_lading", sa.String(length=35), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("container", "bill_of_lading", name="uq_manifest_container_bill"),
    )
    with op.batch_alter_table("manifest", schema=None) as batch_op:
        batch_op.create_index("ix_manifest_bill_of_lading", ["bill_of_lading"], unique=False)
        batch_op.create_index("ix_manifest_container", ["container"], unique=False)

    op.create_table(
        "node_counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "outbox",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("qos", sa.Integer(), nullable=False),
        sa.Column("retain", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_reading", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_delivered", ["delivered_at"], unique=False)
        batch_op.create_index(
            "ix_outbox_pending",
            ["seq"],
            unique=False,
            sqlite_where=sa.text("delivered_at IS NULL"),
            postgresql_where=sa.text("delivered_at IS NULL"),
        )

    op.create_table(
        "preadvice",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("container", sa.String(length=11), nullable=False),
        sa.Column("truck", sa.String(length=64), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tag", "container", name="uq_preadvice_tag_container"),
    )
    with op.batch_alter_table("preadvice", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_preadvice_tag"), ["tag"], unique=False)

    op.create_table(
        "readings",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("lane", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("visit", sa.String(length=40), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("readings", schema=None) as batch_op:
        batch_op.create_index("ix_readings_lane_ts", ["lane", "ts"], unique=False)
        batch_op.create_index(batch_op.f("ix_readings_visit"), ["visit"], unique=False)

    op.create_table(
        "visits",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("lane", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=64), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_cause", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("visits")
    with op.batch_alter_table("readings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_readings_visit"))
        batch_op.drop_index("ix_readings_lane_ts")

    op.drop_table("readings")
    with op.batch_alter_table("preadvice", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_preadvice_tag"))

    op.drop_table("preadvice")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_pending",
            sqlite_where=sa.text("delivered_at IS NULL"),
            postgresql_where=sa.text("delivered_at IS NULL"),
        )
        batch_op.drop_index("ix_outbox_delivered")

    op.drop_table("outbox")
    op.drop_table("node_counters")
    with op.batch_alter_table("manifest", schema=None) as batch_op:
        batch_op.drop_index("ix_manifest_container")
        batch_op.drop_index("ix_manifest_bill_of_lading")

    op.drop_table("manifest")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index("ix_holds_release_source_message_id")
        batch_op.drop_index("ix_holds_container")
        batch_op.drop_index("ix_holds_bill_of_lading")

    op.drop_table("holds")
    op.drop_table("holdlist_state")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decisions_container"))

    op.drop_table("decisions")
    op.drop_table("cancelled_list_state")
    op.drop_table("cancelled_cards")
    op.drop_table("audit")
