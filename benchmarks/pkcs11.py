"""SoftHSM2 ECDSA P-256: the raw token signing rate against keyfab's CA issuance rate.

Baseline: signatures per second through python-pkcs11 alone (``key.sign(digest,
CKM_ECDSA)`` in a loop). Measured: certificates per second that keyfab's CA side
issues with its CA key in the same token: verify the CSR, build and sign the
certificate through the token, encode it to DER. One run, both figures, ratio.
The device side (key generation, CSR signing) happens before timing starts.

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
from datetime import UTC, datetime, timedelta
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

    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench manufacturing CA")])
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    now = datetime.now(UTC)

    def issue(der: bytes, serial: int) -> bytes:
        csr = x509.load_der_x509_csr(der)
        if not csr.is_signature_valid:
            raise SystemExit("a CSR did not verify")
        certificate = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(ca_name)
            .public_key(csr.public_key())
            .serial_number(serial)
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(aki, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
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


if __name__ == "__main__":
    main()
