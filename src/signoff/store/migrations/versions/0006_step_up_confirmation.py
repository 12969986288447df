"""step-up flows keep a verified sign-in for the typed confirmation

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

import signoff.store.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("step_up_flows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirm_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("approver", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("proof", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("confirmed_at", signoff.store.tables.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_step_up_flows_confirm_hash"), ["confirm_hash"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("step_up_flows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_step_up_flows_confirm_hash"))
        batch_op.drop_column("confirmed_at")
        batch_op.drop_column("proof")
        batch_op.drop_column("approver")
        batch_op.drop_column("confirm_hash")
