"""Does a device certificate chain to one of the given roots? (policy, not format)

The check runs in ``cryptography.x509.verification`` with keyfab's explicit
device policy (``keyfab.pki.device_verifier``): secure-element identity
certificates lack the TLS EKU and SAN that the web-PKI defaults demand, so the
end entity needs a critical key usage allowing ``digitalSignature`` and must not
be a CA; CAs get the web-PKI defaults.

Real parts carry certificates that are not strictly DER (the list is
``keyfab.manifest._deviations.TOLERATED``: GeneralizedTime before 2050,
PrintableStrings outside their alphabet), which the verifier refuses for the
encoding alone. When the verifier refuses a chain, keyfab looks for those
deviations in the certificates' own bytes; only if it finds one does it
re-check the same path explicitly (issuer names, signatures over the original
bytes, validity, CA basic constraints, key usage, path length), reading the
certificates through their strict equivalents. Otherwise the refusal stands.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509 import verification as xv

from keyfab import pki
from keyfab.errors import VerificationError
from keyfab.manifest._deviations import names, normalise
from keyfab.pki.keypolicy import SIGNATURE_HASHES

MAX_DEPTH = 4
_Ext = TypeVar("_Ext", bound=x509.ExtensionType)
_UNDERSTOOD = frozenset(
    {
        x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
        x509.oid.ExtensionOID.KEY_USAGE,
        x509.oid.ExtensionOID.EXTENDED_KEY_USAGE,
        x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    }
)


def verify_device_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: datetime.datetime,
) -> list[x509.Certificate]:
    """The validated chain from ``leaf`` to a root, or VerificationError."""
    verifier = pki.device_verifier(roots, at=at, max_depth=MAX_DEPTH)
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except xv.VerificationError as error:
        refusal = _short(error)
    tolerated = {d for c in (leaf, *intermediates) for d in normalise(c).deviations}
    if not tolerated:
        raise VerificationError(f"device certificate chain: {refusal}")
    try:
        return _explicit_path(leaf, intermediates, roots, at)
    except VerificationError as error:
        raise VerificationError(f"{error} (with tolerated {names(tolerated)})") from None


def _short(error: Exception) -> str:
    return str(error).split(" (encountered", 1)[0].removeprefix("validation failed: ")


def _explicit_path(
    leaf_certificate: x509.Certificate,
    intermediate_certificates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: datetime.datetime,
) -> list[x509.Certificate]:
    """The same path checks, for chains the verifier refuses only for tolerated encodings.

    Signatures are checked on the original certificates; everything read from
    a certificate (validity, extensions) comes from its strict equivalent.
    """
    leaf = normalise(leaf_certificate)
    intermediates = [normalise(c) for c in intermediate_certificates]
    _check_leaf(leaf.strict, at)
    strict = {id(item.original): item.strict for item in intermediates}
    originals = [item.original for item in intermediates]
    chain = [leaf.original]
    for depth in range(MAX_DEPTH):
        current = chain[-1]
        root = _issuer_in(current, roots)
        if root is not None:
            _check_ca(root, depth, at, anchor=True)
            return [*chain, root]
        issuer = _issuer_in(current, originals)
        if issuer is None or issuer in chain:
            break
        _check_ca(strict[id(issuer)], depth, at, anchor=False)
        chain.append(issuer)
    raise VerificationError("device certificate chain: candidates exhausted: no path to a root")


def _issuer_in(
    child: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    algorithm = child.signature_hash_algorithm
    if algorithm is None or algorithm.name not in SIGNATURE_HASHES:
        raise VerificationError(
            "device certificate chain: a certificate is signed with a weak or unknown hash"
        )
    for candidate in candidates:
        try:
            child.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def _check_common(cert: x509.Certificate, at: datetime.datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise VerificationError(f"device certificate chain: {what} is not valid at {at}")
    for extension in cert.extensions:
        if extension.critical and extension.oid not in _UNDERSTOOD:
            raise VerificationError(
                f"device certificate chain: {what} has unknown critical extension "
                f"{extension.oid.dotted_string}"
            )


def _check_leaf(leaf: x509.Certificate, at: datetime.datetime) -> None:
    _check_common(leaf, at, "device certificate")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise VerificationError("device certificate chain: no key usage") from None
    if not usage.critical or not usage.value.digital_signature:
        raise VerificationError(
            "device certificate chain: key usage must be critical and allow digitalSignature"
        )
    constraints = _extension(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise VerificationError("device certificate chain: device certificate is a CA")


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_ca(ca: x509.Certificate, below: int, at: datetime.datetime, anchor: bool) -> None:
    _check_common(ca, at, "trust anchor" if anchor else "intermediate CA")
    constraints = _extension(ca, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise VerificationError("device certificate chain: an issuer is not a CA")
    if constraints.path_length is not None and below > constraints.path_length:
        raise VerificationError("device certificate chain: path length constraint exceeded")
    usage = _extension(ca, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise VerificationError("device certificate chain: an issuer may not sign certificates")
