"""Workspace settings shared by every station: the public URLs and validities.

The URLs keyfab writes into certificates (OCSP, caIssuers, CRL distribution
point) and the CRL and OCSP validity must be the same for every station and
server using one registry, or certificates of one batch would point at
different places; a file in one station's home could not guarantee that.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(1024), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("settings")
