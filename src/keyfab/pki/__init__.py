"""The manufacturing PKI: certificate authorities, profiles, CRLs, chain checks."""

from keyfab.pki._der import HARDWARE_MODULE_NAME, parse_hardware_module_name
from keyfab.pki.ca import (
    CertificateAuthority,
    check_csr,
    new_serial_number,
    serial_hex,
    signature_hash,
)
from keyfab.pki.keypolicy import KeyNotAllowedError, check_csr_signature, check_public_key
from keyfab.pki.profiles import (
    DEVICE_PROFILES,
    IDEVID_NOT_AFTER,
    DeviceIdentity,
    Profile,
    Publication,
    Template,
    cmp_responder,
    iak,
    idevid,
    ldevid,
    manifest_signer,
    manufacturing_ca,
    ocsp_signer,
    report_signer,
    root_ca,
    root_link,
    station,
    tls_server,
)
from keyfab.pki.revocation import RevocationReason, RevokedCertificate
from keyfab.pki.verify import device_policy, device_verifier, verify_device_chain

__all__ = [
    "DEVICE_PROFILES",
    "HARDWARE_MODULE_NAME",
    "IDEVID_NOT_AFTER",
    "CertificateAuthority",
    "DeviceIdentity",
    "KeyNotAllowedError",
    "Profile",
    "Publication",
    "RevocationReason",
    "RevokedCertificate",
    "Template",
    "check_csr",
    "check_csr_signature",
    "check_public_key",
    "cmp_responder",
    "device_policy",
    "device_verifier",
    "iak",
    "idevid",
    "ldevid",
    "manifest_signer",
    "manufacturing_ca",
    "new_serial_number",
    "ocsp_signer",
    "parse_hardware_module_name",
    "report_signer",
    "root_ca",
    "root_link",
    "serial_hex",
    "signature_hash",
    "station",
    "tls_server",
    "verify_device_chain",
]
