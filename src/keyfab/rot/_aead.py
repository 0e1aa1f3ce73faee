"""AES-256-GCM with the caller's associated data, for drivers that seal in software.

The soft driver keeps its sealing key in a file; the tpm2 driver seals a fresh
key per blob in the TPM (a sealed data object holds at most 128 bytes) and
encrypts the data here. Either way a changed byte, a wrong key or changed
associated data fails the tag check and becomes one VerificationError line.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyfab.errors import VerificationError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


def encrypt(key: bytes, data: bytes, aad: bytes) -> bytes:
    """nonce || ciphertext || tag, with a fresh random 96-bit nonce."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def decrypt(key: bytes, payload: bytes, aad: bytes, what: str) -> bytes:
    """``encrypt``'s data back, or VerificationError naming ``what``."""
    if len(payload) < NONCE_BYTES + TAG_BYTES:
        raise VerificationError(f"{what}: truncated")
    try:
        return AESGCM(key).decrypt(payload[:NONCE_BYTES], payload[NONCE_BYTES:], aad)
    except InvalidTag:
        raise VerificationError(
            f"{what}: not locked by this device, or changed since it was locked"
        ) from None
