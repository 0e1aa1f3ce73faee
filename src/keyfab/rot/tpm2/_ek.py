"""The endorsement key: its certificate from NV, its public area, the match between them.

The EK certificate sits in a TCG-defined NV index (EK Credential Profile):
0x01C00002 RSA 2048, 0x01C0000A ECC P-256, 0x01C00016 ECC P-384. The EK itself
is usually persisted (0x81010001, 0x81010002, 0x81010016); if not, the driver
re-creates it from the standard template. Either way the public key must equal
the certificate's, or the certificate is someone else's. Whether the certificate
is trustworthy (chain, vendor) is the verifier's job (keyfab.attest), not ours.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tpm2_pytss.constants import ESYS_TR, TPM2_HT

from keyfab.errors import KeyNotFoundError, RotError, UnsupportedError
from keyfab.rot.base import KeyAlgorithm
from keyfab.rot.tpm2._commands import read_public
from keyfab.rot.tpm2._device import TpmConnection
from keyfab.rot.tpm2._nv import read_nv
from keyfab.rot.tpm2._public import decode_public
from keyfab.rot.tpm2._templates import ek_template

EK_CERT_INDICES = (
    (0x01C00002, KeyAlgorithm.RSA_2048, 0x81010001),
    (0x01C0000A, KeyAlgorithm.EC_P256, 0x81010002),
    (0x01C00016, KeyAlgorithm.EC_P384, 0x81010016),
)
_MAX_CERT = 4096


@dataclass(frozen=True)
class EndorsementKey:
    """The EK as found: its certificate (DER), public area (TPMT_PUBLIC) and where it lives."""

    certificate: bytes
    public_area: bytes
    algorithm: KeyAlgorithm
    persistent_handle: int | None
    spki: bytes  # SubjectPublicKeyInfo DER, equal in the certificate and the TPM


def find_ek(tpm: TpmConnection, wanted: KeyAlgorithm | None = None) -> EndorsementKey:
    """The first EK (of ``wanted`` type) whose certificate is provisioned, checked against it."""
    present = set(tpm.handles(TPM2_HT.NV_INDEX << 24 | 0xC00000))
    for index, algorithm, persistent in EK_CERT_INDICES:
        if index not in present or wanted not in (None, algorithm):
            continue
        der = read_nv(tpm, index, _MAX_CERT)
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            raise RotError(f"tpm2: EK certificate in NV {index:#010x} is not DER X.509") from None
        public_area, handle = _ek_public(tpm, algorithm, persistent)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        _, ek_key = decode_public(public_area)
        tpm_key = ek_key.public_bytes(serialization.Encoding.DER, spki)
        cert_key = certificate.public_key().public_bytes(serialization.Encoding.DER, spki)
        if tpm_key != cert_key:
            raise RotError(f"tpm2: EK certificate in NV {index:#010x} is not for this TPM's EK")
        return EndorsementKey(der, public_area, algorithm, handle, tpm_key)
    kind = f"{wanted.value} " if wanted else ""
    raise RotError(f"tpm2: no {kind}EK certificate in NV (0x01c00002, 0x01c0000a, 0x01c00016)")


def _ek_public(
    tpm: TpmConnection, algorithm: KeyAlgorithm, persistent: int
) -> tuple[bytes, int | None]:
    """The EK's TPMT_PUBLIC: from its persistent handle, or re-created from the template."""
    try:
        return read_public(tpm.transact, persistent), persistent
    except KeyNotFoundError:
        pass
    created = tpm.call(
        "CreatePrimary EK",
        tpm.esys.create_primary,
        None,
        ek_template(algorithm),
        ESYS_TR.ENDORSEMENT,
    )
    with tpm.transient(created[0]):
        return bytes(created[1].publicArea.marshal()), None


def load_ek(tpm: TpmConnection, ek: EndorsementKey) -> ESYS_TR:
    """A transient EK re-created from its template (when nobody persisted it); flush it."""
    created = tpm.call(
        "CreatePrimary EK",
        tpm.esys.create_primary,
        None,
        ek_template(ek.algorithm),
        ESYS_TR.ENDORSEMENT,
    )
    return created[0]


_DIGEST_SIZES = {0x000B: 32, 0x000C: 48, 0x000D: 64}  # SHA-256, SHA-384, SHA-512
_USER_WITH_AUTH = 0x00000040


def ek_policy(public_area: bytes) -> tuple[int, int] | None:
    """How the EK is authorised for use: None if by its (empty) password (userWithAuth),
    else (nameAlg, digest size) of the PolicySecret(endorsement) session it needs."""
    name_alg, attributes = struct.unpack_from(">HI", public_area, 2)  # after type
    if attributes & _USER_WITH_AUTH:
        return None
    if name_alg not in _DIGEST_SIZES:
        raise UnsupportedError(f"tpm2: EK name algorithm {name_alg:#06x} is not supported")
    return name_alg, _DIGEST_SIZES[name_alg]
