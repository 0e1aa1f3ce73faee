"""Certificate profiles: what goes into each kind of certificate keyfab issues.

A profile is a template (subject, extensions, validity) with no keys in it; the
certificate authority adds serial number, key identifiers and signs. Keeping the
two apart means a reviewer can read every profile on one page.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from keyfab.clock import UTC
from keyfab.errors import ConfigError
from keyfab.pki._der import hardware_module_name

IDEVID_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
"""IEEE 802.1AR: an IDevID with no well-defined expiry uses 99991231235959Z."""


class Profile(enum.StrEnum):
    """Every kind of certificate keyfab issues, spelled once.

    The value is what the registry's ``certificates.profile`` column holds and
    what authorisation compares against.
    """

    ROOT_CA = "root-ca"
    MANUFACTURING_CA = "manufacturing-ca"
    IDEVID = "idevid"
    IAK = "iak"
    LDEVID = "ldevid"  # was "est-device" before migration 0006
    STATION = "station"
    TLS_SERVER = "tls-server"
    MANIFEST_SIGNER = "manifest-signer"
    ROOT_LINK = "root-link"  # a root's key certified by another root (RFC 4210 section 4.4)
    CMP_RESPONDER = "cmp-responder"
    OCSP_SIGNER = "ocsp-signer"
    REPORT_SIGNER = "report-signer"  # one per evidence pack, its key discarded after signing


UNPUBLISHED = frozenset(
    {Profile.ROOT_CA, Profile.MANUFACTURING_CA, Profile.ROOT_LINK, Profile.OCSP_SIGNER}
)
"""Profiles that never carry AIA or CRL distribution points (see ``Publication``).

The CAs are checked against the root, not through their own services; an OCSP
signer carries id-pkix-ocsp-nocheck, so pointing it at a status service would
only invite a loop.
"""

DEVICE_PROFILES = frozenset({Profile.IDEVID, Profile.LDEVID})
"""Profiles whose certificate proves a device's identity (e.g. for mutual TLS)."""


@dataclass(frozen=True)
class Template:
    """Everything about a certificate except its key, serial number and issuer."""

    profile: Profile
    subject: x509.Name
    extensions: tuple[tuple[x509.ExtensionType, bool], ...]
    not_after: datetime.datetime | None = None
    validity: datetime.timedelta | None = None

    def expiry(self, not_before: datetime.datetime) -> datetime.datetime:
        if self.not_after is not None:
            return self.not_after
        assert self.validity is not None
        return not_before + self.validity


def _name(organization: str, common_name: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


_SIGN_ONLY = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
"""keyUsage of every end entity keyfab issues: it signs, nothing else."""


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _ca(
    profile: Profile, organization: str, common_name: str, path_length: int, years: int
) -> Template:
    return Template(
        profile=profile,
        subject=_name(organization, common_name),
        extensions=(
            (x509.BasicConstraints(ca=True, path_length=path_length), True),
            (_ca_usage(), True),
        ),
        validity=datetime.timedelta(days=365 * years),
    )


def root_ca(organization: str, common_name: str, years: int = 25) -> Template:
    """A self-signed root: the manufacturer's trust anchor, kept offline."""
    return _ca(Profile.ROOT_CA, organization, common_name, path_length=1, years=years)


def manufacturing_ca(organization: str, common_name: str, years: int = 20) -> Template:
    """The intermediate that signs device certificates on the factory floor."""
    return _ca(Profile.MANUFACTURING_CA, organization, common_name, path_length=0, years=years)


def root_link(subject: x509.Name, not_after: datetime.datetime) -> Template:
    """A root rollover's link certificate: one root's key certified by the other root.

    The subject is the root's own name (a rollover changes the root's key, not
    its name), so the link is self-issued and does not count against the
    roots' path length (RFC 5280 section 6.1.4); it ends with the old root.
    """
    return Template(
        profile=Profile.ROOT_LINK,
        subject=subject,
        extensions=((x509.BasicConstraints(ca=True, path_length=1), True), (_ca_usage(), True)),
        not_after=not_after,
    )


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a device is: its serial number and the product's hwType OID."""

    serial: str
    hw_type: str
    organization: str = ""
    product: str = ""

    def __post_init__(self) -> None:
        if not self.serial or len(self.serial) > 64:
            raise ConfigError("device serial must be 1-64 characters")
        try:
            x509.ObjectIdentifier(self.hw_type)
        except ValueError:
            raise ConfigError(f"hw_type {self.hw_type!r} is not an object identifier") from None


def idevid(device: DeviceIdentity) -> Template:
    """IEEE 802.1AR IDevID: serialNumber in the subject, hardwareModuleName in the SAN.

    keyUsage is digitalSignature only, critical; no extended key usage (802.1AR
    leaves it out so the identity is not limited to one protocol); it never
    expires (99991231235959Z). The common name is the serial too: cloud
    registries (Azure DPS, for one) take the CN as the device's registration id,
    so it must differ per device; the product goes in organizationalUnitName.
    """
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, device.serial),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, device.serial),
    ]
    if device.product:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, device.product))
    if device.organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, device.organization))
    usage = _SIGN_ONLY
    san = x509.SubjectAlternativeName(
        [hardware_module_name(device.hw_type, device.serial.encode())]
    )
    return Template(
        profile=Profile.IDEVID,
        subject=x509.Name(attributes),
        extensions=((usage, True), (san, False)),
        not_after=IDEVID_NOT_AFTER,
    )


