"""The attestation service against real swtpm devices provisioned by keyfab.

Each TPM boots through a measured-boot sequence that extends its PCRs and
writes the crypto-agile event log as it goes; the device side (``collect``)
quotes with the IAK keyfab certified; the verifier is judged against
``tpm2_checkquote`` and ``tpm2_eventlog``, and every kind of tampering must
fail with its own reason.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab.attest import service
from keyfab.attest.evidence import AttestationEvidence
from keyfab.attest.service import Actions, Result
from keyfab.authority import Principal, Role, enrolment
from keyfab.errors import ConflictError, InvalidRequestError, PermissionDeniedError
from keyfab.registry import AttestationState, Certificate, queries

from .conftest import start_swtpm
from .fleet import BOOT, EV_IPL, Device, Fleet, checkquote, event_log, webhook_receiver


def _attest(fleet: Fleet, device: Device, **kwargs: object) -> Result:
    nonce = service.challenge(fleet.authority, device.serial, device.principal).nonce
    evidence = device.evidence(nonce)
    return service.verify(fleet.authority, device.serial, device.principal, evidence, **kwargs)  # type: ignore[arg-type]


def _verify(fleet: Fleet, device: Device, evidence: AttestationEvidence) -> Result:
    return service.verify(fleet.authority, device.serial, device.principal, evidence)


def _fresh(fleet: Fleet, device: Device, **kwargs: object) -> AttestationEvidence:
    nonce = service.challenge(fleet.authority, device.serial, device.principal).nonce
    return device.evidence(nonce, **kwargs)  # type: ignore[arg-type]


def _flip(data: bytes, at: int) -> bytes:
    flipped = bytearray(data)
    flipped[at] ^= 0x01
    return bytes(flipped)


def _failed(result: Result, reason: str) -> None:
    assert result.verdict == AttestationState.FAILED
    assert any(reason in r for r in result.reasons), result.reasons


def _iak(fleet: Fleet, device: Device) -> Certificate:
    record = queries.device(fleet.authority.registry, device.serial)
    return next(c for c in record.certificates if c.profile == "iak")


def test_attest_trusted_judged_by_tpm2_tools(fleet: Fleet, tmp_path: Path) -> None:
    evidence = _fresh(fleet, fleet.a)
    result = _verify(fleet, fleet.a, evidence)
    assert result.verdict == AttestationState.TRUSTED, result.reasons
    assert sorted(result.pcrs) == list(range(10))

    # tpm2_checkquote accepts the same quote: signature, nonce and PCR values
    iak = _iak(fleet, fleet.a).der
    checked = checkquote(tmp_path, iak, evidence)
    assert checked.returncode == 0, checked.stderr
    assert checkquote(tmp_path, iak, evidence, nonce=bytes(32)).returncode != 0
    pcr9 = {**evidence.pcrs, 9: bytes(32)}
    assert checkquote(tmp_path, iak, dataclasses.replace(evidence, pcrs=pcr9)).returncode != 0

    history = queries.attestation_history(fleet.authority.registry, fleet.a.serial)
    assert history.device.attestation == AttestationState.TRUSTED
    assert history.results[0].verdict == "trusted"


@pytest.mark.skipif(shutil.which("tpm2_eventlog") is None, reason="tpm2-tools not installed")
def test_attest_log_replay_matches_tpm2_eventlog(fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "log.bin"
    path.write_bytes(fleet.a.log)
    shown = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    pcrs = shown.stdout.split("\npcrs:\n", 1)[1]
    oracle = {int(m[1]): m[2] for m in re.finditer(r"^ +(\d+) +: 0x([0-9a-f]+)$", pcrs, re.M)}
    quoted = {pcr: value.hex() for pcr, value in _fresh(fleet, fleet.a).pcrs.items()}
    assert oracle == {pcr: value for pcr, value in quoted.items() if value != "00" * 32}
    assert len(oracle) == 9  # PCR 8 is never extended


def test_attest_flipped_bit_in_quote(fleet: Fleet) -> None:
    evidence = _fresh(fleet, fleet.a)
    tampered = dataclasses.replace(evidence, quote=_flip(evidence.quote, len(evidence.quote) - 1))
    _failed(_verify(fleet, fleet.a, tampered), "signature does not verify")


def test_attest_flipped_bit_in_signature(fleet: Fleet) -> None:
    evidence = _fresh(fleet, fleet.a)
    bad = dataclasses.replace(evidence, signature=_flip(evidence.signature, 10))
    _failed(_verify(fleet, fleet.a, bad), "signature does not verify")


def test_attest_flipped_bit_in_event_log(fleet: Fleet) -> None:
    evidence = _fresh(fleet, fleet.a)
    at = fleet.a.log.index(b"kernel 6.6") - 20  # inside that event's SHA-256 digest
    tampered = dataclasses.replace(evidence, eventlog=_flip(evidence.eventlog, at))
    _failed(_verify(fleet, fleet.a, tampered), "PCR 9: the event log replays to")


def test_attest_event_removed(fleet: Fleet) -> None:
    log = event_log([e for e in BOOT if e[2] != b"u-boot 2024.01"])
    evidence = dataclasses.replace(_fresh(fleet, fleet.a), eventlog=log)
    _failed(_verify(fleet, fleet.a, evidence), "PCR 4: the event log replays to")


def test_attest_events_reordered(fleet: Fleet) -> None:
    reordered = [BOOT[0], BOOT[1], BOOT[3], BOOT[2], *BOOT[4:]]
    evidence = dataclasses.replace(_fresh(fleet, fleet.a), eventlog=event_log(reordered))
    result = _verify(fleet, fleet.a, evidence)
    _failed(result, "PCR 4: the event log replays to")
    assert len(result.reasons) == 1  # only PCR 4 differs


def test_attest_log_of_another_boot(fleet: Fleet) -> None:
    other = event_log([*BOOT, (9, EV_IPL, b"initrd debug")])
    evidence = dataclasses.replace(_fresh(fleet, fleet.a), eventlog=other)
    _failed(_verify(fleet, fleet.a, evidence), "PCR 9")


def test_attest_malformed_log_is_a_reason(fleet: Fleet) -> None:
    evidence = dataclasses.replace(_fresh(fleet, fleet.a), eventlog=fleet.a.log[:-3])
    _failed(_verify(fleet, fleet.a, evidence), "event data runs past the end")


def test_attest_replayed_nonce(fleet: Fleet) -> None:
    evidence = _fresh(fleet, fleet.a)
    assert _verify(fleet, fleet.a, evidence).trusted
    with pytest.raises(ConflictError, match="already used") as refused:
        _verify(fleet, fleet.a, evidence)
    assert refused.value.slug == "nonce-used"


def test_attest_expired_nonce(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "NONCE_LIFETIME", datetime.timedelta(0))
    evidence = _fresh(fleet, fleet.a)
    with pytest.raises(InvalidRequestError, match="expired") as refused:
        _verify(fleet, fleet.a, evidence)
    assert refused.value.slug == "nonce-expired"


def test_attest_unknown_nonce(fleet: Fleet) -> None:
    evidence = fleet.a.evidence(bytes(range(32)))
    with pytest.raises(InvalidRequestError, match="unknown attestation nonce"):
        _verify(fleet, fleet.a, evidence)


def test_attest_nonce_of_another_device(fleet: Fleet) -> None:
    evidence = _fresh(fleet, fleet.a)
    with pytest.raises(PermissionDeniedError, match="another device") as refused:
        _verify(fleet, fleet.b, dataclasses.replace(evidence, quote=evidence.quote))
    assert refused.value.slug == "nonce-other-device"


def test_attest_pcr_outside_the_selection(fleet: Fleet) -> None:
    evidence = _fresh(fleet, fleet.a, pcrs=range(11))
    _failed(
        _verify(fleet, fleet.a, evidence), "the quote covers sha256 PCRs 0,1,2,3,4,5,6,7,8,9,10"
    )


def test_attest_iak_of_another_device(fleet: Fleet) -> None:
    nonce = service.challenge(fleet.authority, fleet.a.serial, fleet.a.principal).nonce
    theirs = fleet.b.evidence(nonce)  # B's TPM answers A's challenge
    _failed(_verify(fleet, fleet.a, theirs), "signature does not verify")
    b_iak = _iak(fleet, fleet.b).der
    nonce = service.challenge(fleet.authority, fleet.a.serial, fleet.a.principal).nonce
    with_cert = dataclasses.replace(fleet.b.evidence(nonce), iak_certificate=b_iak)
    _failed(_verify(fleet, fleet.a, with_cert), "not this device's recorded IAK certificate")


def test_attest_device_may_attest_only_itself(fleet: Fleet) -> None:
    with pytest.raises(PermissionDeniedError, match="only itself"):
        service.challenge(fleet.authority, fleet.a.serial, fleet.b.principal)
    with pytest.raises(PermissionDeniedError, match="may not attest"):
        service.challenge(fleet.authority, fleet.a.serial, Principal("audit", Role.AUDITOR))


def _previous_clock(fleet: Fleet, serial: str, clock: int) -> None:
    """Move the newest recorded result's clock (what a replayed old state would show)."""
    with sqlite3.connect(fleet.home / "keyfab.db") as db:
        db.execute(
            "UPDATE attestation_results SET clock = ? WHERE id = (SELECT max(r.id) FROM "
            "attestation_results r JOIN devices d ON d.id = r.device_id WHERE d.serial = ?)",
            (clock, serial),
        )


