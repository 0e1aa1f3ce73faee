"""The device API on swtpm: every call, and lock/unlock across an approved update.

tpm2-tools are the independent judges of PCR state and of what erase removes;
the TPM connection is closed whenever a tool talks to swtpm (one client at a time).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyfab.device import DeviceApi
from keyfab.device.policy import sign_policy
from keyfab.errors import ConfigError, KeyNotFoundError, VerificationError
from tests.tpm2.conftest import LocalCa, Swtpm, SwtpmFactory

pytestmark = pytest.mark.skipif(
    not shutil.which("tpm2_pcrextend"), reason="tpm2-tools not installed"
)
PCRS = (0, 7)


def _tool(swtpm: Swtpm, *args: str) -> bytes:
    result = subprocess.run([args[0], "-T", swtpm.tcti, *args[1:]], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _pcr_values(swtpm: Swtpm, tmp_path: Path) -> dict[int, bytes]:
    """The PCRs as tpm2_pcrread reads them (raw values, index order)."""
    out = tmp_path / "pcrs.bin"
    _tool(swtpm, "tpm2_pcrread", "sha256:" + ",".join(map(str, PCRS)), "-o", str(out))
    raw = out.read_bytes()
    return {p: raw[32 * i : 32 * (i + 1)] for i, p in enumerate(PCRS)}


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def tpm(swtpm_factory: SwtpmFactory, local_ca: LocalCa) -> Swtpm:
    return swtpm_factory(local_ca)  # its own: these tests extend PCRs


@pytest.fixture(scope="module")
def maker() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _open(tpm: Swtpm, state: Path, maker: ec.EllipticCurvePrivateKey) -> DeviceApi:
    return DeviceApi.open(tpm.uri, state_dir=state, pcrs=PCRS, policy_key=_spki(maker))


@pytest.fixture
def device(tpm: Swtpm, tmp_path: Path, maker: ec.EllipticCurvePrivateKey) -> Iterator[DeviceApi]:
    api = _open(tpm, tmp_path / "state", maker)
    yield api
    api.erase()
    api.close()


def test_sign_verify_ecdh_random_counters(device: DeviceApi) -> None:
    device.create_key("idevid")
    signature = device.sign("idevid", message=b"boot ok")
    public = serialization.load_der_public_key(device.public_key("idevid"))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"boot ok", ec.ECDSA(hashes.SHA256()))
    assert device.verify("idevid", signature, message=b"boot ok")
    assert not device.verify("idevid", signature, message=b"boot 0k")

    device.create_key("kex", agreement=True)
    peer = ec.generate_private_key(ec.SECP256R1())
    ours = serialization.load_der_public_key(device.public_key("kex"))
    assert isinstance(ours, ec.EllipticCurvePublicKey)
    expected = HKDF(hashes.SHA256(), 32, salt=None, info=b"i").derive(
        peer.exchange(ec.ECDH(), ours)
    )
    assert device.ecdh("kex", _spki(peer), info=b"i") == expected

    assert len(device.random(100)) == 100
    start = device.counter("fw")
    assert device.increment("fw") == start + 1
    assert device.counter("fw") == start + 1


def test_unlock_survives_an_approved_update_only(
    tpm: Swtpm, tmp_path: Path, maker: ec.EllipticCurvePrivateKey
) -> None:
    state = tmp_path / "state"
    release_1 = sign_policy(_wrap(maker), "sha256", _pcr_values(tpm, tmp_path))
    with _open(tpm, state, maker) as device:
        with pytest.raises(VerificationError, match="match no policy"):
            device.lock(b"data")  # nothing approved yet: refuse rather than lose the data
        device.apply_policy(release_1)
        locked = device.lock(b"database key")
        assert device.unlock(locked) == b"database key"

    _tool(tpm, "tpm2_pcrextend", f"7:sha256={'ab' * 32}")  # an unauthorised change
    with (
        _open(tpm, state, maker) as device,
        pytest.raises(VerificationError, match="match no policy"),
    ):
        device.unlock(locked)

    release_2 = sign_policy(_wrap(maker), "sha256", _pcr_values(tpm, tmp_path))
    with _open(tpm, state, maker) as device:
        device.apply_policy(release_2)  # the maker approves the new state
        assert device.unlock(locked) == b"database key"
        device.erase()


def test_forged_policies_are_refused(
    tpm: Swtpm, tmp_path: Path, maker: ec.EllipticCurvePrivateKey
) -> None:
    state = tmp_path / "state"
    rogue = ec.generate_private_key(ec.SECP256R1())
    values = _pcr_values(tpm, tmp_path)
    with _open(tpm, state, maker) as device:
        with pytest.raises(VerificationError, match="not signed by"):
            device.apply_policy(sign_policy(_wrap(rogue), "sha256", values))
        device.apply_policy(sign_policy(_wrap(maker), "sha256", values))
        locked = device.lock(b"x")
        # a rogue policy dropped into the state directory: the TPM checks the signature
        for path in (state / "policies").glob("*.json"):
            path.write_bytes(sign_policy(_wrap(rogue), "sha256", values))
        with pytest.raises(VerificationError, match="does not verify"):
            device.unlock(locked)
        with pytest.raises(ConfigError, match="this product binds"):
            device.apply_policy(sign_policy(_wrap(maker), "sha256", {0: values[0]}))
        device.erase()


def test_foreign_and_tampered_blobs(
    swtpm_factory: SwtpmFactory,
    local_ca: LocalCa,
    tpm: Swtpm,
    tmp_path: Path,
    maker: ec.EllipticCurvePrivateKey,
) -> None:
    with _open(tpm, tmp_path / "a", maker) as device:
        device.apply_policy(sign_policy(_wrap(maker), "sha256", _pcr_values_open(device)))
        locked = device.lock(b"only here")
        tampered = bytearray(locked)
        tampered[-1] ^= 1
        with pytest.raises(VerificationError, match="changed"):
            device.unlock(bytes(tampered))
        device.erase()
    other = swtpm_factory(local_ca)
    with (
        _open(other, tmp_path / "b", maker) as stranger,
        pytest.raises(VerificationError, match="another device"),
    ):
        stranger.unlock(locked)


def test_erase_evicts_and_undefines(
    tpm: Swtpm, tmp_path: Path, maker: ec.EllipticCurvePrivateKey
) -> None:
    with _open(tpm, tmp_path / "s", maker) as device:
        device.create_key("idevid")
        device.increment("fw")
        device.rot.store_object("idevid-cert", b"not really a certificate")
        device.apply_policy(sign_policy(_wrap(maker), "sha256", _pcr_values_open(device)))
        device.lock(b"x")  # makes the storage key
    before = _tool(tpm, "tpm2_getcap", "handles-persistent").decode()
    assert re.search(r"0x8102", before)
    with _open(tpm, tmp_path / "s", maker) as device:
        device.erase()
        with pytest.raises(KeyNotFoundError):
            device.public_key("idevid")
    after = _tool(tpm, "tpm2_getcap", "handles-persistent").decode()
    assert "0x8102" not in after.lower()
    assert "0x81010001" in after.lower() or "0x81010002" in after.lower()  # the EK stays
    nv = _tool(tpm, "tpm2_getcap", "handles-nv-index").decode().lower()
    assert not re.search(r"0x011|0x012", nv)
    assert "0x1c0000" in nv  # the EK certificates stay


def _pcr_values_open(device: DeviceApi) -> dict[int, bytes]:
    from keyfab.rot.tpm2 import _seal

    return dict(zip(PCRS, _seal.read_pcrs(device.rot._tpm, "sha256", PCRS), strict=True))  # type: ignore[attr-defined]


def _wrap(key: ec.EllipticCurvePrivateKey):  # type: ignore[no-untyped-def]
    from keyfab.rot.soft import _wrap as wrap

    return wrap("maker", key)
