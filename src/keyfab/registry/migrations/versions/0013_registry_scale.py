"""The registry at ten million devices: indexes that match the keyset listings.

A device listing walks devices by id after a cursor, optionally of one batch
and/or one state. On PostgreSQL a secondary index does not carry the primary
key, so ``WHERE batch_id = ? AND id > ? ORDER BY id LIMIT n`` on an index of
``batch_id`` alone reads and sorts the whole batch for every page. Composite
indexes ending in ``id`` make every page one range of one index, first page or
last. They replace the single-column indexes of 0001 (a prefix of each new
one), so writers maintain no more indexes than before plus one.

Lookup by serial and by unique id are the unique constraints of 0001.

(Written beside 0012, the fleet counters, and independent of its tables;
chained after it when the two met.)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_devices_batch_keyset", "devices", ["batch_id", "id"])
    op.create_index("ix_devices_state_keyset", "devices", ["state", "id"])
    op.create_index("ix_devices_batch_state_keyset", "devices", ["batch_id", "state", "id"])
    op.drop_index("ix_devices_batch_id", "devices")
    op.drop_index("ix_devices_state", "devices")


def downgrade() -> None:
    op.create_index("ix_devices_state", "devices", ["state"])
    op.create_index("ix_devices_batch_id", "devices", ["batch_id"])
    op.drop_index("ix_devices_batch_state_keyset", "devices")
    op.drop_index("ix_devices_state_keyset", "devices")
    op.drop_index("ix_devices_batch_keyset", "devices")