def test_attest_clock_backwards_is_flagged(fleet: Fleet) -> None:
    assert _attest(fleet, fleet.b).trusted
    _previous_clock(fleet, fleet.b.serial, 1 << 50)
    _failed(_attest(fleet, fleet.b), "TPM clock went backwards without a reset")


def test_attest_reboot_is_seen(fleet: Fleet, request: pytest.FixtureRequest) -> None:
    first = _attest(fleet, fleet.b)
    assert first.reset_count is not None
    fleet.b.tpm.stop()
    fleet.b.tpm = start_swtpm(fleet.b.tpm.state, fleet.b.tpm.ca)
    request.addfinalizer(fleet.b.tpm.stop)
    fleet.b.boot()
    after = _attest(fleet, fleet.b)
    assert after.trusted, after.reasons
    assert after.notes == (f"reboot: resetCount {first.reset_count} → {first.reset_count + 1}",)


def test_attest_failure_calls_the_webhook(fleet: Fleet) -> None:
    with webhook_receiver() as (url, received):
        evidence = _fresh(fleet, fleet.a)
        tampered = dataclasses.replace(evidence, signature=_flip(evidence.signature, 10))
        service.verify(
            fleet.authority, fleet.a.serial, fleet.a.principal, tampered,
            actions=Actions(webhook=url),
        )  # fmt: skip
        got = received.get(timeout=10)
    assert got["event"] == "attestation.failed"
    assert got["serial"] == fleet.a.serial
    assert "signature does not verify" in str(got["reasons"])


