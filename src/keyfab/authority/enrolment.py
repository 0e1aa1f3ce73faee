"""EST enrolment policy and its registry writes, apart from HTTP and formats.

Who may get what:
* bootstrap (``simpleenroll``): an admin, operator or station may enrol any
  device serial; a device token only the serial it is bound to, or (bound to
  none) only serials keyfab does not know yet; a one-time token is used up in
  the same transaction that records the certificate; a device proven by its
  IDevID over mutual TLS (RFC 7030 section 3.3.2, IEEE 802.1AR) only itself;
* re-enrolment (``simplereenroll``): only a device proven by its current
  operational certificate over mutual TLS, only for exactly that
  certificate's subject, and only inside its renewal window;
* never a revoked device.
What is issued is an operational certificate (``pki.ldevid``) with the
lifetime of the device's product (``authority.lifecycle``), for a key the
device made for it: never its IDevID's or IAK's key, and on renewal a new key
unless the product allows reuse. The old certificate stays good until it
expires or is revoked, so a device that loses the answer can still retry.
Every CSR must prove possession of its key (its signature), and a CSR carrying
a challengePassword must carry this TLS session's tls-unique in it.

What a CSR decides, and what it does not (docs/est.md):
* honoured: its public key; its one subject serialNumber (the device serial,
  checked against the token's device binding); its challengePassword (the
  tls-unique binding above);
* ignored: every other subject attribute (O, OU, CN, ...) and every other
  attribute or requested extension. The certificate's subject is policy's:
  O is the manufacturing CA's organisation, CN and serialNumber the serial,
  as for IDevIDs. Ignoring rather than refusing keeps clients that always
  send an O working, the way step-ca's templates replace the subject;
* re-enrolment keeps the current certificate's subject; its CSR may only
  name the same serialNumber (or none).
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import AttributeOID, NameOID
from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab.authority import lifecycle
from keyfab.authority.group import Outcome, Unit
from keyfab.authority.roles import Principal, Role
from keyfab.authority.service import Authority, labelled
from keyfab.authority.tokens import (
    TokenRefusedError,
    authenticate,
    authenticate_many,
    consume,
)
from keyfab.clock import utc_now
from keyfab.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    KeyfabError,
    PermissionDeniedError,
    VerificationError,
)
from keyfab.pki.ca import PublicKey
from keyfab.registry import Certificate, Device, DeviceState

_INSERT_DEVICE = insert(Device).returning(Device.id)
_INSERT_NEW = {
    "postgresql": postgresql.insert(Device)
    .on_conflict_do_nothing(index_elements=[Device.serial])
    .returning(Device.id, Device.serial),
    "sqlite": sqlite.insert(Device)
    .on_conflict_do_nothing(index_elements=[Device.serial])
    .returning(Device.id, Device.serial),
}
"""First enrolments insert and learn in one statement whether the serial was free."""
_LOCK_DEVICE = (
    select(Device.id, Device.state).where(Device.serial == bindparam("serial")).with_for_update()
)
_SERIAL = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def challenge_password(csr: x509.CertificateSigningRequest) -> bytes | None:
    """The challengePassword attribute's value (RFC 7030 puts tls-unique there)."""
    try:
        return csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return None


def _proof_of_possession(
    csr: x509.CertificateSigningRequest, tls_unique: bytes | None
) -> PublicKey:
    """The CSR's key, once its signature (and tls-unique binding, if any) check out."""
    try:
        public_key = pki.check_csr(csr)
    except VerificationError as error:
        raise InvalidRequestError(str(error), slug="proof-of-possession-failed") from None
    presented = challenge_password(csr)
    if presented is None:
        return public_key
    if tls_unique is None:
        raise InvalidRequestError(
            "the CSR is bound to tls-unique, which this connection (TLS 1.3 or plain HTTP) lacks",
            slug="tls-unique-unavailable",
        )
    if not hmac.compare_digest(presented, base64.b64encode(tls_unique)):
        raise InvalidRequestError(
            "the CSR is bound to another TLS session", slug="tls-unique-mismatch"
        )
    return public_key