def manifest_signer(organization: str, common_name: str, years: int = 3) -> Template:
    """The key that signs secure-element manifests (Microchip Trust Platform format).

    It signs JWS entries and nothing else: an end entity with digitalSignature
    only, critical, and no EKU (Microchip's manifest signers carry none and no
    registered EKU means "manifest signing"). Manifests name the signer by its
    subjectKeyIdentifier (``kid``), which the CA adds to every certificate.
    ES256 needs a P-256 key; ``keyfab.manifest`` checks that when it signs.
    """
    usage = _SIGN_ONLY
    return Template(
        profile=Profile.MANIFEST_SIGNER,
        subject=_name(organization, common_name),
        extensions=((x509.BasicConstraints(ca=False, path_length=None), True), (usage, True)),
        validity=datetime.timedelta(days=365 * years),
    )


def iak(device: DeviceIdentity) -> Template:
    """TCG IAK certificate: the attestation key of the device's TPM.

    Issued only after the CA verified that the IAK lives in the TPM whose EK
    certificate it saw (TPM2_Certify + credential activation). Same subject and
    hardwareModuleName as the device's IDevID, so a verifier ties the two
    together; digitalSignature only, as the IAK signs TPM-made attestations.
    """
    return dataclasses.replace(idevid(device), profile=Profile.IAK)


def _hostname(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def tls_server(organization: str, hostnames: tuple[str, ...], days: int = 90) -> Template:
    """The certificate ``keyfab serve`` presents: serverAuth for its host names / IPs.

    Short-lived (90 days) because the service re-issues it from its own CA at
    start-up whenever it is missing, expiring or names other hosts.
    """
    if not hostnames:
        raise ConfigError("a TLS server certificate needs at least one host name")
    return Template(
        profile=Profile.TLS_SERVER,
        subject=_name(organization, hostnames[0]),
        extensions=(
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_SIGN_ONLY, True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectAlternativeName([_hostname(h) for h in hostnames]), False),
        ),
        validity=datetime.timedelta(days=days),
    )


LDEVID_VALIDITY = datetime.timedelta(days=90)
"""An operational certificate's default lifetime: a product's ``[ldevid]`` may change it."""


def ldevid(subject: x509.Name, validity: datetime.timedelta = LDEVID_VALIDITY) -> Template:
    """IEEE 802.1AR LDevID: the operational identity a device renews in the field.

    Issued over EST or CMP to a device that proved itself (its IDevID over
    mutual TLS, a token, or its current LDevID when renewing), for a key the
    device made for it, never the IDevID's. The subject comes from enrolment
    policy (``authority.enrolment``), never from the request. Unlike the IDevID
    it expires, so a lost device drops out of the fleet by itself, and it
    carries clientAuth so the device can use it for mutual TLS, including the
    re-enrolment that renews it.
    """
    return Template(
        profile=Profile.LDEVID,
        subject=subject,
        extensions=(
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_SIGN_ONLY, True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ),
        validity=validity,
    )


STATION_UNIT = "keyfab station"


