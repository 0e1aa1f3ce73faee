"""Tolerated encoding deviations of real parts, each built into a synthetic certificate.

The certificates are made with cryptography, then one encoding is bent the
way shipping parts bend it (same length, so the structure stays valid) and the
TBS is signed again, so the signature is good and the deviation is the only
thing wrong. Everything else about the chain is still checked strictly.
"""

from __future__ import annotations

import contextlib
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from keyfab.errors import VerificationError
from keyfab.manifest._chain import verify_device_chain
from keyfab.manifest._deviations import PRINTABLE_STRING_ALPHABET, TOLERATED, _walk, normalise

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
SERIAL = b"0123-ABCD"  # its '-' becomes '_' in the bent certificate
_CA_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
_SIGN_ONLY = x509.KeyUsage(True, False, False, False, False, False, False, False, False)


def _tlv(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _element_end(data: bytes, offset: int) -> int:
    first = data[offset + 1]
    if first < 0x80:
        return offset + 2 + first
    count = first & 0x7F
    return offset + 2 + count + int.from_bytes(data[offset + 2 : offset + 2 + count])


def _resign(certificate: x509.Certificate, tbs: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """``certificate`` with its TBS replaced by ``tbs`` and signed again by ``key``."""
    der = certificate.public_bytes(Encoding.DER)
    body = 4 if der[1] == 0x82 else 3 if der[1] == 0x81 else 2
    algorithm_start = _element_end(der, body)
    algorithm = der[algorithm_start : _element_end(der, algorithm_start)]
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def _root() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Reel Root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return root, key


def _device(
    root: x509.Certificate, key: ec.EllipticCurvePrivateKey, usage: x509.KeyUsage = _SIGN_ONLY
) -> x509.Certificate:
    """A device certificate whose SAN directoryName serialNumber is a bent PrintableString."""
    device_key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.NameAttribute(
        NameOID.SERIAL_NUMBER, SERIAL.decode(), _type=x509.name._ASN1Type.UTF8String
    )
    strict = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sn0123")]))
        .issuer_name(root.subject)
        .public_key(device_key.public_key())
        .serial_number(2)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .add_extension(usage, critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DirectoryName(x509.Name([serial]))]), False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    tbs = bytearray(strict.tbs_certificate_bytes)
    at = tbs.find(bytes([0x0C, len(SERIAL)]) + SERIAL)
    tbs[at] = 0x13  # PrintableString ...
    tbs[at + 2 + SERIAL.index(b"-")] = ord("_")  # ... holding '_', outside its alphabet
    return x509.load_der_x509_certificate(_resign(strict, bytes(tbs), key))


def test_printable_string_outside_its_alphabet_is_tolerated() -> None:
    root, key = _root()
    device = _device(root, key)
    with pytest.raises(ValueError, match="PrintableString"):
        _ = device.extensions  # what the verifier trips over, encoding alone
    assert normalise(device).deviations == (PRINTABLE_STRING_ALPHABET,)
    assert verify_device_chain(device, [], [root], NOW) == [device, root]


def test_tolerated_encoding_never_relaxes_the_signature() -> None:
    root, _ = _root()
    other, _ = _root()
    device = _device(root, ec.generate_private_key(ec.SECP256R1()))  # signed by the wrong key
    with pytest.raises(VerificationError, match=r"no path to a root.*printable-string-alphabet"):
        verify_device_chain(device, [], [root, other], NOW)


def test_tolerated_encoding_never_relaxes_key_usage_or_validity() -> None:
    root, key = _root()
    no_signing = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
    with pytest.raises(VerificationError, match="digitalSignature"):
        verify_device_chain(_device(root, key, no_signing), [], [root], NOW)
    later = NOW + datetime.timedelta(days=400)
    with pytest.raises(VerificationError, match="not valid at"):
        verify_device_chain(_device(root, key), [], [root], later)


def test_other_refusals_stay_errors() -> None:
    """A strictly encoded chain to an unknown root is refused by the verifier itself."""
    root, key = _root()
    stranger, _ = _root()
    device = _device(root, key)
    strict = normalise(device).strict
    with pytest.raises(VerificationError) as refused:
        verify_device_chain(strict, [], [stranger], NOW)
    assert "tolerated" not in str(refused.value)


def test_every_tolerated_deviation_is_documented() -> None:
    for deviation in TOLERATED:
        assert deviation.name
        assert deviation.description
        assert deviation.seen_in


@given(st.binary(max_size=512))
def test_the_der_walker_fails_only_with_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        _walk(bytearray(data), 0, len(data), 0, set())
