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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from cryptography import x509
from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from keyfab import audit
from keyfab.attest._tpm2_crypto import PublicKey
from keyfab.attest._tpm2_wire import TpmAttest
from keyfab.attest.eventlog import EventLog, parse_eventlog, replay
from keyfab.attest.evidence import AttestationEvidence
from keyfab.attest.reference import Policy, parse_policy
from keyfab.attest.tpm2 import QUOTE_FORMAT, verify_quote
from keyfab.attest.verdict import ReleaseRecord, Replayed, evaluate
from keyfab.authority import Authority, Principal, revoke_operational
from keyfab.authority.roles import admit_for_device
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
LOG_CACHE = 512  # parsed event logs kept per process (see _parsed_log)
WEBHOOK_TIMEOUT = 3.0  # seconds: a slow receiver never holds a verification up
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
    admit_for_device(principal, serial, "attest devices", "attest only itself")


class _Iak(NamedTuple):
    der: bytes
    serial_number: str
    revoked_at: datetime.datetime | None


class _Counters(NamedTuple):
    """The TPM's counters in the device's newest result that had a verified quote."""

    reset_count: int | None
    restart_count: int | None
    clock: int | None


class _Target(NamedTuple):
    """The device being attested, with its product's policy (None: no policy set) and,
    when verifying, its recorded IAK certificate and its previous counters."""

    id: int
    serial: str
    policy: Policy | None
    iak: _Iak | None = None
    previous: _Counters | None = None


_DEVICES = Device.metadata.tables["devices"]
_CERTIFICATES = Certificate.metadata.tables["certificates"]
_RESULTS = AttestationResult.metadata.tables["attestation_results"]
_DEVICE = (
    select(Device.id, Device.state, AttestationPolicy.policy)
    .select_from(Device)
    .outerjoin(Batch, Batch.id == Device.batch_id)
    .outerjoin(AttestationPolicy, AttestationPolicy.product == Batch.product)
    .where(Device.serial == bindparam("serial"))
)
"""The device and its product's policy text, in one statement (a challenge's only read)."""
_OTHER_CERTIFICATES, _OTHER_RESULTS = _CERTIFICATES.alias(), _RESULTS.alias()
_NEWEST_IAK = (
    select(func.max(_OTHER_CERTIFICATES.c.id))
    .where(
        _OTHER_CERTIFICATES.c.device_id == Device.id,
        _OTHER_CERTIFICATES.c.profile == Profile.IAK,
    )
    .correlate(Device)
    .scalar_subquery()
)
_NEWEST_COUNTED = (
    select(func.max(_OTHER_RESULTS.c.id))
    .where(_OTHER_RESULTS.c.device_id == Device.id, _OTHER_RESULTS.c.clock.is_not(None))
    .correlate(Device)
    .scalar_subquery()
)
_SUBJECT = (
    _DEVICE.add_columns(
        _CERTIFICATES.c.der,
        _CERTIFICATES.c.serial_number,
        _CERTIFICATES.c.revoked_at,
        _RESULTS.c.reset_count,
        _RESULTS.c.restart_count,
        _RESULTS.c.clock,
    )
    .outerjoin(_CERTIFICATES, _CERTIFICATES.c.id == _NEWEST_IAK)
    .outerjoin(_RESULTS, _RESULTS.c.id == _NEWEST_COUNTED)
    .with_for_update(of=Device)  # the results of one device are made in order
)
"""A verification's one read: the device, its policy, its newest IAK certificate and the
counters of its newest verified quote."""


def _device(connection: Connection, serial: str, *, verifying: bool = False) -> _Target:
    found = connection.execute(_SUBJECT if verifying else _DEVICE, {"serial": serial}).first()
    if found is None:
        raise NotFoundError(f"no device with serial {serial!r}", slug="device-not-found")
    device_id, state, text, *recorded = found
    if state == DeviceState.REVOKED:
        raise PermissionDeniedError(f"device {serial} is revoked", slug="device-revoked")
    policy = None if text is None else _parsed_policy(text)
    if not verifying:
        return _Target(device_id, serial, policy)
    der, number, revoked, *counters = recorded
    iak = None if der is None else _Iak(der, number, revoked)
    previous = None if counters[-1] is None else _Counters(*counters)
    return _Target(device_id, serial, policy, iak, previous)


