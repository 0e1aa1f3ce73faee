"""A small CMP client for the tests and the benchmark, written apart from ``keyfab.cmp``.

OpenSSL 3.0's ``openssl cmp`` cannot send PBMAC1 nor ask for a root CA
update, so these messages are built here with pyasn1-modules, their MACs
computed with ``hashlib``/``hmac`` directly: a second implementation that
judges keyfab's, not a reuse of it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import namedtype, tag, univ
from pyasn1_modules import rfc2459, rfc4210, rfc8018

PBM = univ.ObjectIdentifier("1.2.840.113533.7.66.13")
HMAC_SHA256 = univ.ObjectIdentifier("1.2.840.113549.2.9")
SHA256 = univ.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
ECDSA_SHA256 = univ.ObjectIdentifier("1.2.840.10045.4.3.2")
IMPLICIT_CONFIRM = univ.ObjectIdentifier("1.3.6.1.5.5.7.4.13")
CA_CERTS = univ.ObjectIdentifier("1.3.6.1.5.5.7.4.17")
ROOT_CA_KEY_UPDATE = univ.ObjectIdentifier("1.3.6.1.5.5.7.4.18")
ROOT_CA_CERT = univ.ObjectIdentifier("1.3.6.1.5.5.7.4.20")
_HASHES = {str(HMAC_SHA256): "sha256", str(SHA256): "sha256"}


def der(value: Any) -> bytes:
    return bytes(encoder.encode(value))


def _algorithm(oid: univ.ObjectIdentifier, parameters: Any = None) -> rfc2459.AlgorithmIdentifier:
    value = rfc2459.AlgorithmIdentifier()
    value["algorithm"] = oid
    if parameters is not None:
        value["parameters"] = univ.Any(der(parameters))
    return value


@dataclass(frozen=True)
class Pbmac1:
    """PBMAC1 (RFC 8018 §7.1, RFC 9481 §6.1.1): PBKDF2-HMAC-SHA256, then HMAC-SHA256."""

    secret: bytes
    iterations: int = 10_000

    def algorithm(self) -> rfc2459.AlgorithmIdentifier:
        kdf = rfc8018.PBKDF2_params()
        kdf["salt"]["specified"] = secrets.token_bytes(16)
        kdf["iterationCount"] = self.iterations
        kdf["keyLength"] = 32
        kdf["prf"] = _algorithm(HMAC_SHA256)
        params = rfc8018.PBMAC1_params()
        params["keyDerivationFunc"] = _algorithm(rfc8018.id_PBKDF2, kdf)
        params["messageAuthScheme"] = _algorithm(HMAC_SHA256)
        return _algorithm(rfc8018.id_PBMAC1, params)

    def tag(self, algorithm: Any, data: bytes) -> bytes:
        params, _ = decoder.decode(bytes(algorithm["parameters"]), rfc8018.PBMAC1_params())
        kdf_alg = params["keyDerivationFunc"]
        kdf, _ = decoder.decode(bytes(kdf_alg["parameters"]), rfc8018.PBKDF2_params())
        prf = _HASHES[str(kdf["prf"]["algorithm"])]
        key = hashlib.pbkdf2_hmac(
            prf,
            self.secret,
            bytes(kdf["salt"]["specified"]),
            int(kdf["iterationCount"]),
            int(kdf["keyLength"]),
        )
        return hmac.digest(key, data, _HASHES[str(params["messageAuthScheme"]["algorithm"])])


@dataclass(frozen=True)
class Pbm:
    """PasswordBasedMac (RFC 4210 §5.1.3.1), what ``openssl cmp -secret`` sends."""

    secret: bytes
    iterations: int = 500

    def algorithm(self) -> rfc2459.AlgorithmIdentifier:
        params = rfc4210.PBMParameter()
        params["salt"] = secrets.token_bytes(16)
        params["owf"] = _algorithm(SHA256)
        params["iterationCount"] = self.iterations
        params["mac"] = _algorithm(HMAC_SHA256)
        return _algorithm(PBM, params)

    def tag(self, algorithm: Any, data: bytes) -> bytes:
        params, _ = decoder.decode(bytes(algorithm["parameters"]), rfc4210.PBMParameter())
        key = self.secret + bytes(params["salt"])
        for _ in range(int(params["iterationCount"])):
            key = hashlib.sha256(key).digest()
        return hmac.digest(key, data, "sha256")


Mac = Pbmac1 | Pbm


def _certificate(certificate: x509.Certificate) -> rfc4210.CMPCertificate:
    value, _ = decoder.decode(
        certificate.public_bytes(Encoding.DER), asn1Spec=rfc4210.CMPCertificate()
    )
    return value


def _header(algorithm: Any, kid: bytes | None, implicit: bool) -> rfc4210.PKIHeader:
    head = rfc4210.PKIHeader()
    head["pvno"] = 2
    head["sender"]["directoryName"][""] = rfc2459.RDNSequence()
    head["recipient"]["directoryName"][""] = rfc2459.RDNSequence()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%SZ")
    head["messageTime"] = head["messageTime"].clone(now)
    head["protectionAlg"]["algorithm"] = algorithm["algorithm"]
    if algorithm["parameters"].isValue:
        head["protectionAlg"]["parameters"] = algorithm["parameters"]
    if kid is not None:
        head["senderKID"] = head["senderKID"].clone(kid)
    head["transactionID"] = head["transactionID"].clone(secrets.token_bytes(16))
    head["senderNonce"] = head["senderNonce"].clone(secrets.token_bytes(16))
    if implicit:
        item = head["generalInfo"].getComponentType().clone()
        item["infoType"] = IMPLICIT_CONFIRM
        head["generalInfo"].append(item)
    return head


def _protected(head: Any, body: Any) -> bytes:
    part = rfc4210.ProtectedPart()
    part["header"] = head
    part["infoValue"] = body
    return der(part)


def mac_message(body: Any, mac: Mac, reference: str, *, implicit: bool = False) -> bytes:
    """A PKIMessage around ``body``, MAC-protected under the secret's reference."""
    head = _header(mac.algorithm(), reference.encode(), implicit)
    message = rfc4210.PKIMessage()
    message["header"] = head
    message["body"] = body
    tag = mac.tag(head["protectionAlg"], _protected(head, body))
    message["protection"] = message["protection"].clone(hexValue=tag.hex())
    return der(message)


