"""Attestation verifications per second on one core, against raw ECDSA P-256 verification.

Each round is what a device's attestation costs the service: a challenge (a
nonce recorded) and a verification of an ECDSA P-256 IAK quote over sha256
PCRs 0-9 with a 60-event SHA-256 event log replayed, the product's policy
(allowed values for PCRs 0-3 and a rule over the events), the result, the
device's state and an audit event recorded on SQLite. The quotes are made in
software with the structure a TPM signs (TPMS_ATTEST), so the benchmark
measures keyfab and not a TPM. Prints rounds/s, the raw ``cryptography``
verify rate measured in the same run, their ratio, and the fleet size the rate
sustains at a 60 s attestation interval (Keylime's default).

By default every device boots the same firmware and so sends the same log,
which the service parses once (``attest.service.LOG_CACHE``);
``--distinct-logs`` gives each device its own log, more devices than the
cache holds, so every round parses and replays its log.

    python benchmarks/attest.py [--devices N] [--rounds R] [--distinct-logs]
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

from keyfab.attest import reference, service
from keyfab.attest.eventlog import EventLogBuilder, parse_eventlog, replay
from keyfab.attest.evidence import AttestationEvidence
from keyfab.authority import Authority, Principal, Role, initialise, record
from keyfab.clock import utc_now
from keyfab.pki import profiles
from keyfab.registry import Batch, Device
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


def boot_log(device: str = "") -> bytes:
    """60 events over PCRs 0-9; the last names ``device`` (a log of its own when given)."""
    builder = EventLogBuilder()
    for i in range(60):
        builder.extend(i % 10, 0xD, f"component {i} {device if i == 59 else ''}".encode())
    return builder.to_bytes()


def quoted(log: bytes) -> tuple[dict[int, bytes], bytes]:
    """The PCRs 0-9 the log replays to, and their digest (what the quote signs)."""
    pcrs = {i: bytes(32) for i in range(10)} | replay(parse_eventlog(log))["sha256"]
    return pcrs, hashlib.sha256(b"".join(pcrs[i] for i in range(10))).digest()


POLICY = """\
[attestation]
product = "bench"
pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
{pinned}
[[rule]]
kind = "no-event-type"
types = ["EV_EFI_ACTION"]
data = "Debug"
"""


def set_policy(authority: Authority, log: bytes, folder: Path) -> None:
    """PCRs 0-3 pinned to the values ``log`` gives, and the no-debug rule."""
    pcrs, _ = quoted(log)
    pinned = "".join(f'[pcr.{i}]\nallowed = ["{pcrs[i].hex()}"]\n' for i in range(4))
    path = folder / "policy.toml"
    path.write_text(POLICY.format(pinned=pinned))
    reference.set_policy(authority, path, "bench")


def provision(authority: Authority, count: int) -> list[tuple[str, ec.EllipticCurvePrivateKey]]:
    """``count`` devices, each with an IAK certificate signed and recorded by the CA."""
    devices = []
    with authority.transaction() as session:
        batch = Batch(
            name="bench", product="bench", recipe="", recipe_dir="", count=count,
            state="finished", created_at=utc_now(),
        )  # fmt: skip
        session.add(batch)
        session.flush()
        for n in range(count):
            serial = f"BENCH-{n:06d}"
            row = Device(
                serial=serial, state="provisioned", created_at=utc_now(), batch_id=batch.id
            )
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
    parser.add_argument(
        "--distinct-logs", action="store_true", help="a log per device: no parsed-log cache hits"
    )
    args = parser.parse_args()
    if args.distinct_logs and args.devices <= service.LOG_CACHE:
        parser.error(f"--distinct-logs needs more than {service.LOG_CACHE} --devices")
    warnings.simplefilter("ignore", SoftRotWarning)
    with tempfile.TemporaryDirectory() as tmp:
        space = Workspace(Path(tmp) / "home")
        initialise(space, "Acme")
        with Authority.open(space) as authority:
            devices = provision(authority, args.devices)
            logs = {s: boot_log(s if args.distinct_logs else "") for s, _ in devices}
            quotes = {s: quoted(log) for s, log in logs.items()}
            set_policy(authority, logs[devices[0][0]], Path(tmp))
            operator = Principal("bench", Role.OPERATOR)
            elapsed, trusted = 0.0, 0
            for n in range(args.rounds):
                serial, key = devices[n % len(devices)]
                log, (pcrs, digest) = logs[serial], quotes[serial]
                start = time.perf_counter()
                nonce = service.challenge(authority, serial, operator).nonce
                signing = time.perf_counter()
                attest, signature = quote(key, nonce, digest, clock=1000 + n)
                evidence = AttestationEvidence(nonce, attest, signature, "sha256", pcrs, log)
                verifying = time.perf_counter()  # the device's signing is not the service's time
                trusted += service.verify(authority, serial, operator, evidence).trusted
                elapsed += (signing - start) + (time.perf_counter() - verifying)
    assert trusted == args.rounds, f"only {trusted} of {args.rounds} verified"
    logs_kind = "a log per device" if args.distinct_logs else "one firmware's log"
    rate = args.rounds / elapsed
    raw = raw_verify_rate(2.0)
    print(f"attestation rounds (challenge + verify + record, {logs_kind}): {rate:,.0f}/s")
    print(f"raw cryptography ECDSA P-256 verify:              {raw:,.0f}/s")
    print(f"ratio: {rate / raw:.3f}")
    fleet = rate * INTERVAL
    verdict = "meets" if fleet >= TARGET else "misses"
    print(f"fleet at a {INTERVAL:.0f} s interval: {fleet:,.0f} devices")
    print(f"({verdict} the {TARGET:,}-device target)")


if __name__ == "__main__":
    main()
