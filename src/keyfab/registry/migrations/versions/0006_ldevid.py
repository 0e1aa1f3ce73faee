"""Operational certificates: the LDevID profile name and an index on expiry.

Certificates enrolled over EST were recorded with the profile name
``est-device``. They are IEEE 802.1AR LDevIDs whichever protocol issues them
(EST or CMP), so the registry calls them ``ldevid`` from now on; the audit
events of earlier enrolments keep the name they were written with (the log
is never rewritten).

``keyfab certificates expiring`` asks for every certificate whose notAfter
falls in a window: without an index that is a scan of every certificate of
the fleet on each call.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_CERTIFICATES = sa.table("certificates", sa.column("profile", sa.String))


def _rename(old: str, new: str) -> None:
    op.execute(_CERTIFICATES.update().where(_CERTIFICATES.c.profile == old).values(profile=new))


def upgrade() -> None:
    _rename("est-device", "ldevid")
    op.create_index("ix_certificates_not_after", "certificates", ["not_after"])


def downgrade() -> None:
    op.drop_index("ix_certificates_not_after", "certificates")
    _rename("ldevid", "est-device")
