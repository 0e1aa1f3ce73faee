"""Verifying TPM evidence: TPM2_Certify (IAK over IDevID), credential activation, quotes.

``verify_certify`` checks one ``tpm2-certify`` Evidence against a nonce and a
Tpm2Policy; ``attest_key`` runs the whole exchange with a device (fresh nonce,
certify, MakeCredential challenge bound to EK and IAK, ActivateCredential
answer) and returns the verified result only if every step holds. Each failure
is one VerificationError line saying which check failed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import serialization

from keyfab.attest import _tpm2_crypto as crypto
from keyfab.attest._ek import verify_ek_certificate
from keyfab.attest._tpm2_wire import (
    ATTEST_MAGIC,
    HASH_NAMES,
    ST_ATTEST_CERTIFY,
    ST_ATTEST_QUOTE,
    TpmAttest,
    TpmPublic,
    parse_attest,
    parse_public,
    parse_signature,
)
from keyfab.attest.policy import Tpm2Policy, missing_attributes
from keyfab.errors import VerificationError
from keyfab.rot import Evidence

CERTIFY_FORMAT = "tpm2-certify"
QUOTE_FORMAT = "tpm2-quote"
_CERTIFY_PARTS = ("attest", "signature", "public", "iak_public", "ek_public", "ek_certificate")


@dataclass(frozen=True)
class CertifiedKey:
    """What verified evidence proves: this key and this IAK live in the TPM of this EK."""

    public_key: crypto.PublicKey
    iak_public_key: crypto.PublicKey
    key_name: bytes
    iak_name: bytes
    ek_public: TpmPublic
    ek_certificate: bytes
    manufacturer: str


def _part(parts: Mapping[str, bytes], name: str) -> bytes:
    if name not in parts:
        raise VerificationError(f"tpm2 evidence lacks its {name!r} part")
    return parts[name]


def _check_attest(attest: TpmAttest, kind: int, nonce: bytes) -> None:
    if attest.magic != ATTEST_MAGIC:
        raise VerificationError("TPMS_ATTEST magic is not TPM_GENERATED_VALUE: not made by a TPM")
    if attest.type != kind:
        raise VerificationError(f"TPMS_ATTEST type is {attest.type:#06x}, expected {kind:#06x}")
    if not hmac.compare_digest(attest.extra_data, nonce):
        raise VerificationError("TPMS_ATTEST extraData does not match the nonce: stale or replayed")


def _spki(key: crypto.PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_iak(iak: TpmPublic, policy: Tpm2Policy) -> crypto.PublicKey:
    """The IAK must be a restricted signing key made in and fixed to its TPM."""
    missing = missing_attributes(iak.attributes, policy.iak_required)
    if missing:
        raise VerificationError(f"IAK is not {', '.join(missing)}")
    if iak.attributes & policy.iak_forbidden:
        raise VerificationError("IAK must be a signing-only key")
    return crypto.public_key(iak)


def verify_certify(evidence: Evidence, nonce: bytes, policy: Tpm2Policy) -> CertifiedKey:
    """Check a TPM2_Certify evidence; return what it proves or raise VerificationError."""
    if evidence.format != CERTIFY_FORMAT:
        raise VerificationError(f"evidence format {evidence.format!r} is not {CERTIFY_FORMAT}")
    parts = {name: _part(evidence.parts, name) for name in _CERTIFY_PARTS}
    ek_public = parse_public(parts["ek_public"])
    missing = missing_attributes(ek_public.attributes, policy.ek_required)
    if missing:
        raise VerificationError(f"EK is not {', '.join(missing)}")
    manufacturer = verify_ek_certificate(
        parts["ek_certificate"], _spki(crypto.public_key(ek_public)), policy
    )
    iak = parse_public(parts["iak_public"])
    iak_key = verify_iak(iak, policy)
    crypto.verify_signature(iak_key, parts["attest"], parse_signature(parts["signature"]))
    attest = parse_attest(parts["attest"])
    _check_attest(attest, ST_ATTEST_CERTIFY, nonce)
    certified = parse_public(parts["public"])
    if not hmac.compare_digest(attest.name, certified.name):
        raise VerificationError("certified name does not match the key's public area")
    missing = missing_attributes(certified.attributes, policy.key_required)
    if missing:
        raise VerificationError(f"certified key is not {', '.join(missing)}")
    return CertifiedKey(
        public_key=crypto.public_key(certified),
        iak_public_key=iak_key,
        key_name=certified.name,
        iak_name=iak.name,
        ek_public=ek_public,
        ek_certificate=parts["ek_certificate"],
        manufacturer=manufacturer,
    )


def make_challenge(certified: CertifiedKey) -> crypto.Credential:
    """A MakeCredential challenge only the TPM with this EK and this IAK can answer."""
    return crypto.make_credential(certified.ek_public, certified.iak_name)


def check_answer(challenge: crypto.Credential, answer: bytes) -> None:
    if not hmac.compare_digest(challenge.secret, answer):
        raise VerificationError(
            "credential activation failed: the IAK is not in the TPM of this EK"
        )


@runtime_checkable
class AttestingRot(Protocol):
    """What ``attest_key`` needs from a root of trust (the tpm2 driver has it)."""

    def certify(self, label: str, nonce: bytes) -> Evidence | None: ...

    def activate_credential(self, credential_blob: bytes, secret: bytes) -> bytes: ...


def attest_key(
    rot: AttestingRot, label: str, policy: Tpm2Policy, nonce: bytes | None = None
) -> tuple[CertifiedKey, Evidence]:
    """The CA-side exchange: certify with a fresh nonce, verify, then credential activation."""
    nonce = nonce if nonce is not None else secrets.token_bytes(32)
    evidence = rot.certify(label, nonce)
    if evidence is None:
        raise VerificationError("the root of trust gave no evidence for its key")
    certified = verify_certify(evidence, nonce, policy)
    challenge = make_challenge(certified)
    check_answer(
        challenge, rot.activate_credential(challenge.credential_blob, challenge.encrypted_secret)
    )
    return certified, evidence


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote that verified: which PCRs, in which bank, with which values."""

    bank: str
    pcrs: tuple[int, ...]
    values: tuple[bytes, ...]
    attest: TpmAttest