def _device_serial(subject: x509.Name) -> str:
    """The one serialNumber the subject names: the only subject field policy reads."""
    serials = subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(serials) != 1 or not _SERIAL.fullmatch(str(serials[0].value)):
        raise InvalidRequestError(
            "the subject must name one serialNumber (1-64 characters)", slug="subject-not-allowed"
        )
    return str(serials[0].value)


def device_subject(authority: Authority, serial: str) -> x509.Name:
    """The subject policy gives an enrolled device, whatever its CSR asked for.

    The IDevID's shape (``pki.profiles.idevid``): O from the manufacturing CA,
    CN and serialNumber the serial, so a device cannot name its own organisation.
    """
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, serial),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
    ]
    if authority.organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, authority.organization))
    return x509.Name(attributes)


def _revoked(serial: str) -> PermissionDeniedError:
    return PermissionDeniedError(f"device {serial} is revoked", slug="device-revoked")


def enrol(
    authority: Authority,
    principal: Principal,
    csr: x509.CertificateSigningRequest,
    tls_unique: bytes | None,
) -> x509.Certificate:
    """Bootstrap enrolment: a first operational certificate for a device (EST)."""
    public_key = _proof_of_possession(csr, tls_unique)
    return enrol_key(authority, principal, _device_serial(csr.subject), public_key)


ENROLLERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.DEVICE})
"""The roles whose tokens may bootstrap-enrol a device (EST ``simpleenroll``, CMP)."""


def enrol_with_token(
    authority: Authority,
    presented: str,
    csr: x509.CertificateSigningRequest,
    tls_unique: bytes | None,
    *,
    user: str | None = None,
) -> tuple[x509.Certificate, Principal]:
    """Bootstrap enrolment with an API token checked in the enrolment's own transaction.

    The token is read where it is used up and the certificate recorded, so a
    token revoked or spent meanwhile cannot slip between a check and the
    issue, and the request costs no lookup of its own. ``user`` is HTTP
    Basic's user name, which must name the token. Returns the certificate and
    who asked (for the access log).
    """
    return authority.group.submit(_TokenEnrolment(authority, presented, user, csr, tls_unique))


async def enrol_with_token_async(
    authority: Authority,
    presented: str,
    csr: x509.CertificateSigningRequest,
    tls_unique: bytes | None,
    *,
    user: str | None = None,
) -> tuple[x509.Certificate, Principal]:
    """``enrol_with_token`` for the service's event loop: the request waits without a
    thread of its own (``GroupCommit.submit_async``)."""
    work = _TokenEnrolment(authority, presented, user, csr, tls_unique)
    return await authority.group.submit_async(work)


