"""Reading certificates from files a user names: PEM or DER, one file or a directory.

One reader for every trust input (manifest signers and device roots, audit
checkpoint signers, TPM EK roots), bounded like every user-given file.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from keyfab.errors import ConfigError
from keyfab.securefile import read_bounded

MAX_CERT_FILE = 1024 * 1024
SUFFIXES = (".crt", ".pem", ".cer", ".der")
"""The files of a directory that are read as certificates."""


def load_certificates(path: Path, what: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate in a PEM/DER file, or in the certificate files of a directory."""
    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if path.is_dir()
        else [path]
    )
    certificates: list[x509.Certificate] = []
    for file in files:
        certificates.extend(_load_file(file, what))
    if not certificates:
        raise ConfigError(f"no certificates found in {path}")
    return certificates


def _load_file(file: Path, what: str) -> list[x509.Certificate]:
    data = read_bounded(file, MAX_CERT_FILE, what)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ConfigError(f"{file} holds no readable certificate") from None
