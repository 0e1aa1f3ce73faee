"""Remote attestation: one-time nonces, results, and each device's attestation state.

The state lives on the device row (``attestation``, ``attested_at``) with one
composite index, so counting a fleet by state is an index scan and "stale"
(trusted, but attested before some cutoff) is a range in the same index:
nothing has to rewrite rows as they age. Results are kept per device in an
index on (device_id, id): the history and the previous counters are one seek.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-14
"""

import sqlalchemy as sa
from alembic import op

from keyfab.registry.models import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as table:
        table.add_column(
            sa.Column("attestation", sa.String(16), nullable=False, server_default="never")
        )
        table.add_column(sa.Column("attested_at", UTCDateTime(), nullable=True))
        table.create_index("ix_devices_attestation", ["attestation", "attested_at"])
    op.create_table(
        "attestation_nonces",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_attestation_nonces_device_id", "attestation_nonces", ["device_id"])
    op.create_table(
        "attestation_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("bank", sa.String(8), nullable=True),
        sa.Column("pcrs", sa.Text(), nullable=False),
        sa.Column("reset_count", sa.BigInteger(), nullable=True),
        sa.Column("restart_count", sa.BigInteger(), nullable=True),
        sa.Column("clock", sa.BigInteger(), nullable=True),
        sa.Column("firmware_version", sa.String(16), nullable=True),
    )
    op.create_index("ix_attestation_results_device", "attestation_results", ["device_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_attestation_results_device", "attestation_results")
    op.drop_table("attestation_results")
    op.drop_index("ix_attestation_nonces_device_id", "attestation_nonces")
    op.drop_table("attestation_nonces")
    with op.batch_alter_table("devices") as table:
        table.drop_index("ix_devices_attestation")
        table.drop_column("attested_at")
        table.drop_column("attestation")