@dataclass(frozen=True)
class _TokenEnrolment:
    """One token enrolment as group work: alone (``__call__``) or with others (``run_many``)."""

    authority: Authority
    presented: str
    user: str | None
    csr: x509.CertificateSigningRequest
    tls_unique: bytes | None

    def __call__(self, session: Session) -> Unit[tuple[x509.Certificate, Principal]]:
        principal = authenticate(session.connection(), self.presented)
        public_key, serial = self._checked(principal)
        unit = _enrol_unit(self.authority, session, principal, serial, public_key, "est", None)
        return Unit(unit.issued, unit.events, (unit.answer, principal))

    def _checked(self, principal: Principal) -> tuple[PublicKey, str]:
        """Everything decided without the database: Basic's user, the role, the CSR."""
        user = self.user
        if user is not None and not hmac.compare_digest(user.encode(), principal.name.encode()):
            raise TokenRefusedError("unknown token")
        if principal.role not in ENROLLERS:
            raise PermissionDeniedError(f"role {principal.role} may not enrol devices")
        public_key = _proof_of_possession(self.csr, self.tls_unique)  # after the token
        serial = _device_serial(self.csr.subject)
        _may_enrol(principal, serial)
        return public_key, serial

    def _issue_new(
        self, session: Session, device_id: int, serial: str, key: PublicKey, principal: Principal
    ) -> Unit[tuple[x509.Certificate, Principal]]:
        subject = device_subject(self.authority, serial)
        target = (device_id, serial)
        unit = _issue(self.authority, session, target, subject, key, principal, "est", new=True)
        return Unit(unit.issued, unit.events, (unit.answer, principal))

    @classmethod
    def run_many(cls, session: Session, items: Sequence[_TokenEnrolment]) -> list[Outcome]:
        """First enrolments of new devices with unlimited tokens, three statements for all:
        one token SELECT, one device INSERT, (the group's) one certificate INSERT.

        A refusal is answered before anything is written; a counted token, a
        serial named twice or a device keyfab knows goes alone (None).
        """
        principals = authenticate_many(session.connection(), [i.presented for i in items])
        outcomes: list[Outcome] = [None] * len(items)
        fresh: dict[str, tuple[int, Principal, PublicKey]] = {}
        for index, (item, principal) in enumerate(zip(items, principals, strict=True)):
            try:
                if isinstance(principal, TokenRefusedError):
                    raise principal
                public_key, serial = item._checked(principal)
            except KeyfabError as refused:
                outcomes[index] = refused
                continue
            if not principal.limited_uses and serial not in fresh:
                fresh[serial] = (index, principal, public_key)
        created = _insert_many(session.connection(), {s: f[2] for s, f in fresh.items()})
        for serial, (index, principal, public_key) in fresh.items():
            if serial in created:
                authority = items[index].authority
                target, subject = (created[serial], serial), device_subject(authority, serial)
                unit = _issue(
                    authority, session, target, subject, public_key, principal, "est", new=True
                )
                outcomes[index] = Unit(unit.issued, unit.events, (unit.answer, principal))
        return outcomes


def enrol_key(
    authority: Authority,
    principal: Principal,
    serial: str,
    public_key: PublicKey,
    *,
    protocol: str = "est",
    spend: Callable[[Session], None] | None = None,
) -> x509.Certificate:
    """Issue a device certificate for a proven key: the core of every enrolment protocol.

    EST's CSR path and CMP's CRMF path prove possession of the key their own
    way, then both come here, so who may enrol which serial is decided once.
    ``spend`` uses up the caller's one-time credential (a CMP secret) in the
    transaction that records the certificate, as a one-time token is. That
    transaction is shared with concurrent enrolments (``authority.group``).
    """
    _may_enrol(principal, serial)

    def work(session: Session) -> Unit[x509.Certificate]:
        return _enrol_unit(authority, session, principal, serial, public_key, protocol, spend)

    return authority.group.submit(work)


def _may_enrol(principal: Principal, serial: str) -> None:
    """Refuse what the principal may not bootstrap-enrol, before any database work."""
    if principal.role is Role.DEVICE and principal.certificate_profile == pki.Profile.LDEVID:
        raise PermissionDeniedError(
            "a device with an operational certificate renews it (EST simplereenroll, CMP kur)"
        )
    if principal.role is Role.DEVICE and principal.device_serial not in (None, serial):
        raise PermissionDeniedError("this token may not enrol that device")


def _enrol_unit(
    authority: Authority,
    session: Session,
    principal: Principal,
    serial: str,
    public_key: PublicKey,
    protocol: str,
    spend: Callable[[Session], None] | None,
) -> Unit[x509.Certificate]:
    """One enrolment's writes and signature, in the (group's) transaction."""
    unbound = principal.role is Role.DEVICE and principal.device_serial is None
    device_id, new = _device(session, serial, public_key, new_only=unbound)
    if principal.token_id is not None and principal.limited_uses:
        consume(session, principal.token_id)
    if spend is not None:
        spend(session)
    target = (device_id, serial)
    subject = device_subject(authority, serial)
    return _issue(authority, session, target, subject, public_key, principal, protocol, new=new)


