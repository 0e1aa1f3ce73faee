"""The device-tree model (nodes, properties, strings) and its byte-exact writer.

U-Boot signs *bytes* of a FIT, not its meaning: a configuration signature covers
struct-block regions and a prefix of the strings block, name offsets and padding
included. So this module keeps full control of the layout: strings are only ever
appended (never reordered or deduplicated away), a property parsed from a blob
keeps its name offset, and the writer emits the same header / reserve map /
struct / strings layout that dtc and libfdt's ``fdt_pack`` produce, so a parsed
tree written back is byte-identical to its input.

Reading is ``_tokens``' job (bounds checks); ``parse`` here only adds the tree
rules. Property values are ``memoryview`` slices of the input, so a 64 MiB
kernel is never copied while reading.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from keyfab.boot._errors import FdtError
from keyfab.boot._tokens import (
    FDT_BEGIN_NODE,
    FDT_END,
    FDT_END_NODE,
    FDT_MAGIC,
    FDT_PROP,
    HEADER,
    LAST_COMP_VERSION,
    MAX_DEPTH,
    PROP_HEAD,
    RSV_ENTRY,
    U32,
    VERSION,
    Bytes,
    Token,
    align4,
    iter_tokens,
    read_header,
    read_reserve_map,
)

__all__ = ["Bytes", "Fdt", "Node", "Prop", "align4", "parse", "read_header"]


@dataclass
class Prop:
    """A property. ``nameoff`` remembers where a parsed name lives in the strings block."""

    name: str
    value: Bytes
    nameoff: int | None = None
    pad: bytes = b""

    def as_bytes(self) -> bytes:
        return bytes(self.value)

    def as_str(self) -> str:
        """A single NUL-terminated string value."""
        items = self.as_strings()
        if len(items) != 1:
            raise FdtError(f"property {self.name!r} is not a single string")
        return items[0]

    def as_strings(self) -> list[str]:
        """A string-list value (each string NUL-terminated)."""
        raw = bytes(self.value)
        if not raw or raw[-1] != 0:
            raise FdtError(f"property {self.name!r} is not a NUL-terminated string list")
        try:
            return raw[:-1].decode("utf-8").split("\0")
        except UnicodeDecodeError:
            raise FdtError(f"property {self.name!r} is not UTF-8 text") from None

    def as_u32(self) -> int:
        if len(self.value) != 4:
            raise FdtError(f"property {self.name!r} is not a 32-bit cell")
        return int(U32.unpack_from(self.value, 0)[0])

    def as_int(self) -> int:
        """A big-endian unsigned integer of any whole number of cells (u32, u64, bignum)."""
        if not self.value or len(self.value) % 4:
            raise FdtError(f"property {self.name!r} is not a whole number of cells")
        return int.from_bytes(self.value, "big")


@dataclass
class Node:
    """A device-tree node: ordered properties and ordered children."""

    name: str
    props: list[Prop] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    pad: bytes = b""

    def prop(self, name: str) -> Prop | None:
        return next((p for p in self.props if p.name == name), None)

    def need(self, name: str, where: str = "") -> Prop:
        """The property ``name`` or an FdtError naming the node."""
        found = self.prop(name)
        if found is None:
            raise FdtError(f"node {where or self.name!r} has no {name!r} property")
        return found

    def set(self, name: str, value: Bytes) -> Prop:
        """Replace the value of ``name`` in place, or append a new property."""
        found = self.prop(name)
        if found is None:
            found = Prop(name, value)
            self.props.append(found)
        else:
            found.value = value
            found.pad = b""
        return found

    def set_str(self, name: str, value: str) -> Prop:
        return self.set(name, value.encode() + b"\0")

    def set_u32(self, name: str, value: int) -> Prop:
        return self.set(name, U32.pack(value))

    def remove(self, name: str) -> None:
        self.props = [p for p in self.props if p.name != name]

    def child(self, name: str) -> Node | None:
        return next((c for c in self.children if c.name == name), None)

    def add_child(self, name: str) -> Node:
        """The child ``name``, appended if missing (libfdt adds after existing ones)."""
        found = self.child(name)
        if found is None:
            found = Node(name)
            self.children.append(found)
        return found


@dataclass
class Fdt:
    """A device tree with its strings block, reserve map and boot CPU kept as read."""

    root: Node
    strings: bytearray = field(default_factory=bytearray)
    reserve_map: list[tuple[int, int]] = field(default_factory=list)
    boot_cpuid_phys: int = 0
    free_space: bytes = b""
    """Bytes after the strings block up to ``totalsize`` (mkimage leaves some), kept as is."""

    def find(self, path: str) -> Node | None:
        """The node at an absolute ``path`` such as ``/images/kernel``."""
        if not path.startswith("/"):
            return None
        node: Node | None = self.root
        for part in filter(None, path.split("/")):
            node = node.child(part) if node else None
        return node

    def string_offset(self, name: str) -> int:
        """Where ``name`` is in the strings block, appending it if it is not there.

        Like libfdt, any existing NUL-terminated occurrence is reused (even the
        tail of a longer name); nothing already there ever moves.
        """
        encoded = name.encode("ascii") + b"\0"
        found = self.strings.find(encoded)
        if found >= 0:
            return found
        self.strings += encoded
        return len(self.strings) - len(encoded)

    def to_bytes(self) -> bytes:
        """The packed blob: header, reserve map, struct block, strings block."""
        return b"".join(self.chunks())

    def chunks(self) -> list[Bytes]:
        """The blob as a list of pieces, so a caller can write it without joining."""
        body: list[Bytes] = []
        size = self._emit(self.root, body, 0)
        body.append(U32.pack(FDT_END))
        size += 4
        rsv = b"".join(RSV_ENTRY.pack(a, s) for a, s in [*self.reserve_map, (0, 0)])
        off_struct = HEADER.size + len(rsv)
        off_strings = off_struct + size
        total = off_strings + len(self.strings) + len(self.free_space)
        header = struct.pack(
            ">10I",
            *(FDT_MAGIC, total, off_struct, off_strings, HEADER.size, VERSION),
            *(LAST_COMP_VERSION, self.boot_cpuid_phys, len(self.strings), size),
        )
        return [header, rsv, *body, bytes(self.strings), self.free_space]

    def _emit(self, node: Node, out: list[Bytes], depth: int) -> int:
        if depth >= MAX_DEPTH:
            raise FdtError(f"device tree deeper than {MAX_DEPTH} levels")
        name = node.name.encode("ascii") + b"\0"
        head = U32.pack(FDT_BEGIN_NODE) + name + _padding(node.pad, len(name))
        out.append(head)
        size = len(head)
        for prop in node.props:
            size += self._emit_prop(prop, out)
        for child in node.children:
            size += self._emit(child, out, depth + 1)
        out.append(U32.pack(FDT_END_NODE))
        return size + 4

    def _emit_prop(self, prop: Prop, out: list[Bytes]) -> int:
        nameoff = prop.nameoff
        if nameoff is None or not self.strings.startswith(prop.name.encode() + b"\0", nameoff):
            nameoff = prop.nameoff = self.string_offset(prop.name)
        length = len(prop.value)
        out.append(PROP_HEAD.pack(FDT_PROP, length, nameoff))
        out.append(prop.value)
        padding = _padding(prop.pad, length)
        if padding:
            out.append(padding)
        return PROP_HEAD.size + length + len(padding)


def _padding(kept: bytes, length: int) -> bytes:
    """Alignment after ``length`` bytes: the bytes read from the input if they fit, else zeros."""
    size = align4(length) - length
    return kept if len(kept) == size else b"\0" * size


def parse(buf: Bytes) -> Fdt:
    """Read a DTB into a tree, refusing anything libfdt would not walk safely.

    Beyond bounds: exactly one root with an empty name, balanced nodes, nothing
    after FDT_END, no duplicate property or sibling names (two nodes of one name
    would let a verifier and a loader look at different ones).
    """
    view = memoryview(buf)
    header = read_header(view)
    stack: list[_Open] = []
    root: Node | None = None
    end_offset = -1
    for token in iter_tokens(view, header):
        if token.tag == FDT_BEGIN_NODE:
            root = _open_node(token, stack, root)
        elif token.tag == FDT_END_NODE:
            if not stack:
                raise FdtError(f"device tree closes a node that is not open at {token.offset}")
            stack.pop()
        elif token.tag == FDT_PROP:
            _add_prop(token, stack)
        elif token.tag == FDT_END:
            end_offset = token.next_offset
    if root is None or stack:
        raise FdtError("device tree has no complete root node")
    if end_offset != header.size_dt_struct:
        raise FdtError("device tree has data after its end token")
    start = header.off_dt_strings
    strings = bytearray(view[start : start + header.size_dt_strings])
    reserve_map = read_reserve_map(view, header)
    fdt = Fdt(root, strings, reserve_map, header.boot_cpuid_phys)
    struct_start = HEADER.size + RSV_ENTRY.size * (len(reserve_map) + 1)
    packed = (
        header.off_mem_rsvmap == HEADER.size
        and header.off_dt_struct == struct_start
        and header.off_dt_strings == struct_start + header.size_dt_struct
    )
    if packed:
        fdt.free_space = bytes(view[start + header.size_dt_strings : header.totalsize])
    return fdt


@dataclass
class _Open:
    """A node being parsed, with the names seen so far (sets: linear time on big nodes)."""

    node: Node
    props: set[str] = field(default_factory=set)
    children: set[str] = field(default_factory=set)


def _open_node(token: Token, stack: list[_Open], root: Node | None) -> Node:
    node = Node(token.name, pad=token.pad)
    if not stack:
        if root is not None or token.name:
            raise FdtError(f"device tree has a second or named root node at {token.offset}")
        root = node
    else:
        parent = stack[-1]
        if token.name in parent.children:
            raise FdtError(f"device tree has two nodes named {token.name!r} under one parent")
        if len(stack) >= MAX_DEPTH:
            raise FdtError(f"device tree deeper than {MAX_DEPTH} levels")
        parent.children.add(token.name)
        parent.node.children.append(node)
    stack.append(_Open(node))
    return root or node


def _add_prop(token: Token, stack: list[_Open]) -> None:
    if not stack:
        raise FdtError(f"device tree property outside any node at {token.offset}")
    current = stack[-1]
    if token.name in current.props:
        raise FdtError(f"device tree node {current.node.name!r} has property {token.name!r} twice")
    current.props.add(token.name)
    current.node.props.append(Prop(token.name, token.value, token.nameoff, token.pad))
