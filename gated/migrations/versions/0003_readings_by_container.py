"""Readings carry the container number they read, indexed, so a number finds all its reads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Before this revision `gated query` found readings only through a decision about the number: a
read in a visit decided for another number (or never decided) was missing. Existing OCR readings
get their number from their stored body.
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gated.store import container_read

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("readings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("container", sa.String(length=11), nullable=True))
        batch_op.create_index("ix_readings_container_ts", ["container", "ts"], unique=False)
    readings = sa.table(
        "readings",
        sa.column("id", sa.String),
        sa.column("source", sa.String),
        sa.column("body", sa.Text),
        sa.column("container", sa.String),
    )
    connection = op.get_bind()
    update = (
        sa.update(readings)
        .where(readings.c.id == sa.bindparam("reading_id"))
        .values(container=sa.bindparam("number"))
    )
    # Page by id: a database with millions of reads is never held in memory at once.
    last = ""
    while True:
        page = connection.execute(
            sa.select(readings.c.id, readings.c.body)
            .where((readings.c.source == "container_number") & (readings.c.id > last))
            .order_by(readings.c.id)
            .limit(BATCH)
        ).all()
        if not page:
            break
        last = page[-1][0]
        numbers = []
        for reading_id, body in page:
            number = container_read("container_number", json.loads(body).get("value"))
            if number is not None:
                numbers.append({"reading_id": reading_id, "number": number})
        if numbers:
            connection.execute(update, numbers)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("readings", schema=None) as batch_op:
        batch_op.drop_index("ix_readings_container_ts")
        batch_op.drop_column("container")
