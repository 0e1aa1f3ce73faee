"""The puf root of trust: keys re-derived from a (simulated or dumped) SRAM start-up pattern."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyfab.errors import (
    ConfigError,
    KeyExistsError,
    KeyNotExportableError,
    KeyNotFoundError,
    RotError,
    RotLockedError,
    UnsupportedError,
)
from keyfab.rot import KeyAlgorithm, KeySpec, load_key
from keyfab.rot.drivers import open_device
from keyfab.rot.puf import HELPER_LABEL, STATE_FILE, PufRootOfTrust
from keyfab.rot.puf.extractor import (
    RESPONSE_BITS,
    HelperDataError,
    PufReconstructionError,
    enrol,
    helper_size,
    parse_helper,
    reconstruct,
)
from keyfab.rot.puf.sources import ModelSource, write_dump

P256 = KeySpec(KeyAlgorithm.EC_P256)
CELLS = 16384


def _open(directory: Path, **model: object) -> PufRootOfTrust:
    rot = open_device("puf", {"path": str(directory), **model}, 0)
    assert isinstance(rot, PufRootOfTrust)
    return rot


def _state(directory: Path) -> bytes:
    return (directory / STATE_FILE).read_bytes()


def test_the_key_comes_back_from_the_silicon_alone(tmp_path: Path) -> None:
    first = _open(tmp_path / "d")
    public = first.generate_key("idevid", P256).public_key()
    first.close()
    again = _open(tmp_path / "d")
    assert again.info.unique_id == first.info.unique_id
    key = again.key("idevid")
    assert key.public_key() == public
    signature = key.sign(b"msg", ec.ECDSA(hashes.SHA256()))
    public.verify(signature, b"msg", ec.ECDSA(hashes.SHA256()))


def test_no_private_key_is_stored(tmp_path: Path) -> None:
    rot = _open(tmp_path / "d")
    key = rot.generate_key("idevid", P256)
    rot.close()
    with pytest.raises(KeyNotExportableError):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    assert [p.name for p in (tmp_path / "d").iterdir()] == [STATE_FILE]
    state = json.loads(_state(tmp_path / "d"))
    assert set(state) == {"power_ups", "keys", "objects", "counters", "locked"}
    assert state["keys"] == {"idevid": "ec-p256"}
    assert "PRIVATE" not in _state(tmp_path / "d").decode()


def test_two_chips_are_two_identities_and_two_keys(tmp_path: Path) -> None:
    a, b = _open(tmp_path / "a"), _open(tmp_path / "b")
    assert a.info.unique_id != b.info.unique_id
    assert a.generate_key("k", P256).public_key() != b.generate_key("k", P256).public_key()
    assert a.key("k").public_key() != a.generate_key("j", P256).public_key()


def test_the_same_chip_name_is_the_same_silicon(tmp_path: Path) -> None:
    a = _open(tmp_path / "a", chip="chip-7")
    a.generate_key("k", P256)
    a.close()
    moved = tmp_path / "b"
    moved.mkdir()
    (moved / STATE_FILE).write_bytes(_state(tmp_path / "a"))
    assert _open(moved, chip="chip-7").key("k").public_key() == a.key("k").public_key()


def test_a_drifted_chip_fails_with_the_named_reason_and_writes_nothing(tmp_path: Path) -> None:
    _open(tmp_path / "d").close()
    before = _state(tmp_path / "d")
    with pytest.raises(PufReconstructionError) as error:
        _open(tmp_path / "d", temperature=150, age=50)  # far past what the code corrects
    assert str(error.value).startswith("PUF reconstruction failed")
    assert "\n" not in str(error.value)
    assert _state(tmp_path / "d") == before
    assert _open(tmp_path / "d", temperature=40).info.unique_id  # a mild change is corrected


def _helper(directory: Path) -> bytes:
    return base64.b64decode(json.loads(_state(directory))["objects"][HELPER_LABEL])


def _set_helper(directory: Path, helper: bytes) -> None:
    state = json.loads(_state(directory))
    state["objects"][HELPER_LABEL] = base64.b64encode(helper).decode()
    (directory / STATE_FILE).write_text(json.dumps(state))


@pytest.mark.parametrize("index", [20, helper_size(CELLS) - 100, helper_size(CELLS) - 1])
def test_one_flipped_bit_of_helper_data_fails_like_drift(tmp_path: Path, index: int) -> None:
    """An offset bit the code would correct still fails: no success/failure oracle."""
    _open(tmp_path / "d").close()
    helper = bytearray(_helper(tmp_path / "d"))
    helper[index] ^= 0x01
    _set_helper(tmp_path / "d", bytes(helper))
    with pytest.raises((PufReconstructionError, HelperDataError)):
        _open(tmp_path / "d")


def test_another_devices_helper_data_fails(tmp_path: Path) -> None:
    _open(tmp_path / "a").close()
    _open(tmp_path / "b").close()
    _set_helper(tmp_path / "b", _helper(tmp_path / "a"))
    before = _state(tmp_path / "b")
    with pytest.raises(PufReconstructionError):
        _open(tmp_path / "b")
    assert _state(tmp_path / "b") == before


def test_truncated_helper_data_is_one_line(tmp_path: Path) -> None:
    _open(tmp_path / "d").close()
    _set_helper(tmp_path / "d", _helper(tmp_path / "d")[:-7])
    with pytest.raises(HelperDataError, match=r"^PUF helper data has 1323 bytes, expected 1330"):
        _open(tmp_path / "d")


def test_the_seam_operations(tmp_path: Path) -> None:
    rot = _open(tmp_path / "d")
    rot.generate_key("idevid", P256)
    assert rot.generate_key("p384", KeySpec(KeyAlgorithm.EC_P384)).key_size == 384
    with pytest.raises(KeyExistsError):
        rot.generate_key("idevid", P256)
    with pytest.raises(UnsupportedError):
        rot.generate_key("r", KeySpec(KeyAlgorithm.RSA_2048))
    with pytest.raises(KeyNotFoundError):
        rot.key("none")
    assert len(rot.random(32)) == 32
    assert rot.random(32) != rot.random(32)
    rot.store_object("cert", b"\x30\x03")
    assert rot.load_object("cert") == b"\x30\x03"
    with pytest.raises(ConfigError):
        rot.store_object(HELPER_LABEL, b"x")
    assert rot.certify("idevid", b"n") is None
    assert rot.counter("rollback").advance_to(3) == 3
    rot.lock()
    with pytest.raises(RotLockedError):
        rot.store_object("cert", b"y")
    reopened = _open(tmp_path / "d")
    assert reopened.locked
    assert reopened.counter("rollback").read() == 3
    assert reopened.load_object("cert") == b"\x30\x03"
    digest = hashlib.sha256(reopened.load_object(HELPER_LABEL)).hexdigest()
    assert reopened.enrolment_record() == {
        "format": "keyfab-puf-v1",
        "helper_data_sha256": digest,
    }


def test_a_key_uri_opens_the_device(tmp_path: Path) -> None:
    rot = _open(tmp_path / "d")
    public = rot.generate_key("idevid", P256).public_key()
    rot.close()
    assert load_key(f"puf:path={tmp_path / 'd'};object=idevid").public_key() == public
    with pytest.raises(ConfigError, match="non-numeric"):
        load_key(f"puf:path={tmp_path / 'd'};object=idevid;ber=high")


def _dumps(directory: Path, chip: str, count: int, **conditions: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model = ModelSource(chip, CELLS, 0.08, **conditions)
    for n in range(count):
        write_dump(directory / f"{n:04d}.bin", model.dump())
    return directory


def test_dump_files_are_a_source(tmp_path: Path) -> None:
    dumps = _dumps(tmp_path / "dumps", "lab-chip", 8)
    options = {"path": str(tmp_path / "d"), "source": "files", "dumps": str(dumps)}
    rot = open_device("puf", options, 0)
    public = rot.generate_key("k", P256).public_key()
    rot.close()
    assert open_device("puf", options, 0).key("k").public_key() == public
    assert json.loads(_state(tmp_path / "d"))["power_ups"] == 6  # 5 to enrol, 1 per opening


def test_a_dump_of_the_wrong_size_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    dumps = _dumps(tmp_path / "dumps", "lab-chip", 1)
    (dumps / "0001.bin").write_bytes(bytes(1000))
    options = {"path": str(tmp_path / "d"), "source": "files", "dumps": str(dumps)}
    with pytest.raises(RotError, match=r"^PUF dump .*0001.bin has 1000 bytes, expected 2048$"):
        open_device("puf", options, 0)
    assert not (tmp_path / "d").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=helper_size(CELLS) + 8))
def test_helper_data_parser_never_crashes(data: bytes) -> None:
    try:
        parse_helper(data, CELLS)
    except HelperDataError as error:
        message = str(error)
    else:
        return
    assert "\n" not in message


_ENROLLED = enrol(ModelSource("fixed", CELLS, 0.1).read())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.integers(0, helper_size(CELLS) * 8 - 1), min_size=1, max_size=4))
def test_manipulated_helper_data_never_yields_a_seed(flips: list[int]) -> None:
    helper, _ = _ENROLLED
    data = bytearray(helper.to_bytes())
    for bit in set(flips):
        data[bit // 8] ^= 0x80 >> (bit % 8)
    if bytes(data) == helper.to_bytes():
        return
    read = ModelSource("fixed", CELLS, 0.1).read()
    try:
        reconstruct(read, parse_helper(bytes(data), CELLS))
    except (HelperDataError, PufReconstructionError):
        return
    pytest.fail("manipulated helper data reconstructed a seed")


def test_the_enrolment_uses_the_documented_number_of_cells() -> None:
    helper, _ = _ENROLLED
    selection = np.unpackbits(np.frombuffer(helper.selection, np.uint8))
    assert int(selection.sum()) == RESPONSE_BITS
