"""Signed secure-element manifests in Microchip Trust Platform's format, in and out.

The format model (``SignedEntry`` and friends, ``parse_entry``) is apart from the
flows that use it: ``verify_manifest`` streams and checks a manifest against a
``VerificationPolicy``.
"""

from keyfab.manifest._certs import Signer, SignerSet, thumbprint
from keyfab.manifest._errors import EntryError, ManifestError
from keyfab.manifest._export import EntrySigner, ManifestWriter, device_element, write_manifest
from keyfab.manifest._import import ImportSummary, Outcome, import_manifest
from keyfab.manifest._model import EcJwk, Organization, ProtectedHeader, SecureElement, SignedEntry
from keyfab.manifest._parse import parse_entry, parse_entry_bytes, parse_payload
from keyfab.manifest._policy import VerificationPolicy, VerifiedEntry
from keyfab.manifest._serialize import element_json, header_json
from keyfab.manifest._source import ExportDescription, batch_elements, export_batch
from keyfab.manifest._stream import RawItem, iter_array
from keyfab.manifest._verify import MAX_ENTRY_BYTES, EntryReport, verify_manifest
from keyfab.pki.files import load_certificates

__all__ = [
    "MAX_ENTRY_BYTES",
    "EcJwk",
    "EntryError",
    "EntryReport",
    "EntrySigner",
    "ExportDescription",
    "ImportSummary",
    "ManifestError",
    "ManifestWriter",
    "Organization",
    "Outcome",
    "ProtectedHeader",
    "RawItem",
    "SecureElement",
    "SignedEntry",
    "Signer",
    "SignerSet",
    "VerificationPolicy",
    "VerifiedEntry",
    "batch_elements",
    "device_element",
    "element_json",
    "export_batch",
    "header_json",
    "import_manifest",
    "iter_array",
    "load_certificates",
    "parse_entry",
    "parse_entry_bytes",
    "parse_payload",
    "thumbprint",
    "verify_manifest",
    "write_manifest",
]
