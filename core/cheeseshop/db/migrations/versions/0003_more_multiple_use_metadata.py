"""Store every multiple-use core metadata field a client may send.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    "supported_platforms",
    "provides_dist",
    "obsoletes_dist",
    "requires_external",
    "import_names",
    "import_namespaces",
)


def upgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.add_column(sa.Column(column, sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        for column in reversed(COLUMNS):
            batch_op.drop_column(column)
