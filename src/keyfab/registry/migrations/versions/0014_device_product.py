"""A device's product on its own row: product pages as one index range.

The product is the batch's, so a listing of one product used to walk devices
by id and skip every other product's devices: a page cost the distance to the
next device of that product (tens of milliseconds at ten million devices).
With the product copied onto the device when its batch creates it, and an
index (product, id), a product page is one range of one index, first page or
last, like the batch and state pages of 0013. Devices without a batch
(imported manifests, EST enrolments of unknown devices) have none.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("product", sa.String(128), nullable=True))
    op.execute(
        "UPDATE devices SET product ="
        " (SELECT b.product FROM batches b WHERE b.id = devices.batch_id)"
        " WHERE batch_id IS NOT NULL"
    )
    op.create_index("ix_devices_product_keyset", "devices", ["product", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ANALYZE devices")  # the back-fill rewrote every row: plan on fresh statistics


def downgrade() -> None:
    op.drop_index("ix_devices_product_keyset", "devices")
    op.drop_column("devices", "product")
