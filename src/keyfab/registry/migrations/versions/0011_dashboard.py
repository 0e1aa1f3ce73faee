"""The dashboard: server-side sign-in sessions, and the indexes its pages count from.

Sessions live in the registry, not in a signed cookie, so signing out (or
revoking the token a session came from) ends it on every worker at once. Only
a digest of the session secret is stored.

The indexes let every dashboard page count from an index alone at a million
devices: per batch and state with the newest provisioning time (batch
progress, rate, yield, fleet totals), by provisioning time (throughput per
day), and audit events by subject and kind (the device page, the search).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_id", sa.String(16)),
        sa.Column("certificate_serial", sa.String(42)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_devices_batch_state", "devices", ["batch_id", "state", "provisioned_at"])
    op.create_index("ix_devices_provisioned_at", "devices", ["provisioned_at"])
    op.create_index("ix_audit_events_subject", "audit_events", ["subject", "seq"])
    op.create_index("ix_audit_events_kind", "audit_events", ["kind", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_kind", "audit_events")
    op.drop_index("ix_audit_events_subject", "audit_events")
    op.drop_index("ix_devices_provisioned_at", "devices")
    op.drop_index("ix_devices_batch_state", "devices")
    op.drop_table("dashboard_sessions")
