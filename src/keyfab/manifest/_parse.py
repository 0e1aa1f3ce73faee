"""Strict reading of manifest entries from JSON into the ``_model`` classes.

Every member is type- and size-checked before use; anything unexpected raises
EntryError naming the entry and the member. Unknown payload members are ignored
(the signature still covers them and keyfab acts on none of them), but unknown
or critical JOSE header parameters are refused: RFC 7515 §4.1.11 requires a
verifier to reject ``crit`` extensions it does not understand.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from keyfab.clock import UTC
from keyfab.manifest._b64 import Base64Error, b64_decode, b64url_decode
from keyfab.manifest._errors import EntryError, ManifestError
from keyfab.manifest._model import (
    CURVES,
    EcJwk,
    Organization,
    ProtectedHeader,
    SecureElement,
    SignedEntry,
    ec_point,
)

MAX_PAYLOAD = 64 * 1024
MAX_HEADER = 2 * 1024
MAX_CERT = 8 * 1024
MAX_CHAIN = 4
MAX_KEYS = 16
MAX_TEXT = 256
VERSIONS = (1, 2)
ENTRY_MEMBERS = frozenset({"payload", "protected", "header", "signature"})
HEADER_MEMBERS = frozenset({"typ", "alg", "kid", "x5t#S256", "iat"})
_UNIQUE_ID = re.compile(r"(?:[0-9a-f]{2}){1,32}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z")


class _InvalidMemberError(ManifestError):
    """A member is wrong; the caller adds which entry it belongs to."""


def loads_object(data: bytes | str, what: str) -> dict[str, Any]:
    """Parse a JSON object, refusing duplicate member names (RFC 7515 §5.2 step 4)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, value in pairs:
            if name in result:
                raise _InvalidMemberError(f"{what} has duplicate member {name!r}")
            result[name] = value
        return result

    try:
        value = json.loads(data, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError):  # also a number past Python's int-digit limit
        raise _InvalidMemberError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise _InvalidMemberError(f"{what} is not a JSON object")
    return value


def parse_entry(raw: object, index: int) -> SignedEntry:
    """One decoded JSON array element as a SignedEntry, or EntryError."""
    unique_id = _claimed_unique_id(raw)
    try:
        return _entry(raw)
    except (_InvalidMemberError, Base64Error) as error:
        raise EntryError(index, unique_id, str(error)) from None


def parse_entry_bytes(data: bytes, index: int) -> SignedEntry:
    """Parse one entry from its raw JSON text (as the streaming reader yields it)."""
    try:
        raw = loads_object(data, "entry")
    except _InvalidMemberError as error:
        raise EntryError(index, None, str(error)) from None
    return parse_entry(raw, index)


def _claimed_unique_id(raw: object) -> str | None:
    """The unprotected ``header.uniqueId``, only to name the entry in messages."""
    if isinstance(raw, Mapping):
        header = raw.get("header")
        if isinstance(header, Mapping):
            claimed = header.get("uniqueId")
            if isinstance(claimed, str) and _UNIQUE_ID.fullmatch(claimed):
                return claimed
    return None


