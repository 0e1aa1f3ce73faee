"""Writing the ``_model`` classes back as manifest JSON, in Microchip's member order.

Output is compact JSON (no spaces) like Microchip's manifests, so entries keyfab
writes look like the ones tools that read Microchip manifests already know.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from keyfab.clock import UTC
from keyfab.manifest._b64 import b64_encode, b64url_encode
from keyfab.manifest._model import EcJwk, Organization, ProtectedHeader, SecureElement


def dumps_compact(value: object) -> bytes:
    """JSON without whitespace, ASCII only, so the encoded bytes are unambiguous."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def format_timestamp(moment: datetime.datetime) -> str:
    """UTC with milliseconds and a ``Z``, as in ``2020-06-09T22:49:52.470Z``."""
    if moment.tzinfo is None:
        raise ValueError("provisioning time must be timezone-aware")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def header_json(header: ProtectedHeader) -> dict[str, str | int]:
    """The protected header as a JSON object, members in Microchip's order (``iat`` last)."""
    fields: dict[str, str | int] = {}
    if header.typ is not None:
        fields["typ"] = header.typ
    fields["alg"] = header.alg
    if header.kid is not None:
        fields["kid"] = header.kid
    fields["x5t#S256"] = b64url_encode(header.x5t_s256)
    if header.iat is not None:
        fields["iat"] = header.iat
    return fields


def _organization(org: Organization) -> dict[str, str]:
    return {"organizationName": org.name, "organizationalUnitName": org.unit}


def _jwk(key: EcJwk) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "kid": key.kid,
        "kty": "EC",
        "crv": key.crv,
        "x": b64url_encode(key.x),
        "y": b64url_encode(key.y),
    }
    if key.x5c:
        fields["x5c"] = [b64_encode(der) for der in key.x5c]
    return fields


def element_json(element: SecureElement) -> dict[str, Any]:
    """The payload as a JSON object, members in Microchip's order."""
    fields: dict[str, Any] = {
        "version": element.version,
        "model": element.model,
        "partNumber": element.part_number,
    }
    for name in ("manufacturer", "provisioner", "distributor"):
        org = getattr(element, name)
        if org is not None:
            fields[name] = _organization(org)
    if element.group_id is not None:
        fields["groupId"] = element.group_id
    fields["provisioningTimestamp"] = format_timestamp(element.provisioned_at)
    fields["uniqueId"] = element.unique_id
    if element.keys or element.version == 1:
        fields["publicKeySet"] = {"keys": [_jwk(key) for key in element.keys]}
    return fields
