"""A readable summary of a FIT, like ``mkimage -l``, as plain data for text or JSON."""

from __future__ import annotations

import datetime
from typing import Any

from keyfab.boot._errors import FdtError
from keyfab.boot._fdt import Node, Prop
from keyfab.boot._fit import FitImage

_STRINGS = frozenset(
    {
        "description",
        "type",
        "arch",
        "os",
        "compression",
        "algo",
        "key-name-hint",
        "padding",
        "signer-name",
        "signer-version",
        "default",
        "kernel",
        "fdt",
        "ramdisk",
        "loadables",
        "firmware",
        "sign-images",
        "hashed-nodes",
        "compatible",
        "required",
    }
)
_CELLS = frozenset(
    {
        "load",
        "entry",
        "data-size",
        "data-offset",
        "data-position",
        "rollback-index",
        "timestamp",
        "#address-cells",
    }
)


def _value(prop: Prop) -> Any:
    """A property as a person reads it: strings, numbers, or hex for bytes."""
    try:
        if prop.name in _STRINGS:
            items = prop.as_strings()
            return items[0] if len(items) == 1 else items
        if prop.name in _CELLS:
            number = prop.as_u32()
            if prop.name == "timestamp":
                return datetime.datetime.fromtimestamp(number, datetime.UTC).isoformat()
            return number if prop.name not in ("load", "entry") else f"0x{number:08x}"
    except FdtError:
        pass
    if prop.name == "data":
        return f"<{len(prop.value)} bytes>"
    return bytes(prop.value).hex()


def _node(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {p.name: _value(p) for p in node.props}
    for child in node.children:
        out[child.name] = _node(child)
    return out


def describe(fit: FitImage) -> dict[str, Any]:
    """The whole FIT as nested dicts; payloads shown by size, hashes and signatures in hex."""
    summary = _node(fit.fdt.root)
    for image in fit.images():
        if image.prop("data") is None and image.prop("data-size") is not None:
            summary["images"][image.name]["data"] = f"<{len(fit.image_data(image))} bytes external>"
    return summary
