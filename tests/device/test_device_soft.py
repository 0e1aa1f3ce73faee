"""The device API on the soft driver: every call, judged by openssl and cryptography."""

from __future__ import annotations

import contextlib
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfab.device import DeviceApi, blob
from keyfab.errors import ConfigError, KeyNotFoundError, VerificationError
from keyfab.rot.soft import SoftRotWarning

pytestmark = pytest.mark.filterwarnings("ignore::keyfab.rot.soft.SoftRotWarning")


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceApi]:
    with DeviceApi.open(f"soft:{tmp_path / 'rot'}", state_dir=tmp_path / "state") as api:
        api.create_key("idevid")
        api.create_key("kex", agreement=True)
        yield api


def test_soft_device_warns(tmp_path: Path) -> None:
    with pytest.warns(SoftRotWarning):
        DeviceApi.open(f"soft:{tmp_path}", state_dir=tmp_path).close()


def test_sign_message_verified_by_openssl(device: DeviceApi, tmp_path: Path) -> None:
    message = b"firmware 1.2.3"
    signature = device.sign("idevid", message=message)
    (tmp_path / "pub.der").write_bytes(device.public_key("idevid"))
    (tmp_path / "sig").write_bytes(signature)
    (tmp_path / "msg").write_bytes(message)
    result = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(tmp_path / "pub.der"),
            "-keyform",
            "DER",
            "-signature",
            str(tmp_path / "sig"),
            str(tmp_path / "msg"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert device.verify("idevid", signature, message=message)
    assert not device.verify("idevid", signature, message=message + b"!")


def test_sign_digest_equals_sign_message(device: DeviceApi) -> None:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"m")
    signature = device.sign("idevid", digest=digest.finalize())
    assert device.verify("idevid", signature, message=b"m")
    with pytest.raises(ConfigError, match="32 bytes"):
        device.sign("idevid", digest=b"short")
    with pytest.raises(ConfigError, match="not both"):
        device.sign("idevid", message=b"m", digest=bytes(32))


def test_ecdh_matches_the_peer(device: DeviceApi) -> None:
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_spki = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ours = serialization.load_der_public_key(device.public_key("kex"))
    assert isinstance(ours, ec.EllipticCurvePublicKey)
    expected = HKDF(hashes.SHA256(), 48, salt=None, info=b"ctx").derive(
        peer.exchange(ec.ECDH(), ours)
    )
    assert device.ecdh("kex", peer_spki, info=b"ctx", length=48) == expected
    with pytest.raises(ConfigError, match="SubjectPublicKeyInfo"):
        device.ecdh("kex", b"junk")


def test_random_and_counters(device: DeviceApi) -> None:
    assert len(device.random(32)) == 32
    assert device.random(32) != device.random(32)
    assert device.counter("fw") == 0
    assert device.increment("fw") == 1
    assert device.increment("fw") == 2
    assert device.counter("fw") == 2


def test_lock_unlock_and_refusals(device: DeviceApi, tmp_path: Path) -> None:
    locked = device.lock(b"wifi password")
    assert b"wifi password" not in locked
    assert device.unlock(locked) == b"wifi password"
    tampered = bytearray(locked)
    tampered[-1] ^= 1
    with pytest.raises(VerificationError, match="changed"):
        device.unlock(bytes(tampered))
    with (
        DeviceApi.open(f"soft:{tmp_path / 'other'}", state_dir=tmp_path / "o") as other,
        pytest.raises(VerificationError, match="another device"),
    ):
        other.unlock(locked)


def test_certificate_from_objects_then_renewed(device: DeviceApi) -> None:
    with pytest.raises(KeyNotFoundError):
        device.certificate()


def test_erase_removes_key_files(device: DeviceApi, tmp_path: Path) -> None:
    locked = device.lock(b"secret")
    assert list((tmp_path / "rot").glob("*.pem"))
    device.erase()
    assert not list((tmp_path / "rot").glob("*.pem"))
    assert not (tmp_path / "rot" / "seal.key").exists()
    with pytest.raises(KeyNotFoundError):
        device.sign("idevid", message=b"x")
    with pytest.raises(VerificationError):
        device.unlock(locked)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_blob_parser_never_crashes(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        blob.decode(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=255))
def test_any_changed_byte_is_refused(
    tmp_path_factory: pytest.TempPathFactory, at: int, value: int
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        api = DeviceApi.open("soft:memory", state_dir=tmp_path_factory.mktemp("s"))
    locked = bytearray(api.lock(b"0123456789"))
    if locked[at] == value:
        return
    locked[at] = value
    with pytest.raises(VerificationError):
        api.unlock(bytes(locked))
