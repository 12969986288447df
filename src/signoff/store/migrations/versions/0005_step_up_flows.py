"""step-up sign-in flows

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

import signoff.store.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "step_up_flows",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=100), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("created_at", signoff.store.tables.UTCDateTime(), nullable=False),
        sa.Column("expires_at", signoff.store.tables.UTCDateTime(), nullable=False),
        sa.Column("used_at", signoff.store.tables.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("state_hash"),
    )
    with op.batch_alter_table("step_up_flows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_step_up_flows_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_step_up_flows_request_id"), ["request_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("step_up_flows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_step_up_flows_request_id"))
        batch_op.drop_index(batch_op.f("ix_step_up_flows_expires_at"))
    op.drop_table("step_up_flows")