def _entry(raw: object) -> SignedEntry:
    if not isinstance(raw, dict):
        raise _InvalidMemberError("is not a JSON object")
    _members(raw, ENTRY_MEMBERS, ENTRY_MEMBERS, "entry")
    header = _protected(_string(raw, "protected", (MAX_HEADER * 4 + 2) // 3))
    payload_b64 = _string(raw, "payload", (MAX_PAYLOAD * 4 + 2) // 3)
    element = parse_payload(
        loads_object(b64url_decode(payload_b64, "payload", MAX_PAYLOAD), "payload")
    )
    signature = b64url_decode(raw["signature"], "signature", 132)
    unprotected = raw["header"]
    if not isinstance(unprotected, dict):
        raise _InvalidMemberError("header is not a JSON object")
    _members(unprotected, frozenset({"uniqueId"}), frozenset({"uniqueId"}), "header")
    if unprotected["uniqueId"] != element.unique_id:
        raise _InvalidMemberError("header.uniqueId differs from the signed payload's uniqueId")
    return SignedEntry(raw["protected"], payload_b64, signature, header, element)


def _members(
    obj: Mapping[str, Any], required: frozenset[str], allowed: frozenset[str], what: str
) -> None:
    missing = sorted(required - obj.keys())
    if missing:
        raise _InvalidMemberError(f"{what} lacks {', '.join(missing)}")
    unknown = sorted(obj.keys() - allowed)
    if unknown:
        raise _InvalidMemberError(f"{what} has unknown member {unknown[0]!r}")


def _string(
    obj: Mapping[str, Any], name: str, max_len: int = MAX_TEXT, what: str | None = None
) -> str:
    value = obj.get(name)
    label = what or name
    if not isinstance(value, str):
        raise _InvalidMemberError(f"{label} must be a string")
    if len(value) > max_len:
        raise _InvalidMemberError(f"{label} is longer than {max_len} characters")
    return value


def _optional_string(obj: Mapping[str, Any], name: str) -> str | None:
    return None if name not in obj else _string(obj, name)


def _protected(text: str) -> ProtectedHeader:
    fields = loads_object(b64url_decode(text, "protected", MAX_HEADER), "protected header")
    if "crit" in fields:
        raise _InvalidMemberError("protected header has crit parameters keyfab does not understand")
    _members(fields, frozenset({"alg", "x5t#S256"}), HEADER_MEMBERS, "protected header")
    alg = _string(fields, "alg", 16, "protected alg")
    if alg != "ES256":
        raise _InvalidMemberError(f"unsupported alg {alg!r} (only ES256)")
    typ = _optional_string(fields, "typ")
    if typ is not None and typ != "JWT":
        raise _InvalidMemberError(f"unexpected typ {typ!r}")
    thumbprint = b64url_decode(fields["x5t#S256"], "x5t#S256", 32)
    if len(thumbprint) != 32:
        raise _InvalidMemberError("x5t#S256 is not a SHA-256 digest")
    kid = _optional_string(fields, "kid")
    iat = fields.get("iat")
    if iat is not None and (isinstance(iat, bool) or not isinstance(iat, int) or iat < 0):
        raise _InvalidMemberError("protected iat is not a whole number of seconds")
    return ProtectedHeader(alg=alg, x5t_s256=thumbprint, kid=kid, typ=typ, iat=iat)


def parse_payload(fields: Mapping[str, Any]) -> SecureElement:
    """The payload object of one entry as a SecureElement."""
    version = fields.get("version")
    if type(version) is not int or version not in VERSIONS:
        raise _InvalidMemberError(f"unsupported payload version {version!r}")
    unique_id = _string(fields, "uniqueId", 64)
    if not _UNIQUE_ID.fullmatch(unique_id):
        raise _InvalidMemberError("uniqueId must be lowercase hex of whole bytes")
    keys: tuple[EcJwk, ...] = ()
    if version == 1 or "publicKeySet" in fields:
        keys = _key_set(fields.get("publicKeySet"))
    return SecureElement(
        version=version,
        model=_string(fields, "model"),
        part_number=_string(fields, "partNumber"),
        manufacturer=_organization(fields, "manufacturer"),
        provisioner=_organization(fields, "provisioner"),
        distributor=_organization(fields, "distributor"),
        group_id=_optional_string(fields, "groupId"),
        provisioned_at=_timestamp(_string(fields, "provisioningTimestamp", 40)),
        unique_id=unique_id,
        keys=keys,
    )


def _organization(fields: Mapping[str, Any], name: str) -> Organization | None:
    if name not in fields:
        return None
    value = fields[name]
    if not isinstance(value, dict):
        raise _InvalidMemberError(f"{name} is not a JSON object")
    return Organization(
        name=_string(value, "organizationName", what=f"{name}.organizationName"),
        unit=_string(value, "organizationalUnitName", what=f"{name}.organizationalUnitName"),
    )


def _timestamp(text: str) -> datetime.datetime:
    if not _TIMESTAMP.fullmatch(text):
        raise _InvalidMemberError("provisioningTimestamp is not YYYY-MM-DDThh:mm:ss[.fff]Z")
    try:
        moment = datetime.datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        raise _InvalidMemberError("provisioningTimestamp is not a real date and time") from None
    return moment.replace(tzinfo=UTC)


def _key_set(value: object) -> tuple[EcJwk, ...]:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise _InvalidMemberError("publicKeySet must be an object with a keys array")
    keys = value["keys"]
    if len(keys) > MAX_KEYS:
        raise _InvalidMemberError(f"publicKeySet has more than {MAX_KEYS} keys")
    parsed = tuple(_jwk(key, position) for position, key in enumerate(keys))
    kids = [key.kid for key in parsed]
    if len(set(kids)) != len(kids):
        raise _InvalidMemberError("publicKeySet has duplicate kid values")
    return parsed


def _jwk(value: object, position: int) -> EcJwk:
    where = f"publicKeySet.keys[{position}]"
    if not isinstance(value, dict):
        raise _InvalidMemberError(f"{where} is not a JSON object")
    kty = _string(value, "kty", 8, f"{where}.kty")
    if kty != "EC":
        raise _InvalidMemberError(f"{where}.kty {kty!r} is not EC")
    crv = _string(value, "crv", 8, f"{where}.crv")
    if crv not in CURVES:
        raise _InvalidMemberError(f"{where}.crv {crv!r} is not supported")
    _, size = CURVES[crv]
    x = b64url_decode(value.get("x"), f"{where}.x", size)
    y = b64url_decode(value.get("y"), f"{where}.y", size)
    if len(x) != size or len(y) != size:
        raise _InvalidMemberError(f"{where} coordinates are not {size} bytes")
    try:
        ec_point(crv, x, y)
    except ValueError:
        raise _InvalidMemberError(f"{where} is not a point on {crv}") from None
    return EcJwk(_string(value, "kid", 64, f"{where}.kid"), crv, x, y, _x5c(value, where))


def _x5c(value: Mapping[str, Any], where: str) -> tuple[bytes, ...]:
    if "x5c" not in value:
        return ()
    chain = value["x5c"]
    if not isinstance(chain, list) or not 1 <= len(chain) <= MAX_CHAIN:
        raise _InvalidMemberError(f"{where}.x5c must be an array of 1 to {MAX_CHAIN} certificates")
    ders = tuple(b64_decode(cert, f"{where}.x5c[{n}]", MAX_CERT) for n, cert in enumerate(chain))
    for n, der in enumerate(ders):
        try:
            x509.load_der_x509_certificate(der)
        except ValueError:
            raise _InvalidMemberError(f"{where}.x5c[{n}] is not a DER certificate") from None
    return ders