@functools.lru_cache(maxsize=256)
def _parsed_policy(text: str) -> Policy:
    """A stored policy was validated when it was set; parse each text once per process
    (a policy set later is a new text, so no process serves a stale one)."""
    return parse_policy(text, "stored attestation policy")


def pcr_selection(policy: Policy | None) -> Selection:
    """The PCRs the product quotes (sha256 PCRs 0-9 without a policy)."""
    if policy is None:
        return Selection()
    return _selection(policy.attestation.bank, tuple(policy.attestation.pcrs))


@functools.lru_cache(maxsize=256)
def _selection(bank: str, pcrs: tuple[int, ...]) -> Selection:
    return Selection(bank, pcrs)


_RELEASES = select(Release.product, Release.version, Release.measurements).where(
    Release.product == bindparam("product")
)


def _policy_reasons(
    connection: Connection, policy: Policy | None, log: _Log, pcrs: Mapping[int, bytes]
) -> list[str]:
    """The product policy's reasons to refuse a verified quote and its replayed log
    (reference values, the product's releases, rules over events); none without one."""
    if policy is None:
        return []
    releases: Sequence[ReleaseRecord] = []
    if policy.uses_releases:
        releases = connection.execute(_RELEASES, {"product": policy.product}).all()
    return evaluate(policy, pcrs=pcrs, log=log.events, releases=releases, replayed=log.replayed)


def _policy_actions(policy: Policy | None) -> Actions:
    """What the product policy does on failure (by default: mark the device untrusted)."""
    if policy is None:
        return Actions()
    chosen = policy.on_failure
    return Actions(
        revoke_operational="revoke-operational" in chosen.actions,
        webhook=chosen.webhook if "webhook" in chosen.actions else None,
    )


_NONCES = AttestationNonce.metadata.tables["attestation_nonces"]
_PURGE = delete(_NONCES).where(
    _NONCES.c.device_id == bindparam("device"), _NONCES.c.expires_at <= bindparam("now")
)
_ISSUE = insert(_NONCES)


def challenge(authority: Authority, serial: str, principal: Principal) -> Challenge:
    """A fresh one-time nonce for ``serial``; that device's expired nonces are purged."""
    _admit(principal, serial)
    nonce, now = secrets.token_bytes(NONCE_BYTES), utc_now()
    expires = now + NONCE_LIFETIME
    with authority.transaction() as session:
        connection = session.connection()
        device = _device(connection, serial)
        connection.execute(_PURGE, {"device": device.id, "now": now})
        row = {"digest": _digest(nonce), "device_id": device.id, "created_at": now}
        connection.execute(_ISSUE, {**row, "expires_at": expires, "used_at": None})
    return Challenge(serial, nonce, expires, pcr_selection(device.policy))


def _digest(nonce: bytes) -> str:
    return hashlib.sha256(nonce).hexdigest()


_SPEND = (
    update(_NONCES)
    .where(
        _NONCES.c.digest == bindparam("nonce"),
        _NONCES.c.device_id == bindparam("device"),
        _NONCES.c.used_at.is_(None),
        _NONCES.c.expires_at > bindparam("now"),
    )
    .values(used_at=bindparam("now"))
)
_NONCE = select(_NONCES.c.device_id, _NONCES.c.used_at).where(
    _NONCES.c.digest == bindparam("digest")
)


def _spend(connection: Connection, device: _Target, nonce: bytes) -> None:
    """Mark the nonce used in one statement, or say why not: unknown, another device's,
    used, expired (the refusal is read only when the spend changed no row)."""
    digest, now = _digest(nonce), utc_now()
    spent = connection.execute(_SPEND, {"nonce": digest, "device": device.id, "now": now})
    if spent.rowcount == 1:
        return
    row = connection.execute(_NONCE, {"digest": digest}).first()
    if row is None:
        raise InvalidRequestError("unknown attestation nonce", slug="nonce-unknown")
    if row.device_id != device.id:
        raise PermissionDeniedError(
            "the attestation nonce was issued to another device", slug="nonce-other-device"
        )
    if row.used_at is not None:
        raise ConflictError("the attestation nonce was already used", slug="nonce-used")
    raise InvalidRequestError("the attestation nonce has expired", slug="nonce-expired")


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


