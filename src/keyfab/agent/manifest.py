"""The supervised boot check: a maker-signed list of files and their SHA-256.

The maker signs it with a key from the recipe (any key URI: ``soft:``,
``pkcs11:``, ``tpm2:``; EC keys sign ECDSA-SHA256, RSA keys RSA-PSS); the
device holds the public key and checks the manifest and every file at start.
One small JSON document; the signature covers the canonical JSON of every
other field, so reordering or re-spacing changes nothing but an edit fails::

    {"format": "keyfab-boot-manifest", "version": 1, "release": "2.1",
     "files": [{"path": "/boot/Image", "sha256": "<hex>"}, ...],
     "signature": "<base64>"}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from keyfab.errors import ConfigError, VerificationError
from keyfab.rot.base import PrivateKey

FORMAT = "keyfab-boot-manifest"
VERSION = 1
MAX_MANIFEST = 1 << 20
MAX_FILES = 4096
_FIELDS = frozenset({"format", "version", "release", "files", "signature"})
_CHUNK = 1 << 16


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def file_digest(path: Path) -> str:
    """SHA-256 of a file, streamed (kernels and root filesystems are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _signed_part(release: str, files: Sequence[dict[str, str]]) -> bytes:
    body = {"format": FORMAT, "version": VERSION, "release": release, "files": list(files)}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_manifest(key: PrivateKey, release: str, paths: Sequence[Path]) -> bytes:
    """A signed manifest of ``paths`` as they are now (absolute paths, as the device sees them)."""
    if not paths or len(paths) > MAX_FILES:
        raise ConfigError(f"a boot manifest lists 1 to {MAX_FILES} files")
    files = [{"path": str(p.absolute()), "sha256": file_digest(p)} for p in paths]
    signed = _signed_part(release, files)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(signed, ec.ECDSA(hashes.SHA256()))
    else:
        signature = key.sign(signed, _pss(), hashes.SHA256())
    document = {
        "format": FORMAT,
        "version": VERSION,
        "release": release,
        "files": files,
        "signature": base64.b64encode(signature).decode(),
    }
    return (json.dumps(document, indent=1) + "\n").encode()


def _files(value: object) -> list[dict[str, str]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FILES:
        raise ConfigError(f"boot manifest: files must list 1 to {MAX_FILES} entries")
    files = []
    for entry in value:
        if (
            not isinstance(entry, dict)
            or set(entry) != {"path", "sha256"}
            or not isinstance(entry["path"], str)
            or not entry["path"].startswith("/")
            or not isinstance(entry["sha256"], str)
            or len(entry["sha256"]) != 64
        ):
            raise ConfigError("boot manifest: each file is {path: absolute, sha256: 64 hex}")
        files.append({"path": entry["path"], "sha256": entry["sha256"]})
    return files


def verify_manifest(data: bytes, public_key: bytes) -> tuple[str, list[dict[str, str]]]:
    """The release and files of a manifest whose signature ``public_key`` (SPKI DER) made."""
    if len(data) > MAX_MANIFEST:
        raise ConfigError(f"boot manifest is larger than {MAX_MANIFEST} bytes")
    try:
        document: Any = json.loads(data)
    except (ValueError, RecursionError):
        raise ConfigError("boot manifest is not JSON") from None
    if not isinstance(document, dict) or set(document) != _FIELDS:
        raise ConfigError(f"boot manifest must have exactly: {', '.join(sorted(_FIELDS))}")
    if document["format"] != FORMAT or document["version"] != VERSION:
        raise ConfigError(f"not a {FORMAT} version {VERSION} document")
    release = document["release"]
    if not isinstance(release, str) or len(release) > 128:
        raise ConfigError("boot manifest: release must be text of at most 128 characters")
    files = _files(document["files"])
    _check_signature(_signed_part(release, files), document["signature"], public_key)
    return release, files


def _check_signature(signed: bytes, encoded: object, public_key: bytes) -> None:
    if not isinstance(encoded, str) or len(encoded) > 2048:
        raise ConfigError("boot manifest: signature must be base64")
    try:
        signature = base64.b64decode(encoded, validate=True)
        key = serialization.load_der_public_key(public_key)
    except (binascii.Error, ValueError):
        raise ConfigError("boot manifest: bad signature encoding or public key") from None
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, _pss(), hashes.SHA256())
        else:
            raise ConfigError("boot manifest: the maker's key must be EC or RSA")
    except InvalidSignature:
        raise VerificationError("boot manifest is not signed by the maker's key") from None


def mismatches(files: Sequence[dict[str, str]]) -> list[str]:
    """Each listed file that is missing or differs, one short line each."""
    problems = []
    for entry in files:
        path = Path(entry["path"])
        try:
            actual = file_digest(path)
        except OSError as error:
            problems.append(f"{path}: {error.strerror or 'unreadable'}")
            continue
        if actual != entry["sha256"].lower():
            problems.append(f"{path}: SHA-256 differs from the manifest")
    return problems


def check_boot(manifest: Path, public_key: bytes) -> tuple[str, list[str]]:
    """(release, problems) for the manifest at ``manifest``; a bad signature is a problem too."""
    from keyfab.securefile import read_bounded

    try:
        release, files = verify_manifest(
            read_bounded(manifest, MAX_MANIFEST, "boot manifest"), public_key
        )
    except (ConfigError, VerificationError) as error:
        return "", [str(error)]
    return release, mismatches(files)
