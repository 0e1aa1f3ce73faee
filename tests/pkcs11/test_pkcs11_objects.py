"""Objects and certificates written into a token, read back, and the lock."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pkcs11 import Attribute, ObjectClass

from keyfab.errors import ConfigError, KeyNotFoundError, RotLockedError
from keyfab.rot import KeyAlgorithm, KeySpec, open_rot
from keyfab.rot.pkcs11 import Pkcs11RootOfTrust, open_device

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import MakeCertificate, SoftHsm

PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def rot(softhsm: SoftHsm) -> Pkcs11RootOfTrust:
    opened = open_rot(softhsm.uri("objects"))
    assert isinstance(opened, Pkcs11RootOfTrust)
    return opened


def _certificate_objects(softhsm: SoftHsm, token: str) -> dict[str, bytes]:
    found = pkcs11.lib(softhsm.module).get_token(token_label=token)
    with found.open() as session:
        return {
            obj[Attribute.LABEL]: bytes(obj[Attribute.ID])
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})
        }


def test_pkcs11_chain_is_kept_exactly_and_as_certificate_objects(
    rot: Pkcs11RootOfTrust, softhsm: SoftHsm, make_certificate: MakeCertificate
) -> None:
    ca_key = rot.generate_key("chain-ca", KeySpec(KeyAlgorithm.EC_P384))
    device_key = rot.generate_key("chain-dev", KeySpec(KeyAlgorithm.EC_P256))
    ca = make_certificate("ca", ca_key.public_key(), "ca", ca_key, ca=True)
    leaf = make_certificate("dev", device_key.public_key(), "ca", ca_key)
    chain = leaf.public_bytes(PEM) + ca.public_bytes(PEM)
    rot.store_object("idevid-chain", chain)
    assert rot.load_object("idevid-chain") == chain

    with pkcs11.lib(softhsm.module).get_token(token_label="objects").open() as session:
        device_id = bytes(session.get_key(ObjectClass.PRIVATE_KEY, label="chain-dev").id)
        ca_id = bytes(session.get_key(ObjectClass.PRIVATE_KEY, label="chain-ca").id)
    certificates = _certificate_objects(softhsm, "objects")
    assert certificates["idevid-chain"] == device_id
    assert certificates["idevid-chain.1"] == ca_id

    # Replacing the chain with one certificate leaves no stale chain member behind.
    rot.store_object("idevid-chain", leaf.public_bytes(serialization.Encoding.DER))
    certificates = _certificate_objects(softhsm, "objects")
    assert "idevid-chain.1" not in certificates
    assert certificates["idevid-chain"] == device_id


LABELS = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True).filter(lambda s: ".." not in s)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=4096), label=LABELS)
def test_pkcs11_objects_round_trip(rot: Pkcs11RootOfTrust, data: bytes, label: str) -> None:
    rot.store_object(label, data)
    assert rot.load_object(label) == data


def test_pkcs11_object_limits(rot: Pkcs11RootOfTrust) -> None:
    with pytest.raises(ConfigError, match="larger than 65536 bytes"):
        rot.store_object("huge", bytes(65537))
    with pytest.raises(ConfigError, match="invalid label"):
        rot.store_object("../escape", b"x")
    with pytest.raises(ConfigError, match="reserved for lock"):
        rot.store_object("keyfab-locked", b"not a lock")


def test_pkcs11_device_initialised_from_recipe_then_locked(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    so_pin_file = tmp_path / "so.pin"
    so_pin_file.write_text(softhsm.so_pin)
    options = {
        "module": softhsm.module,
        "token": "line-7",
        "pin_file": str(softhsm.pin_file),
        "initialize": True,
        "so_pin_file": str(so_pin_file),
    }
    rot = open_device(options, slot=7)
    assert rot.name == "line-7"
    again = open_device(options, slot=7)  # found now, not initialised twice
    assert again.info.unique_id == rot.info.unique_id
    rot.generate_key("idevid", KeySpec(KeyAlgorithm.EC_P256))
    rot.store_object("idevid-cert", b"certificate bytes")
    rot.lock()
    rot.lock()  # idempotent
    with pytest.raises(RotLockedError, match="is locked"):
        rot.generate_key("late", KeySpec(KeyAlgorithm.EC_P256))
    with pytest.raises(RotLockedError, match="is locked"):
        again.store_object("late", b"x")
    assert rot.load_object("idevid-cert") == b"certificate bytes"
    assert rot.key("idevid").public_key()


def test_pkcs11_device_options_are_checked(softhsm: SoftHsm) -> None:
    with pytest.raises(ConfigError, match="unknown \\[rot\\] option"):
        open_device({"module": softhsm.module, "token": "x", "colour": "blue"}, slot=0)
    with pytest.raises(ConfigError, match="needs token = or serial ="):
        open_device({"module": softhsm.module}, slot=0)
    with pytest.raises(ConfigError, match="give pin or pin_file, not both"):
        open_device({"module": softhsm.module, "token": "x", "pin": "1", "pin_file": "f"}, 0)
    with pytest.raises(KeyNotFoundError, match="no token matches token=absent-3"):
        open_device({"module": softhsm.module, "token": "absent-3", "pin": softhsm.pin}, 3)
    with pytest.raises(ConfigError, match="initialize must be true or false"):
        open_device({"module": softhsm.module, "token": "absent-5", "initialize": "yes"}, 5)
    with pytest.raises(ConfigError, match="drop serial ="):
        open_device(
            {
                "module": softhsm.module,
                "token": "a",
                "serial": "1",
                "initialize": True,
                "pin": "1",
                "so_pin": "2",
            },
            6,
        )
    with pytest.raises(ConfigError, match="initialize = true needs"):
        open_device({"module": softhsm.module, "token": "absent-4", "initialize": True}, 4)
