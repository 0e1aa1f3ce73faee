"""CMP (RFC 9483): one-time bootstrap secret references and transactions.

Transactions live in the registry, not in a worker's memory, so two uvicorn
workers, or stations sharing one PostgreSQL, refuse the same replays.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

from keyfab.registry.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cmp_secrets",
        sa.Column("reference", sa.String(32), primary_key=True),
        sa.Column("device_serial", sa.String(64), nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        sa.Column("needs_approval", sa.Integer(), nullable=False),
        sa.Column("approved_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "cmp_transactions",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(128), nullable=False),
        sa.Column("device_serial", sa.String(64), nullable=True),
        sa.Column("certificate_serial", sa.String(40), nullable=True),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_cmp_transactions_expiry", "cmp_transactions", ["state", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_cmp_transactions_expiry", "cmp_transactions")
    op.drop_table("cmp_transactions")
    op.drop_table("cmp_secrets")
