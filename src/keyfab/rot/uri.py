"""Key URIs: one parser for every way keyfab names a key.

``pkcs11:token=factory;object=mfg-ca;type=private?pin-source=file:/run/pin``
follows RFC 7512: path attributes separated by ``;``, query attributes by ``&``,
values percent-encoded. ``tpm2:tcti=swtpm:host=127.0.0.1,port=2321;persistent=0x81010002``
uses the same attribute syntax. ``soft:./keys/dev.pem`` names a key file. PINs
given inline (``pin-value``) are never shown by ``str()`` or ``repr()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote, unquote

from keyfab.errors import ConfigError
from keyfab.rot.drivers import driver_names
from keyfab.securefile import read_bounded

SCHEMES = driver_names()  # one scheme per root-of-trust driver
_SECRET_ATTRIBUTES = frozenset({"pin-value"})
_KNOWN: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "pkcs11": (
        frozenset(
            {
                "token",
                "manufacturer",
                "serial",
                "model",
                "library-manufacturer",
                "library-description",
                "library-version",
                "slot-manufacturer",
                "slot-description",
                "slot-id",
                "object",
                "type",
                "id",
            }
        ),
        frozenset({"module-name", "module-path", "pin-source", "pin-value"}),
    ),
    "tpm2": (
        frozenset({"tcti", "persistent", "object", "nv", "hierarchy"}),
        frozenset({"pin-source", "pin-value"}),
    ),
    "puf": (
        frozenset(
            {"path", "object", "source", "dumps", "cells", "chip"}
            | {"ber", "bias", "temperature", "age"}  # the model's parameters
        ),
        frozenset(),
    ),
}
_MAX_URI = 4096
MAX_PIN_FILE = 4096
"""A PIN file holds one line; anything this large is the wrong file."""


@dataclass(frozen=True)
class KeyUri:
    """A parsed key URI. ``attributes`` are path attributes, ``query`` the query ones."""

    scheme: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    path: str = ""

    @property
    def label(self) -> str | None:
        """The key's label within its root of trust, if the URI names one."""
        if self.scheme == "soft":
            return Path(self.path).stem if self.path else None
        if self.scheme == "tpm2" and "persistent" in self.attributes:
            return self.attributes["persistent"]
        return self.attributes.get("object")

    def __str__(self) -> str:
        return self.render(redact=True)

    def __repr__(self) -> str:
        return f"KeyUri({self.render(redact=True)!r})"

    def render(self, *, redact: bool = True) -> str:
        """The URI as text; secrets become ``***`` unless ``redact`` is False."""
        if self.scheme == "soft":
            return f"soft:{self.path}"

        def pairs(items: Mapping[str, str], separator: str) -> str:
            return separator.join(
                f"{k}={'***' if redact and k in _SECRET_ATTRIBUTES else quote(v, safe=':/,.@-_')}"
                for k, v in items.items()
            )

        text = f"{self.scheme}:{pairs(self.attributes, ';')}"
        return f"{text}?{pairs(self.query, '&')}" if self.query else text


def parse_key_uri(text: str) -> KeyUri:
    """Parse a key URI; raise ConfigError with the reason if it is malformed."""
    if len(text) > _MAX_URI:
        raise ConfigError(f"key URI longer than {_MAX_URI} characters")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme not in SCHEMES:
        raise ConfigError(f"key URI must start with one of {', '.join(s + ':' for s in SCHEMES)}")
    if scheme == "soft":
        if not rest:
            raise ConfigError("soft: key URI needs a file path, e.g. soft:./keys/ca.pem")
        return KeyUri("soft", path=rest)
    path_part, _, query_part = rest.partition("?")
    path_known, query_known = _KNOWN[scheme]
    return KeyUri(
        scheme,
        attributes=_attributes(scheme, path_part, ";", path_known),
        query=_attributes(scheme, query_part, "&", query_known),
    )


def _attributes(scheme: str, text: str, separator: str, known: frozenset[str]) -> Mapping[str, str]:
    result: dict[str, str] = {}
    for item in filter(None, text.split(separator)):
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise ConfigError(f"{scheme}: URI attribute {name or item!r} needs the form name=value")
        if name not in known and not name.startswith("x-"):
            raise ConfigError(f"{scheme}: URI has unknown attribute {name!r}")
        if name in result:
            raise ConfigError(f"{scheme}: URI repeats attribute {name!r}")
        try:
            result[name] = unquote(value, errors="strict") if "%" in value else value
        except UnicodeDecodeError:
            raise ConfigError(f"{scheme}: URI attribute {name!r} is not valid UTF-8") from None
    return MappingProxyType(result)


def soft_key_uri(path: str | Path) -> str:
    """The URI of a soft key file: the one way keyfab spells it."""
    return KeyUri("soft", path=str(path)).render(redact=False)


def read_pin(uri: KeyUri) -> str | None:
    """The PIN a URI points to (``pin-value`` or ``pin-source=file:...``), if any."""
    if "pin-value" in uri.query:
        return uri.query["pin-value"]
    source = uri.query.get("pin-source")
    if source is None:
        return None
    return read_pin_file(source.removeprefix("file:"))


def read_pin_file(path: str | Path) -> str:
    """A PIN kept in a file: a small regular UTF-8 file, without its line ending."""
    data = read_bounded(Path(path), MAX_PIN_FILE, "PIN file")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read PIN file {path}: not UTF-8 text") from None


def absolute_key_uri(text: str, base: Path | None = None) -> str:
    """The URI with its file paths made absolute (``soft:`` path, ``module-path``,
    ``pin-source=file:``), so a URI kept in the registry works from any directory.

    Relative paths are taken from ``base`` (default: the current directory), the
    directory the user typed them in. Secrets are kept as given (not redacted).
    """
    uri = parse_key_uri(text)
    root = Path.cwd() if base is None else base

    def absolute(path: str) -> str:
        return str(root / path) if path and not Path(path).is_absolute() else path

    if uri.scheme == "soft":
        return KeyUri("soft", path=uri.path if uri.path == "memory" else absolute(uri.path)).render(
            redact=False
        )
    query = dict(uri.query)
    if "module-path" in query:
        query["module-path"] = absolute(query["module-path"])
    if query.get("pin-source", "").startswith("file:"):
        query["pin-source"] = "file:" + absolute(query["pin-source"].removeprefix("file:"))
    return KeyUri(uri.scheme, uri.attributes, MappingProxyType(query)).render(redact=False)
