"""Building a FIT from a small TOML description, so users need neither .its nor dtc.

(An .its goes through ``_its`` as with ``mkimage -f``; ``load_description`` picks.)

The description names payload files and configurations::

    description = "acme gateway"
    [images.kernel]
    file = "Image"                  # relative to the TOML file
    type = "kernel"                 # kernel | flat_dt | ramdisk | firmware | ...
    arch = "arm64"
    os = "linux"
    load = 0x40400000
    entry = 0x40400000
    [images.fdt-1]
    file = "board.dtb"
    type = "flat_dt"
    [configurations]
    default = "conf-1"
    [configurations.conf-1]
    kernel = "kernel"
    fdt = "fdt-1"
    rollback-index = 3             # anti-rollback, covered by the signature

The result has the layout mkimage -f gives (root description, timestamp and
#address-cells, then /images and /configurations) with a hash node per image.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keyfab.boot._errors import FitError
from keyfab.boot._fdt import Fdt, Node
from keyfab.boot._fit import FitImage
from keyfab.boot._its import build_from_its, is_its, read_description
from keyfab.boot._sign import add_hashes, source_date

_IMAGE_STRINGS = ("description", "type", "arch", "os", "compression")
_IMAGE_CELLS = ("load", "entry")
_MAX_PAYLOAD = 1 << 31
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,._+-")


def _name(name: str) -> str:
    if not name or len(name) > 31 or not set(name) <= _NAME_CHARS:
        raise FitError(f"invalid node name {name!r}: use 1-31 of A-Z a-z 0-9 , . _ + -")
    return name


def _table(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FitError(f"{what} must be a TOML table")
    return value


def _u32(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise FitError(f"{what} must be an integer from 0 to 2^32-1")
    return value


def _image(parent: Node, name: str, spec: Mapping[str, Any], base: Path, hash_algo: str) -> None:
    spec = _table(spec, f"image {name!r}")
    node = parent.add_child(_name(name))
    node.set_str("description", str(spec.get("description", name)))
    path = base / str(spec.get("file", ""))
    if "file" not in spec or not path.is_file():
        raise FitError(f"image {name!r}: file {spec.get('file')!r} not found")
    if path.stat().st_size >= _MAX_PAYLOAD:
        raise FitError(f"image {name!r}: {path.name} is larger than 2 GiB")
    node.set("data", path.read_bytes())
    defaults = {"compression": "none"}
    for key in _IMAGE_STRINGS[1:]:
        value = spec.get(key, defaults.get(key))
        if value is not None:
            node.set_str(key, str(value))
    for key in _IMAGE_CELLS:
        if key in spec:
            node.set_u32(key, _u32(spec[key], f"image {name!r} {key}"))
    node.add_child("hash-1").set_str("algo", str(spec.get("hash", hash_algo)))


def _configuration(parent: Node, name: str, spec: Mapping[str, Any], images: Node) -> None:
    spec = _table(spec, f"configuration {name!r}")
    node = parent.add_child(_name(name))
    node.set_str("description", str(spec.get("description", name)))
    for key, value in spec.items():
        _name(key)
        if key == "description":
            continue
        if key == "rollback-index":
            node.set_u32(key, _u32(value, f"configuration {name!r} rollback-index"))
            continue
        if not isinstance(value, str | list):
            raise FitError(f"configuration {name!r}: {key} must name images")
        names = [value] if isinstance(value, str) else value
        for image in names:
            if images.child(str(image)) is None:
                raise FitError(f"configuration {name!r}: {key} names unknown image {image!r}")
        node.set(key, b"".join(str(n).encode() + b"\0" for n in names))


def build_fit(description: Mapping[str, Any], base: Path, hash_algo: str = "sha256") -> FitImage:
    """A FIT from an already-parsed description; payload paths are relative to ``base``."""
    root = Node("")
    root.set_str("description", str(description.get("description", "FIT image")))
    root.set_u32("timestamp", source_date())
    root.set_u32("#address-cells", 1)
    images = root.add_child("images")
    image_specs = _table(description.get("images"), "[images]")
    if not image_specs:
        raise FitError("the description has no [images.<name>] tables")
    for name, spec in image_specs.items():
        _image(images, name, spec, base, hash_algo)
    configs = root.add_child("configurations")
    config_specs = dict(_table(description.get("configurations", {}), "[configurations]"))
    default = config_specs.pop("default", None)
    if default is not None:
        configs.set_str("default", str(default))
    for name, spec in config_specs.items():
        _configuration(configs, name, spec, images)
    if default is not None and configs.child(str(default)) is None:
        raise FitError(f"default configuration {default!r} is not defined")
    fdt = Fdt(root)
    fit = FitImage(fdt, memoryview(b""), memoryview(b""))
    add_hashes(fit, hash_algo)
    return fit


def load_description(path: Path) -> FitImage:
    """Build the FIT an .its (as mkimage -f) or a TOML description describes.

    The form is chosen by extension (.its, .dts) or by the ``/dts-v1/;`` header,
    so an .its under any name is never mistaken for broken TOML.
    """
    source = read_description(path)
    if is_its(path, source):
        return build_from_its(path, source)
    try:
        description = tomllib.loads(source.decode())
    except UnicodeDecodeError as error:
        raise FitError(f"cannot read {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise FitError(f"{path} is neither an .its (/dts-v1/;) nor valid TOML: {error}") from None
    return build_fit(description, path.parent)
