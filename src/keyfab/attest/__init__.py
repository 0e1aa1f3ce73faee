"""Attestation evidence and its verification (TPM key certification, quotes)."""

from keyfab.attest._tpm2_crypto import Credential, make_credential
from keyfab.attest._tpm2_wire import (
    TpmAttest,
    TpmPublic,
    parse_attest,
    parse_public,
    parse_signature,
)
from keyfab.attest.policy import Tpm2Policy, policy_from_options
from keyfab.attest.tpm2 import (
    AttestingRot,
    CertifiedKey,
    VerifiedQuote,
    attest_key,
    check_answer,
    make_challenge,
    verify_certify,
    verify_quote,
)

__all__ = [
    "AttestingRot",
    "CertifiedKey",
    "Credential",
    "Tpm2Policy",
    "TpmAttest",
    "TpmPublic",
    "VerifiedQuote",
    "attest_key",
    "check_answer",
    "make_challenge",
    "make_credential",
    "parse_attest",
    "parse_public",
    "parse_signature",
    "policy_from_options",
    "verify_certify",
    "verify_quote",
]
