"""The Lightweight CMP responder (RFC 9483): DER in, DER out, policy in ``authority``.

``Responder.handle`` checks the header (version, transactionID, nonces,
messageTime window), the protection (a one-time secret's MAC, or the
signature of a recorded, unrevoked device certificate), then dispatches the
body: ir/cr/p10cr to ``enrolment.enrol_key``, kur to ``enrolment.reenrol_key``,
rr to ``revocation.revoke_certificate``, certConf, pollReq and genm here.
Every refusal is a CMP ``error`` message with one PKIFailureInfo bit, and an
audit event (at most ``AUDIT_BURST`` a minute per process, so a flood of
garbage cannot flood the log). Answers to a MAC-protected request carry a MAC
with the same secret (what ``openssl cmp -secret`` checks with no other
flag); all others are signed by the CMP responder certificate.
"""

from __future__ import annotations

import datetime
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc2459
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab.authority import Authority, Principal, Role, enrolment
from keyfab.authority.access import from_certificate
from keyfab.authority.revocation import revoke_certificate
from keyfab.clock import utc_now
from keyfab.cmp import messages as m
from keyfab.cmp import protection, requests, state
from keyfab.cmp._errors import CmpError
from keyfab.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RefusedError,
)
from keyfab.pki import RevocationReason
from keyfab.registry import queries

_log = logging.getLogger(__name__)
TIME_WINDOW = datetime.timedelta(minutes=5)
CONFIRM_WINDOW = datetime.timedelta(minutes=5)
CHECK_AFTER = 2  # seconds a deferred client waits between pollReqs
AUDIT_BURST = 20
_REPLY = {"ir": "ip", "cr": "cp", "p10cr": "cp", "kur": "kup"}


@dataclass(frozen=True)
class Sender:
    """Who protected a request: a secret's reference or a device certificate."""

    name: str  # "ref:<reference>" or "cert:<serial>": the owner of its transactions
    principal: Principal
    secret: bytes | None = None  # a MAC sender's secret, to protect the answer
    mac_algorithm: Any = None
    reference: state.Secret | None = None


@dataclass(frozen=True)
class Answer:
    der: bytes
    status: int = 200  # RFC 6712 §3.3: 200 carries every PKIMessage, error ones too


@dataclass
class _Limiter:
    """At most ``burst`` audited refusals a minute; the rest are counted, not lost."""

    burst: int
    _window: float = 0.0
    _used: int = 0
    _suppressed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self) -> int | None:
        """The number suppressed since the last admitted one, or None to skip this one."""
        with self._lock:
            now = time.monotonic()
            if now - self._window >= 60:
                self._window, self._used = now, 0
            if self._used >= self.burst:
                self._suppressed += 1
                return None
            self._used += 1
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed


def root_ca_update(authority: Authority, old_root: x509.Certificate | None) -> Any | None:
    """id-it-rootCaKeyUpdate's value (RFC 9483 §4.3.2); None is "no update available".

    The newest root rollover's new root and link certificates, unless the
    device named its root (id-it-rootCaCert) and that is not the root the
    rollover replaced: a device that already holds the new root needs nothing.
    """
    update = queries.root_update(authority.registry)
    if update is None:
        return None
    if old_root is not None and _spki(old_root) != _spki(update.old_with_new):
        return None
    return m.root_ca_key_update(update.new_with_new, update.new_with_old, update.old_with_new)


def _issuer(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).issuer.public_bytes()