def signed_message(body: Any, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bytes:
    """A PKIMessage signed (ECDSA-SHA256) by a device key, its certificate in extraCerts."""
    head = _header(_algorithm(ECDSA_SHA256), None, False)
    message = rfc4210.PKIMessage()
    message["header"] = head
    message["body"] = body
    signature = key.sign(_protected(head, body), ec.ECDSA(hashes.SHA256()))
    message["protection"] = message["protection"].clone(hexValue=signature.hex())
    message["extraCerts"].append(_certificate(cert))
    return der(message)


def ir_body(key: ec.EllipticCurvePrivateKey) -> rfc4210.PKIBody:
    """An ir for ``key``'s public key, proven by a signature over the CertRequest."""
    body = rfc4210.PKIBody()
    request = body["ir"].getComponentType().clone()
    template = request["certReq"]["certTemplate"]
    request["certReq"]["certReqId"] = 0
    spki, _ = decoder.decode(
        key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        asn1Spec=rfc2459.SubjectPublicKeyInfo(),
    )
    template["publicKey"]["algorithm"]["algorithm"] = spki["algorithm"]["algorithm"]
    template["publicKey"]["algorithm"]["parameters"] = spki["algorithm"]["parameters"]
    template["publicKey"]["subjectPublicKey"] = spki["subjectPublicKey"]
    signature = key.sign(der(request["certReq"]), ec.ECDSA(hashes.SHA256()))
    pop = request["pop"]["signature"]
    pop["algorithmIdentifier"]["algorithm"] = ECDSA_SHA256
    pop["signature"] = univ.BitString(hexValue=signature.hex())
    body["ir"].append(request)
    return body


def genm_body(*items: tuple[univ.ObjectIdentifier, Any | None]) -> rfc4210.PKIBody:
    body = rfc4210.PKIBody()
    for info_type, value in items:
        item = rfc4210.InfoTypeAndValue()
        item["infoType"] = info_type
        if value is not None:
            item["infoValue"] = univ.Any(der(value))
        body["genm"].append(item)
    return body


def root_ca_cert(root: x509.Certificate) -> tuple[univ.ObjectIdentifier, Any]:
    """genm's id-it-rootCaCert item: the root the device holds (RFC 9483 §4.3.2)."""
    return ROOT_CA_CERT, _certificate(root)


def decode(answer: bytes) -> rfc4210.PKIMessage:
    message, rest = decoder.decode(answer, asn1Spec=rfc4210.PKIMessage())
    assert not rest
    return message


def mac_verifies(answer: rfc4210.PKIMessage, mac: Mac) -> bool:
    """Whether an answer's MAC verifies with the same secret, recomputed here."""
    head = answer["header"]
    expected = mac.tag(head["protectionAlg"], _protected(head, answer["body"]))
    return hmac.compare_digest(expected, answer["protection"].asOctets())


def issued(answer: rfc4210.PKIMessage) -> x509.Certificate:
    """The certificate of an ip/cp/kup (its first response)."""
    body = answer["body"]
    response = body[body.getName()]["response"][0]
    return _x509(response["certifiedKeyPair"]["certOrEncCert"]["certificate"])


def _x509(value: Any) -> x509.Certificate:
    """A (possibly tagged) pyasn1 certificate as cryptography's, through its plain DER."""
    plain = rfc2459.Certificate()
    for name in value:
        plain[name] = value[name]
    return x509.load_der_x509_certificate(der(plain))


def failure(answer: rfc4210.PKIMessage) -> str:
    """The PKIFailureInfo bit an error message carries, by name."""
    info = answer["body"]["error"]["pKIStatusInfo"]["failInfo"]
    names = {value: name for name, value in rfc4210.PKIFailureInfo.namedValues.items()}
    return names[next(i for i, bit in enumerate(info) if bit)]


def genp_values(answer: rfc4210.PKIMessage) -> dict[str, bytes | None]:
    """genp's InfoTypeAndValues: dotted infoType to the value's DER (None when absent)."""
    found: dict[str, bytes | None] = {}
    for item in answer["body"]["gen"]:
        value = item["infoValue"]
        found[str(item["infoType"])] = bytes(value) if value.isValue else None
    return found


def ca_certs(value: bytes) -> list[x509.Certificate]:
    """id-it-caCerts' value (RFC 9480 §2.3.1): SEQUENCE OF CMPCertificate."""
    spec = univ.SequenceOf(componentType=rfc4210.CMPCertificate())
    sequence, rest = decoder.decode(value, asn1Spec=spec)
    assert not rest
    return [_x509(item) for item in sequence]


def _tagged(number: int) -> rfc4210.CMPCertificate:
    return rfc4210.CMPCertificate().subtype(
        explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, number)
    )


_ROOT_CA_KEY_UPDATE = univ.Sequence(
    componentType=namedtype.NamedTypes(
        namedtype.NamedType("newWithNew", rfc4210.CMPCertificate()),
        namedtype.OptionalNamedType("newWithOld", _tagged(0)),
        namedtype.OptionalNamedType("oldWithNew", _tagged(1)),
    )
)


def root_ca_key_update(value: bytes) -> tuple[x509.Certificate, ...]:
    """RootCaKeyUpdateContent (RFC 9480 §2.3.2): newWithNew, newWithOld, oldWithNew."""
    content, rest = decoder.decode(value, asn1Spec=_ROOT_CA_KEY_UPDATE)
    assert not rest
    return tuple(_x509(content[name]) for name in ("newWithNew", "newWithOld", "oldWithNew"))
