"""Notifications: a per-user opt-out, undeliverable addresses, the record of e-mail sent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cheeseshop.db.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        # Existing users keep getting release e-mail: opting out is their choice. The
        # default is the plain string '1' (true on both databases), not sa.true(): with an
        # expression default Alembic rebuilds the SQLite table instead of adding a column,
        # and dropping the old `users` with foreign keys on would cascade-delete every
        # user's e-mails, roles and tokens.
        batch_op.add_column(
            sa.Column("notify_release_published", sa.Boolean(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("undeliverable_since", cheeseshop.db.models.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(sa.Column("undeliverable_reason", sa.Text(), nullable=True))
    op.create_table(
        "notification_emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.String(length=100), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created", cheeseshop.db.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_emails")),
        sa.UniqueConstraint(
            "notification_id", "recipient", name=op.f("uq_notification_emails_notification_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("notification_emails")
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_column("undeliverable_reason")
        batch_op.drop_column("undeliverable_since")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("notify_release_published")
