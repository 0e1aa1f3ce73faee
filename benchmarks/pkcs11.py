"""SoftHSM2 ECDSA P-256: the raw token signing rate against keyfab's CA issuance rate.

Baseline: signatures per second through python-pkcs11 alone (``key.sign(digest,
CKM_ECDSA)`` in a loop) with the very key keyfab made in the token. Measured: the
same key's ``sign()`` through keyfab's rot driver (the driver's own cost), and
certificates per second from ``keyfab.pki.CertificateAuthority.issue_for_csr``
with that key as CA key: verify the CSR, build the IDevID certificate, sign it
through the token, encode it to DER. One run, all figures, ratios to the raw
rate. The device side (key generation, CSR signing) happens before timing.

    .venv/bin/python benchmarks/pkcs11.py [--signatures N] [--certificates N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and this file's
# name would then hide the python-pkcs11 package (also ``pkcs11``).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "bench-pin"


def _softhsm(directory: Path) -> None:
    """A throw-away token; SOFTHSM2_CONF must be set before the module loads."""
    (directory / "tokens").mkdir()
    config = directory / "softhsm2.conf"
    config.write_text(f"directories.tokendir = {directory / 'tokens'}\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(config)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "so-bench-pin",
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
    )


Signer = Callable[[], bytes]


def _setup(count: int) -> tuple[Signer, Signer, Callable[[bytes, int], bytes], list[bytes]]:
    """The CA key made by keyfab in the token, raw and keyfab signers on it, CSRs."""
    import pkcs11
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from pkcs11 import Mechanism, ObjectClass

    from keyfab import pki
    from keyfab.rot import KeyAlgorithm, KeySpec, open_rot

    uri = f"pkcs11:token=bench?module-path={MODULE}&pin-value={PIN}"
    ca_key = open_rot(uri).generate_key("mfg-ca", KeySpec(KeyAlgorithm.EC_P256))
    # The baseline signs with the very same token key, through python-pkcs11 alone.
    session = pkcs11.lib(MODULE).get_token(token_label="bench").open()
    token_key = session.get_key(ObjectClass.PRIVATE_KEY, label="mfg-ca")
    digest = hashlib.sha256(b"benchmark").digest()

    def raw() -> bytes:
        return bytes(token_key.sign(digest, mechanism=Mechanism.ECDSA))

    def keyfab_sign() -> bytes:
        return ca_key.sign(b"benchmark", ec.ECDSA(hashes.SHA256()))

    # keyfab's CA side exactly as provisioning runs it: check the CSR's proof of
    # possession, issue an IEEE 802.1AR IDevID through the CA key in the token, DER.
    root = pki.CertificateAuthority.create_root(pki.root_ca("Bench", "Bench Root CA"), ca_key)

    def issue(der: bytes, index: int) -> bytes:
        csr = x509.load_der_x509_csr(der)
        identity = pki.DeviceIdentity(f"DEV-{index:08d}", "1.3.6.1.4.1.99999.1.1", "Bench", "b")
        certificate = root.issue_for_csr(pki.idevid(identity), csr)
        return certificate.public_bytes(serialization.Encoding.DER)

    csrs = []
    for index in range(count):
        device = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, f"DEV-{index:08d}")])
        builder = x509.CertificateSigningRequestBuilder().subject_name(name)
        csrs.append(builder.sign(device, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    return raw, keyfab_sign, issue, csrs


def _rate(work: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signatures", type=int, default=4000)
    parser.add_argument("--certificates", type=int, default=2000)
    args = parser.parse_args()
    if shutil.which("softhsm2-util") is None or not Path(MODULE).is_file():
        sys.exit("SoftHSM2 is not installed (Debian package softhsm2)")
    with tempfile.TemporaryDirectory(prefix="keyfab-bench-") as directory:
        _softhsm(Path(directory))
        raw, keyfab_sign, issue, csrs = _setup(args.certificates)
        raw(), keyfab_sign(), issue(csrs[0], 1)  # warm up
        numbered = list(enumerate(csrs, start=2))
        n = args.signatures
        # The three alternate, twice, so a busy shared machine slows them alike.
        rates: dict[str, list[float]] = {"raw": [], "sign": [], "issue": []}
        for _ in range(2):
            rates["raw"].append(_rate(lambda: [raw() for _ in range(n)], n))
            rates["sign"].append(_rate(lambda: [keyfab_sign() for _ in range(n)], n))
            rates["issue"].append(_rate(lambda: [issue(d, i) for i, d in numbered], len(numbered)))
    raw_rate, sign_rate, issue_rate = (sum(r) / len(r) for r in rates.values())
    print(f"raw SoftHSM2 ECDSA P-256 (same token key, python-pkcs11): {raw_rate:7.0f} signatures/s")
    print(
        f"keyfab rot key .sign() (hash on host + pooled session):   {sign_rate:7.0f} signatures/s"
        f"  = {sign_rate / raw_rate:.1%} of raw"
    )
    print(
        f"keyfab CA issuance (CSR verify + build + token sign + DER): {issue_rate:5.0f} certs/s"
        f"  = {issue_rate / raw_rate:.1%} of raw (target >= 60%)"
    )
    # Issuance = one token signature + host X.509 work; the latter does not scale
    # with the token, so a slower (real) token puts the ratio nearer 100%.
    host = 1 / issue_rate - 1 / sign_rate
    print(f"host work per certificate besides the signature: {host * 1e6:.0f} us; a token signing")
    print(
        "  R/s would give issuance/raw = 1/(1 + R*host): "
        + ", ".join(f"R={r}: {1 / (1 + r * host):.0%}" for r in (20, 200, 1000))
    )


if __name__ == "__main__":
    main()
