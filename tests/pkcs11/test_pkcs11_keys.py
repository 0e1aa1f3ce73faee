"""Keys generated inside SoftHSM2 sign the way ``cryptography`` expects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

from keyfab.errors import KeyExistsError, KeyNotFoundError
from keyfab.rot import KeyAlgorithm, KeySpec, key_protection, load_key, open_rot
from keyfab.rot.pkcs11 import Pkcs11RootOfTrust

if TYPE_CHECKING:
    from .conftest import SoftHsm

MESSAGE = b"keyfab signs this inside the token"


@pytest.fixture(scope="module")
def rot(softhsm: SoftHsm) -> Pkcs11RootOfTrust:
    opened = open_rot(softhsm.uri("device"))
    assert isinstance(opened, Pkcs11RootOfTrust)
    return opened


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm), ids=str)
def test_pkcs11_generated_key_signs_and_verifies(
    rot: Pkcs11RootOfTrust, algorithm: KeyAlgorithm
) -> None:
    key = rot.generate_key(f"gen-{algorithm.value}", KeySpec(algorithm))
    assert KeySpec(algorithm).matches(key.public_key())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for digest in (hashes.SHA256(), hashes.SHA384()):
            signature = key.sign(MESSAGE, ec.ECDSA(digest))
            key.public_key().verify(signature, MESSAGE, ec.ECDSA(digest))
        return
    assert isinstance(key, rsa.RSAPrivateKey)
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH)
    pss_digest = padding.PSS(padding.MGF1(hashes.SHA384()), padding.PSS.DIGEST_LENGTH)
    for pad, digest in (
        (padding.PKCS1v15(), hashes.SHA256()),
        (pss, hashes.SHA256()),
        (pss_digest, hashes.SHA384()),
        (padding.PKCS1v15(), hashes.SHA512()),
    ):
        signature = key.sign(MESSAGE, pad, digest)
        key.public_key().verify(signature, MESSAGE, pad, digest)


def test_pkcs11_key_attributes_forbid_export(rot: Pkcs11RootOfTrust, softhsm: SoftHsm) -> None:
    rot.generate_key("attrs", KeySpec(KeyAlgorithm.EC_P256))
    token = pkcs11.lib(softhsm.module).get_token(token_label="device")
    with token.open() as session:  # keyfab's login is the process's login
        private = session.get_key(ObjectClass.PRIVATE_KEY, label="attrs")
        values = private.get_attributes(
            [
                Attribute.TOKEN,
                Attribute.SENSITIVE,
                Attribute.EXTRACTABLE,
                Attribute.ALWAYS_SENSITIVE,
                Attribute.NEVER_EXTRACTABLE,
                Attribute.LOCAL,
                Attribute.DECRYPT,
                Attribute.UNWRAP,
                Attribute.DERIVE,
                Attribute.SIGN,
            ]
        )
    assert values == {
        Attribute.TOKEN: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.ALWAYS_SENSITIVE: True,
        Attribute.NEVER_EXTRACTABLE: True,
        Attribute.LOCAL: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
        Attribute.SIGN: True,
    }


def test_pkcs11_key_reloads_by_uri_and_signs_a_csr(
    rot: Pkcs11RootOfTrust, softhsm: SoftHsm
) -> None:
    made = rot.generate_key("csr-key", KeySpec(KeyAlgorithm.EC_P384))
    key = load_key(softhsm.uri_with_pin_file("device", "csr-key"))
    assert key.public_key() == made.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-1")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA384())
    assert csr.is_signature_valid
    assert csr.public_key() == made.public_key()


def test_pkcs11_duplicate_and_missing_keys(rot: Pkcs11RootOfTrust) -> None:
    rot.generate_key("once", KeySpec(KeyAlgorithm.EC_P256))
    with pytest.raises(KeyExistsError, match="already has a key 'once'"):
        rot.generate_key("once", KeySpec(KeyAlgorithm.EC_P256))
    with pytest.raises(KeyNotFoundError, match="has no key 'never-made'"):
        rot.key("never-made")


def test_pkcs11_info_is_the_token_serial(rot: Pkcs11RootOfTrust, softhsm: SoftHsm) -> None:
    token = pkcs11.lib(softhsm.module).get_token(token_label="device")
    assert rot.info.unique_id == token.serial.decode().strip()
    assert rot.info.kind == "pkcs11"
    assert rot.info.vendor == "SoftHSM project"
    assert len(rot.random(48)) == 48
    assert rot.random(0) == b""


def test_key_protection_is_read_from_the_token(rot: Pkcs11RootOfTrust, softhsm: SoftHsm) -> None:
    """What the evidence pack says of a CA key comes from the token's own attributes."""
    rot.generate_key("evidence", KeySpec(KeyAlgorithm.EC_P256))
    found = key_protection(softhsm.uri("device", "evidence"))
    assert found.scheme == "pkcs11"
    assert found.attributes == {
        "CKA_SENSITIVE": True,
        "CKA_EXTRACTABLE": False,
        "CKA_ALWAYS_SENSITIVE": True,
        "CKA_NEVER_EXTRACTABLE": True,
        "CKA_TOKEN": True,
        "CKA_PRIVATE": True,
    }
    assert found.non_exportable is True
    with pytest.raises(KeyNotFoundError):
        key_protection(softhsm.uri("device", "no-such-key"))


def test_a_soft_key_is_reported_as_development(tmp_path: Path) -> None:
    found = key_protection(f"soft:{tmp_path}/ca.pem")
    assert (found.scheme, found.hardware, found.non_exportable) == ("soft", False, None)
    assert "development only" in found.note
