"""Sealing on a PKCS#11 token: AES-GCM with a non-extractable AES key made in the token.

The key (``keyfab-seal``, CKA_SENSITIVE, never CKA_EXTRACTABLE, encrypt and
decrypt only) never leaves the token, so locked data is readable only where it
was locked. The token makes the 96-bit nonce's randomness (C_GenerateRandom);
the tag is 128 bits; the caller's context is the associated data.
"""

from __future__ import annotations

from typing import cast

import pkcs11
import pkcs11.exceptions as p11e
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from keyfab.errors import UnsupportedError, VerificationError

SEAL_LABEL = "keyfab-seal"
_NONCE, _TAG = 12, 16
_ERASED_CLASSES = (
    ObjectClass.PRIVATE_KEY,
    ObjectClass.PUBLIC_KEY,
    ObjectClass.SECRET_KEY,
    ObjectClass.CERTIFICATE,
    ObjectClass.DATA,
)


class _AesKey(pkcs11.EncryptMixin, pkcs11.DecryptMixin):
    """What the sealing key is to the type checker: python-pkcs11 adds the mixins at run time."""


def _key(session: pkcs11.Session, create: bool) -> _AesKey | None:
    found = list(
        session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: SEAL_LABEL})
    )
    if not found and create:
        found = [_generate(session)]
    if not found:
        return None
    key = found[0]
    if not isinstance(key, pkcs11.EncryptMixin) or not isinstance(key, pkcs11.DecryptMixin):
        raise UnsupportedError(f"the token's {SEAL_LABEL!r} key cannot encrypt and decrypt")
    return cast(_AesKey, key)


def _generate(session: pkcs11.Session) -> pkcs11.SecretKey:
    return session.generate_key(
        KeyType.AES,
        256,
        label=SEAL_LABEL,
        store=True,
        template={
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True,
            Attribute.WRAP: False,
            Attribute.UNWRAP: False,
            Attribute.SIGN: False,
            Attribute.VERIFY: False,
            Attribute.DERIVE: False,
        },
    )


def encrypt(
    session: pkcs11.Session, mechanisms: frozenset[Mechanism], data: bytes, aad: bytes
) -> bytes:
    """nonce || ciphertext || tag (CKM_AES_GCM), under the token's sealing key."""
    if Mechanism.AES_GCM not in mechanisms:
        raise UnsupportedError("the token has no AES-GCM (CKM_AES_GCM) to seal with")
    key = _key(session, create=True)
    assert key is not None
    nonce = bytes(session.generate_random(_NONCE * 8))
    params = pkcs11.GCMParams(nonce, aad, _TAG * 8)
    sealed = key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params)
    assert isinstance(sealed, bytes)  # one buffer in, one out (an iterator only for streams)
    return nonce + sealed


def decrypt(session: pkcs11.Session, payload: bytes, aad: bytes) -> bytes:
    """``encrypt``'s data, or VerificationError: another token's, or changed."""
    refused = VerificationError(
        "pkcs11: locked data was not locked by this token, or changed since it was locked"
    )
    key = _key(session, create=False)
    if key is None or len(payload) < _NONCE + _TAG:
        raise refused
    params = pkcs11.GCMParams(payload[:_NONCE], aad, _TAG * 8)
    try:
        data = key.decrypt(payload[_NONCE:], mechanism=Mechanism.AES_GCM, mechanism_param=params)
    # a failed tag check: CKR_ENCRYPTED_DATA_INVALID by the standard, CKR_GENERAL_ERROR in SoftHSM2
    except (
        p11e.EncryptedDataInvalid,
        p11e.EncryptedDataLenRange,
        p11e.FunctionFailed,
        p11e.GeneralError,
    ):
        raise refused from None
    assert isinstance(data, bytes)
    return data


def destroy_all(session: pkcs11.Session) -> int:
    """Destroy every key, certificate and data object the session can see; how many."""
    erased = 0
    for object_class in _ERASED_CLASSES:
        for obj in list(session.get_objects({Attribute.CLASS: object_class})):
            obj.destroy()
            erased += 1
    return erased
