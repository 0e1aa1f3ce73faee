"""Sealed data objects under PolicyAuthorize, and the storage key they live under.

A blob's secret (a 32-byte data key) is a TPM sealed data object whose
authPolicy is PolicyAuthorize(maker's policy key): the TPM releases it only in
a policy session that has run PolicyPCR on the current PCRs and then shown a
ticket that the maker signed exactly that PolicyPCR digest. A firmware update
the maker approves comes with a new signed policy; any other change of the
measured boot state leaves no signed policy that matches.

Through ESAPI: policy sessions and external keys are where it helps, and
unsealing is not a hot path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMS_SENSITIVE_CREATE,
    TPMS_SIGNATURE_ECC,
    TPMT_PUBLIC,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF,
)

from keyfab.errors import ConfigError, RotError, UnsupportedError, VerificationError
from keyfab.rot import pcr_policy
from keyfab.rot.base import PcrApproval
from keyfab.rot.tpm2._attest import pcr_selection
from keyfab.rot.tpm2._device import TpmConnection

SRK_LABEL = "keyfab-srk"
"""The label of the storage key sealed objects are created under (a derived handle)."""

_SEALED_ATTRIBUTES = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.NODA
_SRK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
    | TPMA_OBJECT.NODA
)


def create_srk(tpm: TpmConnection, persistent: int) -> None:
    """An ECC P-256 storage primary in the owner hierarchy, persisted at ``persistent``."""
    template = TPM2B_PUBLIC(TPMT_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=_SRK_ATTRIBUTES))
    handle, *_ = tpm.call(
        "CreatePrimary (storage key)", tpm.esys.create_primary, None, template, ESYS_TR.OWNER
    )
    with tpm.transient(handle):
        tpm.call("EvictControl", tpm.esys.evict_control, ESYS_TR.OWNER, handle, persistent)


def authority_public(authority: bytes) -> TPMT_PUBLIC:
    """The maker's policy key (SPKI DER, EC) as a verification-only TPMT_PUBLIC."""
    try:
        key = serialization.load_der_public_key(authority)
    except ValueError:
        raise ConfigError("the policy-signing key is not a valid public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UnsupportedError("tpm2: the policy-signing key must be an EC key")
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TPMT_PUBLIC.from_pem(
        pem, objectAttributes=TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.USERWITHAUTH
    )


def seal(tpm: TpmConnection, parent: ESYS_TR, secret: bytes, authority: bytes) -> bytes:
    """A sealed data object holding ``secret``: TPM2B_PUBLIC || TPM2B_PRIVATE."""
    name = bytes(authority_public(authority).get_name())
    template = TPMT_PUBLIC(
        type=TPM2_ALG.KEYEDHASH,
        nameAlg=TPM2_ALG.SHA256,
        objectAttributes=_SEALED_ATTRIBUTES,
        authPolicy=pcr_policy.policy_authorize(name),
    )
    template.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
    sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(secret)))
    private, public, *_ = tpm.call(
        "Create (sealed data)", tpm.esys.create, parent, sensitive, TPM2B_PUBLIC(template)
    )
    return bytes(public.marshal()) + bytes(private.marshal())


def read_pcrs(tpm: TpmConnection, bank: str, pcrs: Sequence[int]) -> list[bytes]:
    """The current values of ``pcrs`` in ``bank``, in index order."""
    values: list[bytes] = []
    remaining = list(pcr_policy.check_selection(bank, pcrs))
    while remaining:  # PCR_Read returns at most 8 digests per call
        batch, remaining = remaining[:8], remaining[8:]
        _, _, digests = tpm.call("PCR_Read", tpm.esys.pcr_read, pcr_selection(batch, bank))
        values += [bytes(d) for d in digests]
    return values


def unseal(
    tpm: TpmConnection, parent: ESYS_TR, sealed: bytes, authority: bytes, approval: PcrApproval
) -> bytes:
    """The secret, if the PCRs now match ``approval`` and the maker's signature holds."""
    public, at = TPM2B_PUBLIC.unmarshal(sealed)
    private, end = TPM2B_PRIVATE.unmarshal(sealed[at:])
    if at + end != len(sealed):
        raise VerificationError("tpm2: locked data: malformed sealed object")
    verifier = authority_public(authority)
    try:
        handle = tpm.call("Load (sealed data)", tpm.esys.load, parent, private, public)
    except RotError:
        raise VerificationError(
            "tpm2: locked data was not sealed by this TPM, or changed since"
        ) from None
    with tpm.transient(handle) as item, _external(tpm, verifier) as key:
        try:
            ticket = tpm.call(
                "VerifySignature (maker policy)",
                tpm.esys.verify_signature,
                key,
                pcr_policy.approval_digest(approval.policy),
                _signature(approval.signature),
            )
        except RotError:
            raise VerificationError(
                "the maker's signature on the PCR policy does not verify"
            ) from None
        with _policy_session(tpm) as session, _refused_by_policy():
            selection = pcr_selection(list(approval.pcrs), approval.bank)
            tpm.call("PolicyPCR", tpm.esys.policy_pcr, session, b"", selection)
            tpm.call(
                "PolicyAuthorize",
                tpm.esys.policy_authorize,
                session,
                approval.policy,
                bytes(verifier.get_name()),
                ticket,
            )
            data = tpm.call("Unseal", tpm.esys.unseal, item, session1=session)
    return bytes(data)


@contextlib.contextmanager
def _refused_by_policy() -> Iterator[None]:
    """A TPM refusal inside the policy session: the boot state moved under our feet."""
    try:
        yield
    except RotError:
        raise VerificationError(
            "tpm2: unlock refused by the TPM: the PCRs do not satisfy the maker's policy"
        ) from None


@contextlib.contextmanager
def _external(tpm: TpmConnection, public: TPMT_PUBLIC) -> Iterator[ESYS_TR]:
    """The maker's public key, loaded in the owner hierarchy so its tickets count."""
    handle = tpm.call(
        "LoadExternal (maker policy key)",
        tpm.esys.load_external,
        TPM2B_PUBLIC(public),
        None,
        ESYS_TR.OWNER,
    )
    with tpm.transient(handle):
        yield handle


@contextlib.contextmanager
def _policy_session(tpm: TpmConnection) -> Iterator[ESYS_TR]:
    session = tpm.call(
        "StartAuthSession",
        tpm.esys.start_auth_session,
        ESYS_TR.NONE,
        ESYS_TR.NONE,
        TPM2_SE.POLICY,
        TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        TPM2_ALG.SHA256,
    )
    try:
        yield session
    finally:
        with contextlib.suppress(Exception):  # a successful Unseal may have ended it
            tpm.esys.flush_context(session)


def _signature(der: bytes) -> TPMT_SIGNATURE:
    """A DER ECDSA signature as the TPM's TPMT_SIGNATURE (ECDSA with SHA-256)."""
    try:
        r, s = utils.decode_dss_signature(der)
    except ValueError:
        raise VerificationError("the maker's policy signature is malformed") from None
    size = 32 if max(r.bit_length(), s.bit_length()) <= 256 else 48  # P-256 or P-384
    signature = TPMT_SIGNATURE(sigAlg=TPM2_ALG.ECDSA)
    signature.signature.ecdsa = TPMS_SIGNATURE_ECC(
        hash=TPM2_ALG.SHA256, signatureR=r.to_bytes(size, "big"), signatureS=s.to_bytes(size, "big")
    )
    return signature
