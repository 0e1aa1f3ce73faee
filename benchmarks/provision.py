"""Provisioning throughput: keyfab's batch rate against raw ``cryptography``.

Two baselines done directly with ``cryptography``: the CA side of one device
(verify the CSR, build and sign an IDevID-shaped certificate, encode it as
DER) and the whole per-device work (also the device's key generation and the
CSR's signature): the true limit, which keyfab's 1-worker rate is printed
against. keyfab's figure is a whole batch: soft devices (key generation, CSR signed in
the device, write-back, lock), SQLite registry and audit log on, with 1 and 2
worker processes. Devices are soft roots of trust in memory (what keyfab
costs) and on disk (what the demo does; file creation dominates there). All
measured in this run, on this machine.

    python benchmarks/provision.py [--count N] [--rounds R]
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from keyfab.authority import initialise
from keyfab.pki._der import hardware_module_name
from keyfab.provision import create_batch, run_batch
from keyfab.rot.soft import SoftRotWarning
from keyfab.workspace import Workspace

RECIPE = """\
[product]
name = "bench"
hw_type = "1.3.6.1.4.1.99999.1.1"
serial = "B-{seq:08d}"

[rot]
driver = "soft"
path = "{home}/devices/{batch}/{slot:06d}"

[[keys]]
label = "idevid"
algorithm = "ec-p256"
"""


class RawCa:
    """A P-256 CA made with ``cryptography`` alone, and an IDevID-shaped certificate."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raw CA")])
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        self.usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
        self.not_after = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)

    def issue(self, csr: x509.CertificateSigningRequest, serial: str) -> bytes:
        """Verify the CSR, build and sign the certificate, encode it as DER."""
        assert csr.is_signature_valid
        public_key = csr.public_key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(self.not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
            .add_extension(self.aki, critical=False)
            .add_extension(self.usage, critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [hardware_module_name("1.3.6.1.4.1.99999.1.1", serial.encode())]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(Encoding.DER)


def _csr(key: ec.EllipticCurvePrivateKey, serial: str) -> x509.CertificateSigningRequest:
    subject = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def raw_ca_side(count: int) -> float:
    """Devices per second for CSR verify + certificate build/sign + DER, nothing else."""
    ca = RawCa()
    csrs = [(_csr(ec.generate_private_key(ec.SECP256R1()), f"B-{i:08d}")) for i in range(count)]
    started = time.perf_counter()
    for i, csr in enumerate(csrs):
        ca.issue(csr, f"B-{i:08d}")
    return count / (time.perf_counter() - started)


def raw_whole(count: int) -> float:
    """Devices per second for the whole per-device work in ``cryptography`` alone: the
    device key, the CSR's signature, its verification, the certificate's signature, DER.

    The true limit of provisioning on this machine: keyfab does all of this and
    records it; what it costs beyond is keyfab's.
    """
    ca = RawCa()
    started = time.perf_counter()
    for i in range(count):
        serial = f"B-{i:08d}"
        ca.issue(_csr(ec.generate_private_key(ec.SECP256R1()), serial), serial)
    return count / (time.perf_counter() - started)


IN_MEMORY = RECIPE.replace('path = "{home}/devices/{batch}/{slot:06d}"\n', "")


def keyfab_batch(
    space: Workspace, recipe_dir: Path, count: int, workers: int, recipe: str = IN_MEMORY
) -> float:
    name = f"bench-{workers}w-{time.monotonic_ns()}"
    create_batch(space, recipe, recipe_dir, name, count)
    started = time.perf_counter()
    summary = run_batch(space, name, workers)
    elapsed = time.perf_counter() - started
    assert summary.provisioned == count, summary
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore", SoftRotWarning)
    with tempfile.TemporaryDirectory() as scratch:
        space = Workspace(Path(scratch) / "home")
        initialise(space, "bench")
        keyfab_batch(space, Path(scratch), 50, 1)  # warm up imports and the database
        runs: dict[str, list[float]] = {}
        for _ in range(args.rounds):  # interleaved, best of each: fair when the machine is busy
            runs.setdefault("raw", []).append(raw_ca_side(args.count))
            runs.setdefault("whole", []).append(raw_whole(args.count))
            runs.setdefault("one", []).append(keyfab_batch(space, Path(scratch), args.count, 1))
            runs.setdefault("two", []).append(keyfab_batch(space, Path(scratch), args.count, 2))
        raw, whole, one, two = (max(runs[k]) for k in ("raw", "whole", "one", "two"))
        disk_one = keyfab_batch(space, Path(scratch), args.count, 1, RECIPE)
        disk_two = keyfab_batch(space, Path(scratch), args.count, 2, RECIPE)
    cpus = os.cpu_count()
    print(f"provisioning benchmark: {args.count} P-256 devices, best of {args.rounds}, {cpus} CPUs")
    line("raw cryptography, CA side only", raw)
    line("raw cryptography, whole device", whole, "(key, CSR sign + verify, cert sign, DER)")
    line("keyfab, 1 worker, devices in memory", one, f"{one / whole:6.0%} of whole (target >= 70%)")
    line("", one, f"{one / raw:6.0%} of CA side")
    line(
        "keyfab, 2 workers, devices in memory", two, f"{two / one:6.2f}x 1 worker (target >= 1.8x)"
    )
    line("keyfab, 1 worker, devices on disk", disk_one, f"{disk_one / whole:6.0%} of whole")
    line("keyfab, 2 workers, devices on disk", disk_two, f"{disk_two / disk_one:6.2f}x 1 worker")


def line(what: str, rate: float, ratio: str = "") -> None:
    print(f"  {what:<38} {rate:7.0f} devices/s  {ratio}")


if __name__ == "__main__":
    main()
