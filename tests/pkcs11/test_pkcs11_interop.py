"""What keyfab writes into a token is what OpenSC's ``pkcs11-tool`` reads and uses."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from typing import TYPE_CHECKING

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import ObjectClass

from keyfab.rot import KeyAlgorithm, KeySpec, open_rot

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import MakeCertificate, SoftHsm

MESSAGE = b"signed by pkcs11-tool with a key keyfab made"


def _tool(softhsm: SoftHsm, *args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("pkcs11-tool") is None:
        pytest.skip("pkcs11-tool is not installed (Debian package opensc; make setup installs it)")
    return subprocess.run(
        ["pkcs11-tool", "--module", softhsm.module, "--token-label", "interop", *args],
        check=True,
        capture_output=True,
        env=softhsm.env(),
        timeout=60,
    )


@pytest.fixture(scope="module")
def written(softhsm: SoftHsm, make_certificate: MakeCertificate) -> dict[str, x509.Certificate]:
    """A CA key and two device keys in the token, each with its certificate written back."""
    rot = open_rot(softhsm.uri("interop"))
    ca_key = rot.generate_key("mfg-ca", KeySpec(KeyAlgorithm.EC_P384))
    ca = make_certificate("mfg-ca", ca_key.public_key(), "mfg-ca", ca_key, ca=True)
    certificates = {"mfg-ca": ca}
    for label, algorithm in (
        ("idevid", KeyAlgorithm.EC_P256),
        ("idevid-rsa", KeyAlgorithm.RSA_2048),
    ):
        key = rot.generate_key(label, KeySpec(algorithm))
        leaf = make_certificate(label, key.public_key(), "mfg-ca", ca_key)
        leaf.verify_directly_issued_by(ca)
        rot.store_object(f"{label}-cert", leaf.public_bytes(serialization.Encoding.DER))
        certificates[label] = leaf
    return certificates


def _key_id(softhsm: SoftHsm, label: str) -> str:
    with pkcs11.lib(softhsm.module).get_token(token_label="interop").open() as session:
        return bytes(session.get_key(ObjectClass.PRIVATE_KEY, label=label).id).hex()


def test_pkcs11_tool_lists_and_reads_keyfab_certificates(
    softhsm: SoftHsm, written: dict[str, x509.Certificate], tmp_path: Path
) -> None:
    listing = _tool(softhsm, "--list-objects", "--type", "cert").stdout.decode()
    for label in ("idevid", "idevid-rsa"):
        assert f"label:      {label}-cert" in listing
        assert f"ID:         {_key_id(softhsm, label)}" in listing
        out = tmp_path / f"{label}.der"
        _tool(
            softhsm, "--read-object", "--type", "cert", "--label", f"{label}-cert", "-o", str(out)
        )
        assert x509.load_der_x509_certificate(out.read_bytes()) == written[label]


def test_pkcs11_tool_signs_with_keyfab_ec_key(
    softhsm: SoftHsm, written: dict[str, x509.Certificate], tmp_path: Path
) -> None:
    digest, signature = tmp_path / "digest", tmp_path / "signature"
    digest.write_bytes(hashlib.sha256(MESSAGE).digest())
    _tool(
        softhsm,
        "--login",
        "--pin",
        softhsm.pin,
        "--sign",
        "--id",
        _key_id(softhsm, "idevid"),
        "-m",
        "ECDSA",
        "--signature-format",
        "openssl",
        "-i",
        str(digest),
        "-o",
        str(signature),
    )
    public_key = written["idevid"].public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature.read_bytes(), MESSAGE, ec.ECDSA(hashes.SHA256()))


def test_pkcs11_tool_signs_with_keyfab_rsa_key(
    softhsm: SoftHsm, written: dict[str, x509.Certificate], tmp_path: Path
) -> None:
    message, signature = tmp_path / "message", tmp_path / "signature"
    message.write_bytes(MESSAGE)
    _tool(
        softhsm,
        "--login",
        "--pin",
        softhsm.pin,
        "--sign",
        "--id",
        _key_id(softhsm, "idevid-rsa"),
        "-m",
        "SHA256-RSA-PKCS",
        "-i",
        str(message),
        "-o",
        str(signature),
    )
    public_key = written["idevid-rsa"].public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature.read_bytes(), MESSAGE, padding.PKCS1v15(), hashes.SHA256())
