"""The audit trail becomes a hash chain: each record carries its position and the hash of the one
before it, and the chain's head has its own row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Records written before this revision are chained in the order they were written (time, then id),
so `gated audit verify` covers them from now on (an edit made before the upgrade is not seen).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gated.audit import GENESIS, canonical, link_hash

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_audit_seq", ["seq"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    from gated.db import UTCDateTime

    audit = sa.table(
        "audit",
        sa.column("id", sa.String),
        sa.column("ts", UTCDateTime()),
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("subject", sa.String),
        sa.column("detail", sa.Text),
        sa.column("seq", sa.BigInteger),
        sa.column("prev_hash", sa.String),
        sa.column("hash", sa.String),
    )
    connection = op.get_bind()
    link = (
        sa.update(audit)
        .where(audit.c.id == sa.bindparam("record_id"))
        .values(seq=sa.bindparam("position"), prev_hash=sa.bindparam("before"), hash=sa.bindparam("digest"))
    )
    seq, prev = 0, GENESIS
    while True:
        # Only records not chained yet, oldest first: each page chains on from the last.
        page = connection.execute(
            sa.select(audit.c.id, audit.c.ts, audit.c.actor, audit.c.action, audit.c.subject, audit.c.detail)
            .where(audit.c.seq.is_(None))
            .order_by(audit.c.ts, audit.c.id)
            .limit(BATCH)
        ).all()
        if not page:
            break
        links = []
        for row in page:
            seq += 1
            digest = link_hash(
                prev, seq, canonical(row.id, row.ts, row.actor, row.action, row.subject, row.detail)
            )
            links.append({"record_id": row.id, "position": seq, "before": prev, "digest": digest})
            prev = digest
        connection.execute(link, links)
    op.bulk_insert(head, [{"id": 1, "seq": seq, "hash": prev}])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("audit_head")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_constraint("uq_audit_seq", type_="unique")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