def reenrol(
    authority: Authority,
    principal: Principal,
    csr: x509.CertificateSigningRequest,
    tls_unique: bytes | None,
) -> x509.Certificate:
    """Re-enrolment: a new certificate with the current one's subject, proven by it.

    RFC 7030 wants the CSR's subject to match; keyfab reads only its
    serialNumber (the one field it honours) and refuses another device's.
    """
    if principal.certificate_serial is None or principal.device_serial is None:
        raise AuthenticationError("re-enrolment needs the current device certificate (mutual TLS)")
    public_key = _proof_of_possession(csr, tls_unique)
    return reenrol_key(authority, principal, public_key, _named_serials(csr.subject))


def reenrol_key(
    authority: Authority,
    principal: Principal,
    public_key: PublicKey,
    named_serials: Sequence[str],
    *,
    protocol: str = "est",
) -> x509.Certificate:
    """Renew the certificate ``principal`` proved, for a proven key (EST and CMP ``kur``).

    ``named_serials``: the serialNumbers the request's subject names (none, or
    exactly the device's own).
    """
    if principal.certificate_serial is None or principal.device_serial is None:
        raise AuthenticationError("re-enrolment needs the current device certificate")
    if principal.certificate_profile != pki.Profile.LDEVID:
        raise PermissionDeniedError(
            "re-enrolment renews an operational certificate: "
            "a device with only its IDevID enrols (EST simpleenroll, CMP cr)",
            slug="not-renewable",
        )
    _same_device(named_serials, principal.device_serial)

    def work(session: Session) -> Unit[x509.Certificate]:
        current = session.scalars(
            select(Certificate).where(Certificate.serial_number == principal.certificate_serial)
        ).one()
        subject = x509.load_der_x509_certificate(current.der).subject
        device = session.scalars(
            select(Device).where(Device.serial == principal.device_serial).with_for_update()
        ).one()
        if device.state == DeviceState.REVOKED:
            raise _revoked(device.serial)
        target = (device.id, device.serial)
        return _issue(
            authority, session, target, subject, public_key, principal, protocol, renewing=current
        )

    return authority.group.submit(work)


def _named_serials(subject: x509.Name) -> list[str]:
    return [str(a.value) for a in subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]


def _same_device(named: Sequence[str], serial: str) -> None:
    """Refuse a re-enrolment request naming another device's serialNumber."""
    if named and list(named) != [serial]:
        raise PermissionDeniedError(
            "re-enrolment must keep the same subject serialNumber", slug="subject-mismatch"
        )


def _device(
    session: Session, serial: str, public_key: PublicKey, *, new_only: bool
) -> tuple[int, bool]:
    """The device's id (row locked) and whether it is new; recorded on first enrolment;
    never a revoked one.

    ``new_only``: a device token bound to no serial (a fleet bootstrap secret)
    may bring new devices in, but not get a certificate for a device keyfab
    already knows: that would let one leaked secret impersonate any device.
    A new device is inserted first (one statement, and its new row is locked);
    only a serial already taken costs the locking read.
    """
    connection = session.connection()
    created = _insert_new(connection, serial, public_key)
    if created is not None:
        return created, True
    found = connection.execute(_LOCK_DEVICE, {"serial": serial}).one_or_none()
    if found is None:  # taken by a transaction that then rolled back, or unsupported SQL
        return _insert_plain(connection, serial, public_key), True
    if found.state == DeviceState.REVOKED:
        raise _revoked(serial)
    if new_only:
        raise PermissionDeniedError(
            f"device {serial} is enrolled: this token admits new ones", slug="device-exists"
        )
    return int(found.id), False


