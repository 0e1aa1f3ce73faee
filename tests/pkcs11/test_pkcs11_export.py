"""Every private key keyfab makes in a token resists every way of getting it out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pkcs11
import pkcs11.exceptions as p11e
import pytest
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from keyfab.errors import KeyNotExportableError
from keyfab.rot import KeyAlgorithm, KeySpec, open_rot

if TYPE_CHECKING:
    from .conftest import SoftHsm

ALGORITHMS = [KeyAlgorithm.EC_P256, KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_2048]
SECRET_ATTRIBUTES = {
    KeyType.EC: [Attribute.VALUE],
    KeyType.RSA: [Attribute.PRIVATE_EXPONENT, Attribute.PRIME_1, Attribute.PRIME_2],
}


def test_pkcs11_no_private_key_can_be_exported(softhsm: SoftHsm) -> None:
    rot = open_rot(softhsm.uri("export"))
    made = [rot.generate_key(f"x-{a.value}", KeySpec(a)) for a in ALGORITHMS]
    for key in made:
        with pytest.raises(KeyNotExportableError):
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        with pytest.raises(KeyNotExportableError):
            key.private_numbers()

    token = pkcs11.lib(softhsm.module).get_token(token_label="export")
    with token.open(rw=True) as session:
        wrapping = session.generate_key(
            KeyType.AES,
            256,
            label="wrapper",
            store=False,
            template={Attribute.WRAP: True, Attribute.EXTRACTABLE: True},
        )
        privates = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        assert len(privates) == len(ALGORITHMS)
        for private in privates:
            for attribute in SECRET_ATTRIBUTES[private.key_type]:
                with pytest.raises(p11e.AttributeSensitive):
                    private[attribute]
            with pytest.raises((p11e.KeyUnextractable, p11e.KeyNotWrappable)):
                wrapping.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)
            with pytest.raises(p11e.PKCS11Error):
                private[Attribute.EXTRACTABLE] = True
            with pytest.raises(p11e.PKCS11Error):
                private[Attribute.SENSITIVE] = False
            with pytest.raises(p11e.PKCS11Error):  # a copy may not loosen the flags either
                private.copy({Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False})
            assert private[Attribute.EXTRACTABLE] is False
            assert private[Attribute.SENSITIVE] is True