def station(organization: str, name: str, days: int = 365) -> Template:
    """A factory station's TLS client identity for ``keyfab serve`` (operator rights).

    The organizationalUnit marks it as a station so no device certificate can
    pass for one; clientAuth only.
    """
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, STATION_UNIT),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return Template(
        profile=Profile.STATION,
        subject=x509.Name(attributes),
        extensions=(
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_SIGN_ONLY, True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ),
        validity=datetime.timedelta(days=days),
    )


CMC_CA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.27")
"""id-kp-cmcCA (RFC 6402): RFC 9483 §3.1 marks a CA's CMP protection key with it."""


def cmp_responder(organization: str, days: int = 90) -> Template:
    """The key ``keyfab serve`` signs CMP responses with: never the CA key itself.

    digitalSignature (OpenSSL's CMP client checks it) and id-kp-cmcCA; short
    lived because the service re-issues it at start-up when it nears expiry.
    """
    return Template(
        profile=Profile.CMP_RESPONDER,
        subject=_name(organization, "keyfab CMP responder"),
        extensions=(
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_SIGN_ONLY, True),
            (x509.ExtendedKeyUsage([CMC_CA]), False),
        ),
        validity=datetime.timedelta(days=days),
    )


OCSP_SIGNER_DAYS = 7


def ocsp_signer(organization: str, ca_name: str, days: int = OCSP_SIGNER_DAYS) -> Template:
    """A CA's delegated OCSP responder (RFC 6960 section 4.2.2.2).

    id-kp-OCSPSigning makes relying parties accept its responses for the CA
    that issued it; id-pkix-ocsp-nocheck tells them not to check its own
    status, which is safe only because it is short-lived (7 days) and
    re-issued by ``keyfab.authority.ocsp`` well before it expires.
    """
    return Template(
        profile=Profile.OCSP_SIGNER,
        subject=_name(organization, f"{ca_name} OCSP signer"),
        extensions=(
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_SIGN_ONLY, True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False),
            (x509.OCSPNoCheck(), False),
        ),
        validity=datetime.timedelta(days=days),
    )


DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336): what a report signer really does."""
REPORT_SIGNER_YEARS = 10
"""The CRA keeps technical documentation for ten years; the pack must verify that long."""


def report_signer(organization: str, product: str, years: int = REPORT_SIGNER_YEARS) -> Template:
    """The signer of one compliance evidence pack (CMS, RFC 5652): never the CA key itself.

    The CA key's keyUsage is keyCertSign and cRLSign only, and one key doing
    one job is what an auditor checks first; so the CA certifies a fresh key per
    pack, which signs once and is discarded. Its long validity costs nothing
    (the key no longer exists). id-kp-emailProtection beside id-kp-documentSigning
    is what ``openssl cms -verify`` (purpose smimesign) and S/MIME tools require
    of a CMS signer; no other EKU, so it can never pass for a TLS client.
    """
    return Template(
        profile=Profile.REPORT_SIGNER,
        subject=_name(organization, f"keyfab evidence pack {product}"),
        extensions=(
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_SIGN_ONLY, True),
            (
                x509.ExtendedKeyUsage([DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                False,
            ),
        ),
        validity=datetime.timedelta(days=365 * years + years // 4),
    )


@dataclass(frozen=True)
class Publication:
    """Where relying parties find a CA's certificate, its OCSP responder and its CRL.

    Added by ``CertificateAuthority.issue`` to every certificate it signs
    except ``UNPUBLISHED`` profiles: one place, so no profile can forget it.
    """

    ocsp: str
    ca_issuers: str
    crl: str

    @classmethod
    def under(cls, base_url: str, ca_name: str) -> Publication:
        """The URLs keyfab serves for CA ``ca_name`` below ``base_url``."""
        base = base_url.rstrip("/")
        return cls(f"{base}/ocsp", f"{base}/ca/{ca_name}.crt", f"{base}/crl/{ca_name}.crl")

    def extensions(self) -> tuple[tuple[x509.ExtensionType, bool], ...]:
        access = x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP,
                    x509.UniformResourceIdentifier(self.ocsp),
                ),
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(self.ca_issuers),
                ),
            ]
        )
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(self.crl)], None, None, None)
        return ((access, False), (x509.CRLDistributionPoints([point]), False))
