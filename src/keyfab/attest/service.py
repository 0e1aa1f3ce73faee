"""Remote attestation as a recorded service: challenge, verify, record, act.

``challenge`` hands a device a one-time nonce (bound to it, expiring, stored as
a hash). ``verify`` checks the device's answer in a fixed order, each check
with its own reason: the nonce (refused outright: unknown, another device's,
used, expired), then, recorded as a failed result, the IAK certificate (chains
to the workspace's CAs and is this device's recorded one), the quote (IAK
signature, extraData == nonce, PCR digest over the reported values), the PCR
selection (the product's), the event log's replay against every quoted PCR,
the policy, and the TPM's counters against the previous result (a reboot is
noted; a clock or counter going backwards is a reason).

Each verification is one result row, the device's state and one audit event,
in one transaction that also spends the nonce. Actions on failure run after
it commits: revoking the operational certificates through the authority, and
a webhook posted from a background thread with a short timeout.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import json
import logging
import secrets
import threading
import urllib.request
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyfab import audit
from keyfab.attest._tpm2_crypto import PublicKey
from keyfab.attest._tpm2_wire import TpmAttest
from keyfab.attest.eventlog import EventLog, parse_eventlog, replay
from keyfab.attest.evidence import AttestationEvidence
from keyfab.attest.reference import Policy, parse_policy
from keyfab.attest.tpm2 import QUOTE_FORMAT, verify_quote
from keyfab.attest.verdict import evaluate
from keyfab.authority import Authority, Principal, Role, revoke_operational
from keyfab.clock import utc_now
from keyfab.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    VerificationError,
)
from keyfab.pki import Profile, RevocationReason
from keyfab.pki.verify import verify_device_chain
from keyfab.registry import (
    AttestationNonce,
    AttestationPolicy,
    AttestationResult,
    AttestationState,
    Batch,
    Certificate,
    Device,
    DeviceState,
    Release,
)
from keyfab.rot import Evidence

NONCE_BYTES = 32
NONCE_LIFETIME = datetime.timedelta(minutes=5)
WEBHOOK_TIMEOUT = 3.0  # seconds: a slow receiver never holds a verification up
_ATTESTERS = frozenset({Role.DEVICE, Role.ADMIN, Role.OPERATOR})
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """Which PCRs of which bank a product's quotes must cover."""

    bank: str = "sha256"
    pcrs: tuple[int, ...] = tuple(range(10))

    def __str__(self) -> str:
        return f"{self.bank} PCRs {','.join(map(str, self.pcrs))}"


@dataclass(frozen=True)
class Challenge:
    serial: str
    nonce: bytes
    expires: datetime.datetime
    selection: Selection


@dataclass(frozen=True)
class Actions:
    """What to do when a device fails; its state always becomes ``failed`` (untrusted)."""

    revoke_operational: bool = False
    webhook: str | None = None


@dataclass(frozen=True)
class Result:
    """One verification as recorded."""

    serial: str
    at: datetime.datetime
    verdict: AttestationState
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()
    bank: str | None = None
    pcrs: Mapping[int, bytes] = field(default_factory=dict)
    reset_count: int | None = None
    restart_count: int | None = None
    clock: int | None = None
    firmware_version: int | None = None

    @property
    def trusted(self) -> bool:
        return self.verdict == AttestationState.TRUSTED

    @classmethod
    def from_row(cls, serial: str, row: AttestationResult) -> Result:
        """A recorded result (``registry.queries.attestation_history``) as a Result."""
        pcrs = {int(i): bytes.fromhex(v) for i, v in json.loads(row.pcrs).items()}
        firmware = None if row.firmware_version is None else int(row.firmware_version, 16)
        return cls(
            serial,
            row.at,
            AttestationState(row.verdict),
            tuple(json.loads(row.reasons)),
            tuple(json.loads(row.notes)),
            row.bank,
            pcrs,
            row.reset_count,
            row.restart_count,
            row.clock,
            firmware,
        )

    def to_json(self) -> dict[str, object]:
        """What the API answers and ``--json`` prints."""
        return {
            "serial": self.serial,
            "at": self.at.isoformat(),
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "pcrs": {} if self.bank is None else {self.bank: _hex(self.pcrs)},
            "reset_count": self.reset_count,
            "restart_count": self.restart_count,
            "clock": self.clock,
            "firmware_version": self.firmware_version,
        }


def _hex(pcrs: Mapping[int, bytes]) -> dict[str, str]:
    return {str(i): v.hex() for i, v in sorted(pcrs.items())}