def verify_quote(
    evidence: Evidence, nonce: bytes, iak_public_key: crypto.PublicKey
) -> VerifiedQuote:
    """Check a ``tpm2-quote``: IAK signature, magic/type/nonce, PCR digest over the values."""
    if evidence.format != QUOTE_FORMAT:
        raise VerificationError(f"evidence format {evidence.format!r} is not {QUOTE_FORMAT}")
    raw = _part(evidence.parts, "attest")
    crypto.verify_signature(
        iak_public_key, raw, parse_signature(_part(evidence.parts, "signature"))
    )
    attest = parse_attest(raw)
    _check_attest(attest, ST_ATTEST_QUOTE, nonce)
    if len(attest.pcr_select) != 1:
        raise VerificationError("quote must cover exactly one PCR bank")
    selection = attest.pcr_select[0]
    bank = HASH_NAMES[selection.hash_alg]
    values = _split(
        _part(evidence.parts, "pcr_values"), len(selection.pcrs), hashlib.new(bank).digest_size
    )
    digest = hashlib.new(bank, b"".join(values)).digest()
    if not hmac.compare_digest(digest, attest.pcr_digest):
        raise VerificationError("PCR values do not match the quoted PCR digest")
    return VerifiedQuote(bank, selection.pcrs, values, attest)


def _split(data: bytes, count: int, size: int) -> tuple[bytes, ...]:
    if len(data) != count * size:
        raise VerificationError(
            f"expected {count} PCR values of {size} bytes, got {len(data)} bytes"
        )
    return tuple(data[i * size : (i + 1) * size] for i in range(count))


def pcr_values(quote: VerifiedQuote) -> Sequence[tuple[int, bytes]]:
    """(PCR index, value) pairs of a verified quote, for policy comparisons."""
    return list(zip(quote.pcrs, quote.values, strict=True))
