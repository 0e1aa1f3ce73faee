"""The FIT format model: images, configurations, payloads and what a signature covers.

A FIT is a device tree: ``/images/<name>`` nodes hold payloads (inline ``data``
or, with ``mkimage -E``, ``data-offset``/``data-size`` into bytes appended after
the tree) and ``hash-*`` subnodes; ``/configurations/<name>`` nodes reference
images by name and carry ``signature-*`` subnodes. No signing or policy here.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyfab.boot._errors import FdtError, FitError
from keyfab.boot._fdt import Bytes, Fdt, Node, align4, parse, read_header

IMAGES_PATH = "/images"
CONFIGS_PATH = "/configurations"
HASH_PREFIX = "hash"
SIGNATURE_PREFIX = "signature"
NOT_IMAGE_REFERENCES = frozenset({"description", "compatible", "default"})
"""Configuration properties that never name images; every other one may."""


@dataclass
class FitImage:
    """A parsed FIT plus the external-data area that follows its tree."""

    fdt: Fdt
    source: memoryview
    """The whole file as read: ``data-position`` offsets point into it."""
    external: memoryview
    """The bytes after the tree (aligned): ``data-offset`` offsets point into it."""

    @classmethod
    def load(cls, data: Bytes) -> FitImage:
        """Parse a FIT; refuses '@' in image and configuration names as U-Boot does."""
        view = memoryview(data)
        header = read_header(view)
        fdt = parse(view)
        images = fdt.find(IMAGES_PATH)
        if images is None:
            raise FitError("not a FIT image: no /images node")
        for group in (images, fdt.find(CONFIGS_PATH)):
            for node in _walk(group) if group else []:
                if "@" in node.name:
                    raise FitError(f"FIT node {node.name!r} has a unit address ('@')")
        return cls(fdt, view, view[align4(header.totalsize) :])

    @property
    def has_positions(self) -> bool:
        return any(image.prop("data-position") for image in self.images())

    def images(self) -> list[Node]:
        node = self.fdt.find(IMAGES_PATH)
        return node.children if node else []

    def configurations(self) -> list[Node]:
        node = self.fdt.find(CONFIGS_PATH)
        return node.children if node else []

    def configuration(self, name: str | None) -> Node:
        """The named configuration, or the default one."""
        node = self.fdt.find(CONFIGS_PATH)
        if node is None:
            raise FitError("FIT has no /configurations node")
        if name is None:
            default = node.prop("default")
            if default is None:
                raise FitError("FIT has no default configuration: name one")
            name = default.as_str()
        found = node.child(name)
        if found is None:
            raise FitError(f"FIT has no configuration {name!r}")
        return found

    def image(self, name: str) -> Node | None:
        node = self.fdt.find(IMAGES_PATH)
        return node.child(name) if node else None

    def image_data(self, image: Node) -> memoryview:
        """An image's payload, inline or external, bounds-checked, never copied."""
        data = image.prop("data")
        if data is not None:
            return memoryview(data.value)
        size = image.need("data-size", image.name).as_u32()
        offset_prop = image.prop("data-offset")
        if offset_prop is not None:
            area, start = self.external, offset_prop.as_u32()
        else:
            area, start = self.source, image.need("data-position", image.name).as_u32()
        if start + size > len(area):
            raise FitError(f"image {image.name!r} data at {start}+{size} is out of bounds")
        return area[start : start + size]

    def references(self, config: Node) -> list[tuple[str, Node]]:
        """(property, image) for every image the configuration names, as U-Boot finds them.

        Every property except description/compatible/default is read as a
        string list; names that are not images are skipped, like U-Boot does.
        """
        found: list[tuple[str, Node]] = []
        for prop in config.props:
            if prop.name in NOT_IMAGE_REFERENCES:
                continue
            try:
                names = prop.as_strings()
            except FdtError:
                continue
            for name in names:
                image = self.image(name) if name else None
                if image is not None:
                    found.append((prop.name, image))
        return found

    def signed_paths(self, config: Node) -> list[str]:
        """Node paths a configuration signature covers: /, the config, each image + hashes.

        Built from the configuration's references, never from ``hashed-nodes``
        (which an attacker can edit), exactly as the fixed U-Boot verifier does.
        """
        paths = ["/", f"{CONFIGS_PATH}/{config.name}"]
        references = self.references(config)
        if not references:
            raise FitError(f"configuration {config.name!r} references no images")
        for _, image in references:
            base = f"{IMAGES_PATH}/{image.name}"
            hashes = [c for c in image.children if c.name.startswith(HASH_PREFIX)]
            if not hashes:
                raise FitError(f"image {image.name!r} has no hash node")
            paths.append(base)
            paths.extend(f"{base}/{c.name}" for c in hashes)
            paths.extend(
                f"{base}/{c.name}" for c in image.children if c.name in ("cipher", "dm-verity")
            )
        return list(dict.fromkeys(paths))

    def chunks(self) -> list[Bytes]:
        """The file as pieces: the tree, padding to four bytes, the external data."""
        if self.has_positions:
            raise FitError("rewriting FITs with data-position (mkimage -p) is not supported")
        pieces = self.fdt.chunks()
        if len(self.external):
            size = sum(len(p) for p in pieces)
            pieces.append(b"\0" * (align4(size) - size))
            pieces.append(self.external)
        return pieces

    def to_bytes(self) -> bytes:
        return b"".join(self.chunks())


def _walk(node: Node) -> list[Node]:
    found = [node]
    for child in node.children:
        found.extend(_walk(child))
    return found


def sub_nodes(node: Node, prefix: str) -> list[Node]:
    """Children whose names start with ``prefix`` (``hash``, ``signature``)."""
    return [c for c in node.children if c.name.startswith(prefix)]
