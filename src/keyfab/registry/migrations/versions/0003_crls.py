"""Signed CRLs with their CRLNumbers, and an index for the revoked certificates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from keyfab.registry.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crls",
        sa.Column("number", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("this_update", UTCDateTime(), nullable=False),
        sa.Column("next_update", UTCDateTime(), nullable=False),
        sa.Column("revoked", sa.Integer(), nullable=False),
        sa.Column("newest_revocation", UTCDateTime(), nullable=True),
        sa.Column("der", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_certificates_revoked_at", "certificates", ["revoked_at"])


def downgrade() -> None:
    op.drop_index("ix_certificates_revoked_at", "certificates")
    op.drop_table("crls")
