"""CMP messages (RFC 4210/9483) in and out, through pyasn1: never hand-written DER.

``decode`` bounds the size before parsing and insists on one whole message;
the builders make the few answers keyfab sends (ip/cp/kup, rp, genp, pollRep,
pkiconf, error). What a message means is ``responder``'s business, how it is
protected ``protection``'s.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, namedtype, tag, univ
from pyasn1_modules import rfc2459, rfc2511, rfc4210

from keyfab.cmp._errors import CmpError

MAX_MESSAGE = 32 * 1024
"""Larger than any request keyfab accepts (a request with a 4096-bit RSA chain is ~6 KiB)."""
PKIX_CMP = "application/pkixcmp"
IMPLICIT_CONFIRM = univ.ObjectIdentifier("1.3.6.1.5.5.7.4.13")
CA_CERTS = univ.ObjectIdentifier("1.3.6.1.5.5.7.4.17")
ROOT_CA_KEY_UPDATE = univ.ObjectIdentifier("1.3.6.1.5.5.7.4.18")  # what genp answers
ROOT_CA_CERT = univ.ObjectIdentifier("1.3.6.1.5.5.7.4.20")  # what genm asks (RFC 9483 §4.3.2)
SERIAL_NUMBER = univ.ObjectIdentifier("2.5.4.5")
ACCEPTED, REJECTION, WAITING = 0, 2, 3  # PKIStatus values keyfab answers with


def decode(der: bytes) -> rfc4210.PKIMessage:
    """One whole PKIMessage, or ``CmpError(badDataFormat)``; the size is checked first."""
    if len(der) > MAX_MESSAGE:
        raise CmpError("badDataFormat", f"a CMP message is at most {MAX_MESSAGE} bytes")
    try:
        message, rest = decoder.decode(der, asn1Spec=rfc4210.PKIMessage())
    except (PyAsn1Error, ValueError, TypeError, IndexError, KeyError):  # every pyasn1 failure
        raise CmpError("badDataFormat", "not a DER PKIMessage") from None
    if rest:
        raise CmpError("badDataFormat", "bytes after the PKIMessage")
    return message


def encode(value: Any) -> bytes:
    return bytes(encoder.encode(value))


def protected_part(header: Any, body: Any) -> bytes:
    """The DER RFC 4210 §5.1.3 protects: SEQUENCE { header, body }."""
    part = rfc4210.ProtectedPart()
    part.setComponentByPosition(0, header)
    part.setComponentByPosition(1, body)
    return encode(part)


def fill(target: Any, source: Any) -> Any:
    """``source``'s components copied into ``target``, a differently tagged twin type.

    pyasn1 keeps the tags with the value, so a certificate decoded untagged
    must be copied into the ``[0] EXPLICIT`` slot that wants it.
    """
    for name in source:
        if source[name].isValue:
            target[name] = source[name]
    return target


def asn1_certificate(certificate: x509.Certificate) -> rfc4210.CMPCertificate:
    value, _ = decoder.decode(
        certificate.public_bytes(Encoding.DER), asn1Spec=rfc4210.CMPCertificate()
    )
    return value


def x509_certificate(value: Any) -> x509.Certificate:
    return x509.load_der_x509_certificate(encode(fill(rfc2459.Certificate(), value)))


def optional(header: Any, name: str) -> bytes | None:
    """An optional OCTET STRING of the header (transactionID, nonces, KIDs), or None."""
    value = header[name]
    return bytes(value) if value.isValue else None


def info_certificate(item: Any) -> x509.Certificate | None:
    """The certificate an InfoTypeAndValue carries (id-it-rootCaCert's), or None if absent."""
    value = item["infoValue"]
    return x509.load_der_x509_certificate(bytes(value)) if value.isValue else None


def general_info(header: Any) -> set[str]:
    """The infoType OIDs in the header's generalInfo, dotted."""
    info = header["generalInfo"]
    return {str(item["infoType"]) for item in info} if info.isValue else set()


def message_time(header: Any) -> datetime.datetime | None:
    value = header["messageTime"]
    if not value.isValue:
        return None
    try:
        moment: datetime.datetime = value.asDateTime
    except (PyAsn1Error, ValueError):
        raise CmpError("badTime", "messageTime is not a GeneralizedTime") from None
    if moment.tzinfo is None:
        raise CmpError("badTime", "messageTime must be in UTC (Z)")
    return moment.astimezone(datetime.UTC)


def name_serials(name: Any) -> list[str]:
    """The serialNumber attribute values of an X.501 Name (the one field policy reads)."""
    found = []
    for rdn in name.getComponentByPosition(0) if name.isValue else ():  # the RDNSequence
        for attribute in rdn:
            if attribute["type"] == SERIAL_NUMBER:
                value, _ = decoder.decode(bytes(attribute["value"]))
                found.append(str(value))
    return found


@dataclass(frozen=True)
class Header:
    """What keyfab puts into an answer's header, from the request and its protection."""

    sender: Any  # GeneralName
    recipient: Any  # the request's sender
    transaction_id: bytes
    recip_nonce: bytes | None
    protection_alg: Any | None = None  # AlgorithmIdentifier
    sender_kid: bytes | None = None
    implicit_confirm: bool = False


def directory_name(certificate: x509.Certificate) -> rfc2459.GeneralName:
    name, _ = decoder.decode(certificate.subject.public_bytes(), asn1Spec=rfc2459.Name())
    general = rfc2459.GeneralName()
    fill(general.getComponentByName("directoryName"), name)
    return general


def header(spec: Header, now: datetime.datetime, nonce: bytes) -> rfc4210.PKIHeader:
    """An answer's header; ``nonce`` (its senderNonce) is chosen before, to be stored."""
    value = rfc4210.PKIHeader()
    value["pvno"] = 2
    value["sender"] = spec.sender
    value["recipient"] = spec.recipient
    value["messageTime"] = value["messageTime"].clone(now.strftime("%Y%m%d%H%M%SZ"))
    if spec.protection_alg is not None:
        fill(value["protectionAlg"], spec.protection_alg)
    if spec.sender_kid is not None:
        value["senderKID"] = value["senderKID"].clone(spec.sender_kid)
    value["transactionID"] = value["transactionID"].clone(spec.transaction_id)
    value["senderNonce"] = value["senderNonce"].clone(nonce)
    if spec.recip_nonce is not None:
        value["recipNonce"] = value["recipNonce"].clone(spec.recip_nonce)
    if spec.implicit_confirm:
        item = value["generalInfo"].getComponentType().clone()  # the size-constrained twin
        item["infoType"] = IMPLICIT_CONFIRM
        value["generalInfo"].append(item)
    return value


def status_info(status: int, text: str | None = None, failure: str | None = None) -> Any:
    info = rfc4210.PKIStatusInfo()
    info["status"] = status
    if text:
        info["statusString"].append(char.UTF8String(text))
    if failure is not None:
        bit = rfc4210.PKIFailureInfo.namedValues[failure]
        info["failInfo"] = rfc4210.PKIFailureInfo(binValue="0" * bit + "1")
    return info


def error_body(failure: str, text: str) -> rfc4210.PKIBody:
    body = rfc4210.PKIBody()
    content = body.getComponentByName("error")
    content["pKIStatusInfo"] = status_info(REJECTION, text, failure)
    return body


def cert_rep_body(
    kind: str,
    request_id: int,
    issued: x509.Certificate | None,
    ca_pubs: Sequence[x509.Certificate] = (),
    waiting: bool = False,
) -> rfc4210.PKIBody:
    """ip/cp/kup: the new certificate, or "waiting" for a deferred request (polling)."""
    body = rfc4210.PKIBody()
    content = body.getComponentByName(kind)
    for certificate in ca_pubs:
        content["caPubs"].append(asn1_certificate(certificate))
    response = rfc4210.CertResponse()
    response["certReqId"] = request_id
    response["status"] = status_info(WAITING if waiting else ACCEPTED)
    if issued is not None:
        slot = response["certifiedKeyPair"]["certOrEncCert"].getComponentByName("certificate")
        fill(slot, asn1_certificate(issued))
    content["response"].append(response)
    return body


def rp_body() -> rfc4210.PKIBody:
    body = rfc4210.PKIBody()
    body.getComponentByName("rp")["status"].append(status_info(ACCEPTED))
    return body


def pkiconf_body() -> rfc4210.PKIBody:
    body = rfc4210.PKIBody()
    body["pkiconf"] = body.getComponentByName("pkiconf").clone("")
    return body


def poll_rep_body(request_id: int, check_after: int, reason: str) -> rfc4210.PKIBody:
    body = rfc4210.PKIBody()
    entry = rfc4210.PollRepContent.CertReq()
    entry["certReqId"] = request_id
    entry["checkAfter"] = check_after
    entry["reason"].append(char.UTF8String(reason))
    body.getComponentByName("pollRep").append(entry)
    return body


def genp_body(answers: Iterable[tuple[univ.ObjectIdentifier, Any | None]]) -> rfc4210.PKIBody:
    """genp: one InfoTypeAndValue per answer; None leaves infoValue absent ("no update")."""
    body = rfc4210.PKIBody()
    content = body.getComponentByName("gen")  # pyasn1-modules names genp "gen"
    for info_type, value in answers:
        item = rfc4210.InfoTypeAndValue()
        item["infoType"] = info_type
        if value is not None:
            item["infoValue"] = univ.Any(encode(value))
        content.append(item)
    return body


def ca_certs(chain: Sequence[x509.Certificate]) -> univ.SequenceOf:
    """id-it-caCerts' value (RFC 9480 §4.3): SEQUENCE OF CMPCertificate."""
    value = univ.SequenceOf(componentType=rfc4210.CMPCertificate())
    for certificate in chain:
        value.append(asn1_certificate(certificate))
    return value


def _explicit(number: int) -> rfc4210.CMPCertificate:
    return rfc4210.CMPCertificate().subtype(
        explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, number)
    )


