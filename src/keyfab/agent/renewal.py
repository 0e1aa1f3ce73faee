"""The operational certificate (LDevID) over EST: first enrolment, renewal, when and
how often to retry.

The key is a fresh P-256 key per enrolment, kept in ``<state_dir>/ldevid.key``
(0600) because the TLS stack presents it for mutual TLS; the certificate and
the issuing chain go to ``DeviceApi.store_certificate``. The first enrolment
authenticates with a device token (``simpleenroll``); renewals with the
current certificate over mutual TLS (``simplereenroll``), as the server's
enrolment policy requires. Renewal is due ``renew_before`` ahead of expiry
(default: the last third of the certificate's lifetime, the same default
as a product's ``[ldevid]`` renewal window); failures back off exponentially
with jitter so a fleet does not retry in step.
"""

from __future__ import annotations

import datetime
import random
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyfab import securefile
from keyfab.agent.http import Identity, ServerApi, ServerError
from keyfab.clock import as_utc
from keyfab.device import DeviceApi

KEY_FILE = "ldevid.key"
CERTIFICATE_FILE = "certificate.pem"


def current_identity(state_dir: Path) -> Identity | None:
    """The operational certificate and key for mutual TLS, once enrolled."""
    certificate, key = state_dir / CERTIFICATE_FILE, state_dir / KEY_FILE
    if certificate.exists() and key.exists():
        return Identity(certificate=certificate, key=key)
    return None


def serial_of(certificate: x509.Certificate) -> str:
    """The device serial a keyfab certificate names (subject serialNumber)."""
    found = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if not found:
        raise ServerError("the device's certificate names no serialNumber")
    return str(found[0].value)


def due(
    certificate: x509.Certificate, renew_before: datetime.timedelta | None
) -> datetime.datetime:
    """When renewal of ``certificate`` is due."""
    start, end = as_utc(certificate.not_valid_before_utc), as_utc(certificate.not_valid_after_utc)
    window = renew_before if renew_before is not None else (end - start) / 3
    return end - window


def _csr(serial: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, serial),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
        ]
    )
    request = (
        x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


def enrol(api: ServerApi, device: DeviceApi, token: str | None) -> x509.Certificate:
    """Enrol or renew; the new operational certificate, stored with its chain."""
    current = current_identity(device.state_dir)
    if current is None and token is None:
        raise ServerError("no operational certificate yet and no [agent] est_token to enrol with")
    key = ec.generate_private_key(ec.SECP256R1())
    identity = current if current is not None else Identity(token=token)
    issued = api.enrol(_csr(api.serial, key), identity, renew=current is not None)
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    leaf = next(
        (
            c
            for c in issued
            if c.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            == ours
        ),
        None,
    )
    if leaf is None:
        raise ServerError("EST answered no certificate for the key the agent sent")
    chain = [leaf, *(c for c in api.cacerts() if c.subject != c.issuer)]
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    device.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    securefile.write_secret(device.state_dir / KEY_FILE, pem, replace=True)
    device.store_certificate([c.public_bytes(serialization.Encoding.DER) for c in chain])
    return leaf


_OPENS = re.compile(r"renewal opens (\d{4}-\d{2}-\d{2} \d{2}:\d{2})Z")
NOT_DUE = "renewal-not-due"


def window_opens(error: ServerError) -> datetime.datetime | None:
    """When the server said the product's renewal window opens (its ``[ldevid]``
    ``renewal_days``), from a ``renewal-not-due`` refusal; None for any other error."""
    if error.slug != NOT_DUE:
        return None
    found = _OPENS.search(str(error))
    if found is None:
        return None
    moment = datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M")
    return moment.replace(tzinfo=datetime.UTC)


class Backoff:
    """Delays after failures: base * 2**n, capped, times a random factor in [0.5, 1.5)."""

    def __init__(
        self, base: float = 60.0, cap: float = 6 * 3600.0, rng: random.Random | None = None
    ):
        self.base = base
        self.cap = cap
        self.failures = 0
        self._random = rng or random.SystemRandom()

    def failed(self) -> float:
        delay = min(self.base * 2**self.failures, self.cap)
        self.failures += 1
        return float(delay * (0.5 + self._random.random()))

    def succeeded(self) -> None:
        self.failures = 0
