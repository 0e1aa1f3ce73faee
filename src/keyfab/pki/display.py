"""Distinguished names as people read them (and as ``openssl x509 -subject`` prints).

``x509.Name.rfc4514_string()`` writes attributes it has no short name for as
dotted OIDs (``2.5.4.5=AGW-1`` for a serial number) and in reverse order.
Operators compare subjects with what openssl shows, so keyfab shows names in
certificate order, ``, `` between attributes, and the usual short names.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

_SHORT_NAMES: dict[ObjectIdentifier, str] = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.TITLE: "title",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}
"""Names beyond those cryptography already shortens (CN, O, OU, C, ST, L, DC, UID)."""


def readable_name(name: x509.Name) -> str:
    """``O=Acme, OU=gateway, CN=AGW-1, serialNumber=AGW-1``: escaped as RFC 4514 values."""
    return ", ".join(
        "+".join(attribute.rfc4514_string(_SHORT_NAMES) for attribute in rdn) for rdn in name.rdns
    )


def readable_subject(der: bytes) -> str:
    """The readable subject of a DER certificate: for rows stored before names were."""
    return readable_name(x509.load_der_x509_certificate(der).subject)