def _admit(principal: Principal, serial: str) -> None:
    """Devices attest themselves only; operators and admins may act for any device."""
    if principal.role not in _ATTESTERS:
        raise PermissionDeniedError(f"role {principal.role} may not attest devices")
    if principal.role == Role.DEVICE and principal.device_serial != serial:
        raise PermissionDeniedError("a device may attest only itself")


def _device(session: Session, serial: str, *, lock: bool = False) -> Device:
    query = select(Device).where(Device.serial == serial)
    device = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if device is None:
        raise NotFoundError(f"no device with serial {serial!r}", slug="device-not-found")
    if device.state == DeviceState.REVOKED:
        raise PermissionDeniedError(f"device {serial} is revoked", slug="device-revoked")
    return device


@functools.lru_cache(maxsize=256)
def _parsed_policy(text: str) -> Policy:
    """A stored policy was validated when it was set; parse each text once per process."""
    return parse_policy(text, "stored attestation policy")


def _product_policy(session: Session, device: Device) -> Policy | None:
    """The attestation policy of the product of the device's batch, if one is set."""
    if device.batch_id is None:
        return None
    text = session.scalar(
        select(AttestationPolicy.policy)
        .join(Batch, Batch.product == AttestationPolicy.product)
        .where(Batch.id == device.batch_id)
    )
    return None if text is None else _parsed_policy(text)


def pcr_selection(session: Session, device: Device) -> Selection:
    """The PCRs the device's product quotes (sha256 PCRs 0-9 without a policy)."""
    policy = _product_policy(session, device)
    if policy is None:
        return Selection()
    return Selection(policy.attestation.bank, tuple(policy.attestation.pcrs))


def _policy_reasons(
    session: Session, device: Device, log: EventLog, pcrs: Mapping[int, bytes]
) -> list[str]:
    """The product policy's reasons to refuse a verified quote and its replayed log
    (reference values, the product's releases, rules over events); none without one."""
    policy = _product_policy(session, device)
    if policy is None:
        return []
    releases = session.scalars(select(Release).where(Release.product == policy.product)).all()
    return evaluate(policy, pcrs=pcrs, log=log, releases=releases)


def _policy_actions(session: Session, device: Device) -> Actions:
    """What the device's product policy does on failure (by default: mark it untrusted)."""
    policy = _product_policy(session, device)
    if policy is None:
        return Actions()
    chosen = policy.on_failure
    return Actions(
        revoke_operational="revoke-operational" in chosen.actions,
        webhook=chosen.webhook if "webhook" in chosen.actions else None,
    )


def challenge(authority: Authority, serial: str, principal: Principal) -> Challenge:
    """A fresh one-time nonce for ``serial``; that device's expired nonces are purged."""
    _admit(principal, serial)
    nonce, now = secrets.token_bytes(NONCE_BYTES), utc_now()
    with authority.transaction() as session:
        device = _device(session, serial)
        session.execute(
            delete(AttestationNonce).where(
                AttestationNonce.device_id == device.id, AttestationNonce.expires_at <= now
            )
        )
        expires = now + NONCE_LIFETIME
        session.add(
            AttestationNonce(
                digest=_digest(nonce), device_id=device.id, created_at=now, expires_at=expires
            )
        )
        return Challenge(serial, nonce, expires, pcr_selection(session, device))


def _digest(nonce: bytes) -> str:
    return hashlib.sha256(nonce).hexdigest()


def _spend(session: Session, device: Device, nonce: bytes) -> None:
    """Mark the nonce used, or refuse it: unknown, another device's, used, expired."""
    row = session.get(AttestationNonce, _digest(nonce), with_for_update=True)
    if row is None:
        raise InvalidRequestError("unknown attestation nonce", slug="nonce-unknown")
    if row.device_id != device.id:
        raise PermissionDeniedError(
            "the attestation nonce was issued to another device", slug="nonce-other-device"
        )
    if row.used_at is not None:
        raise ConflictError("the attestation nonce was already used", slug="nonce-used")
    now = utc_now()
    if row.expires_at <= now:
        raise InvalidRequestError("the attestation nonce has expired", slug="nonce-expired")
    row.used_at = now


