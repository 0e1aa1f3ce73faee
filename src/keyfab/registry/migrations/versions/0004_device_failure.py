"""Why a device failed, on its row.

The reason used to live only in the ``device.failed`` audit event. Listing
failed devices with their reasons would then join the devices against the
audit log (ten million rows at factory scale, keyed by sequence number and
not by device), for every page of a listing. A nullable column on the
device is read with the device, costs nothing for the devices that did not
fail, and is cleared when a resumed device succeeds. The audit event stays:
it is the permanent record, the column is the current state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as table:
        table.add_column(sa.Column("failure", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as table:
        table.drop_column("failure")
