"""A history of CAs: kinds, retirement, and who issued each certificate and CRL.

Before this revision a workspace had exactly the CAs "root" and
"manufacturing". Rotation adds CAs instead of replacing them, because the
fleet an old CA signed must stay checkable: its CRL keeps being signed by it
and lists only what it issued. So each CA gets its kind and when it stopped
issuing, each certificate the CA that signed it, and each CRL its signer.
Existing rows are backfilled as what they were: everything recorded so far
was signed by "manufacturing", except the vendors' certificates of imported
manifests, which no CA of the workspace signed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-16
"""

import sqlalchemy as sa
from alembic import op

from keyfab.registry.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorities") as table:
        table.add_column(sa.Column("kind", sa.String(16), nullable=True))
        table.add_column(sa.Column("retired_at", UTCDateTime(), nullable=True))
    op.execute(
        "UPDATE authorities SET kind = CASE name WHEN 'root' THEN 'root' ELSE 'manufacturing' END"
    )
    with op.batch_alter_table("authorities") as table:
        table.alter_column("kind", existing_type=sa.String(16), nullable=False)

    with op.batch_alter_table("certificates") as table:
        table.add_column(sa.Column("issuer", sa.String(64), nullable=True))
    op.execute("UPDATE certificates SET issuer = 'manufacturing' WHERE profile <> 'vendor'")

    with op.batch_alter_table("crls") as table:
        table.add_column(sa.Column("ca", sa.String(64), nullable=True))
    op.execute("UPDATE crls SET ca = 'manufacturing'")
    with op.batch_alter_table("crls") as table:
        table.alter_column("ca", existing_type=sa.String(64), nullable=False)
        table.create_index("ix_crls_ca", ["ca"])


def downgrade() -> None:
    with op.batch_alter_table("crls") as table:
        table.drop_index("ix_crls_ca")
        table.drop_column("ca")
    with op.batch_alter_table("certificates") as table:
        table.drop_column("issuer")
    with op.batch_alter_table("authorities") as table:
        table.drop_column("retired_at")
        table.drop_column("kind")