@dataclass(frozen=True)
class _Trust:
    """The workspace's CAs as a device's IAK certificate must chain to them."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]


_TRUST: weakref.WeakKeyDictionary[Authority, _Trust] = weakref.WeakKeyDictionary()


def _trust(authority: Authority) -> _Trust:
    """Read once per Authority (a rotation is seen by the next process, as EST cacerts)."""
    found = _TRUST.get(authority)
    if found is None:
        published = authority.published()
        roots = tuple(c for c in published if c.subject == c.issuer)
        others = tuple(c for c in published if c.subject != c.issuer)
        found = _TRUST[authority] = _Trust(roots, others)
    return found


@functools.lru_cache(maxsize=1 << 16)
def _chained_key(der: bytes, trust: _Trust, day: datetime.date) -> PublicKey:
    """The IAK certificate's key once its chain verified (cached for the day)."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise VerificationError("IAK certificate is not DER") from None
    verify_device_chain(certificate, trust.intermediates, trust.roots)
    key = certificate.public_key()
    if not isinstance(key, PublicKey):
        raise VerificationError("IAK certificate holds neither an EC nor an RSA key")
    return key


def _iak_key(
    authority: Authority, presented: bytes | None, recorded: Certificate | None
) -> PublicKey:
    """The device's IAK: the certificate chains to keyfab's CAs and is the one recorded."""
    if recorded is None:
        raise VerificationError("the device has no IAK certificate recorded")
    der = presented if presented is not None else recorded.der
    try:
        key = _chained_key(der, _trust(authority), utc_now().date())
    except VerificationError as error:
        raise VerificationError(f"IAK certificate refused: {error}") from None
    if not hmac.compare_digest(der, recorded.der):
        raise VerificationError("IAK certificate is not this device's recorded IAK certificate")
    if recorded.revoked_at is not None:
        raise VerificationError(f"IAK certificate {recorded.serial_number} is revoked")
    return key


def _recorded_iak(session: Session, device: Device) -> Certificate | None:
    return session.scalars(
        select(Certificate)
        .where(Certificate.device_id == device.id, Certificate.profile == Profile.IAK)
        .order_by(Certificate.id.desc())
        .limit(1)
    ).first()


def _quote(evidence: AttestationEvidence, key: PublicKey, selection: Selection) -> TpmAttest:
    """The quote's signature, nonce, selection and PCR digest; its TPMS_ATTEST."""
    values = b"".join(v for _, v in sorted(evidence.pcrs.items()))
    quoted = verify_quote(
        Evidence(
            QUOTE_FORMAT,
            {"attest": evidence.quote, "signature": evidence.signature, "pcr_values": values},
        ),
        evidence.nonce,
        key,
    )
    if quoted.bank != selection.bank or quoted.pcrs != selection.pcrs:
        raise VerificationError(
            f"the quote covers {Selection(quoted.bank, quoted.pcrs)}; "
            f"the product's selection is {selection}"
        )
    if tuple(sorted(evidence.pcrs)) != quoted.pcrs:
        raise VerificationError("the reported PCR values are not those of the quoted PCRs")
    return quoted.attest


def _replay_reasons(log: EventLog, bank: str, pcrs: Mapping[int, bytes]) -> list[str]:
    """Every quoted PCR the log does not replay to, each with both values."""
    if bank not in log.banks:
        return [f"the event log has no {bank} bank"]
    replayed = replay(log)[bank]
    reasons = []
    for pcr, quoted in sorted(pcrs.items()):
        value = replayed.get(pcr, bytes(len(quoted)))
        if not hmac.compare_digest(value, quoted):
            reasons.append(
                f"PCR {pcr}: the event log replays to {value.hex()[:16]}…, "
                f"the quote says {quoted.hex()[:16]}…"
            )
    return reasons


def _counter_reasons(
    attest: TpmAttest, previous: AttestationResult | None
) -> tuple[list[str], list[str]]:
    """(reasons, notes) from the TPM's counters against the previous verified quote."""
    if previous is None or previous.reset_count is None:
        return [], []
    reasons, notes = [], []
    old_reset, old_restart, old_clock = (
        previous.reset_count,
        previous.restart_count or 0,
        previous.clock or 0,
    )
    if attest.reset_count < old_reset:
        reasons.append(f"TPM resetCount went backwards ({old_reset} → {attest.reset_count})")
    elif attest.reset_count > old_reset:
        notes.append(f"reboot: resetCount {old_reset} → {attest.reset_count}")
    elif attest.restart_count < old_restart:
        reasons.append(f"TPM restartCount went backwards ({old_restart} → {attest.restart_count})")
    elif attest.clock < old_clock:
        reasons.append(
            f"TPM clock went backwards without a reset ({old_clock} → {attest.clock} ms)"
        )
    if attest.reset_count == old_reset and attest.restart_count > old_restart:
        notes.append(f"restart: restartCount {old_restart} → {attest.restart_count}")
    return reasons, notes