def _iak_key(authority: Authority, presented: bytes | None, recorded: _Iak | None) -> PublicKey:
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


@dataclass(frozen=True)
class _Log:
    """A parsed event log and its replay (read-only: shared by every verification)."""

    events: EventLog
    replayed: Replayed


@functools.lru_cache(maxsize=LOG_CACHE)
def _parsed_log(data: bytes) -> _Log:
    """Parse and replay each distinct log once: a device sends the same log at every
    interval until it reboots, and devices on one firmware mostly the same one.

    Keyed by the bytes themselves (a hit compares them all), so the result is
    exactly what parsing them again would give; a malformed log raises and is
    not kept. At most ``LOG_CACHE`` logs of at most 48 KiB each are held.
    """
    log = parse_eventlog(data)
    banks = {bank: MappingProxyType(values) for bank, values in replay(log).items()}
    return _Log(log, MappingProxyType(banks))


def _replay_reasons(log: _Log, bank: str, pcrs: Mapping[int, bytes]) -> list[str]:
    """Every quoted PCR the log does not replay to, each with both values."""
    if bank not in log.events.banks:
        return [f"the event log has no {bank} bank"]
    replayed = log.replayed[bank]
    reasons = []
    for pcr, quoted in sorted(pcrs.items()):
        value = replayed.get(pcr, bytes(len(quoted)))
        if not hmac.compare_digest(value, quoted):
            reasons.append(
                f"PCR {pcr}: the event log replays to {value.hex()[:16]}…, "
                f"the quote says {quoted.hex()[:16]}…"
            )
    return reasons


def _counter_reasons(attest: TpmAttest, previous: _Counters | None) -> tuple[list[str], list[str]]:
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


def _evaluate(
    authority: Authority, connection: Connection, device: _Target, evidence: AttestationEvidence
) -> Result:
    """Every check after the nonce, in order; the first cryptographic failure stops them."""
    now, serial = utc_now(), device.serial
    selection = pcr_selection(device.policy)
    try:
        key = _iak_key(authority, evidence.iak_certificate, device.iak)
        attest = _quote(evidence, key, selection)
        log = _parsed_log(evidence.eventlog)
    except VerificationError as error:
        return Result(serial, now, AttestationState.FAILED, (str(error),))
    reasons = _replay_reasons(log, evidence.bank, evidence.pcrs)
    if not reasons:
        reasons = _policy_reasons(connection, device.policy, log, evidence.pcrs)
    counter_reasons, notes = _counter_reasons(attest, device.previous)
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


_RECORD = insert(_RESULTS)
_STATE = (
    update(_DEVICES)
    .where(_DEVICES.c.id == bindparam("device"))
    .values(attestation=bindparam("verdict"), attested_at=bindparam("when"))
)


def _record(session: Session, device: _Target, result: Result) -> None:
    """The result row, the device's state and the audit event: Core statements on the
    verification's own transaction (no ORM objects on the hot path)."""
    connection = session.connection()
    firmware = result.firmware_version
    clock = result.clock if result.clock is None or result.clock < 1 << 63 else None
    connection.execute(
        _RECORD,
        {
            "device_id": device.id,
            "at": result.at,
            "verdict": result.verdict.value,
            "reasons": json.dumps(result.reasons),
            "notes": json.dumps(result.notes),
            "bank": result.bank,
            "pcrs": json.dumps(_hex(result.pcrs)),
            "reset_count": result.reset_count,
            "restart_count": result.restart_count,
            "clock": clock,
            "firmware_version": None if firmware is None else f"{firmware:016x}",
        },
    )
    connection.execute(
        _STATE, {"device": device.id, "verdict": result.verdict.value, "when": result.at}
    )
    kind = "attestation.verified" if result.trusted else "attestation.failed"
    details = {"reasons": list(result.reasons), "notes": list(result.notes)}
    audit.append_many(session, [audit.Entry(kind, device.serial, details)])


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
    with authority.transaction() as session:  # one transaction: nonce, result, state, event
        connection = session.connection()
        device = _device(connection, serial, verifying=True)
        _spend(connection, device, evidence.nonce)
        result = _evaluate(authority, connection, device, evidence)
        _record(session, device, result)
    todo = actions if actions is not None else _policy_actions(device.policy)
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
