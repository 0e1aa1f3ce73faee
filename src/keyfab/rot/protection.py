"""How well a key is kept: what an auditor asks of every CA key.

Read from the root of trust itself, never from configuration: a PKCS#11 token
is asked for the private key's CKA_SENSITIVE, CKA_EXTRACTABLE and their
"always/never" history, which only a key generated on the token and never
exported can show. A soft key is a file: it says so, as development only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from keyfab.errors import ConfigError
from keyfab.rot.base import Capability
from keyfab.rot.drivers import open_uri
from keyfab.rot.uri import parse_key_uri


@dataclass(frozen=True)
class KeyProtection:
    """Where a key lives and what its root of trust says protects it."""

    scheme: str  # the driver: soft, pkcs11, tpm2
    hardware: bool
    attributes: Mapping[str, bool] = field(default_factory=dict)  # as the token reports them
    note: str = ""

    @property
    def non_exportable(self) -> bool | None:
        """True when the token proves the key never left it, None when nothing was read."""
        if not self.attributes:
            return None
        return bool(
            self.attributes.get("CKA_SENSITIVE")
            and not self.attributes.get("CKA_EXTRACTABLE", True)
            and self.attributes.get("CKA_NEVER_EXTRACTABLE")
        )


SOFT_NOTE = "a key file on disk (0600): development only, anyone who reads it can copy the key"


def key_protection(uri: str) -> KeyProtection:
    """Ask the root of trust a key URI points into how the key is protected."""
    parsed = parse_key_uri(uri)
    if parsed.label is None:
        raise ConfigError(f"key URI {parsed} does not name a key")
    if parsed.scheme == "soft":
        return KeyProtection("soft", False, note=SOFT_NOTE)
    rot = open_uri(parsed)
    try:
        hardware = Capability.HARDWARE in rot.info.capabilities
        reader = getattr(rot, "key_attributes", None)
        if reader is None:
            note = f"the {parsed.scheme} driver reports no key attributes; none were read"
            return KeyProtection(parsed.scheme, hardware, note=note)
        return KeyProtection(parsed.scheme, hardware, dict(reader(parsed.label)))
    finally:
        rot.close()
