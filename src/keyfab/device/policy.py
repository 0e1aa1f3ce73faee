"""Maker-signed PCR policies: what a firmware release may measure, approved by the maker.

The maker signs the PolicyPCR digest of a release's PCR values with its
policy-signing key (a key URI: ``soft:``, ``pkcs11:``, ``tpm2:`` from the
workspace or recipe). Devices seal under PolicyAuthorize(that key), so a
signed policy is all an update needs to keep locked data readable. A policy
file is small JSON::

    {"format": "keyfab-pcr-policy", "version": 1, "bank": "sha256",
     "pcrs": [0, 7], "policy": "<hex>", "signature": "<base64 DER ECDSA>"}
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from keyfab.errors import ConfigError, VerificationError
from keyfab.rot import pcr_policy
from keyfab.rot.base import PcrApproval, PrivateKey
from keyfab.securefile import read_bounded

FORMAT = "keyfab-pcr-policy"
VERSION = 1
MAX_POLICY_FILE = 4096
_FIELDS = frozenset({"format", "version", "bank", "pcrs", "policy", "signature"})
_MAX_SIGNATURE = 256


def sign_policy(key: PrivateKey, bank: str, values: Mapping[int, bytes]) -> bytes:
    """A signed policy file approving exactly these PCR values (index -> digest)."""
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the policy-signing key must be an EC key (TPMs verify ECDSA here)")
    pcrs = pcr_policy.check_selection(bank, list(values))
    policy = pcr_policy.policy_pcr(bank, pcrs, [values[p] for p in pcrs])
    digest = pcr_policy.approval_digest(policy)
    signature = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    document = {
        "format": FORMAT,
        "version": VERSION,
        "bank": bank,
        "pcrs": list(pcrs),
        "policy": policy.hex(),
        "signature": base64.b64encode(signature).decode(),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def parse_policy(data: bytes) -> PcrApproval:
    """A policy file's content, checked for shape (not yet for its signature)."""
    if len(data) > MAX_POLICY_FILE:
        raise ConfigError(f"PCR policy file is larger than {MAX_POLICY_FILE} bytes")
    try:
        document: Any = json.loads(data)
    except (ValueError, RecursionError):
        raise ConfigError("PCR policy file is not JSON") from None
    if not isinstance(document, dict) or set(document) != _FIELDS:
        raise ConfigError(f"PCR policy file must have exactly: {', '.join(sorted(_FIELDS))}")
    if document["format"] != FORMAT or document["version"] != VERSION:
        raise ConfigError(f"not a {FORMAT} version {VERSION} file")
    pcrs = document["pcrs"]
    bank = document["bank"]
    if not isinstance(bank, str) or not isinstance(pcrs, list):
        raise ConfigError("PCR policy file: bank must be text and pcrs a list")
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in pcrs):
        raise ConfigError("PCR policy file: pcrs must be numbers")
    chosen = pcr_policy.check_selection(bank, pcrs)
    if list(chosen) != pcrs:
        raise ConfigError("PCR policy file: pcrs must be sorted and distinct")
    return PcrApproval(bank, chosen, _hex(document["policy"]), _base64(document["signature"]))


def verify_policy(approval: PcrApproval, authority: bytes) -> None:
    """Check the maker's signature (SPKI DER key) in software before a device stores it."""
    try:
        key = serialization.load_der_public_key(authority)
    except ValueError:
        raise ConfigError("the policy-signing public key is not valid") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("the policy-signing key must be an EC key")
    digest = pcr_policy.approval_digest(approval.policy)
    try:
        key.verify(approval.signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        raise VerificationError(
            "PCR policy is not signed by this device's policy-signing key"
        ) from None


def _hex(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ConfigError("PCR policy file: policy must be 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ConfigError("PCR policy file: policy must be 64 hex digits") from None


def _base64(value: object) -> bytes:
    if not isinstance(value, str) or len(value) > _MAX_SIGNATURE:
        raise ConfigError("PCR policy file: signature must be base64 DER")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ConfigError("PCR policy file: signature must be base64 DER") from None


MAX_PUBLIC_KEY_FILE = 16 * 1024


def read_public_key(path: Path) -> bytes:
    """A public key file (PEM or DER SubjectPublicKeyInfo) as SPKI DER."""
    data = read_bounded(path, MAX_PUBLIC_KEY_FILE, "policy-signing public key")
    try:
        key = (
            serialization.load_pem_public_key(data)
            if data.lstrip().startswith(b"-----")
            else serialization.load_der_public_key(data)
        )
    except ValueError:
        raise ConfigError(f"{path} is not a public key (PEM or DER)") from None
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
