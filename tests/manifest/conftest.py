"""Shared fixtures for the manifest tests: a small real PKI and manifest builders.

The PKI is built with ``cryptography`` and keyfab's own manifest-signer profile:
a root and an intermediate CA, device certificates without any EKU (as secure
elements carry them) and a self-signed manifest signer like Microchip's.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from keyfab.manifest import (
    EntrySigner,
    Organization,
    device_element,
    issue_manifest_signer,
    write_manifest,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MICROCHIP = REPO_ROOT.parent / "shared" / "fixtures" / "microchip"
SAMPLE = MICROCHIP / "manifest_ATECC608A-MAH4I.json"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
ORG = Organization("Example Devices Ltd", "Factory 1")


@pytest.fixture
def microchip() -> Path:
    """The real Microchip sample folder, or a skip saying why it is missing."""
    if not SAMPLE.is_file():
        pytest.skip(f"Microchip sample manifest not found at {SAMPLE} (shared fixtures absent)")
    return MICROCHIP


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Devices Ltd"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
        issuer_key: ec.EllipticCurvePrivateKey, path_length: int | None) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer.subject if issuer else _name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + datetime.timedelta(days=7300))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), False)
    )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    """A root, an intermediate, a manifest signer and a device factory."""

    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    signer: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    devices: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)

    def device_chain(self, unique_id: str) -> list[x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        self.devices[unique_id] = key
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"sn{unique_id.upper()}"))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(T0)
            .not_valid_after(T0 + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False,
                                         False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.intermediate_key.public_key()), False)
            .sign(self.intermediate_key, hashes.SHA256())
        )
        return [cert, self.intermediate]

    def element(self, unique_id: str) -> Any:
        return device_element(unique_id, self.device_chain(unique_id),
                              T0 + datetime.timedelta(days=1), "KF-SE", "KF-SE-1", ORG, "7")

    def entry_signer(self) -> EntrySigner:
        return EntrySigner(self.signer_key, self.signer)

    def write(self, path: Path, count: int, prefix: str = "01") -> Path:
        with path.open("wb") as out:
            write_manifest((self.element(f"{prefix}{n:016x}") for n in range(count)),
                           self.entry_signer(), out)
        return path

    def signers_dir(self, tmp_path: Path) -> Path:
        folder = tmp_path / "signers"
        folder.mkdir(exist_ok=True)
        (folder / "keyfab-signer.pem").write_bytes(
            self.signer.public_bytes(serialization.Encoding.PEM))
        return folder

    def roots_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "roots.pem"
        path.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))
        return path

    def raw_entry(self, header: dict[str, Any], payload: dict[str, Any] | bytes,
                  unique_id: str = "0102") -> dict[str, Any]:
        """An entry with arbitrary header and payload, really signed by the signer."""
        protected = b64url(json.dumps(header).encode())
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        encoded = b64url(body)
        der = self.signer_key.sign(f"{protected}.{encoded}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return {"payload": encoded, "protected": protected, "header": {"uniqueId": unique_id},
                "signature": b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}

    def header(self, **changes: Any) -> dict[str, Any]:
        ski = self.signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        header = {"typ": "JWT", "alg": "ES256", "kid": b64url(ski.value.digest),
                  "x5t#S256": b64url(hashlib.sha256(
                      self.signer.public_bytes(serialization.Encoding.DER)).digest())}
        header.update(changes)
        return {k: v for k, v in header.items() if v is not None}


@pytest.fixture(scope="session")
def pki() -> Pki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca("Example Root CA", root_key, None, root_key, None)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _ca("Example Signer CA", inter_key, root, root_key, 0)
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = issue_manifest_signer(_name("Example Manifest Signer"), signer_key.public_key(),
                                   None, signer_key, x509.random_serial_number(), not_before=T0)
    return Pki(root, inter, inter_key, signer, signer_key)


@pytest.fixture
def manifest_path(pki: Pki, tmp_path: Path) -> Callable[[int], Path]:
    def make(count: int) -> Path:
        return pki.write(tmp_path / "manifest.json", count)
    return make
