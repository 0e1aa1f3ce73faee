"""An evidence pack on disk: its files, their signed manifest, and checking both.

``SHA256SUMS`` lists every file's SHA-256 in ``sha256sum`` format (so
``sha256sum -c`` checks it too) and ``SHA256SUMS.p7s`` is a detached CMS
signature over it: ``openssl cms -verify -binary -inform DER -in SHA256SUMS.p7s
-content SHA256SUMS -CAfile root.pem`` accepts it with the workspace's root.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509

from keyfab.errors import ReportError, VerificationError
from keyfab.pki import Profile, serial_hex
from keyfab.registry import CaKind, Registry, queries
from keyfab.report import signature
from keyfab.report._cms import SIGNATURE_MAX
from keyfab.report.sbom import SBOM_NAME
from keyfab.securefile import read_bounded

MANIFEST = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.p7s"
FILES = ("evidence.json", "report.html", "report.pdf", SBOM_NAME)
FILE_MAX = 256 * 1024 * 1024
_LINE = re.compile(r"([0-9a-f]{64})  ([a-z0-9.]+)\n")


def manifest(folder: Path) -> bytes:
    """The manifest of the pack's files as they are now in ``folder``."""
    return "".join(f"{_digest(folder, name)}  {name}\n" for name in FILES).encode()


def _digest(folder: Path, name: str) -> str:
    return hashlib.sha256(read_bounded(folder / name, FILE_MAX, name)).hexdigest()


def _listed(text: bytes) -> Mapping[str, str]:
    """The manifest's (name -> digest), exactly the pack's files in order, or ReportError."""
    lines = _LINE.findall(text.decode("ascii", "replace"))
    if "".join(f"{d}  {n}\n" for d, n in lines).encode() != text:
        raise ReportError(f"{MANIFEST}: not a list of SHA-256 sums")
    if tuple(name for _, name in lines) != FILES:
        raise ReportError(f"{MANIFEST}: does not list exactly {', '.join(FILES)}")
    return {name: digest for digest, name in lines}


def verify_pack(folder: Path, roots: list[x509.Certificate]) -> signature.Signed:
    """Check the signature and every file; ReportError with one line naming the first bad file."""
    listed = read_bounded(folder / MANIFEST, 4096, MANIFEST)
    signed = read_bounded(folder / SIGNATURE, SIGNATURE_MAX, SIGNATURE)
    try:
        found = signature.check(signed, listed, roots)
    except signature.ContentMismatchError as error:
        raise ReportError(f"{MANIFEST}: {error}") from None
    except VerificationError as error:
        raise ReportError(f"{SIGNATURE}: {error}") from None
    for name, digest in _listed(listed).items():
        if not hmac.compare_digest(_digest(folder, name), digest):
            raise ReportError(f"{name}: SHA-256 differs from the signed manifest")
    return found


def verify_recorded(registry: Registry, folder: Path) -> signature.Signed:
    """``verify_pack`` up to the workspace's roots, its signer recorded here and not revoked."""
    roots = [
        x509.load_der_x509_certificate(row.certificate)
        for row in queries.authorities(registry).values()
        if row.kind == CaKind.ROOT
    ]
    found = verify_pack(folder, roots)
    row = queries.find_certificate(registry, serial_hex(found.signer))
    if row is None or row.certificate.profile != Profile.REPORT_SIGNER:
        raise ReportError(f"{SIGNATURE}: its signer is no report signer this workspace recorded")
    if row.certificate.revoked_at is not None:
        raise ReportError(f"{SIGNATURE}: its signer's certificate is revoked")
    return found
