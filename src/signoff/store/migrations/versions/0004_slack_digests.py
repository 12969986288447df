"""digest messages: several requests in one Slack message

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

import signoff.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slack_digests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=40), nullable=True),
        sa.Column("ts", sa.String(length=40), nullable=True),
        sa.Column("created_at", signoff.store.tables.UTCDateTime(), nullable=False),
        sa.Column("posted_at", signoff.store.tables.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("slack_digests", schema=None) as batch_op:
        batch_op.create_index("ix_slack_digests_unposted", ["target", "ts"], unique=False)
    with op.batch_alter_table("slack_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("digest_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True))
        batch_op.create_index(batch_op.f("ix_slack_messages_digest_id"), ["digest_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("slack_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_messages_digest_id"))
        batch_op.drop_column("digest_id")
    with op.batch_alter_table("slack_digests", schema=None) as batch_op:
        batch_op.drop_index("ix_slack_digests_unposted")
    op.drop_table("slack_digests")
