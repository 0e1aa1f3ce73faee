"""Manifest import at registry scale: entries/s and peak RSS, against the cryptographic floor.

Writes an M-entry signed manifest with keyfab's own exporter (every entry has
its own device certificate), imports it into a fresh registry in a child
process (``keyfab.manifest.import_manifest``, as ``keyfab manifest import``
runs it) and prints entries/s and peak RSS (VmHWM). The floor, measured in the
same run on the same certificates, is what every entry must cost whatever the
code around it: the entry's ES256 signature and its device chain verified by
``cryptography`` (two ECDSA verifications and the path building).

    python benchmarks/registry_manifest.py [M]     (SQLite, as benchmarks/manifest.py)
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.manifest import T0, _measure, _pki, _write
from keyfab import pki

TARGET_SECONDS_PER_MILLION = 60.0
FLOOR_ROUNDS = 500


def floor(folder: Path) -> float:
    """Seconds per entry of the unavoidable crypto: one ES256 verify, one chain verify."""
    (folder / "floor").mkdir()
    _, ca = _pki(folder / "floor")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.issue(
        pki.idevid(pki.DeviceIdentity("F1", "1.3.6.1.4.1.99999.1.1")), key.public_key(), now=T0
    )
    root = x509.load_pem_x509_certificate((folder / "floor" / "root.pem").read_bytes())
    verifier = pki.device_verifier([root], at=T0 + datetime.timedelta(days=2), max_depth=4)
    payload = b"x" * 600
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))  # an ES256 signature, P-256
    public = key.public_key()
    start = time.perf_counter()
    for _ in range(FLOOR_ROUNDS):
        public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        verifier.verify(leaf, [ca.certificate])
    return (time.perf_counter() - start) / FLOOR_ROUNDS


def measure(entries: int, folder: Path) -> None:
    print(f"manifest import of {entries:,} entries (child process)", flush=True)
    work = folder / "manifest"
    work.mkdir()
    signer, ca = _pki(work)
    start = time.perf_counter()
    _write(work / "m.json", entries, signer, ca)
    size = (work / "m.json").stat().st_size
    print(f"  written in {time.perf_counter() - start:.0f} s ({size / 1e6:,.0f} MB)", flush=True)
    result = _measure("import", work / "m.json", work)
    rate = result["count"] / result["seconds"]
    per_entry = floor(work)
    million = 1e6 / rate
    print(
        f"  imported {result['count']:,.0f} in {result['seconds']:.1f} s: {rate:,.0f} entries/s, "
        f"peak RSS {result['peak_kib'] / 1024:.0f} MB (target < 500 MB)"
    )
    print(
        f"  floor (ES256 + chain verify, 1 core): {per_entry * 1e6:.0f} us/entry = "
        f"{1 / per_entry:,.0f} entries/s; import at {rate * per_entry:.2f}x the floor"
    )
    print(
        f"  1,000,000 entries: {million:,.0f} s at this rate, {1e6 * per_entry:,.0f} s at the "
        f"floor on one core (target {TARGET_SECONDS_PER_MILLION:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", type=int, nargs="?", default=100_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        measure(args.entries, Path(tmp))


if __name__ == "__main__":
    main()