def _previous(session: Session, device: Device) -> AttestationResult | None:
    return session.scalars(
        select(AttestationResult)
        .where(AttestationResult.device_id == device.id, AttestationResult.clock.is_not(None))
        .order_by(AttestationResult.id.desc())
        .limit(1)
    ).first()


def _evaluate(
    authority: Authority, session: Session, device: Device, evidence: AttestationEvidence
) -> Result:
    """Every check after the nonce, in order; the first cryptographic failure stops them."""
    now, serial = utc_now(), device.serial
    selection = pcr_selection(session, device)
    try:
        key = _iak_key(authority, evidence.iak_certificate, _recorded_iak(session, device))
        attest = _quote(evidence, key, selection)
        log = parse_eventlog(evidence.eventlog)
    except VerificationError as error:
        return Result(serial, now, AttestationState.FAILED, (str(error),))
    reasons = _replay_reasons(log, evidence.bank, evidence.pcrs)
    if not reasons:
        reasons = _policy_reasons(session, device, log, evidence.pcrs)
    counter_reasons, notes = _counter_reasons(attest, _previous(session, device))
    reasons += counter_reasons
    verdict = AttestationState.FAILED if reasons else AttestationState.TRUSTED
    return Result(
        serial,
        now,
        verdict,
        tuple(reasons),
        tuple(notes),
        evidence.bank,
        evidence.pcrs,
        attest.reset_count,
        attest.restart_count,
        attest.clock,
        attest.firmware_version,
    )


def _record(session: Session, device: Device, result: Result) -> None:
    session.add(
        AttestationResult(
            device_id=device.id,
            at=result.at,
            verdict=result.verdict,
            reasons=json.dumps(result.reasons),
            notes=json.dumps(result.notes),
            bank=result.bank,
            pcrs=json.dumps(_hex(result.pcrs)),
            reset_count=result.reset_count,
            restart_count=result.restart_count,
            clock=result.clock if result.clock is None or result.clock < 1 << 63 else None,
            firmware_version=None
            if result.firmware_version is None
            else f"{result.firmware_version:016x}",
        )
    )
    device.attestation, device.attested_at = result.verdict, result.at
    kind = "attestation.verified" if result.trusted else "attestation.failed"
    audit.append(
        session, kind, device.serial, {"reasons": list(result.reasons), "notes": list(result.notes)}
    )


def verify(
    authority: Authority,
    serial: str,
    principal: Principal,
    evidence: AttestationEvidence,
    *,
    actions: Actions | None = None,
) -> Result:
    """Verify ``serial``'s evidence, record the result, and act on a failure.

    A refused nonce raises (nothing is recorded: the evidence answers no
    challenge of this device); any later failure is a recorded ``failed``
    result. ``actions`` overrides the product policy's (tests, the CLI).
    """
    _admit(principal, serial)
    with authority.transaction() as session:
        device = _device(session, serial, lock=True)  # results of one device in order
        _spend(session, device, evidence.nonce)
        result = _evaluate(authority, session, device, evidence)
        _record(session, device, result)
        todo = actions if actions is not None else _policy_actions(session, device)
    if not result.trusted:
        _act(authority, result, todo, principal)
    return result


def _act(authority: Authority, result: Result, actions: Actions, principal: Principal) -> None:
    """Failure actions, after the result is committed (a failing action loses no record)."""
    if actions.revoke_operational:
        revoke_operational(
            authority,
            result.serial,
            RevocationReason.PRIVILEGE_WITHDRAWN,
            by=f"attestation ({principal.name})",
        )
    if actions.webhook is not None:
        post_webhook(actions.webhook, _webhook_body(result))


def _webhook_body(result: Result) -> bytes:
    return json.dumps(
        {
            "event": "attestation.failed",
            "serial": result.serial,
            "at": result.at.isoformat(),
            "verdict": result.verdict.value,
            "reasons": list(result.reasons),
        }
    ).encode()


def post_webhook(url: str, body: bytes) -> threading.Thread:
    """POST ``body`` (JSON) to ``url`` from a daemon thread; failures are logged, not raised."""
    if not url.startswith(("http://", "https://")):
        raise InvalidRequestError(f"webhook URL must be http(s): {url[:64]!r}")
    thread = threading.Thread(target=_send, args=(url, body), name="attest-webhook", daemon=True)
    thread.start()
    return thread


def _send(url: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT):  # noqa: S310 - http(s)
            pass
    except (OSError, ValueError) as error:
        _log.warning("attestation webhook %s failed: %s", url, error)