def _spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Responder:
    authority: Authority
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate  # the responder's, recorded and issued by the CA
    mac_key: bytes
    _limiter: _Limiter = field(default_factory=lambda: _Limiter(AUDIT_BURST))

    def handle(self, der: bytes) -> Answer:
        """Answer one request; never raises for anything a client can send."""
        try:
            request = m.decode(der)
        except CmpError as error:
            self._refused(None, "-", error)
            return Answer(self._unreadable(error), 400)
        sender: Sender | None = None
        try:
            head = request["header"]
            self._check_header(head)
            sender = self._authenticate(request)
            return Answer(self._dispatch(request, sender))
        except CmpError as error:
            self._refused(sender, request["body"].getName(), error)
            return Answer(self._error(request, sender, error))
        except (PyAsn1Error, ValueError, TypeError, KeyError, IndexError) as error:
            # a well-formed PKIMessage whose inner values pyasn1 or cryptography reject
            _log.info("CMP request refused: %s", type(error).__name__)
            failure = CmpError("badDataFormat", "a value in the message is malformed")
            self._refused(sender, request["body"].getName(), failure)
            return Answer(self._error(request, sender, failure))

    # -- header and protection ------------------------------------------------

    def _check_header(self, head: Any) -> None:
        if int(head["pvno"]) not in (2, 3):
            raise CmpError("unsupportedVersion", "pvno must be 2 or 3")
        transaction = m.optional(head, "transactionID")
        if transaction is None or not 16 <= len(transaction) <= 64:
            raise CmpError("badRequest", "transactionID must be 16..64 bytes")
        nonce = m.optional(head, "senderNonce")
        if nonce is None or not 16 <= len(nonce) <= 32:
            raise CmpError("badSenderNonce", "senderNonce must be 16..32 bytes")
        moment = m.message_time(head)
        if moment is None or abs(moment - utc_now()) > TIME_WINDOW:
            raise CmpError("badTime", "messageTime is missing or too far from keyfab's clock")

    def _authenticate(self, request: Any) -> Sender:
        head = request["header"]
        algorithm = head["protectionAlg"]
        if not algorithm.isValue or not request["protection"].isValue:
            raise CmpError("badMessageCheck", "requests must be protected")
        data = m.protected_part(head, request["body"])
        signature = request["protection"].asOctets()
        if protection.is_mac(algorithm):
            return self._mac_sender(head, algorithm, data, signature)
        return self._signer(request, algorithm, data, signature)

    def _mac_sender(self, head: Any, algorithm: Any, data: bytes, mac: bytes) -> Sender:
        kid = m.optional(head, "senderKID")
        reference = kid.decode("ascii", "replace") if kid else ""
        found = state.find_secret(self.authority, reference) if len(reference) < 64 else None
        if found is None:
            raise CmpError("signerNotTrusted", "unknown, used or expired secret reference")
        secret = state.derive(self.mac_key, reference)
        protection.check_mac(algorithm, secret, data, mac)
        principal = Principal(f"cmp:{reference}", Role.DEVICE, device_serial=found.device_serial)
        fresh = protection.fresh_mac_algorithm(algorithm)
        return Sender(f"ref:{reference}", principal, secret, fresh, found)

    def _signer(self, request: Any, algorithm: Any, data: bytes, signature: bytes) -> Sender:
        extra = request["extraCerts"]
        if not extra.isValue or len(extra) == 0:
            raise CmpError("signerNotTrusted", "put the signer's certificate first in extraCerts")
        certificate = m.x509_certificate(extra[0])
        protection.check_signature(algorithm, certificate, data, signature)
        der = certificate.public_bytes(Encoding.DER)
        try:
            principal = from_certificate(self.authority.registry, der)
        except (AuthenticationError, PermissionDeniedError) as error:
            raise CmpError("signerNotTrusted", str(error)) from None
        if principal.role is not Role.DEVICE:
            raise CmpError("notAuthorized", "only devices enrol over CMP")
        return Sender(f"cert:{principal.certificate_serial}", principal)

    # -- bodies ----------------------------------------------------------------

    def _dispatch(self, request: Any, sender: Sender) -> bytes:
        body = request["body"]
        kind = body.getName()
        handlers: dict[str, Callable[[Any, Sender], bytes]] = {
            "ir": self._enrol,
            "cr": self._enrol,
            "p10cr": self._enrol,
            "kur": self._update,
            "certConf": self._confirm,
            "pollReq": self._poll,
            "rr": self._revoke,
            "genm": self._general,
        }
        if kind not in handlers:
            raise CmpError("badRequest", f"keyfab does not answer {kind} messages")
        return handlers[kind](request, sender)

    def _key_request(self, body: Any) -> requests.KeyRequest:
        kind = body.getName()
        return requests.p10(body[kind]) if kind == "p10cr" else requests.crmf(body[kind])

    def _enrol(self, request: Any, sender: Sender) -> bytes:
        head, body = request["header"], request["body"]
        kind = body.getName()
        if kind != "ir" and sender.secret is not None:
            raise CmpError("wrongIntegrity", f"{kind} is signed with the device's certificate")
        wanted = self._key_request(body)
        serial = sender.principal.device_serial or ""
        if wanted.named_serials and wanted.named_serials != [serial]:
            raise CmpError("badCertTemplate", "the subject names another serialNumber")
        self._sweep()
        nonce, tid = secrets.token_bytes(16), m.optional(head, "transactionID") or b""
        if sender.reference is not None and not sender.reference.approved:
            return self._defer(request, sender, wanted, nonce)
        implicit = m.IMPLICIT_CONFIRM.prettyPrint() in m.general_info(head)

        def open_transaction(session: Session) -> None:
            self._spend(session, sender)
            self._begin(session, tid, nonce, sender, implicit)

        issued = self._refusing(
            lambda: enrolment.enrol_key(
                self.authority,
                sender.principal,
                serial,
                wanted.public_key,
                protocol="cmp",
                spend=open_transaction,
            )
        )
        self._issued(tid, issued)
        reply = m.cert_rep_body(_REPLY[kind], wanted.request_id, issued, self._ca_pubs(sender))
        return self._protect(request, sender, reply, nonce, implicit, issued)

    def _update(self, request: Any, sender: Sender) -> bytes:
        head = request["header"]
        if sender.secret is not None:
            raise CmpError(
                "wrongIntegrity", "kur is signed with the current operational certificate"
            )
        wanted = requests.crmf(request["body"]["kur"])
        nonce, tid = secrets.token_bytes(16), m.optional(head, "transactionID") or b""
        implicit = m.IMPLICIT_CONFIRM.prettyPrint() in m.general_info(head)
        with self.authority.transaction() as session:
            self._begin(session, tid, nonce, sender, implicit)
        issued = self._refusing(
            lambda: enrolment.reenrol_key(
                self.authority,
                sender.principal,
                wanted.public_key,
                wanted.named_serials,
                protocol="cmp",
            )
        )
        self._issued(tid, issued)
        reply = m.cert_rep_body("kup", wanted.request_id, issued)
        return self._protect(request, sender, reply, nonce, implicit, issued)

    def _defer(
        self, request: Any, sender: Sender, wanted: requests.KeyRequest, nonce: bytes
    ) -> bytes:
        """Not approved yet: remember the proven key and answer "waiting" (RFC 9483 §4.4)."""
        tid = m.optional(request["header"], "transactionID") or b""
        assert sender.reference is not None
        spki = wanted.public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        with self.authority.transaction() as session:
            state.begin(
                session,
                tid,
                nonce,
                sender.name,
                state.WAITING,
                utc_now() + datetime.timedelta(days=1),
                device_serial=sender.reference.device_serial,
                public_key=spki,
            )
        kind = _REPLY[request["body"].getName()]
        reply = m.cert_rep_body(kind, wanted.request_id, None, waiting=True)
        return self._protect(request, sender, reply, nonce)

    def _poll(self, request: Any, sender: Sender) -> bytes:
        head = request["header"]
        tid = m.optional(head, "transactionID") or b""
        nonce = secrets.token_bytes(16)
        polled = request["body"]["pollReq"]
        request_id = int(polled[0]["certReqId"]) if len(polled) else 0
        if sender.reference is None or not sender.reference.approved:
            return self._still_waiting(request, sender, request_id, nonce)

        def resume(session: Session) -> None:
            row = state.follow(session, tid, m.optional(head, "recipNonce"), sender.name)
            if row.state != state.WAITING or row.public_key is None:
                raise CmpError("badRequest", "nothing is waiting in this transaction")
            self._spend(session, sender)
            row.state, row.nonce = state.CONFIRM, nonce.hex()
            row.expires_at = utc_now() + CONFIRM_WINDOW

        with self.authority.registry.reading() as session:
            row = state.follow(session, tid, m.optional(head, "recipNonce"), sender.name)
            public_key = load_der_public_key(row.public_key or b"")
        serial = sender.principal.device_serial or ""
        issued = self._refusing(
            lambda: enrolment.enrol_key(
                self.authority,
                sender.principal,
                serial,
                public_key,  # type: ignore[arg-type]
                protocol="cmp",
                spend=resume,
            )
        )
        self._issued(tid, issued)
        reply = m.cert_rep_body("ip", request_id, issued, self._ca_pubs(sender))
        return self._protect(request, sender, reply, nonce, False, issued)

    def _still_waiting(self, request: Any, sender: Sender, request_id: int, nonce: bytes) -> bytes:
        """pollRep: not approved yet; the next pollReq must echo this answer's nonce."""
        head = request["header"]
        tid = m.optional(head, "transactionID") or b""
        with self.authority.transaction() as session:
            row = state.follow(session, tid, m.optional(head, "recipNonce"), sender.name)
            row.nonce = nonce.hex()
        reason = "waiting for an operator: keyfab cmp approve"
        return self._protect(
            request, sender, m.poll_rep_body(request_id, CHECK_AFTER, reason), nonce
        )

    def _confirm(self, request: Any, sender: Sender) -> bytes:
        head = request["header"]
        tid = m.optional(head, "transactionID") or b""
        nonce = secrets.token_bytes(16)
        statuses = request["body"]["certConf"]
        rejected = None
        with self.authority.transaction() as session:
            row = state.follow(session, tid, m.optional(head, "recipNonce"), sender.name)
            if row.state != state.CONFIRM or row.certificate_serial is None:
                raise CmpError("badRequest", "nothing to confirm in this transaction")
            if row.expires_at <= utc_now():
                raise CmpError("badTime", "too late: the certificate was not confirmed in time")
            issued = state.certificate(session, row.certificate_serial)
            for status in statuses:
                if not hmac.compare_digest(bytes(status["certHash"]), requests.cert_hash(issued)):
                    raise CmpError("badCertId", "certHash does not match the issued certificate")
                info = status["statusInfo"]
                if info.isValue and int(info["status"]) == m.REJECTION:
                    rejected = row.certificate_serial
            row.state, row.nonce = state.DONE, nonce.hex()
        if rejected is not None:  # RFC 9483 §4.1.1: a rejected certificate is revoked
            revoke_certificate(
                self.authority,
                rejected,
                RevocationReason.CESSATION_OF_OPERATION,
                by=sender.principal.name,
            )
        return self._protect(request, sender, m.pkiconf_body(), nonce)

    def _revoke(self, request: Any, sender: Sender) -> bytes:
        if sender.secret is not None:
            raise CmpError("wrongIntegrity", "rr is signed with a certificate of the device")
        wanted = requests.revocation(request["body"]["rr"])
        holder = queries.find_certificate(self.authority.registry, wanted.serial_number)
        if holder is None or _issuer(holder.certificate.der) != wanted.issuer:
            # any of keyfab's CAs, retired ones included: a rotation must not strand a fleet
            raise CmpError("badCertId", "keyfab issued no certificate with that issuer and serial")
        if holder.device is None or holder.device.serial != sender.principal.device_serial:
            raise CmpError("notAuthorized", "a device revokes only its own certificates")
        nonce = secrets.token_bytes(16)
        tid = m.optional(request["header"], "transactionID") or b""
        with self.authority.transaction() as session:
            state.begin(session, tid, nonce, sender.name, state.DONE, utc_now())
        self._refusing(
            lambda: revoke_certificate(
                self.authority, wanted.serial_number, wanted.reason, by=sender.principal.name
            )
        )
        return self._protect(request, sender, m.rp_body(), nonce)

    def _general(self, request: Any, sender: Sender) -> bytes:
        """genm (RFC 9483 §4.3): the CAs a device needs now, and the root update."""
        answers = []
        for item in request["body"]["genm"]:
            info_type = item["infoType"]
            if info_type == m.CA_CERTS:
                answers.append((info_type, m.ca_certs(self.authority.published())))
            elif info_type == m.ROOT_CA_CERT:
                old_root = m.info_certificate(item)
                update = root_ca_update(self.authority, old_root)
                answers.append((m.ROOT_CA_KEY_UPDATE, update))
            else:
                raise CmpError("badRequest", f"keyfab does not answer infoType {info_type}")
        nonce = secrets.token_bytes(16)
        tid = m.optional(request["header"], "transactionID") or b""
        with self.authority.transaction() as session:
            state.begin(session, tid, nonce, sender.name, state.DONE, utc_now())
        return self._protect(request, sender, m.genp_body(answers), nonce)

    # -- helpers -----------------------------------------------------------------

    def _spend(self, session: Session, sender: Sender) -> None:
        if sender.reference is not None:
            state.spend(session, sender.reference.reference)

    def _begin(
        self, session: Session, tid: bytes, nonce: bytes, sender: Sender, implicit: bool
    ) -> None:
        done = state.DONE if implicit else state.CONFIRM
        state.begin(session, tid, nonce, sender.name, done, utc_now() + CONFIRM_WINDOW)

    def _issued(self, tid: bytes, issued: x509.Certificate) -> None:
        """Note the certificate a transaction waits to have confirmed."""
        with self.authority.transaction() as session:
            state.note_certificate(session, tid, pki.serial_hex(issued))

    def _refusing(self, call: Callable[[], Any]) -> Any:
        """Run an authority call, its typed refusals turned into PKIFailureInfo bits."""
        try:
            return call()
        except pki.KeyNotAllowedError as error:
            raise CmpError("badCertTemplate", str(error)) from None
        except NotFoundError as error:
            raise CmpError("badCertId", str(error)) from None
        except (PermissionDeniedError, AuthenticationError) as error:
            raise CmpError("notAuthorized", str(error)) from None
        except RefusedError as error:
            raise CmpError("badRequest", str(error)) from None

    def _ca_pubs(self, sender: Sender) -> tuple[x509.Certificate, ...]:
        """The root, to a MAC-authenticated bootstrap: the trust anchor it lacks (§4.1.5)."""
        return (self.authority.chain[1],) if sender.secret is not None else ()

    def _sweep(self) -> None:
        """Revoke certificates never confirmed in time (RFC 9483 §4.1.1, bounded per call)."""
        with self.authority.transaction() as session:
            stale = state.unconfirmed(session)
            numbers = [row.certificate_serial for row in stale if row.certificate_serial]
            for row in stale:
                row.state = state.EXPIRED
        for number in numbers:
            revoke_certificate(
                self.authority,
                number,
                RevocationReason.CESSATION_OF_OPERATION,
                by="cmp:unconfirmed",
            )

    def _protect(
        self,
        request: Any,
        sender: Sender | None,
        body: Any,
        nonce: bytes,
        implicit: bool = False,
        issued: x509.Certificate | None = None,
    ) -> bytes:
        """The answer: MAC'd with a MAC sender's secret, else signed by the responder."""
        head = request["header"] if request is not None else None
        recipient = head["sender"] if head is not None else _null_dn()
        tid = (
            m.optional(head, "transactionID") if head is not None else None
        ) or secrets.token_bytes(16)
        recip_nonce = m.optional(head, "senderNonce") if head is not None else None
        if sender is not None and sender.secret is not None:
            spec = m.Header(
                m.directory_name(self.authority.certificate),
                recipient,
                tid,
                recip_nonce,
                sender.mac_algorithm,
                None,
                implicit,
            )
            return self._mac(spec, body, nonce, sender, issued)
        kid = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        spec = m.Header(
            m.directory_name(self.certificate),
            recipient,
            tid,
            recip_nonce,
            protection.signature_algorithm(),
            kid.value.digest,
            implicit,
        )
        return self._signed(spec, body, nonce)

    def _mac(
        self,
        spec: m.Header,
        body: Any,
        nonce: bytes,
        sender: Sender,
        issued: x509.Certificate | None,
    ) -> bytes:
        """MAC'd with the sender's secret; the issuing CA rides along with a new certificate."""
        assert sender.secret is not None
        value = m.header(spec, utc_now(), nonce)
        tag = protection.mac(sender.mac_algorithm, sender.secret, m.protected_part(value, body))
        return m.message(value, body, tag, [self.authority.certificate] if issued else [])

    def _signed(self, spec: m.Header, body: Any, nonce: bytes) -> bytes:
        """Signed by the responder, its certificate first in extraCerts (RFC 9483 §3.3)."""
        value = m.header(spec, utc_now(), nonce)
        signature = protection.sign(self.key, m.protected_part(value, body))
        return m.message(value, body, signature, [self.certificate, self.authority.certificate])

    def _error(self, request: Any, sender: Sender | None, error: CmpError) -> bytes:
        body = m.error_body(error.failure, str(error))
        return self._protect(request, sender, body, secrets.token_bytes(16))

    def _unreadable(self, error: CmpError) -> bytes:
        return self._protect(
            None, None, m.error_body(error.failure, str(error)), secrets.token_bytes(16)
        )

    def _refused(self, sender: Sender | None, kind: str, error: CmpError) -> None:
        suppressed = self._limiter.admit()
        if suppressed is None:
            return
        who = sender.name if sender is not None else "unauthenticated"
        details = {"body": kind, "failure": error.failure, "reason": str(error)[:200]}
        if suppressed:
            details["suppressed_before"] = str(suppressed)
        with self.authority.transaction() as session:
            audit.append(session, "cmp.refused", who, details)


def _null_dn() -> Any:
    general = rfc2459.GeneralName()
    general.getComponentByName("directoryName").getComponentByPosition(0)  # empty RDNSequence
    return general
