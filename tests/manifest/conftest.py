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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from keyfab import pki
from keyfab.manifest import (
    EntrySigner,
    Organization,
    device_element,
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


@dataclass
class Pki:
    """A root, an intermediate, a manifest signer and a device factory."""

    root: x509.Certificate
    ca: pki.CertificateAuthority
    signer: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    devices: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)

    @property
    def intermediate(self) -> x509.Certificate:
        return self.ca.certificate

    def device_chain(self, unique_id: str) -> list[x509.Certificate]:
        """An IEEE 802.1AR IDevID from the manufacturing CA (no EKU, as devices have)."""
        key = ec.generate_private_key(ec.SECP256R1())
        self.devices[unique_id] = key
        identity = pki.DeviceIdentity(f"SN{unique_id.upper()}", "1.3.6.1.4.1.99999.1.1", "Example")
        cert = self.ca.issue(pki.idevid(identity), key.public_key(), now=T0)
        return [cert, self.intermediate]

    def element(self, unique_id: str) -> Any:
        return device_element(
            unique_id,
            [("0", self.device_chain(unique_id))],
            T0 + datetime.timedelta(days=1),
            "KF-SE",
            "KF-SE-1",
            ORG,
            "7",
        )

    def entry_signer(self) -> EntrySigner:
        return EntrySigner(self.signer_key, self.signer)

    def write(self, path: Path, count: int, prefix: str = "01") -> Path:
        with path.open("wb") as out:
            write_manifest(
                (self.element(f"{prefix}{n:016x}") for n in range(count)), self.entry_signer(), out
            )
        return path

    def signers_dir(self, tmp_path: Path) -> Path:
        folder = tmp_path / "signers"
        folder.mkdir(exist_ok=True)
        (folder / "keyfab-signer.pem").write_bytes(
            self.signer.public_bytes(serialization.Encoding.PEM)
        )
        return folder

    def roots_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "roots.pem"
        path.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))
        return path

    def raw_entry(
        self, header: dict[str, Any], payload: dict[str, Any] | bytes, unique_id: str = "0102"
    ) -> dict[str, Any]:
        """An entry with arbitrary header and payload, really signed by the signer."""
        protected = b64url(json.dumps(header).encode())
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        encoded = b64url(body)
        der = self.signer_key.sign(f"{protected}.{encoded}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return {
            "payload": encoded,
            "protected": protected,
            "header": {"uniqueId": unique_id},
            "signature": b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big")),
        }

    def header(self, **changes: Any) -> dict[str, Any]:
        ski = self.signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "kid": b64url(ski.value.digest),
            "x5t#S256": b64url(
                hashlib.sha256(self.signer.public_bytes(serialization.Encoding.DER)).digest()
            ),
        }
        header.update(changes)
        return {k: v for k, v in header.items() if v is not None}


@pytest.fixture(scope="session", name="pki")
def example_pki() -> Pki:
    """keyfab's own PKI: root, manufacturing CA and a manifest signer issued by it."""
    root = pki.CertificateAuthority.create_root(
        pki.root_ca("Example", "Example Root CA"), ec.generate_private_key(ec.SECP256R1()), now=T0
    )
    ca = root.create_subordinate(
        pki.manufacturing_ca("Example", "Example Manufacturing CA"),
        ec.generate_private_key(ec.SECP256R1()),
        now=T0,
    )
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = ca.issue(
        pki.manifest_signer("Example", "Example Manifest Signer"), signer_key.public_key(), now=T0
    )
    return Pki(root.certificate, ca, signer, signer_key)
