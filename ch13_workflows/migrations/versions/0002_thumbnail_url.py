"""users: avatar_upload and thumbnail_url, the latest upload and its thumbnail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:24:47.111171
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("avatar_upload", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("thumbnail_url", sa.String(length=200), nullable=True))


def downgrade():
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("thumbnail_url")
        batch_op.drop_column("avatar_upload")
