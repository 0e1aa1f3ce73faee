"""Attestation verifications per second on one core, against raw ECDSA P-256 verification.

Each round is what a device's attestation costs the service: a challenge (a
nonce recorded) and a verification of an ECDSA P-256 IAK quote over sha256
PCRs 0-9 with a 60-event SHA-256 event log replayed, the policy step, the
result, the device's state and an audit event recorded on SQLite. The quotes
are made in software with the structure a TPM signs (TPMS_ATTEST), so the
benchmark measures keyfab and not a TPM. Prints rounds/s, the raw
``cryptography`` verify rate measured in the same run, their ratio, and the
fleet size the rate sustains at a 60 s attestation interval (Keylime's default).

    python benchmarks/attest.py [--devices N] [--rounds R]
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import tempfile
import time
import warnings
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from keyfab.attest import service
from keyfab.attest.eventlog import EventLogBuilder, parse_eventlog, replay
from keyfab.attest.evidence import AttestationEvidence
from keyfab.authority import Authority, Principal, Role, initialise, record
from keyfab.clock import utc_now
from keyfab.pki import profiles
from keyfab.registry import Device
from keyfab.rot.soft import SoftRotWarning
from keyfab.workspace import Workspace

INTERVAL = 60.0
TARGET = 50_000


def _sized(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def quote(
    key: ec.EllipticCurvePrivateKey, nonce: bytes, digest: bytes, clock: int
) -> tuple[bytes, bytes]:
    """A TPMS_ATTEST (TPM2_Quote of sha256 PCRs 0-9) and its TPMT_SIGNATURE, made in software."""
    attest = (
        struct.pack(">IH", 0xFF544347, 0x8018) + _sized(b"\x00\x0b" + bytes(32)) + _sized(nonce)
    )
    attest += struct.pack(">QIIBQ", clock, 1, 0, 1, 0x2023_0001)
    attest += struct.pack(">IHB", 1, 0x000B, 3) + bytes([0xFF, 0x03, 0x00]) + _sized(digest)
    r, s = utils.decode_dss_signature(key.sign(attest, ec.ECDSA(hashes.SHA256())))
    return attest, struct.pack(">HH", 0x0018, 0x000B) + _sized(r.to_bytes(32, "big")) + _sized(
        s.to_bytes(32, "big")
    )


def boot_log() -> bytes:
    builder = EventLogBuilder()
    for i in range(60):
        builder.extend(i % 10, 0xD, f"component {i}".encode())
    return builder.to_bytes()


def provision(authority: Authority, count: int) -> list[tuple[str, ec.EllipticCurvePrivateKey]]:
    """``count`` devices, each with an IAK certificate signed and recorded by the CA."""
    devices = []
    with authority.transaction() as session:
        for n in range(count):
            serial = f"BENCH-{n:06d}"
            row = Device(serial=serial, state="provisioned", created_at=utc_now())
            session.add(row)
            session.flush()
            key = ec.generate_private_key(ec.SECP256R1())
            template = profiles.iak(profiles.DeviceIdentity(serial, "1.3.6.1.4.1.99999.1", "Acme"))
            record(
                session,
                [authority.sign(template, key.public_key(), key_label="iak", device_id=row.id)],
            )
            devices.append((serial, key))
    return devices


def raw_verify_rate(seconds: float) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    message = bytes(200)
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    public, n, start = key.public_key(), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    warnings.simplefilter("ignore", SoftRotWarning)
    log = boot_log()
    pcrs = {i: bytes(32) for i in range(10)} | replay(parse_eventlog(log))["sha256"]
    digest = hashlib.sha256(b"".join(pcrs[i] for i in range(10))).digest()
    with tempfile.TemporaryDirectory() as tmp:
        space = Workspace(Path(tmp) / "home")
        initialise(space, "Acme")
        with Authority.open(space) as authority:
            devices = provision(authority, args.devices)
            operator = Principal("bench", Role.OPERATOR)
            elapsed, trusted = 0.0, 0
            for n in range(args.rounds):
                serial, key = devices[n % len(devices)]
                start = time.perf_counter()
                nonce = service.challenge(authority, serial, operator).nonce
                signing = time.perf_counter()
                attest, signature = quote(key, nonce, digest, clock=1000 + n)
                evidence = AttestationEvidence(nonce, attest, signature, "sha256", pcrs, log)
                verifying = time.perf_counter()  # the device's signing is not the service's time
                trusted += service.verify(authority, serial, operator, evidence).trusted
                elapsed += (signing - start) + (time.perf_counter() - verifying)
    assert trusted == args.rounds, f"only {trusted} of {args.rounds} verified"
    rate = args.rounds / elapsed
    raw = raw_verify_rate(2.0)
    print(f"attestation rounds (challenge + verify + record): {rate:,.0f}/s on one core")
    print(f"raw cryptography ECDSA P-256 verify:              {raw:,.0f}/s")
    print(f"ratio: {rate / raw:.3f}")
    fleet = rate * INTERVAL
    verdict = "meets" if fleet >= TARGET else "misses"
    print(f"fleet at a {INTERVAL:.0f} s interval: {fleet:,.0f} devices")
    print(f"({verdict} the {TARGET:,}-device target)")


if __name__ == "__main__":
    main()