ROOT_CA_KEY_UPDATE_CONTENT = univ.Sequence(  # RFC 9480 §2.3.2; pyasn1-modules' rfc4210 predates it
    componentType=namedtype.NamedTypes(
        namedtype.NamedType("newWithNew", rfc4210.CMPCertificate()),
        namedtype.OptionalNamedType("newWithOld", _explicit(0)),  # the module is EXPLICIT TAGS
        namedtype.OptionalNamedType("oldWithNew", _explicit(1)),
    )
)


def root_ca_key_update(
    new_with_new: x509.Certificate, new_with_old: x509.Certificate, old_with_new: x509.Certificate
) -> univ.Sequence:
    """id-it-rootCaKeyUpdate's value: the new root and both link certificates."""
    value = ROOT_CA_KEY_UPDATE_CONTENT.clone()
    value["newWithNew"] = asn1_certificate(new_with_new)
    fill(value["newWithOld"], asn1_certificate(new_with_old))
    fill(value["oldWithNew"], asn1_certificate(old_with_new))
    return value


def message(
    head: Any, body: Any, protection: bytes | None, extra: Sequence[x509.Certificate]
) -> bytes:
    value = rfc4210.PKIMessage()
    value["header"] = head
    value["body"] = body
    if protection is not None:
        value["protection"] = value["protection"].clone(hexValue=protection.hex())
    for certificate in extra:
        value["extraCerts"].append(asn1_certificate(certificate))
    return encode(value)


def spki_der(public_key: Any) -> bytes:
    """A CertTemplate's ``[6] IMPLICIT`` publicKey as plain SubjectPublicKeyInfo DER."""
    return encode(fill(rfc2459.SubjectPublicKeyInfo(), public_key))


def cert_request_der(request: rfc2511.CertRequest) -> bytes:
    return encode(request)