def test_attest_failure_revokes_operational_certificates(fleet: Fleet) -> None:
    operator = Principal("op", Role.OPERATOR)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    ldevid = enrolment.enrol_key(fleet.authority, operator, fleet.a.serial, key)
    evidence = _fresh(fleet, fleet.a)
    tampered = dataclasses.replace(evidence, quote=_flip(evidence.quote, 40))
    service.verify(
        fleet.authority, fleet.a.serial, fleet.a.principal, tampered,
        actions=Actions(revoke_operational=True),
    )  # fmt: skip
    record = queries.device(fleet.authority.registry, fleet.a.serial)
    status = {c.profile: c.revoked_at is not None for c in record.certificates}
    assert status == {"idevid": False, "iak": False, "ldevid": True}
    from keyfab.pki import serial_hex

    revoked = queries.certificate(fleet.authority.registry, serial_hex(ldevid))
    assert revoked.certificate.revocation_reason == "privilegeWithdrawn"
    assert record.device.attestation == AttestationState.FAILED
    # and the device can still prove itself: the next good evidence is trusted again
    deadline = time.monotonic() + 5
    while not _attest(fleet, fleet.a).trusted:
        assert time.monotonic() < deadline


def test_attest_results_are_audited(fleet: Fleet) -> None:
    with sqlite3.connect(fleet.home / "keyfab.db") as db:
        kinds = {k for (k,) in db.execute("SELECT kind FROM audit_events")}
    assert {"attestation.verified", "attestation.failed"} <= kinds
    counts = queries.attestation_counts(fleet.authority.registry, datetime.timedelta(days=1))
    assert counts["trusted"] + counts["failed"] == 2
    # every trusted device is stale for a period ending after now (no clock asserted)
    later = queries.attestation_counts(fleet.authority.registry, datetime.timedelta(seconds=-2))
    assert later["stale"] == counts["trusted"]
    assert later["trusted"] == 0
