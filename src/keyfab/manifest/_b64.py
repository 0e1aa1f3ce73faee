"""Strict base64 codecs for JOSE members (RFC 7515 §2) and JWK ``x5c`` (RFC 7517 §4.7).

Lenient decoders accept many spellings of the same bytes (padding, stray
characters, non-zero trailing bits). A signed manifest must have exactly one
spelling per value, so each decoder checks the alphabet and that re-encoding
gives back the input. Lengths are checked before decoding allocates anything.
"""

from __future__ import annotations

import base64
import binascii
import re

from keyfab.manifest._errors import ManifestError

_URL = re.compile(r"[A-Za-z0-9_-]*")
_STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class Base64Error(ManifestError):
    """A value is not canonical base64 of the expected size."""


def b64url_encode(data: bytes) -> str:
    """base64url without padding, as JOSE writes every binary member."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, what: str, max_bytes: int) -> bytes:
    """Decode unpadded base64url; ``what`` names the member in error messages."""
    if not isinstance(text, str):
        raise Base64Error(f"{what} must be a string")
    if len(text) > (max_bytes * 4 + 2) // 3:
        raise Base64Error(f"{what} is longer than {max_bytes} bytes")
    if not _URL.fullmatch(text) or len(text) % 4 == 1:
        raise Base64Error(f"{what} is not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise Base64Error(f"{what} is not canonical base64url")
    return data


def b64_encode(data: bytes) -> str:
    """Standard padded base64, as ``x5c`` carries DER certificates."""
    return base64.b64encode(data).decode("ascii")


def b64_decode(text: object, what: str, max_bytes: int) -> bytes:
    """Decode standard padded base64 (not base64url), canonical spelling only."""
    if not isinstance(text, str):
        raise Base64Error(f"{what} must be a string")
    if len(text) > (max_bytes + 2) // 3 * 4:
        raise Base64Error(f"{what} is longer than {max_bytes} bytes")
    if not _STD.fullmatch(text) or len(text) % 4:
        raise Base64Error(f"{what} is not padded standard base64")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise Base64Error(f"{what} is not padded standard base64") from None
    if b64_encode(data) != text:
        raise Base64Error(f"{what} is not canonical base64")
    return data
