"""EST enrolment policy and its registry writes, apart from HTTP and formats.

Who may get what:
* bootstrap (``simpleenroll``): an admin, operator or station may enrol any
  device serial; a device token only the serial it is bound to, or (bound to
  none) only serials keyfab does not know yet; a one-time token is used up in
  the same transaction that records the certificate;
* re-enrolment (``simplereenroll``): only a device proven by its current
  certificate over mutual TLS, and only for exactly that certificate's subject;
* never a revoked device.
Every CSR must prove possession of its key (its signature), and a CSR carrying
a challengePassword must carry this TLS session's tls-unique in it.
"""

from __future__ import annotations

import base64
import hmac
import re

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab._time import utc_now
from keyfab.errors import VerificationError
from keyfab.pki.ca import PublicKey
from keyfab.registry import Certificate, Device, DeviceState, certificate_row
from keyfab.server._service import Service
from keyfab.server.est_messages import challenge_password
from keyfab.server.problems import ProblemError
from keyfab.server.roles import Principal, Role
from keyfab.server.tokens import TokenRefusedError, consume

_INSERT_DEVICE = insert(Device).returning(Device.id)
_INSERT_CERTIFICATE = insert(Certificate)
_LOCK_DEVICE = (
    select(Device.id, Device.state).where(Device.serial == bindparam("serial")).with_for_update()
)
_SERIAL = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SUBJECT_ATTRIBUTES = frozenset(
    {
        NameOID.COMMON_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.SERIAL_NUMBER,
    }
)


def _proof_of_possession(
    csr: x509.CertificateSigningRequest, tls_unique: bytes | None
) -> PublicKey:
    """The CSR's key, once its signature (and tls-unique binding, if any) check out."""
    try:
        public_key = pki.check_csr(csr)
    except VerificationError as error:
        raise ProblemError(400, "proof-of-possession-failed", str(error)) from None
    presented = challenge_password(csr)
    if presented is None:
        return public_key
    if tls_unique is None:
        raise ProblemError(
            400,
            "tls-unique-unavailable",
            "the CSR is bound to tls-unique, which this connection (TLS 1.3 or plain HTTP) lacks",
        )
    if not hmac.compare_digest(presented, base64.b64encode(tls_unique)):
        raise ProblemError(400, "tls-unique-mismatch", "the CSR is bound to another TLS session")
    return public_key


def _device_serial(subject: x509.Name) -> str:
    """The one serialNumber the subject names, after checking the subject's shape."""
    for attribute in subject:
        if attribute.oid not in _SUBJECT_ATTRIBUTES:
            name = attribute.oid.dotted_string
            raise ProblemError(
                400, "subject-not-allowed", f"subject attribute {name} is not allowed"
            )
    serials = subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(serials) != 1 or not _SERIAL.fullmatch(str(serials[0].value)):
        raise ProblemError(
            400, "subject-not-allowed", "the subject must name one serialNumber (1-64 characters)"
        )
    return str(serials[0].value)


def enrol(
    service: Service,
    principal: Principal,
    csr: x509.CertificateSigningRequest,
    tls_unique: bytes | None,
) -> x509.Certificate:
    """Bootstrap enrolment: a first EST certificate for a device."""
    if principal.role is Role.DEVICE and principal.certificate_serial is not None:
        raise ProblemError(
            403, "forbidden", "a device with a certificate renews with simplereenroll"
        )
    public_key = _proof_of_possession(csr, tls_unique)
    serial = _device_serial(csr.subject)
    if principal.role is Role.DEVICE and principal.device_serial not in (None, serial):
        raise ProblemError(403, "forbidden", "this token may not enrol that device")
    with service.transaction() as session:
        unbound = principal.role is Role.DEVICE and principal.device_serial is None
        device_id = _device(session, serial, public_key, new_only=unbound)
        if principal.token_id is not None and principal.limited_uses:
            try:
                consume(session, principal.token_id)
            except TokenRefusedError as refused:
                raise ProblemError(401, "unauthorized", str(refused)) from None
        return _issue(service, session, (device_id, serial), csr.subject, public_key, principal)


def reenrol(
    service: Service,
    principal: Principal,
    csr: x509.CertificateSigningRequest,
    tls_unique: bytes | None,
) -> x509.Certificate:
    """Re-enrolment: a new certificate for the same subject, proven by the current one."""
    if principal.certificate_serial is None or principal.device_serial is None:
        raise ProblemError(
            401, "unauthorized", "re-enrolment needs the current device certificate (mutual TLS)"
        )
    public_key = _proof_of_possession(csr, tls_unique)
    with service.transaction() as session:
        current = session.scalars(
            select(Certificate).where(Certificate.serial_number == principal.certificate_serial)
        ).one()
        if csr.subject != x509.load_der_x509_certificate(current.der).subject:
            raise ProblemError(403, "subject-mismatch", "re-enrolment must keep the same subject")
        device = session.scalars(
            select(Device).where(Device.serial == principal.device_serial).with_for_update()
        ).one()
        if device.state == DeviceState.REVOKED:
            raise ProblemError(403, "device-revoked", f"device {device.serial} is revoked")
        target = (device.id, device.serial)
        return _issue(service, session, target, csr.subject, public_key, principal, renew=True)


def _device(session: Session, serial: str, public_key: PublicKey, *, new_only: bool) -> int:
    """The device's id (row locked), recorded on first enrolment; never a revoked one.

    ``new_only``: a device token bound to no serial (a fleet bootstrap secret)
    may bring new devices in, but not get a certificate for a device keyfab
    already knows: that would let one leaked secret impersonate any device.
    """
    found = session.connection().execute(_LOCK_DEVICE, {"serial": serial}).one_or_none()
    if found is not None:
        if found.state == DeviceState.REVOKED:
            raise ProblemError(403, "device-revoked", f"device {serial} is revoked")
        if new_only:
            raise ProblemError(
                403, "device-exists", f"device {serial} is enrolled: this token admits new ones"
            )
        return int(found.id)
    now = utc_now()
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    try:  # two first enrolments of one serial at once: the unique index stops the second
        row = {
            "serial": serial,
            "state": DeviceState.PROVISIONED,
            "rot_kind": "est",
            "public_key": spki,
            "created_at": now,
            "provisioned_at": now,
        }
        return int(session.connection().execute(_INSERT_DEVICE, row).scalar_one())
    except IntegrityError:
        raise ProblemError(
            409, "conflict", f"device {serial} is being enrolled concurrently"
        ) from None


def _issue(
    service: Service,
    session: Session,
    device: tuple[int, str],
    subject: x509.Name,
    public_key: PublicKey,
    principal: Principal,
    *,
    renew: bool = False,
) -> x509.Certificate:
    """Sign, record the certificate and its two audit events, in the caller's transaction."""
    certificate = service.authority.issue(pki.est_device(subject), public_key)
    serial_number = format(certificate.serial_number, "x")
    row = certificate_row(
        certificate,
        device_id=device[0],
        key_label=f"est:{serial_number[:16]}",
        profile="est-device",
        issued_at=utc_now(),
    )
    subject_text = row["subject"]
    session.connection().execute(_INSERT_CERTIFICATE, row)
    details = {"serial_number": serial_number, "profile": "est-device", "device": device[1]}
    kind = "est.reenrolled" if renew else "est.enrolled"
    audit.append_many(
        session,
        [
            audit.Entry("certificate.issued", subject_text, details),
            audit.Entry(kind, device[1], {**details, "by": principal.name}),
        ],
    )
    return certificate
