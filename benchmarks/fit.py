"""Benchmark: keyfab FIT sign and verify of a 64 MiB kernel against mkimage and sha256sum.

All measured in one run on the same bytes: ``mkimage -F -k`` re-signing the same
unsigned FIT (hashes + configuration signature), and ``sha256sum`` of the kernel
as the throughput ceiling of one SHA-256 pass. keyfab is timed in-process (the
library) and through its CLI (interpreter start-up included). Best of N runs.
Targets from the issue: sign <= 1.2x mkimage; verify >= 80% of sha256sum's
throughput.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyfab.boot import (
    FitImage,
    SignatureAlgorithm,
    Signer,
    add_key,
    load_dtb,
    load_fit,
    parse,
    sign_fit,
    verify_fit,
    write_atomic,
)
from keyfab.rot import load_key

SIZE = 64 << 20
RUNS = 3
ITS = """/dts-v1/;
/ {{ description = "bench"; #address-cells = <1>;
  images {{ kernel {{ data = /incbin/("{kernel}"); type = "kernel"; arch = "arm64";
    os = "linux"; compression = "none"; load = <0x40400000>; entry = <0x40400000>;
    hash-1 {{ algo = "sha256"; }}; }}; }};
  configurations {{ default = "conf-1"; conf-1 {{ kernel = "kernel";
    signature-1 {{ algo = "sha256,rsa2048"; key-name-hint = "dev"; }}; }}; }};
}};
"""


def best(action: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def sh(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def prepare(folder: Path) -> tuple[Path, Path]:
    kernel = folder / "kernel.bin"
    kernel.write_bytes(os.urandom(SIZE))
    key = rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (folder / "dev.pem").write_bytes(pem)
    (folder / "dev.key").write_bytes(pem)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "dev.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    its = folder / "bench.its"
    its.write_text(ITS.format(kernel=kernel))
    unsigned = folder / "unsigned.itb"
    sh("mkimage", "-f", its, unsigned)
    return kernel, unsigned


def main() -> None:
    if shutil.which("mkimage") is None:
        sys.exit("mkimage is not installed (Debian package u-boot-tools)")
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as raw:
        folder = Path(raw)
        kernel, unsigned = prepare(folder)
        work = folder / "work.itb"
        key = load_key(f"soft:{folder / 'dev.pem'}")
        signer = Signer(key, "dev", SignatureAlgorithm.for_key(key))

        def mkimage_sign() -> None:
            shutil.copy(unsigned, work)
            sh("mkimage", "-F", "-k", folder, work)

        def keyfab_sign() -> None:
            shutil.copy(unsigned, work)
            fit = load_fit(work)
            sign_fit(fit, signer)
            write_atomic(work, fit.chunks())

        def keyfab_sign_cli() -> None:
            shutil.copy(unsigned, work)
            sh(
                sys.executable,
                "-W",
                "ignore",
                "-m",
                "keyfab.cli.fit",
                "sign",
                work,
                "--key",
                f"soft:{folder / 'dev.pem'}",
                "--key-name-hint",
                "dev",
            )

        copy_only = best(lambda: shutil.copy(unsigned, work))
        results = {
            "sha256sum kernel": best(lambda: sh("sha256sum", kernel)),
            "mkimage -F -k (sign)": best(mkimage_sign) - copy_only,
            "keyfab sign (library)": best(keyfab_sign) - copy_only,
            "keyfab fit sign (CLI)": best(keyfab_sign_cli) - copy_only,
        }
        control = parse(_control(folder, key.public_key()))
        results["keyfab verify (library)"] = best(lambda: verify_fit(load_fit(work), control))
        control_path = folder / "control.dtb"
        write_atomic(control_path, control.chunks())
        results["keyfab fit verify (CLI)"] = best(
            lambda: sh(
                sys.executable, "-m", "keyfab.cli.fit", "verify", work, "--control", control_path
            )
        )
        results["CLI start-up alone"] = best(
            lambda: sh(sys.executable, "-W", "ignore", "-c", "import keyfab.cli.fit")
        )
        assert verify_fit(FitImage.load(work.read_bytes()), control).ok
        report(results)


def _control(folder: Path, public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    dtb = folder / "empty.dtb"
    subprocess.run(
        ["dtc", "-I", "dts", "-O", "dtb", "-o", str(dtb), "-"],
        input=b"/dts-v1/;\n/ { };\n",
        check=True,
        capture_output=True,
    )
    control = load_dtb(dtb)
    add_key(control, public, "dev", "sha256,rsa2048", "conf")
    return control.to_bytes()


def report(results: dict[str, float]) -> None:
    mib = SIZE / (1 << 20)
    base_sign = results["mkimage -F -k (sign)"]
    base_hash = results["sha256sum kernel"]
    print(f"FIT benchmark: {mib:.0f} MiB kernel, best of {RUNS} runs")
    for name, seconds in results.items():
        print(
            f"  {name:28s} {seconds * 1000:8.1f} ms  {mib / seconds:8.1f} MiB/s"
            f"  x{seconds / base_sign:5.2f} mkimage-sign"
            f"  {100 * base_hash / seconds:5.1f}% of sha256sum throughput"
        )


if __name__ == "__main__":
    main()
