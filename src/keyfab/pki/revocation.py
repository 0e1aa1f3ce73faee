"""Revocation reasons (RFC 5280 section 5.3.1) and the entries of a CRL.

keyfab revocations are permanent: ``certificateHold`` (which can be undone)
and ``removeFromCRL`` (delta CRLs only) are refused, so a certificate once on
a CRL stays on every later one.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass

from cryptography import x509

from keyfab.errors import ConfigError


class RevocationReason(enum.StrEnum):
    """Why a certificate was revoked; the value is RFC 5280's name for it."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    CA_COMPROMISE = "cACompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"
    AA_COMPROMISE = "aACompromise"

    @property
    def code(self) -> int:
        """The CRLReason ENUMERATED value written into a CRL entry."""
        return _CODES[self]

    @property
    def flag(self) -> x509.ReasonFlags:
        return _FLAGS[self]

    @classmethod
    def parse(cls, text: str) -> RevocationReason:
        """The reason named by ``text`` (RFC 5280 name, any case), or one clear error."""
        found = _BY_LOWER.get(text.strip().lower())
        if found is not None:
            return found
        if text.strip().lower() in ("certificatehold", "removefromcrl"):
            raise ConfigError(f"revocation reason {text!r} is not supported: revocation is final")
        choices = ", ".join(reason.value for reason in cls)
        raise ConfigError(f"unknown revocation reason {text!r}: use one of {choices}")

    @classmethod
    def from_record(cls, stored: str | None) -> RevocationReason:
        """The reason as the registry recorded it; older free-text reasons read as unspecified."""
        return _BY_LOWER.get((stored or "").lower(), cls.UNSPECIFIED)


_CODES = dict(zip(RevocationReason, (0, 1, 2, 3, 4, 5, 9, 10), strict=True))
_FLAGS = dict(
    zip(
        RevocationReason,
        (
            x509.ReasonFlags.unspecified,
            x509.ReasonFlags.key_compromise,
            x509.ReasonFlags.ca_compromise,
            x509.ReasonFlags.affiliation_changed,
            x509.ReasonFlags.superseded,
            x509.ReasonFlags.cessation_of_operation,
            x509.ReasonFlags.privilege_withdrawn,
            x509.ReasonFlags.aa_compromise,
        ),
        strict=True,
    )
)
_BY_LOWER = {reason.value.lower(): reason for reason in RevocationReason}


@dataclass(frozen=True)
class RevokedCertificate:
    """One CRL entry: which certificate, since when, and why."""

    serial_number: int
    revoked_at: datetime.datetime
    reason: RevocationReason = RevocationReason.UNSPECIFIED

    def entry(self) -> x509.RevokedCertificate:
        """The CRL entry; RFC 5280 wants no reasonCode rather than 'unspecified'."""
        builder = (
            x509.RevokedCertificateBuilder()
            .serial_number(self.serial_number)
            .revocation_date(self.revoked_at)
        )
        if self.reason is not RevocationReason.UNSPECIFIED:
            builder = builder.add_extension(x509.CRLReason(self.reason.flag), critical=False)
        return builder.build()
