"""Who may do what: the four roles and the identity a request proved."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from keyfab.errors import PermissionDeniedError


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything, including revocation and batches
    OPERATOR = "operator"  # factory floor: batches, devices, revocation; stations
    AUDITOR = "auditor"  # read-only: devices, certificates, batches, the audit log
    DEVICE = "device"  # EST enrolment only


READERS = (Role.ADMIN, Role.OPERATOR, Role.AUDITOR)
WRITERS = (Role.ADMIN, Role.OPERATOR)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``token_id`` is set for API tokens (one-time tokens are consumed through
    it); ``certificate_serial`` for callers proven by a client certificate.
    ``certificate_profile`` says which (an IDevID may enrol its operational
    certificate, an LDevID may renew itself).
    ``device_serial`` limits a device to its own serial number.
    ``limited_uses`` says the token's uses are counted (one-time tokens).
    """

    name: str
    role: Role
    token_id: str | None = None
    device_serial: str | None = None
    certificate_serial: str | None = None
    certificate_profile: str | None = None
    limited_uses: bool = False  # a counted (e.g. one-time) token: enrolment uses it up


def admit_for_device(principal: Principal, serial: str, action: str, own: str) -> None:
    """Devices act for themselves only; operators and admins for any device.

    ``action`` names what is refused to other roles ("attest devices"), ``own``
    what a device may do ("attest only itself"), for the one-line refusals.
    """
    if principal.role is Role.DEVICE:
        if principal.device_serial != serial:
            raise PermissionDeniedError(f"a device may {own}")
    elif principal.role not in WRITERS:
        raise PermissionDeniedError(f"role {principal.role} may not {action}")
