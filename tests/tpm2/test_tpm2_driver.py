"""The tpm2 driver against a real swtpm: identity, keys, objects, counters, handle hygiene."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509.oid import NameOID
from tpm2_pytss.constants import ESYS_TR

from keyfab.errors import (
    ConfigError,
    KeyExistsError,
    KeyNotExportableError,
    KeyNotFoundError,
    RotError,
    RotLockedError,
    UnsupportedError,
)
from keyfab.rot import Capability, KeyAlgorithm, KeySpec, load_key, open_rot
from keyfab.rot.tpm2 import Tpm2RootOfTrust, _nv

from .conftest import Swtpm

EC = KeySpec(KeyAlgorithm.EC_P256)


def test_tpm2_info_comes_from_the_ek(rot: Tpm2RootOfTrust) -> None:
    certificate = x509.load_der_x509_certificate(rot.ek.certificate)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert rot.info.kind == "tpm2"
    assert rot.info.vendor == "IBM"
    assert rot.info.unique_id == hashlib.sha256(spki).hexdigest()
    assert Capability.KEY_ATTESTATION in rot.info.capabilities
    assert rot.ek.algorithm is KeyAlgorithm.RSA_2048


def test_tpm2_open_uri_and_load_key(swtpm: Swtpm, rot: Tpm2RootOfTrust) -> None:
    rot.generate_key("idevid", EC)
    with open_rot(swtpm.uri) as again:
        assert again.info.unique_id == rot.info.unique_id
    key = load_key(f"{swtpm.uri};persistent=0x81020001")
    signature = key.sign(b"data", ec.ECDSA(hashes.SHA256()))
    rot.key("idevid").public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))


def test_tpm2_idevid_signs_a_csr_and_never_exports(rot: Tpm2RootOfTrust) -> None:
    key = rot.generate_key("idevid", EC)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "AGW-1")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    assert csr.is_signature_valid
    with pytest.raises(KeyNotExportableError):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    area = rot.public_area("idevid")
    assert "fixedtpm" in str(area.objectAttributes).lower()


def test_tpm2_rsa_key_signs_pkcs1_and_pss(rot: Tpm2RootOfTrust) -> None:
    key = rot.generate_key("other", KeySpec(KeyAlgorithm.RSA_2048))
    public = key.public_key()
    for pad in (
        padding.PKCS1v15(),
        padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
    ):
        signature = key.sign(b"firmware", pad, hashes.SHA256())
        public.verify(signature, b"firmware", pad, hashes.SHA256())  # type: ignore[arg-type]
    with pytest.raises(UnsupportedError, match="salt"):
        key.sign(b"x", padding.PSS(padding.MGF1(hashes.SHA256()), 5), hashes.SHA256())


def test_tpm2_key_errors(rot: Tpm2RootOfTrust) -> None:
    with pytest.raises(KeyNotFoundError, match="no key 'idevid'"):
        rot.key("idevid")
    rot.generate_key("idevid", EC)
    with pytest.raises(KeyExistsError):
        rot.generate_key("idevid", EC)


def test_tpm2_iak_is_restricted_and_refuses_host_digests(rot: Tpm2RootOfTrust) -> None:
    iak = rot.generate_key("iak", EC)
    assert "restricted" in str(rot.public_area("iak").objectAttributes).lower()
    with pytest.raises(UnsupportedError, match="restricted"):
        iak.sign(b"anything", ec.ECDSA(hashes.SHA256()))


def test_tpm2_objects_round_trip_and_replace(rot: Tpm2RootOfTrust) -> None:
    rot.store_object("cert", b"A" * 1500)
    assert rot.load_object("cert") == b"A" * 1500
    rot.store_object("cert", b"short")
    assert rot.load_object("cert") == b"short"
    rot.delete_object("cert")
    with pytest.raises(KeyNotFoundError):
        rot.load_object("cert")
    with pytest.raises(UnsupportedError):
        rot.store_object("big", bytes(4096))


def test_tpm2_counter_only_goes_up(rot: Tpm2RootOfTrust) -> None:
    counter = rot.counter("rollback")
    start = counter.read()
    assert counter.advance_to(start + 3) == start + 3
    assert counter.advance_to(start) == start + 3
    assert rot.counter("rollback").read() == start + 3
    with pytest.raises(ConfigError):
        counter.advance_to(start + 100_000)


def test_tpm2_lock_freezes_objects(swtpm: Swtpm, rot: Tpm2RootOfTrust) -> None:
    rot.store_object("locked-cert", b"certificate")
    rot.lock()
    with pytest.raises(RotLockedError):
        rot.store_object("locked-cert", b"other")
    tpm = rot._tpm
    index = rot.options.nv_index("locked-cert")
    handle = tpm.esys.tr_from_tpmpublic(index)
    with pytest.raises(RotError, match="NV_Write failed"):
        tpm.call("NV_Write", tpm.esys.nv_write, handle, b"x", 0, ESYS_TR.OWNER)
    assert rot.load_object("locked-cert") == b"certificate"
    _nv.undefine(tpm, index)


def test_tpm2_random(rot: Tpm2RootOfTrust) -> None:
    assert len(rot.random(100)) == 100
    assert rot.random(32) != rot.random(32)
    with pytest.raises(ConfigError):
        rot.random(-1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs tcti"),
        ({"tcti": "bogus:x"}, "unknown TCTI"),
        ({"tcti": "swtpm:", "handles": {"idevid": "0x01000000"}}, "outside"),
        ({"tcti": "swtpm:", "colour": "red"}, "unknown"),
        ({"tcti": "swtpm:", "iak_algorithm": "dsa"}, "iak_algorithm"),
    ],
)
def test_tpm2_options_are_checked(options: dict[str, object], message: str) -> None:
    from keyfab.rot.tpm2 import open_device

    with pytest.raises(ConfigError, match=message):
        open_device(options, 0)


def test_tpm2_unreachable_tpm_is_one_line_error() -> None:
    with pytest.raises(RotError, match="tpm2"):
        open_rot("tpm2:tcti=swtpm:host=127.0.0.1,port=9")


_CRASHING_CLIENT = """
import os, sys
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR
from tpm2_pytss.types import TPM2B_PUBLIC
from keyfab.rot.tpm2._templates import key_template
from keyfab.rot.base import KeyAlgorithm
esys = ESAPI(TCTILdr("swtpm", sys.argv[1]))
template, _ = TPM2B_PUBLIC.unmarshal(key_template(KeyAlgorithm.EC_P256, restricted=False))
for _ in range(3):
    esys.create_primary(None, template, ESYS_TR.ENDORSEMENT)
os._exit(0)
"""


def test_tpm2_leftovers_of_a_crashed_client_are_flushed(swtpm: Swtpm) -> None:
    """A client that dies with every transient slot full must not starve the next one."""
    conf = swtpm.tcti.removeprefix("swtpm:")
    subprocess.run([sys.executable, "-c", _CRASHING_CLIENT, conf], check=True, capture_output=True)
    with swtpm.open() as next_client:
        assert next_client.transient_count() == 0
        next_client.generate_key("idevid", EC)
        next_client.certify("idevid", b"n" * 32)
        next_client.delete_key("idevid")
        next_client.delete_key("iak")


def test_tpm2_two_hundred_devices_leak_no_handles(swtpm: Swtpm) -> None:
    """The whole per-device flow 200 times on one TPM: no transient object survives."""
    for round_ in range(200):
        with swtpm.open() as device:
            key = device.generate_key("idevid", EC)
            key.sign(b"csr", ec.ECDSA(hashes.SHA256()))
            device.certify("idevid", round_.to_bytes(8, "big"))
            device.store_object("cert", b"c" * 600)
            assert device.transient_count() == 0
            device.delete_key("idevid")
            device.delete_key("iak")
            device.delete_object("cert")
