"""TPM 2.0 policy digests for PolicyPCR and PolicyAuthorize, computed in software.

The maker signs a PolicyPCR digest for each firmware release; the device seals
data under PolicyAuthorize(maker key). Both sides need the same digests
(TPM 2.0 Part 3, 23.7 PolicyPCR and 23.16 PolicyAuthorize), and the maker
side needs no TPM, so they live here without any TPM library. The policy
session's hash is SHA-256.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from keyfab.errors import ConfigError

BANKS = {"sha256": (0x000B, 32), "sha384": (0x000C, 48)}
"""PCR banks keyfab binds to: TPM_ALG id and digest size."""
PCR_COUNT = 24
_CC_POLICY_PCR, _CC_POLICY_AUTHORIZE = 0x0000017F, 0x0000016A
_ZERO = bytes(32)


def check_selection(bank: str, pcrs: Sequence[int]) -> tuple[int, ...]:
    """The sorted PCR indices of a selection, or ConfigError naming what is wrong."""
    if bank not in BANKS:
        raise ConfigError(f"PCR bank must be one of {', '.join(BANKS)}, not {bank!r}")
    chosen = tuple(sorted(set(pcrs)))
    if not chosen or any(not 0 <= p < PCR_COUNT for p in chosen):
        raise ConfigError(f"PCRs must be 0 to {PCR_COUNT - 1}, at least one")
    return chosen


def selection(bank: str, pcrs: Sequence[int]) -> bytes:
    """A marshalled TPML_PCR_SELECTION of one bank (three bytes of bitmap)."""
    bitmap = bytearray(3)
    for p in check_selection(bank, pcrs):
        bitmap[p // 8] |= 1 << (p % 8)
    return struct.pack(">IHB", 1, BANKS[bank][0], 3) + bytes(bitmap)


def policy_pcr(bank: str, pcrs: Sequence[int], values: Sequence[bytes]) -> bytes:
    """The PolicyPCR digest for PCR ``values`` (in index order) from an empty policy."""
    chosen = check_selection(bank, pcrs)
    size = BANKS[bank][1]
    if len(values) != len(chosen) or any(len(v) != size for v in values):
        raise ConfigError(f"give one {size}-byte {bank} value per PCR in {list(chosen)}")
    pcr_digest = hashlib.sha256(b"".join(values)).digest()
    return hashlib.sha256(
        _ZERO + struct.pack(">I", _CC_POLICY_PCR) + selection(bank, chosen) + pcr_digest
    ).digest()


def policy_authorize(key_name: bytes, policy_ref: bytes = b"") -> bytes:
    """The PolicyAuthorize digest that lets key ``key_name`` approve policies."""
    first = hashlib.sha256(_ZERO + struct.pack(">I", _CC_POLICY_AUTHORIZE) + key_name).digest()
    return hashlib.sha256(first + policy_ref).digest()


def approval_digest(policy: bytes, policy_ref: bytes = b"") -> bytes:
    """aHash: what the maker signs to approve ``policy`` (TPM2_VerifySignature's digest)."""
    return hashlib.sha256(policy + policy_ref).digest()