def _new_row(serial: str, public_key: PublicKey) -> dict[str, object]:
    now = utc_now()
    return {
        "serial": serial,
        "state": DeviceState.PROVISIONED,
        "rot_kind": "est",
        "public_key": public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        "created_at": now,
        "provisioned_at": now,
    }


def _insert_new(connection: Connection, serial: str, public_key: PublicKey) -> int | None:
    """Insert the device unless its serial is taken (None then, and nothing written)."""
    return _insert_many(connection, {serial: public_key}).get(serial)


def _insert_many(connection: Connection, keys: Mapping[str, PublicKey]) -> dict[str, int]:
    """Insert a device per serial not taken yet, in one statement; their ids by serial.

    Nothing is written for a taken serial, and nothing at all (an empty answer)
    on a database without ``ON CONFLICT DO NOTHING``.
    """
    statement = _INSERT_NEW.get(connection.dialect.name)
    if statement is None or not keys:
        return {}
    rows = [_new_row(serial, key) for serial, key in keys.items()]
    return {serial: int(key) for key, serial in connection.execute(statement, rows)}


def _insert_plain(connection: Connection, serial: str, public_key: PublicKey) -> int:
    try:  # two first enrolments of one serial at once: the unique index stops the second
        return int(connection.execute(_INSERT_DEVICE, _new_row(serial, public_key)).scalar_one())
    except IntegrityError:
        raise ConflictError(f"device {serial} is being enrolled concurrently") from None


def _issue(
    authority: Authority,
    session: Session,
    device: tuple[int, str],
    subject: x509.Name,
    public_key: PublicKey,
    principal: Principal,
    protocol: str,
    *,
    renewing: Certificate | None = None,
    new: bool = False,
) -> Unit[x509.Certificate]:
    """Check the key and the product's policy and sign, in the caller's transaction;
    the certificate and its two audit events are recorded by the group.

    A device just recorded (``new``) has no batch and no certificates: its
    policy is the default and it has no birth key, so neither is read.
    """
    policy = lifecycle.DEFAULT_POLICY if new else lifecycle.policy_of(session, device[0])
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if not new:
        _not_a_birth_key(session, device, spki)
    if renewing is not None:
        policy.check_renewal_due(renewing, utc_now())
        if not policy.reuse_key and _spki(renewing.der) == spki:
            raise InvalidRequestError(
                "renewal needs a new key: the product's [ldevid] policy does not reuse keys",
                slug="key-reused",
            )
    number, label = labelled(protocol)
    details = {"device": device[1]}
    issued = authority.sign(
        pki.ldevid(subject, policy.validity),
        public_key,
        key_label=label,
        device_id=device[0],
        details=details,
        serial_number=number,
    )
    kind = f"{protocol}.reenrolled" if renewing is not None else f"{protocol}.enrolled"
    enrolled = {"serial_number": issued.serial_number, "profile": str(issued.profile), **details}
    if renewing is not None:
        enrolled["renews"] = renewing.serial_number
    entry = audit.Entry(kind, device[1], {**enrolled, "by": principal.name})
    return Unit([issued], [entry], issued.certificate)


_BIRTH_PROFILES = (pki.Profile.IDEVID, pki.Profile.IAK)


def _spki(der: bytes) -> bytes:
    return (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )


def _not_a_birth_key(session: Session, device: tuple[int, str], spki: bytes) -> None:
    """Refuse the device's IDevID or IAK key: the birth identity must stay unlinkable
    from (and outlive) every operational one (IEEE 802.1AR section 6.2)."""
    births = session.scalars(
        select(Certificate.der).where(
            Certificate.device_id == device[0], Certificate.profile.in_(_BIRTH_PROFILES)
        )
    )
    if any(hmac.compare_digest(_spki(der), spki) for der in births):
        raise InvalidRequestError(
            f"the requested key is device {device[1]}'s IDevID key: "
            "an operational certificate needs a key of its own",
            slug="birth-key",
        )
