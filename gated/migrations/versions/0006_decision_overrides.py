"""Decisions get a revision: 0 is the daemon's own, 1, 2, ... a supervisor's overrides of it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

An override is a decision of its own (stored, published, audited), never an edit of the one it
overrides: both stay, and the highest revision of a container's slot is the last word.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), server_default="0", nullable=False))
        batch_op.drop_constraint("uq_decision_visit_slot", type_="unique")
        batch_op.create_unique_constraint("uq_decision_visit_slot_revision", ["visit", "slot", "revision"])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_constraint("uq_decision_visit_slot_revision", type_="unique")
        batch_op.create_unique_constraint("uq_decision_visit_slot", ["visit", "slot"])
        batch_op.drop_column("revision")
