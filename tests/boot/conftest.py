"""Fixtures for verified-boot tests: keys, payloads and FITs made by Debian's mkimage."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ITS = """/dts-v1/;
/ {{
  description = "keyfab test";
  #address-cells = <1>;
  images {{
    kernel {{
      description = "kernel"; data = /incbin/("{kernel}"); type = "kernel"; arch = "arm64";
      os = "linux"; compression = "none"; load = <0x40400000>; entry = <0x40400000>;
      hash-1 {{ algo = "sha256"; }};
    }};
    fdt-1 {{
      description = "fdt"; data = /incbin/("{fdt}"); type = "flat_dt"; arch = "arm64";
      compression = "none"; hash-1 {{ algo = "sha256"; }};
    }};
  }};
  configurations {{
    default = "conf-1";
    conf-1 {{ description = "c1"; kernel = "kernel"; fdt = "fdt-1"; {extra}{signature} }};
  }};
}};
"""

SIGNATURE = (
    'signature-1 {{ algo = "{algo}"; key-name-hint = "{hint}"; {padding}'
    "sign-images = {sign_images}; }};"
)

FDT_DTS = '/dts-v1/;\n/ { compatible = "linux,dummy-virt"; #address-cells = <2>; };\n'


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/system-packages.txt installs it)")
    return path


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="session")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random kernel and a real DTB, built once."""
    require_tool("dtc")
    folder = tmp_path_factory.mktemp("payloads")
    (folder / "kernel.bin").write_bytes(bytes(range(256)) * 40 + b"KERNEL-END")
    (folder / "fdt.dts").write_text(FDT_DTS)
    run("dtc", "-I", "dts", "-O", "dtb", "-o", folder / "fdt.dtb", folder / "fdt.dts")
    return folder


def _certificate(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyfab test")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name)
    builder = builder.public_key(key.public_key()).serial_number(1)
    builder = builder.not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


KeyMaker = Callable[[str, str], Path]


@pytest.fixture(scope="session")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyMaker:
    """Writes a key as mkimage (<hint>.key/.crt, <hint>.pem) and keyfab (soft:) read it."""
    folder = tmp_path_factory.mktemp("keys")

    def make(hint: str, kind: str) -> Path:
        pem_path = folder / f"{hint}.pem"
        if pem_path.exists():
            return folder
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if kind.startswith("rsa"):
            key = rsa.generate_private_key(65537, int(kind[3:]))
        else:
            key = ec.generate_private_key(ec.SECP384R1() if kind == "ec384" else ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem_path.write_bytes(pem)
        (folder / f"{hint}.key").write_bytes(pem)
        (folder / f"{hint}.crt").write_bytes(_certificate(key))
        return folder

    return make


ItsMaker = Callable[..., Path]


@pytest.fixture
def make_fit(payloads: Path, tmp_path: Path) -> ItsMaker:
    """Builds a FIT with Debian's mkimage; signs it when given a key folder."""
    require_tool("mkimage")

    def make(
        name: str = "image",
        *,
        algo: str = "",
        hint: str = "dev",
        pss: bool = False,
        keys: Path | None = None,
        control: Path | None = None,
        required: bool = False,
        extra: str = "",
        sign_images: str = '"kernel", "fdt"',
    ) -> Path:
        signature = ""
        if algo:
            padding = 'padding = "pss"; ' if pss else ""
            signature = SIGNATURE.format(
                algo=algo, hint=hint, padding=padding, sign_images=sign_images
            )
        its = tmp_path / f"{name}.its"
        its.write_text(
            ITS.format(
                kernel=payloads / "kernel.bin",
                fdt=payloads / "fdt.dtb",
                extra=extra,
                signature=signature,
            )
        )
        out = tmp_path / f"{name}.itb"
        args: list[str | Path] = ["mkimage", "-f", its]
        if keys is not None:
            args += ["-k", keys]
        if control is not None:
            args += ["-K", control]
        if required:
            args.append("-r")
        run(*args, out)
        return out

    return make


@pytest.fixture
def control_dtb(tmp_path: Path) -> Path:
    """A small control DTB to write keys into.

    It has an empty /signature node: Debian's mkimage 2023.01 adds ECDSA keys
    only under an existing one.
    """
    source = tmp_path / "control.dts"
    source.write_text('/dts-v1/;\n/ { compatible = "keyfab,test"; signature { }; };\n')
    path = tmp_path / "control.dtb"
    run("dtc", "-I", "dts", "-O", "dtb", "-o", path, source)
    return path
