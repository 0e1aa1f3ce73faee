"""The device API on a SoftHSM2 token: every call, erase checked with pkcs11-tool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyfab.device import DeviceApi
from keyfab.errors import KeyNotFoundError, UnsupportedError, VerificationError
from tests.pkcs11.conftest import SoftHsm


def _list_objects(hsm: SoftHsm, token: str) -> str:
    return hsm.tool("--token-label", token, "--login", "--pin", hsm.pin, "--list-objects")


@pytest.fixture
def device(softhsm: SoftHsm, tmp_path: Path) -> Iterator[DeviceApi]:
    with DeviceApi.open(softhsm.uri("agent"), state_dir=tmp_path) as api:
        api.erase()
        api.create_key("idevid")
        api.create_key("kex", agreement=True)
        yield api
        api.erase()


def test_sign_verify(device: DeviceApi) -> None:
    signature = device.sign("idevid", message=b"hello")
    public = serialization.load_der_public_key(device.public_key("idevid"))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"hello", ec.ECDSA(hashes.SHA256()))
    assert device.verify("idevid", signature, message=b"hello")
    assert not device.verify("idevid", signature, message=b"hellO")


def test_ecdh_is_ckm_ecdh1_derive(device: DeviceApi) -> None:
    peer = ec.generate_private_key(ec.SECP256R1())
    ours = serialization.load_der_public_key(device.public_key("kex"))
    assert isinstance(ours, ec.EllipticCurvePublicKey)
    expected = HKDF(hashes.SHA256(), 32, salt=None, info=b"").derive(peer.exchange(ec.ECDH(), ours))
    spki = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert device.ecdh("kex", spki) == expected
    with pytest.raises(UnsupportedError):
        device.ecdh("idevid", spki)  # a signing key may not derive


def test_random_and_no_counters(device: DeviceApi) -> None:
    assert len(device.random(64)) == 64
    with pytest.raises(UnsupportedError, match="monotonic counter"):
        device.counter("fw")


def test_lock_is_token_aes_gcm(device: DeviceApi, softhsm: SoftHsm) -> None:
    locked = device.lock(b"secret data")
    assert device.unlock(locked) == b"secret data"
    listing = _list_objects(softhsm, "agent")
    assert "keyfab-seal" in listing
    tampered = bytearray(locked)
    tampered[50] ^= 0x80
    with pytest.raises(VerificationError, match="changed"):
        device.unlock(bytes(tampered))


def test_erase_destroys_objects(device: DeviceApi, softhsm: SoftHsm) -> None:
    device.lock(b"x")
    assert "idevid" in _list_objects(softhsm, "agent")
    device.erase()
    listing = _list_objects(softhsm, "agent")
    assert "idevid" not in listing
    assert "keyfab-seal" not in listing
    with pytest.raises(KeyNotFoundError):
        device.public_key("idevid")
