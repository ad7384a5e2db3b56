"""Confusable-name folding on projects; rendered descriptions on releases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cheeseshop.packaging.names import confusable_fold

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ultranormalized_name", sa.String(length=200), nullable=True))
    projects = sa.table(
        "projects",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("ultranormalized_name", sa.String),
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(projects.c.id, projects.c.name)).all():
        connection.execute(
            projects.update()
            .where(projects.c.id == row.id)
            .values(ultranormalized_name=confusable_fold(row.name))
        )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.alter_column("ultranormalized_name", existing_type=sa.String(length=200), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_projects_ultranormalized_name"), ["ultranormalized_name"]
        )
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("description_html", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_column("description_html")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_projects_ultranormalized_name"), type_="unique")
        batch_op.drop_column("ultranormalized_name")
