"""Firmware releases signed at the factory and per-product attestation policies.

Reference values for remote attestation: what ``keyfab fit sign --product``
signed (with the digests U-Boot measures for each configuration) and the
policy a product's devices are verified against.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14
"""

import sqlalchemy as sa
from alembic import op

from keyfab.registry.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("rollback_index", sa.Integer(), nullable=True),
        sa.Column("key_name", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("image", sa.String(255), nullable=False),
        sa.Column("measurements", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("product", "version"),
    )
    op.create_index("ix_releases_product", "releases", ["product"])
    op.create_table(
        "attestation_policies",
        sa.Column("product", sa.String(128), primary_key=True),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("attestation_policies")
    op.drop_index("ix_releases_product", "releases")
    op.drop_table("releases")
