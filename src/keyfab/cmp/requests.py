"""What a CMP request body asks for, with its proof of possession checked.

Policy (who may have which certificate) is ``authority.enrolment``'s; this
module only turns CRMF (RFC 4211), PKCS#10 and RevDetails into the plain
values enrolment and revocation take: a proven public key, the serialNumbers
a subject names, a certificate serial number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc2314

from keyfab import pki
from keyfab.cmp._errors import CmpError
from keyfab.cmp.messages import encode, fill, name_serials, spki_der
from keyfab.cmp.protection import check_pop
from keyfab.errors import VerificationError
from keyfab.pki import RevocationReason
from keyfab.pki.ca import PublicKey

P10_REQUEST_ID = -1  # RFC 9483 §4.1.4: the certReqId answering a p10cr
_REASON_CODE = "2.5.29.21"


@dataclass(frozen=True)
class KeyRequest:
    """A request for a certificate: its id, the proven key, the serialNumbers it names."""

    request_id: int
    public_key: PublicKey
    named_serials: list[str]


def _public_key(der: bytes) -> PublicKey:
    try:
        key = load_der_public_key(der)
    except ValueError:
        raise CmpError("badCertTemplate", "the requested public key is unreadable") from None
    try:
        pki.check_public_key(key)
    except pki.KeyNotAllowedError as error:
        raise CmpError("badCertTemplate", str(error)) from None
    return key  # type: ignore[return-value]


def crmf(messages: Any) -> KeyRequest:
    """The one CertReqMsg of an ir/cr/kur (RFC 9483 §4.1.1), its POP signature checked."""
    if len(messages) != 1:
        raise CmpError("badRequest", "send exactly one certificate request")
    request, pop = messages[0]["certReq"], messages[0]["pop"]
    template = request["certTemplate"]
    if not template["publicKey"].isValue:
        raise CmpError("badCertTemplate", "the template names no public key")
    public_key = _public_key(spki_der(template["publicKey"]))
    if not pop.isValue or pop.getName() != "signature":
        raise CmpError("badPOP", "proof of possession must be a signature")
    signing = pop["signature"]
    if signing["poposkInput"].isValue:
        raise CmpError("badPOP", "poposkInput is for templates without a subject: not supported")
    signature = signing["signature"].asOctets()
    check_pop(signing["algorithmIdentifier"], public_key, encode(request), signature)
    return KeyRequest(int(request["certReqId"]), public_key, name_serials(template["subject"]))


def p10(request: Any) -> KeyRequest:
    """A p10cr's PKCS#10 request, its signature and key checked as EST checks them."""
    try:
        csr = x509.load_der_x509_csr(encode(fill(rfc2314.CertificationRequest(), request)))
        public_key = pki.check_csr(csr)
    except ValueError:
        raise CmpError("badDataFormat", "unreadable PKCS#10 request") from None
    except VerificationError as error:
        raise CmpError("badPOP", str(error)) from None
    serials = [str(a.value) for a in csr.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)]
    return KeyRequest(P10_REQUEST_ID, public_key, serials)


@dataclass(frozen=True)
class RevokeRequest:
    serial_number: str  # lowercase hex, as the registry keys certificates
    issuer: bytes  # DER Name
    reason: RevocationReason


def revocation(content: Any) -> RevokeRequest:
    """The one RevDetails of an rr (RFC 9483 §4.2): serialNumber, issuer, reason."""
    if len(content) != 1:
        raise CmpError("badRequest", "revoke exactly one certificate")
    details = content[0]
    template = details["certDetails"]
    if not (template["serialNumber"].isValue and template["issuer"].isValue):
        raise CmpError("badCertId", "name the certificate by issuer and serialNumber")
    number = int(template["serialNumber"])
    if number <= 0:
        raise CmpError("badCertId", "serialNumber must be positive")
    issuer = encode(template["issuer"].getComponentByPosition(0))
    return RevokeRequest(f"{number:x}", issuer, _reason(details["crlEntryDetails"]))


def _reason(extensions: Any) -> RevocationReason:
    for extension in extensions if extensions.isValue else ():
        if str(extension["extnID"]) == _REASON_CODE:
            try:
                code, _ = decoder.decode(bytes(extension["extnValue"]))
            except PyAsn1Error:
                raise CmpError("badRequest", "unreadable reasonCode") from None
            found = [reason for reason in RevocationReason if reason.code == int(code)]
            if not found:
                raise CmpError("badRequest", "unsupported reasonCode: revocation is final")
            return found[0]
    return RevocationReason.UNSPECIFIED


def cert_hash(certificate: x509.Certificate) -> bytes:
    """certConf's certHash (RFC 4210 §5.3.18): the certificate's signature hash over its DER."""
    algorithm = certificate.signature_hash_algorithm or hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate.public_bytes(Encoding.DER))
    return digest.finalize()
